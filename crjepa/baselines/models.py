"""Baselines for CR-JEPA's comparisons, trained by the same script on the same data: X-JEPA-style and contrastive.

Both reuse CR-JEPA's building blocks (SensorStem, Trunk, Predictor, RetrievalHead, the masking and the losses),
its encoder (`CRJepaEncoderMixin`: stems, trunk, input checks, encode, get_embeddings) and its presets (their
configs subclass CRJepaConfig, so ``from_preset("tiny", ...)`` works), and offer the interface of
CRJepaForPreTraining for training and of CRJepaModel for retrieval:

    forward({sensor: pixel_values}, sigreg_step=..., masks=..., check_finite=...) -> output with .loss
        and .loss_terms() (two sensors)
    get_embeddings(pixel_values, sensor, space, normalize) -> (B, retrieval_dim); both spaces ("unified",
        "cross") are the model's ONE retrieval space
    after_optimizer_step(step, total_steps=None): called by the training loop after every optimizer step
        (the X-JEPA EMA target update; a no-op elsewhere, CRJepaForPreTraining included via `after_optimizer_step`)

XJepaModel -- our reading of X-JEPA (the paper's strongest baseline; X-JEPA itself is not in our papers
folder, so everything below is an ASSUMPTION, kept configurable):
    * the same per-sensor stems f_a, f_b and shared trunk g as CR-JEPA (the online / context encoder);
    * an EMA target encoder (a copy of stems + trunk, no gradients, momentum ``ema_momentum`` ->
      ``ema_momentum_end`` on a cosine schedule when the loop passes total_steps) that encodes the FULL image of
      the target sensor (I-JEPA style); targets are its latents at the target sensor's masked positions;
    * cross-modal latent prediction only (routes ab, ba by default) with one query predictor shared by both
      directions and an L2 (per-element MSE) loss, as CR-JEPA's L_pred;
    * ONE retrieval head phi (shared by the sensors) on the mean of the visible online tokens, r = phi(.);
    * a learned Mahalanobis alignment of the paired projections r^a, r^b: the Gaussian negative
      log-likelihood of the residual d = r^a - r^b under a learned precision L L^T (L lower-triangular with a
      positive, clamped diagonal), 0.5 ||L^T d||^2 / R - mean(log diag L). It reduces to a scaled L2 at
      initialisation (L = I); the log-determinant keeps the metric from collapsing to zero and the clamp keeps
      it finite when the pairs align perfectly. (Reading "prediction-space alignment" as aligning the two
      sensors' projections in the space used for retrieval is our assumption.)
    * VICReg's variance (hinge on each dimension's std at 1) and covariance (off-diagonal squared, / R) terms
      on r^a and r^b, with VICReg's 25:25:1 ratios expressed relative to the alignment term (1 : 1 : 0.04).
    L = L_pred + lambda_mahalanobis L_align + lambda_vicreg (w_var L_var + w_cov L_cov)
    At the paper's size (ben14k preset) this is 106.05M parameters (trunk + stems ~38.7M, one predictor
    ~25M, the EMA copy of trunk + stems ~38.7M, head and metric) against the paper's 172.86M for X-JEPA, whose
    exact layout is unknown to us.

ContrastiveModel -- a CLIP-style dual encoder: per-sensor stems, one trunk per sensor by default
(``trunk_mode="separate"``; "shared" is allowed), one projection head shared by both sensors (the one
retrieval space), symmetric InfoNCE at CR-JEPA's fixed ``temperature`` and nothing else (78.09M parameters at
the paper's size). Training views are the
full images unless ``mask_views`` is set, in which case only the visible tokens of the training masks (the loop's,
or drawn at ``mask_ratio``) are encoded, as CR-JEPA's heads see them: masking as augmentation.

`ARCHITECTURES` maps ``model.architecture`` in a training YAML (crjepa | xjepa | contrastive) to its config and
model classes; `build_config` / `build_model` are what a model factory calls. The CR-JEPA model files never
import this module (it is not remote code for CR-JEPA checkpoints).
"""

from __future__ import annotations

import copy
import math
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import torch
import torch.nn.functional as F
from huggingface_hub.dataclasses import strict
from torch import nn
from transformers import AutoConfig, AutoModel, PreTrainedModel
from transformers import initialization as init
from transformers.utils import ModelOutput

from modeling_crjepa.configuration_crjepa import PRESETS, CRJepaConfig, split_route
from modeling_crjepa.losses import info_nce, prediction_loss
from modeling_crjepa.modeling_crjepa import (
    SPACES,
    CRJepaEncoderMixin,
    CRJepaForPreTraining,
    CRJepaPreTrainedModel,
    Predictor,
    RetrievalHead,
    SensorStem,
    Trunk,
    gather_tokens,
    predictor_for_route,
    random_masks,
)


# ---------------------------------------------------------------------------------------------- configs
@strict(accept_kwargs=True)
class XJepaConfig(CRJepaConfig):
    r"""X-JEPA-style baseline: CRJepaConfig's fields (sizes, sensors, mask_ratio, routes, predictor_*) plus

    ema_momentum, ema_momentum_end: the target encoder's EMA momentum, cosine from start to end over the run
        (constant ``ema_momentum`` when the loop does not pass total_steps).
    lambda_mahalanobis: weight of the learned Mahalanobis alignment of r^a and r^b.
    lambda_vicreg, vicreg_variance_weight, vicreg_covariance_weight: VICReg's regulariser on r^a and r^b.
    mahalanobis_max_log_precision: clamp of log diag L (keeps the learned precision finite).
    routes defaults to the cross-modal routes ["ab", "ba"]; head_mode and trunk_mode must stay at their
    defaults (one head, shared trunk).
    """

    model_type = "crjepa_xjepa"

    ema_momentum: float = 0.996
    ema_momentum_end: float = 1.0
    lambda_mahalanobis: float = 1.0
    lambda_vicreg: float = 1.0
    vicreg_variance_weight: float = 1.0
    vicreg_covariance_weight: float = 0.04
    mahalanobis_max_log_precision: float = 4.0

    def __post_init__(self, **kwargs):
        if self.routes is None:
            self.routes = ["ab", "ba"]
        super().__post_init__(**kwargs)

    def check(self) -> None:
        super().check()
        errors = []
        if not 0.0 <= self.ema_momentum <= self.ema_momentum_end <= 1.0:
            errors.append(
                f"need 0 <= ema_momentum <= ema_momentum_end <= 1, found {self.ema_momentum}, {self.ema_momentum_end}"
            )
        if self.head_mode != "decoupled" or self.trunk_mode != "shared":
            errors.append(
                "the X-JEPA baseline has one retrieval head and a shared trunk: leave head_mode and "
                f"trunk_mode at their defaults (found {self.head_mode!r}, {self.trunk_mode!r})"
            )
        if not self.routes:
            errors.append("the X-JEPA baseline needs at least one prediction route")
        if errors:
            raise ValueError("Invalid XJepaConfig:\n  - " + "\n  - ".join(errors))


@strict(accept_kwargs=True)
class ContrastiveConfig(CRJepaConfig):
    r"""Contrastive (CLIP-style) dual-encoder baseline: CRJepaConfig's sizes, sensors and ``temperature``, plus

    trunk_mode: "separate" (default: one trunk per sensor, a true dual encoder) or "shared".
    mask_views: encode only the visible tokens of the training masks (False: full images, CLIP-style; the
        masks the training loop passes are then ignored).
    The predictors, routes and CR-JEPA's lambdas are unused.
    """

    model_type = "crjepa_contrastive"

    trunk_mode: str = "separate"
    mask_views: bool = False


# ---------------------------------------------------------------------------------------------- outputs
@dataclass
class BaselineOutput(ModelOutput):
    """A baseline's training output: the total loss, its terms and the embeddings per sensor (for monitoring)."""

    loss: torch.FloatTensor | None = None
    losses: dict | None = None
    embeddings: dict | None = None

    def loss_terms(self) -> dict[str, torch.Tensor]:
        """{name: scalar tensor} for logging: "loss", then every term of `losses` (as CRJepaPreTrainingOutput's)."""
        return {"loss": self.loss, **(self.losses or {})}


@dataclass
class XJepaOutput(BaselineOutput):
    """X-JEPA training output: the total loss and its terms, keyed as CR-JEPA's ("pred", "pred/<route>"
    unweighted for the active routes, "mahalanobis", "variance", "covariance")."""


@dataclass
class ContrastiveOutput(BaselineOutput):
    """Contrastive training output: the symmetric InfoNCE is the whole loss."""


# ---------------------------------------------------------------------------------------------- losses
def vicreg_variance(r: torch.Tensor, eps: float = 1e-4) -> torch.Tensor:
    """VICReg variance term: mean over dimensions of relu(1 - std), so no dimension collapses."""
    std = torch.sqrt(r.float().var(dim=0) + eps)
    return F.relu(1.0 - std).mean()


def vicreg_covariance(r: torch.Tensor) -> torch.Tensor:
    """VICReg covariance term: sum of squared off-diagonal covariances / dim, so dimensions decorrelate."""
    r = r.float() - r.float().mean(dim=0)
    cov = (r.T @ r) / max(r.shape[0] - 1, 1)
    off_diagonal = cov - torch.diag(torch.diagonal(cov))
    return off_diagonal.square().sum() / r.shape[1]


class MahalanobisAlignment(nn.Module):
    """Learned Mahalanobis alignment of paired projections: Gaussian NLL of d = r^a - r^b under precision L L^T.

    loss = 0.5 * mean_i ||L^T d_i||^2 / R - mean(log diag L); L = strictly-lower part + diag(exp(log_diagonal)),
    with log_diagonal clamped to +-max_log_precision / 2 so the precision stays finite.
    """

    def __init__(self, dim: int, max_log_precision: float) -> None:
        super().__init__()
        self.max_log_diagonal = max_log_precision / 2
        self.off_diagonal = nn.Parameter(torch.zeros(dim, dim))
        self.log_diagonal = nn.Parameter(torch.zeros(dim))

    def cholesky_factor(self) -> torch.Tensor:
        log_diagonal = self.log_diagonal.clamp(-self.max_log_diagonal, self.max_log_diagonal)
        return torch.tril(self.off_diagonal, diagonal=-1) + torch.diag(log_diagonal.exp())

    def forward(self, r_a: torch.Tensor, r_b: torch.Tensor) -> torch.Tensor:
        factor = self.cholesky_factor().float()
        whitened = (r_a.float() - r_b.float()) @ factor  # rows: L^T d_i
        log_diagonal = self.log_diagonal.clamp(-self.max_log_diagonal, self.max_log_diagonal)
        return 0.5 * whitened.square().sum(dim=1).mean() / factor.shape[0] - log_diagonal.float().mean()


# ---------------------------------------------------------------------------------------------- shared base
class BaselinePreTrainedModel(CRJepaPreTrainedModel, CRJepaEncoderMixin):
    """Shared plumbing: CR-JEPA's encoder (stems, trunk, input checks), weight init, one retrieval space, a no-op
    step hook."""

    config_class = CRJepaConfig
    base_model_prefix = "baseline"
    head: RetrievalHead

    def _check_pair(self, pixel_values: dict[str, torch.Tensor], check_finite: bool) -> dict[str, torch.Tensor]:
        """{sensor: pixel_values} of a batch of pairs, checked, equal batch sizes; the baselines are two-sensor
        models."""
        if not isinstance(pixel_values, dict):
            raise ValueError(
                f"The baselines take pixel_values as {{sensor: (B, C, S, S) tensor}}, found "
                f"{type(pixel_values).__name__}"
            )
        if len(self.sensor_names) != 2 or set(pixel_values) != set(self.sensor_names):
            raise ValueError(
                f"The baselines train on pairs of two sensors {self.sensor_names}, found {sorted(pixel_values)}"
            )
        for name in self.sensor_names:
            self.check_pixel_values(pixel_values[name], name, check_finite)
        sizes = {n: pixel_values[n].shape[0] for n in self.sensor_names}
        if len(set(sizes.values())) != 1:
            raise ValueError(f"Every sensor needs the same batch size (pairs), found {sizes}")
        return {n: pixel_values[n] for n in self.sensor_names}

    def _init_weights(self, module: nn.Module) -> None:
        super()._init_weights(module)
        if isinstance(module, MahalanobisAlignment):
            init.zeros_(module.off_diagonal)
            init.zeros_(module.log_diagonal)

    @torch.no_grad()
    def embed(
        self,
        pixel_values: torch.Tensor,
        sensor: str,
        spaces: Sequence[str] = SPACES,
        normalize: bool = True,
        check_finite: bool = True,
    ) -> dict[str, torch.Tensor]:
        """{space: (B, retrieval_dim)} from one trunk pass, as CRJepaModel.embed; every space is the same vector."""
        unknown = [space for space in spaces if space not in SPACES]
        if unknown:
            raise ValueError(f"Unknown embedding space {unknown[0]!r}; choose from {list(SPACES)}")
        self.check_pixel_values(pixel_values, sensor, check_finite)
        raw, normalized = self.head(self.encode(pixel_values, sensor).mean(dim=1))
        return {space: normalized if normalize else raw.float() for space in spaces}

    def after_optimizer_step(self, step: int, total_steps: int | None = None) -> None:
        """Hook the training loop calls after every optimizer step; nothing to do by default."""

    draws_masks = True
    """Whether ``forward`` draws I-JEPA masks when the caller passes none."""

    def forward(
        self,
        pixel_values: dict[str, torch.Tensor],
        sigreg_step: int = 0,
        masks: dict[str, tuple[torch.Tensor, torch.Tensor]] | None = None,
        check_finite: bool = True,
        return_dict: bool = True,
        **kwargs: Any,
    ) -> BaselineOutput:
        """The baseline's :meth:`objective` on a batch of pairs, taken as CRJepaForPreTraining takes them (a
        {sensor: images} dict); sigreg_step is accepted for interface parity."""
        cfg = self.config
        inputs = self._check_pair(pixel_values, check_finite)
        if masks is None and self.draws_masks:
            batch = next(iter(inputs.values())).shape[0]
            masks = {n: random_masks(batch, cfg.num_patches, cfg.mask_ratio, x.device) for n, x in inputs.items()}
        return self.objective(inputs, masks)

    def objective(
        self, inputs: dict[str, torch.Tensor], masks: dict[str, tuple[torch.Tensor, torch.Tensor]] | None
    ) -> BaselineOutput:
        """Loss and embeddings of checked pairs ``inputs`` ({sensor: (B, C, H, W)}) under ``masks``."""
        raise NotImplementedError


# ---------------------------------------------------------------------------------------------- X-JEPA
class XJepaModel(BaselinePreTrainedModel):
    """X-JEPA-style baseline (see the module docstring for what we assumed)."""

    config_class = XJepaConfig
    config: XJepaConfig

    def __init__(self, config: XJepaConfig) -> None:
        config.check()
        super().__init__(config)
        self._add_encoder(config)  # shared trunk (XJepaConfig.check)
        self.route_to_predictor = predictor_for_route(config)
        needed = sorted({self.route_to_predictor[r] for r in config.routes})
        self.predictors = nn.ModuleDict({name: Predictor(config) for name in needed})
        self.head = RetrievalHead(config)
        self.alignment = MahalanobisAlignment(config.retrieval_dim, config.mahalanobis_max_log_precision)
        # EMA target encoder: same stems and trunk, updated only by after_optimizer_step.
        self.target_stems = nn.ModuleDict({name: SensorStem(ch, config) for name, ch in config.sensors.items()})
        self.target_trunk = Trunk(config)
        self.post_init()
        self._copy_online_to_target()

    def _target_pairs(self) -> list[tuple[nn.Parameter, nn.Parameter]]:
        online = list(self.stems.parameters()) + list(self.trunk.parameters())
        target = list(self.target_stems.parameters()) + list(self.target_trunk.parameters())
        return list(zip(target, online, strict=True))

    @torch.no_grad()
    def _copy_online_to_target(self) -> None:
        for target, online in self._target_pairs():
            target.copy_(online)
            target.requires_grad_(False)

    def ema_momentum_at(self, step: int, total_steps: int | None = None) -> float:
        """Momentum at a step: cosine from ema_momentum to ema_momentum_end over total_steps (else constant)."""
        start, end = self.config.ema_momentum, self.config.ema_momentum_end
        if not total_steps:
            return start
        progress = min(max(step / total_steps, 0.0), 1.0)
        return end - (end - start) * (math.cos(math.pi * progress) + 1) / 2

    @torch.no_grad()
    def after_optimizer_step(self, step: int, total_steps: int | None = None) -> None:
        """EMA update of the target encoder: theta_target <- m theta_target + (1 - m) theta_online."""
        momentum = self.ema_momentum_at(step, total_steps)
        targets, onlines = zip(*self._target_pairs())
        torch._foreach_lerp_(list(targets), [o.detach() for o in onlines], 1.0 - momentum)

    @torch.no_grad()
    def encode_target(self, pixel_values: torch.Tensor, sensor: str) -> torch.Tensor:
        """Target latents of ALL tokens of one sensor from the EMA encoder (no gradients)."""
        return self.target_trunk(self.target_stems[sensor](pixel_values))

    def objective(
        self, inputs: dict[str, torch.Tensor], masks: dict[str, tuple[torch.Tensor, torch.Tensor]] | None
    ) -> XJepaOutput:
        """Latent prediction within and across sensors, Mahalanobis alignment and VICReg (module docstring)."""
        cfg = self.config
        visible, targets, raw, normalized = {}, {}, {}, {}
        for name, x in inputs.items():
            vis_idx, mask_idx = masks[name]
            visible[name] = self.encode(x, name, vis_idx)
            targets[name] = gather_tokens(self.encode_target(x, name), mask_idx)
            raw[name], normalized[name] = self.head(visible[name].mean(dim=1))

        route_losses = {}
        for route in cfg.routes:
            source, target = split_route(route)
            predictor = self.predictors[self.route_to_predictor[route]]
            predicted = predictor(visible[source], masks[target][1], self.sensor_names.index(target))
            route_losses[route] = prediction_loss(predicted, targets[target])
        loss_pred = sum(cfg.route_weights[r] * route_losses[r] for r in cfg.routes)

        r_a, r_b = (raw[n] for n in self.sensor_names)
        loss_mahalanobis = self.alignment(r_a, r_b)
        loss_variance = (vicreg_variance(r_a) + vicreg_variance(r_b)) / 2
        loss_covariance = (vicreg_covariance(r_a) + vicreg_covariance(r_b)) / 2
        loss = (
            loss_pred
            + cfg.lambda_mahalanobis * loss_mahalanobis
            + cfg.lambda_vicreg
            * (cfg.vicreg_variance_weight * loss_variance + cfg.vicreg_covariance_weight * loss_covariance)
        )
        losses = {
            "pred": loss_pred,
            **{f"pred/{r}": route_losses[r] for r in cfg.routes},
            "mahalanobis": loss_mahalanobis,
            "variance": loss_variance,
            "covariance": loss_covariance,
        }
        return XJepaOutput(
            loss=loss,
            losses=losses,
            embeddings={n: normalized[n].detach() for n in self.sensor_names},
        )


# ---------------------------------------------------------------------------------------------- contrastive
class ContrastiveModel(BaselinePreTrainedModel):
    """CLIP-style dual encoder: per-sensor stems and trunks, one shared projection head, symmetric InfoNCE."""

    config_class = ContrastiveConfig
    config: ContrastiveConfig

    def __init__(self, config: ContrastiveConfig) -> None:
        config.check()
        super().__init__(config)
        self._add_encoder(config)
        self.head = RetrievalHead(config)
        self.post_init()

    @property
    def draws_masks(self) -> bool:
        return self.config.mask_views

    def objective(
        self, inputs: dict[str, torch.Tensor], masks: dict[str, tuple[torch.Tensor, torch.Tensor]] | None
    ) -> ContrastiveOutput:
        """Symmetric InfoNCE between the two sensors' embeddings; masks are used only when config.mask_views."""
        cfg = self.config
        embeddings = {}
        for name, x in inputs.items():
            index = masks[name][0] if cfg.mask_views else None
            embeddings[name] = self.head(self.encode(x, name, index).mean(dim=1))[1]
        e_a, e_b = (embeddings[n] for n in self.sensor_names)
        loss = info_nce(e_a, e_b, cfg.temperature)
        return ContrastiveOutput(
            loss=loss, losses={"contrastive": loss}, embeddings={n: e.detach() for n, e in embeddings.items()}
        )


# ---------------------------------------------------------------------------------------------- registry
ARCHITECTURES: dict[str, tuple[type[CRJepaConfig], type[PreTrainedModel]]] = {
    "crjepa": (CRJepaConfig, CRJepaForPreTraining),
    "xjepa": (XJepaConfig, XJepaModel),
    "contrastive": (ContrastiveConfig, ContrastiveModel),
}
"""``model.architecture`` in a training YAML -> (config class, model class)."""


def build_config(architecture: str = "crjepa", preset: str | None = None, **overrides: Any) -> CRJepaConfig:
    """The config of an architecture from a preset (see PRESETS) plus overrides, or from overrides alone."""
    if architecture not in ARCHITECTURES:
        raise ValueError(f"Unknown model architecture {architecture!r}; choose from {sorted(ARCHITECTURES)}")
    config_class = ARCHITECTURES[architecture][0]
    if preset is None:
        return config_class(**overrides)
    if preset not in PRESETS:
        raise ValueError(f"Unknown preset {preset!r}; available: {sorted(PRESETS)}")
    return config_class(**{**copy.deepcopy(PRESETS[preset]), **overrides})


def build_model(architecture: str = "crjepa", preset: str | None = None, **overrides: Any) -> PreTrainedModel:
    """A freshly initialised model of an architecture (crjepa | xjepa | contrastive)."""
    config = build_config(architecture, preset, **overrides)
    return ARCHITECTURES[architecture][1](config)


def architecture_of(config: CRJepaConfig) -> str:
    """The ``model.architecture`` name of a config (the most derived registered class wins)."""
    for name, (config_class, _) in ARCHITECTURES.items():
        if type(config) is config_class:
            return name
    raise ValueError(f"No registered architecture for {type(config).__name__}; known: {sorted(ARCHITECTURES)}")


def model_for_config(config: CRJepaConfig) -> PreTrainedModel:
    """A freshly initialised model of the architecture a config belongs to (CRJepaConfig -> CRJepaForPreTraining,
    ...)."""
    return ARCHITECTURES[architecture_of(config)][1](config)


def model_fields() -> list[str]:
    """Every key a training YAML's ``model`` section may set: ``architecture``, ``preset`` and the config fields
    of all registered architectures (CR-JEPA's and the baselines' own knobs)."""
    fields = dict.fromkeys(["architecture", "preset"])
    for config_class, _ in ARCHITECTURES.values():
        for klass in reversed([k for k in config_class.__mro__ if issubclass(k, CRJepaConfig)]):
            fields.update(dict.fromkeys(klass.__dict__.get("__annotations__", {})))
    return list(fields)


def after_optimizer_step(model: nn.Module, step: int, total_steps: int | None = None) -> None:
    """Call the model's post-step hook if it has one (X-JEPA's EMA update); CR-JEPA needs none."""
    hook = getattr(model, "after_optimizer_step", None)
    if callable(hook):
        hook(step, total_steps)


for _config_class, _model_class in (ARCHITECTURES["xjepa"], ARCHITECTURES["contrastive"]):
    AutoConfig.register(_config_class.model_type, _config_class, exist_ok=True)
    AutoModel.register(_config_class, _model_class, exist_ok=True)

__all__ = [
    "ARCHITECTURES",
    "architecture_of",
    "model_fields",
    "model_for_config",
    "BaselineOutput",
    "ContrastiveConfig",
    "ContrastiveModel",
    "ContrastiveOutput",
    "MahalanobisAlignment",
    "XJepaConfig",
    "XJepaModel",
    "XJepaOutput",
    "after_optimizer_step",
    "build_config",
    "build_model",
    "vicreg_covariance",
    "vicreg_variance",
]
