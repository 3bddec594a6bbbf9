"""CR-JEPA (arXiv 2606.00706): sensor stems, a shared trunk, JEPA predictors, SIGReg and two retrieval heads.

Every paper component has a class named after it here:
    SensorStem        f_a, f_b: patch embedding + learned positional encoding, one per sensor
    Trunk             g: the shared transformer (width 512, depth 12, 8 heads), mean pooling, no CLS
    Predictor         P_aa, P_bb, P_cross: query-based (mask queries + target positions; self-attention,
                      cross-attention to the visible context, MLP), depth 6
    RetrievalHead     phi_uni (same-modal search) and phi_cross (cross-modal search), 256-d
    CRJepaModel       masking, the four routes (aa, bb, ab, ba), and the objective
                      L = L_pred + lambda_cross L_cross + lambda_uni L_uni + lambda_sigreg L_sigreg
The loss functions live in losses.py. Speed (config.pack_sensors, `compile_blocks`) never changes the math:
`run_packed` batches calls of one module on same-shaped inputs into one call, e.g. the shared trunk on both
sensors' visible tokens, or P_cross on both cross routes. This file travels as remote code (save_pretrained
copies it with the files it imports relatively): it imports only torch, transformers and its siblings.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import torch
import torch.nn.functional as F
from torch import nn
from transformers import PreTrainedModel
from transformers import initialization as init
from transformers.modeling_layers import GradientCheckpointingLayer
from transformers.utils import ModelOutput

from .configuration_crjepa import CRJepaConfig
from .losses import info_nce, prediction_loss, sigreg, uni_loss

SPACES = ("unified", "cross")


# ---------------------------------------------------------------------------------------------- outputs
@dataclass
class CRJepaOutput(ModelOutput):
    """Training forward output: the total loss and every term, so each can be logged.

    loss_pred is the weighted sum over the active routes; loss_pred_<route> are the unweighted route losses
    (0 for inactive routes). embeddings holds e (normalised) and r (raw) per sensor and head, from the
    visible tokens, for monitoring.
    """

    loss: torch.FloatTensor | None = None
    loss_pred: torch.FloatTensor | None = None
    loss_pred_aa: torch.FloatTensor | None = None
    loss_pred_bb: torch.FloatTensor | None = None
    loss_pred_ab: torch.FloatTensor | None = None
    loss_pred_ba: torch.FloatTensor | None = None
    loss_cross: torch.FloatTensor | None = None
    loss_uni: torch.FloatTensor | None = None
    loss_sigreg: torch.FloatTensor | None = None
    embeddings: dict | None = None

    def loss_terms(self) -> dict[str, torch.Tensor]:
        """{name: scalar tensor} for logging: every set field whose name starts with "loss", in field order.

        Generic over the output's fields, so other models' outputs (baselines.py) reuse it as is.
        """
        return {name: value for name, value in self.items() if name.startswith("loss")}


# ---------------------------------------------------------------------------------------------- blocks
class Attention(nn.Module):
    """Multi-head attention through scaled_dot_product_attention; self-attention when context is None."""

    def __init__(self, dim: int, num_heads: int, qkv_bias: bool = True) -> None:
        super().__init__()
        self.num_heads = num_heads
        self.q = nn.Linear(dim, dim, bias=qkv_bias)
        self.kv = nn.Linear(dim, 2 * dim, bias=qkv_bias)
        self.proj = nn.Linear(dim, dim)

    def forward(self, x: torch.Tensor, context: torch.Tensor | None = None) -> torch.Tensor:
        batch, length, dim = x.shape
        heads, head_dim = self.num_heads, dim // self.num_heads
        if context is None:  # self-attention: q, k, v from one fused matmul (same weights, same math)
            weight = torch.cat([self.q.weight, self.kv.weight])
            bias = None if self.q.bias is None else torch.cat([self.q.bias, self.kv.bias])
            q, k, v = F.linear(x, weight, bias).view(batch, length, 3, heads, head_dim).permute(2, 0, 3, 1, 4)
        else:
            q = self.q(x).view(batch, length, heads, head_dim).transpose(1, 2)
            k, v = self.kv(context).view(batch, context.shape[1], 2, heads, head_dim).permute(2, 0, 3, 1, 4)
        out = F.scaled_dot_product_attention(q, k, v)
        return self.proj(out.transpose(1, 2).reshape(batch, length, dim))


class MLP(nn.Module):
    def __init__(self, dim: int, hidden: int) -> None:
        super().__init__()
        self.fc1 = nn.Linear(dim, hidden)
        self.fc2 = nn.Linear(hidden, dim)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.fc2(F.gelu(self.fc1(x)))


class TrunkBlock(GradientCheckpointingLayer):
    """Pre-norm transformer block of the trunk: self-attention, MLP."""

    def __init__(self, dim: int, num_heads: int, mlp_ratio: float, eps: float, qkv_bias: bool) -> None:
        super().__init__()
        self.norm1 = nn.LayerNorm(dim, eps=eps)
        self.attn = Attention(dim, num_heads, qkv_bias)
        self.norm2 = nn.LayerNorm(dim, eps=eps)
        self.mlp = MLP(dim, int(dim * mlp_ratio))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = x + self.attn(self.norm1(x))
        return x + self.mlp(self.norm2(x))


class PredictorBlock(GradientCheckpointingLayer):
    """Predictor block: self-attention among mask queries, cross-attention to the visible context, MLP."""

    def __init__(self, dim: int, num_heads: int, mlp_ratio: float, eps: float, qkv_bias: bool) -> None:
        super().__init__()
        self.norm1 = nn.LayerNorm(dim, eps=eps)
        self.self_attn = Attention(dim, num_heads, qkv_bias)
        self.norm_q = nn.LayerNorm(dim, eps=eps)
        self.norm_ctx = nn.LayerNorm(dim, eps=eps)
        self.cross_attn = Attention(dim, num_heads, qkv_bias)
        self.norm2 = nn.LayerNorm(dim, eps=eps)
        self.mlp = MLP(dim, int(dim * mlp_ratio))

    def forward(self, queries: torch.Tensor, context: torch.Tensor) -> torch.Tensor:
        queries = queries + self.self_attn(self.norm1(queries))
        queries = queries + self.cross_attn(self.norm_q(queries), self.norm_ctx(context))
        return queries + self.mlp(self.norm2(queries))


# ---------------------------------------------------------------------------------------------- components
class SensorStem(nn.Module):
    """f_s: one sensor's image (B, C_s, H, W) -> patch tokens (B, N, D) with learned positional embeddings."""

    def __init__(self, channels: int, config: CRJepaConfig) -> None:
        super().__init__()
        self.patch_embed = nn.Conv2d(channels, config.hidden_size, config.patch_size, stride=config.patch_size)
        self.pos_embed = nn.Parameter(torch.zeros(1, config.num_patches, config.hidden_size))

    def forward(self, pixel_values: torch.Tensor) -> torch.Tensor:
        # The patch embedding is a Conv2d with stride = kernel = patch (its weights are what checkpoints hold),
        # computed as what it is, one matmul over the flattened patches: the same math, but a GEMM where cuDNN's
        # strided-conv kernels (and their weight gradient) took ~10% of a ben14k step on an H200.
        batch, channels, height, width = pixel_values.shape
        p = self.patch_embed.kernel_size[0]
        patches = (pixel_values.reshape(batch, channels, height // p, p, width // p, p)
                   .permute(0, 2, 4, 1, 3, 5).reshape(batch, (height // p) * (width // p), channels * p * p))
        weight = self.patch_embed.weight.reshape(self.patch_embed.out_channels, channels * p * p)
        return F.linear(patches, weight, self.patch_embed.bias) + self.pos_embed


class Trunk(nn.Module):
    """g: the shared transformer encoder over a subset of tokens (visible, masked, or all)."""

    def __init__(self, config: CRJepaConfig) -> None:
        super().__init__()
        self.blocks = nn.ModuleList(
            TrunkBlock(config.hidden_size, config.num_attention_heads, config.mlp_ratio, config.layer_norm_eps,
                       config.qkv_bias) for _ in range(config.num_hidden_layers))
        self.norm = nn.LayerNorm(config.hidden_size, eps=config.layer_norm_eps)

    def forward(self, tokens: torch.Tensor) -> torch.Tensor:
        for block in self.blocks:
            tokens = block(tokens)
        return self.norm(tokens)


class Predictor(nn.Module):
    """Query-based JEPA predictor: estimates the trunk's latents z_M at the target sensor's masked positions.

    Queries = a learnable mask token + positional embedding of the target position + an embedding of the
    target sensor (so one predictor can serve several routes); context = the source sensor's visible latents.
    """

    def __init__(self, config: CRJepaConfig) -> None:
        super().__init__()
        dim = config.predictor_hidden_size
        self.context_proj = nn.Linear(config.hidden_size, dim)
        self.mask_token = nn.Parameter(torch.zeros(1, 1, dim))
        self.pos_embed = nn.Parameter(torch.zeros(1, config.num_patches, dim))
        self.target_sensor_embed = nn.Parameter(torch.zeros(len(config.sensors), dim))
        self.blocks = nn.ModuleList(
            PredictorBlock(dim, config.predictor_num_heads, config.mlp_ratio, config.layer_norm_eps, config.qkv_bias)
            for _ in range(config.predictor_depth))
        self.norm = nn.LayerNorm(dim, eps=config.layer_norm_eps)
        self.out_proj = nn.Linear(dim, config.hidden_size)

    def forward(self, context: torch.Tensor, target_positions: torch.Tensor,
                target_sensor: int | torch.Tensor) -> torch.Tensor:
        """context (B, Nv, D), target_positions (B, Nm) long -> predicted latents (B, Nm, D).

        target_sensor: the target sensor's index (0 = a, 1 = b), one int or a (B,) long tensor (one per row,
        so routes with different targets can share one call).
        """
        context = self.context_proj(context)
        pos = self.pos_embed.expand(target_positions.shape[0], -1, -1)
        pos = torch.gather(pos, 1, target_positions.unsqueeze(-1).expand(-1, -1, pos.shape[-1]))
        sensor_embed = self.target_sensor_embed[target_sensor]
        queries = self.mask_token + pos + (sensor_embed.unsqueeze(1) if sensor_embed.ndim == 2 else sensor_embed)
        for block in self.blocks:
            queries = block(queries, context)
        return self.out_proj(self.norm(queries))


class HeadLinear(nn.Linear):
    """A retrieval-head layer: with ``head_init="unit"`` drawn with std 1/sqrt(fan_in) (see _init_weights)."""


class RetrievalHead(nn.Module):
    """phi: pooled trunk features (B, D) -> raw projection r (B, R); e = r / ||r||.

    With ``head_init="unit"`` the pooled features are layer-normalised first and the layers start at unit
    gain, so r starts near the scale of SIGReg's target N(0, I) (``"small"``: r ~ 0.03, SIGReg inactive).
    """

    def __init__(self, config: CRJepaConfig) -> None:
        super().__init__()
        unit = config.head_init == "unit"
        self.norm = nn.LayerNorm(config.hidden_size, eps=config.layer_norm_eps) if unit else nn.Identity()
        if config.head_hidden_size > 0:
            self.proj = nn.Sequential(HeadLinear(config.hidden_size, config.head_hidden_size), nn.GELU(),
                                      HeadLinear(config.head_hidden_size, config.retrieval_dim))
        else:
            self.proj = HeadLinear(config.hidden_size, config.retrieval_dim)

    def forward(self, pooled: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        raw = self.proj(self.norm(pooled))
        return raw, F.normalize(raw.float(), dim=-1)


def predictor_for_route(config: CRJepaConfig) -> dict[str, str]:
    """Which predictor module serves each route, by the config's predictor_sharing."""
    if config.predictor_sharing == "paper":
        return {"aa": "aa", "bb": "bb", "ab": "cross", "ba": "cross"}
    if config.predictor_sharing == "independent":
        return {r: r for r in ("aa", "bb", "ab", "ba")}
    return {r: "shared" for r in ("aa", "bb", "ab", "ba")}


def random_masks(batch: int, num_patches: int, mask_ratio: float, device, generator=None) -> tuple[torch.Tensor, torch.Tensor]:
    """Independent random split per sample into visible and masked token indices, (B, Nv) and (B, Nm).

    The counts are the same for every sample (static shapes): Nm = round(N * mask_ratio).
    """
    num_masked = min(max(int(round(num_patches * mask_ratio)), 1), num_patches - 1)
    order = torch.rand(batch, num_patches, device=device, generator=generator).argsort(dim=1)
    return order[:, num_masked:], order[:, :num_masked]


def gather_tokens(tokens: torch.Tensor, index: torch.Tensor) -> torch.Tensor:
    """The tokens (B, N, D) at `index` (B, n) -> (B, n, D)."""
    return torch.gather(tokens, 1, index.unsqueeze(-1).expand(-1, -1, tokens.shape[-1]))


def run_packed(calls: Sequence[tuple[nn.Module, tuple[torch.Tensor, ...]]], pack: bool = True) -> list[Any]:
    """[module(*args) for module, args in calls], with calls packed when `pack` is set.

    Calls to the same module whose tensor arguments agree in everything but the batch size (dim 0) are
    concatenated along the batch, run as one call and split back: the same math for row-wise modules (every
    module here treats the rows of a batch independently) in fewer, larger kernels. Outputs may be tensors or
    tuples of tensors; the result is in the order of `calls`.
    """
    if not pack:
        return [module(*args) for module, args in calls]
    groups: dict[tuple, list[int]] = {}
    for i, (module, args) in enumerate(calls):
        key = (id(module),) + tuple((tuple(a.shape[1:]), a.dtype, a.device) for a in args)
        groups.setdefault(key, []).append(i)
    results: list[Any] = [None] * len(calls)
    for members in groups.values():
        module = calls[members[0]][0]
        if len(members) == 1:
            results[members[0]] = module(*calls[members[0]][1])
            continue
        sizes = [calls[i][1][0].shape[0] for i in members]
        packed_args = [torch.cat([calls[i][1][j] for i in members]) for j in range(len(calls[members[0]][1]))]
        output = module(*packed_args)
        parts = ([o.split(sizes) for o in output] if isinstance(output, tuple) else [output.split(sizes)])
        for n, i in enumerate(members):
            results[i] = tuple(p[n] for p in parts) if isinstance(output, tuple) else parts[0][n]
    return results


# ---------------------------------------------------------------------------------------------- model
class CRJepaPreTrainedModel(PreTrainedModel):
    config_class = CRJepaConfig
    config: CRJepaConfig
    base_model_prefix = "crjepa"
    main_input_name = "pixel_values_a"
    supports_gradient_checkpointing = True
    _no_split_modules = ["TrunkBlock", "PredictorBlock", "SensorStem"]
    _supports_sdpa = True

    def _init_weights(self, module: nn.Module) -> None:
        std = self.config.initializer_range
        if isinstance(module, HeadLinear) and self.config.head_init == "unit":
            init.trunc_normal_(module.weight, std=module.in_features ** -0.5)
            init.zeros_(module.bias)
        elif isinstance(module, (nn.Linear, nn.Conv2d)):
            init.trunc_normal_(module.weight, std=std)
            if module.bias is not None:
                init.zeros_(module.bias)
        elif isinstance(module, nn.LayerNorm):
            init.ones_(module.weight)
            init.zeros_(module.bias)
        elif isinstance(module, SensorStem):
            init.trunc_normal_(module.pos_embed, std=std)
        elif isinstance(module, Predictor):
            init.trunc_normal_(module.pos_embed, std=std)
            init.trunc_normal_(module.mask_token, std=std)
            init.trunc_normal_(module.target_sensor_embed, std=std)


class CRJepaModel(CRJepaPreTrainedModel):
    """CR-JEPA: `forward` computes the training objective; `get_embeddings` embeds images for retrieval."""

    def __init__(self, config: CRJepaConfig) -> None:
        config.check()
        super().__init__(config)
        self.sensor_names = list(config.sensors)
        self.stems = nn.ModuleDict({name: SensorStem(ch, config) for name, ch in config.sensors.items()})
        if config.trunk_mode == "shared":
            self.trunk = Trunk(config)
        else:
            self.trunks = nn.ModuleDict({name: Trunk(config) for name in self.sensor_names})
        self.route_to_predictor = predictor_for_route(config)
        needed = sorted({self.route_to_predictor[r] for r in config.routes})
        self.predictors = nn.ModuleDict({name: Predictor(config) for name in needed})
        if config.head_mode == "decoupled":
            self.heads = nn.ModuleDict({"unified": RetrievalHead(config), "cross": RetrievalHead(config)})
        else:
            self.heads = nn.ModuleDict({"shared": RetrievalHead(config)})
        self.post_init()

    # ------------------------------------------------------------------ building blocks
    def trunk_for(self, sensor: str) -> Trunk:
        return self.trunk if self.config.trunk_mode == "shared" else self.trunks[sensor]

    def head_name(self, space: str) -> str:
        """The key in self.heads of the head serving `space` (one head serves both in head_mode='single')."""
        if space not in SPACES:
            raise ValueError(f"Unknown embedding space {space!r}; choose from {list(SPACES)}")
        return space if self.config.head_mode == "decoupled" else "shared"

    def head_for(self, space: str) -> RetrievalHead:
        return self.heads[self.head_name(space)]

    def compile_blocks(self, **compile_kwargs: Any) -> "CRJepaModel":
        """Regional torch.compile: compile every trunk and predictor block and the sensor stems in place
        (opt-in, for GPUs).

        All blocks of a kind share one compiled graph (per input shape and grad mode), so compiling is quick;
        the math is unchanged. Shapes are static (equal masked counts), hence dynamic=False by default.
        Keyword arguments go to torch.compile (e.g. mode="max-autotune-no-cudagraphs", backend="eager").
        """
        compile_kwargs.setdefault("dynamic", False)
        for module in self.modules():
            if isinstance(module, (TrunkBlock, PredictorBlock, SensorStem)):
                module.compile(**compile_kwargs)
        return self

    def check_pixel_values(self, pixel_values: torch.Tensor, sensor: str, check_finite: bool = True) -> None:
        """Raise a clear error for an unknown sensor, a wrong shape or non-finite values."""
        if sensor not in self.config.sensors:
            raise ValueError(f"Unknown sensor {sensor!r}; this model was built for sensors {self.sensor_names}")
        channels, size = self.config.sensors[sensor], self.config.image_size
        expected = ("B", channels, size, size)
        if not torch.is_tensor(pixel_values) or pixel_values.ndim != 4 or tuple(pixel_values.shape[1:]) != expected[1:]:
            found = tuple(pixel_values.shape) if torch.is_tensor(pixel_values) else type(pixel_values).__name__
            raise ValueError(f"Sensor {sensor!r}: expected pixel_values of shape {expected}, found {found}. "
                             "Run CRJepaImageProcessor (or preprocess_batch) to normalise and resize native images.")
        if check_finite and not torch.isfinite(pixel_values).all():
            raise ValueError(f"Sensor {sensor!r}: pixel_values contain NaN or inf; CRJepaImageProcessor fills "
                             "non-finite values (nan_policy='fill')")

    def _check_pair(self, pixel_values_a: torch.Tensor, pixel_values_b: torch.Tensor,
                    check_finite: bool) -> dict[str, torch.Tensor]:
        """{sensor: pixel_values} of a batch of pairs, each sensor's input checked, equal batch sizes."""
        name_a, name_b = self.sensor_names
        self.check_pixel_values(pixel_values_a, name_a, check_finite)
        self.check_pixel_values(pixel_values_b, name_b, check_finite)
        if pixel_values_a.shape[0] != pixel_values_b.shape[0]:
            raise ValueError(f"Sensors {name_a!r} and {name_b!r} need the same batch size (pairs), found "
                             f"{pixel_values_a.shape[0]} and {pixel_values_b.shape[0]}")
        return {name_a: pixel_values_a, name_b: pixel_values_b}

    def encode(self, pixel_values: torch.Tensor, sensor: str, index: torch.Tensor | None = None) -> torch.Tensor:
        """z = g(f_sensor(x; index)): trunk latents of the tokens at `index` (all tokens when None)."""
        tokens = self.stems[sensor](pixel_values)
        if index is not None:
            tokens = gather_tokens(tokens, index)
        return self.trunk_for(sensor)(tokens)

    # ------------------------------------------------------------------ inference
    @torch.no_grad()
    def get_embeddings(self, pixel_values: torch.Tensor, sensor: str, space: str = "unified",
                       normalize: bool = True, check_finite: bool = True) -> torch.Tensor:
        """Embed a batch of one sensor with all tokens, no masking: (B, retrieval_dim).

        space="unified" for same-modal search (phi_uni), "cross" for cross-modal search (phi_cross).
        check_finite=False skips the NaN/inf check, the one host synchronisation (for throughput).
        """
        return self.embed(pixel_values, sensor, (space,), normalize, check_finite)[space]

    @torch.no_grad()
    def embed(self, pixel_values: torch.Tensor, sensor: str, spaces: Sequence[str] = SPACES,
              normalize: bool = True, check_finite: bool = True) -> dict[str, torch.Tensor]:
        """{space: (B, retrieval_dim)} for several spaces from ONE trunk pass (get_embeddings per space would
        run the trunk once per space)."""
        names = {space: self.head_name(space) for space in spaces}
        self.check_pixel_values(pixel_values, sensor, check_finite)
        pooled = self.encode(pixel_values, sensor).mean(dim=1)
        projected = {name: self.heads[name](pooled) for name in dict.fromkeys(names.values())}
        return {space: projected[name][1] if normalize else projected[name][0].float() for space, name in names.items()}

    # ------------------------------------------------------------------ training objective
    def forward(
        self,
        pixel_values_a: torch.Tensor,
        pixel_values_b: torch.Tensor,
        sigreg_step: int = 0,
        masks: dict[str, tuple[torch.Tensor, torch.Tensor]] | None = None,
        check_finite: bool = True,
        return_dict: bool = True,
        **kwargs,
    ) -> CRJepaOutput:
        """One training step's objective on a batch of pairs (row i of a is co-registered with row i of b).

        pixel_values_a/b: normalised (B, C_s, S, S) for sensors a and b (config.sensors order).
        sigreg_step: seeds SIGReg's directions (the global step: identical on every process).
        masks: optional {sensor: (visible_index, masked_index)} to fix the masks (tests, benchmarks).
        """
        cfg = self.config
        name_a, name_b = self.sensor_names
        inputs = self._check_pair(pixel_values_a, pixel_values_b, check_finite)
        batch = pixel_values_a.shape[0]
        if masks is None:
            masks = {n: random_masks(batch, cfg.num_patches, cfg.mask_ratio, x.device) for n, x in inputs.items()}

        pack = cfg.pack_sensors
        tokens = {name: self.stems[name](x) for name, x in inputs.items()}
        names = self.sensor_names
        # z_V = g(f(x; V)) and z_M = g(f(x; M)), each subset through the trunk separately; with a shared trunk
        # and pack_sensors both sensors' visible tokens go through it as one batch, and the targets likewise
        def trunk_calls(subset: int, detach: bool = False) -> list[tuple[nn.Module, tuple[torch.Tensor]]]:
            return [(self.trunk_for(n), (gather_tokens(tokens[n].detach() if detach else tokens[n], masks[n][subset]),))
                    for n in names]

        if cfg.stop_gradient_targets:
            z_visible = run_packed(trunk_calls(0), pack)
            with torch.no_grad():
                z_masked = run_packed(trunk_calls(1, detach=True), pack)
        else:  # all four subsets carry gradients: one call when the visible and masked counts agree
            z_all = run_packed(trunk_calls(0) + trunk_calls(1), pack)
            z_visible, z_masked = z_all[:len(names)], z_all[len(names):]
        visible, targets = dict(zip(names, z_visible)), dict(zip(names, z_masked))
        pooled = {n: visible[n].mean(dim=1) for n in names}

        zero = pixel_values_a.new_zeros((), dtype=torch.float32)
        sensor_of = {"a": name_a, "b": name_b}
        active = [r for r in ("aa", "bb", "ab", "ba") if r in cfg.routes]
        calls = []
        for route in active:  # routes served by one predictor (P_cross: ab and ba) are packed into one call
            src, tgt = sensor_of[route[0]], sensor_of[route[1]]
            target_sensor = torch.full((batch,), names.index(tgt), dtype=torch.long, device=pixel_values_a.device)
            predictor = self.predictors[self.route_to_predictor[route]]
            calls.append((predictor, (visible[src], masks[tgt][1], target_sensor)))
        predicted = dict(zip(active, run_packed(calls, pack)))
        route_losses = {r: prediction_loss(predicted[r], targets[sensor_of[r[1]]]) if r in predicted else zero
                        for r in ("aa", "bb", "ab", "ba")}
        loss_pred = sum(cfg.route_weights[r] * route_losses[r] for r in cfg.routes) if cfg.routes else zero

        # heads: each head once on both sensors; r (raw) and e (normalised) per (sensor, head)
        keys = [(n, h) for n in names for h in self.heads]
        projected = dict(zip(keys, run_packed([(self.heads[h], (pooled[n],)) for n, h in keys], pack)))
        embeddings = {f"{n}_{space}": projected[(n, self.head_name(space))] for n in names for space in SPACES}
        e = {k: v[1] for k, v in embeddings.items()}
        loss_cross = info_nce(e[f"{name_a}_cross"], e[f"{name_b}_cross"], cfg.temperature)
        loss_uni = uni_loss(e[f"{name_a}_unified"], e[f"{name_b}_unified"], cfg.temperature)
        # SIGReg on the raw projections (r_uni and r_cross of both sensors; one head: r of both sensors)
        raws = [projected[key][0] for key in keys]
        sigreg_kwargs = dict(step=sigreg_step, num_directions=cfg.sigreg_num_directions,
                             num_knots=cfg.sigreg_num_knots, t_max=cfg.sigreg_t_max)
        if pack:  # one batched matmul for the stack (P, B, R)
            loss_sigreg = sigreg(torch.stack(raws), **sigreg_kwargs).mean()
        else:
            loss_sigreg = torch.stack([sigreg(r, **sigreg_kwargs) for r in raws]).mean()

        loss = loss_pred + cfg.lambda_cross * loss_cross + cfg.lambda_uni * loss_uni + cfg.lambda_sigreg * loss_sigreg
        return CRJepaOutput(
            loss=loss, loss_pred=loss_pred, loss_pred_aa=route_losses["aa"], loss_pred_bb=route_losses["bb"],
            loss_pred_ab=route_losses["ab"], loss_pred_ba=route_losses["ba"], loss_cross=loss_cross,
            loss_uni=loss_uni, loss_sigreg=loss_sigreg,
            embeddings={k: v[1].detach() for k, v in embeddings.items()},
        )


__all__ = ["CRJepaModel", "CRJepaPreTrainedModel", "CRJepaOutput", "SensorStem", "Trunk", "Predictor",
           "RetrievalHead", "random_masks"]
