"""CR-JEPA (arXiv 2606.00706): sensor stems, a shared trunk, JEPA predictors, SIGReg and two retrieval heads.

Every paper component has a class named after it here:
    SensorStem        f_a, f_b: patch embedding + learned positional encoding, one per sensor
    Trunk             g: the shared transformer (width 512, depth 12, 8 heads), mean pooling, no CLS
    Predictor         P_aa, P_bb, P_cross: query-based (mask queries + target positions; self-attention,
                      cross-attention to the visible context, MLP), depth 6
    RetrievalHead     phi_uni (same-modal search) and phi_cross (cross-modal search), 256-d
    CRJepaEncoderMixin  stems + trunk, input checks, encode, get_embeddings: what the encoders share (CRJepaModel,
                      the baselines of crjepa.baselines)
    CRJepaModel       the encoder for retrieval: stems + trunk + the two heads (no predictors, no loss);
                      forward(pixel_values, sensor=...) -> last_hidden_state, pooler_output, embeddings
    CRJepaForPreTraining  CRJepaModel (as `.crjepa`) + the predictors + the objective: masking, the routes
                      (source, target) among any number of sensors (two or more), and
                      L = L_pred + lambda_cross L_cross + lambda_uni L_uni + lambda_sigreg L_sigreg, one method
                      per term (prediction_terms, cross_terms, unified_terms, sigreg_term)
The loss functions live in losses.py. Speed (config.pack_sensors, `compile_blocks`) never changes the math:
`run_packed` batches calls of one module on same-shaped inputs into one call, e.g. the shared trunk on both
sensors' visible tokens, or P_cross on both cross routes. This file travels as remote code (save_pretrained
copies it with the files it imports relatively): it imports only torch, transformers and its siblings.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass
from functools import partial
from itertools import combinations
from pathlib import Path
from typing import TYPE_CHECKING, Any, overload

import torch
import torch.nn.functional as F
from torch import nn
from transformers import PreTrainedModel
from transformers import initialization as init
from transformers.modeling_layers import GradientCheckpointingLayer
from transformers.modeling_utils import ALL_ATTENTION_FUNCTIONS
from transformers.utils import ModelOutput

from .configuration_crjepa import CRJepaConfig, all_routes, split_route
from .losses import info_nce, prediction_loss, sigreg, uni_loss

SPACES = ("unified", "cross")


# ---------------------------------------------------------------------------------------------- outputs
@dataclass
class CRJepaModelOutput(ModelOutput):
    """Encoder output for one sensor's images (`CRJepaModel.forward`).

    last_hidden_state: (B, N, D) trunk tokens (after the final norm); pooler_output: (B, D) their mean (the
    paper pools by the mean, no CLS token); image_embeds: (B, R) L2-normalised embedding in the asked space
    (`space`, default "unified"); unified_embeds / cross_embeds: both spaces when no space was asked, else the
    asked one; hidden_states: (stem output, each trunk block's output) when output_hidden_states; attentions: each
    trunk block's attention weights (B, heads, N, N) when output_attentions.
    """

    last_hidden_state: torch.Tensor | None = None
    pooler_output: torch.Tensor | None = None
    image_embeds: torch.Tensor | None = None
    unified_embeds: torch.Tensor | None = None
    cross_embeds: torch.Tensor | None = None
    hidden_states: tuple[torch.Tensor, ...] | None = None
    attentions: tuple[torch.Tensor, ...] | None = None


@dataclass
class CRJepaPreTrainingOutput(ModelOutput):
    """Training forward output: the total loss and every term, so each can be logged.

    losses: {term: scalar} keyed by route and sensor pair: "pred" (the weighted sum over the active routes),
    "pred/<source>-><target>" (unweighted, active routes only), "cross" and "uni" (means over sensor pairs),
    "cross/<a>-<b>" and "uni/<a>-<b>" per unordered pair, "sigreg". embeddings: e (normalised) per
    "<sensor>_<space>", from the visible tokens, for monitoring. rows (partially paired batches only, when
    `present` was passed): {term: rows it used} for each route and pair term, "sigreg": projection rows; a 0
    means the term is 0 because no row of the batch had its sensors.
    """

    loss: torch.Tensor | None = None
    losses: dict | None = None
    embeddings: dict | None = None
    rows: dict | None = None

    def loss_terms(self) -> dict[str, torch.Tensor]:
        """{name: scalar tensor} for logging: "loss", every term of `losses`, then "rows/<term>" (row counts of a
        partially paired batch)."""
        rows = {f"rows/{name}": value.float() for name, value in (getattr(self, "rows", None) or {}).items()}
        return {"loss": self.loss, **(self.losses or {}), **rows}


# ---------------------------------------------------------------------------------------------- blocks
def eager_attention_forward(
    module: nn.Module,
    query: torch.Tensor,
    key: torch.Tensor,
    value: torch.Tensor,
    attention_mask: torch.Tensor | None,
    scaling: float | None = None,
    dropout: float = 0.0,
    **kwargs: Any,
) -> tuple[torch.Tensor, torch.Tensor]:
    """softmax(q k^T * scaling) v in plain torch ops (transformers' "eager" kernel): (B, H, L, d) in,
    (B, L, H, d) out, and the attention weights."""
    if scaling is None:
        scaling = query.size(-1) ** -0.5
    weights = torch.matmul(query, key.transpose(2, 3)) * scaling
    if attention_mask is not None:
        weights = weights + attention_mask
    weights = F.softmax(weights, dim=-1, dtype=torch.float32).to(query.dtype)
    weights = F.dropout(weights, p=dropout, training=module.training)
    return torch.matmul(weights, value).transpose(1, 2).contiguous(), weights


class Attention(nn.Module):
    """Multi-head attention; self-attention when context is None.

    The kernel is the config's `_attn_implementation` ("sdpa" by default, "eager", "flash_attention_2" where
    installed, ...) through transformers' ALL_ATTENTION_FUNCTIONS, read at call time, so
    `from_pretrained(..., attn_implementation=...)` and `set_attn_implementation` select it. With
    output_attentions the eager kernel runs (the fused ones return no weights) and (output, weights) is returned.
    """

    is_causal = False

    def __init__(self, dim: int, num_heads: int, qkv_bias: bool = True, config: CRJepaConfig | None = None) -> None:
        super().__init__()
        self.config = config
        self.num_heads = num_heads
        self.head_dim = dim // num_heads
        self.scaling = self.head_dim**-0.5
        self.q = nn.Linear(dim, dim, bias=qkv_bias)
        self.kv = nn.Linear(dim, 2 * dim, bias=qkv_bias)
        self.proj = nn.Linear(dim, dim)

    def attention_function(self) -> Callable:
        implementation = getattr(self.config, "_attn_implementation", None) or "sdpa"
        return ALL_ATTENTION_FUNCTIONS.get_interface(implementation, eager_attention_forward)

    def forward(
        self, x: torch.Tensor, context: torch.Tensor | None = None, output_attentions: bool = False
    ) -> torch.Tensor | tuple[torch.Tensor, torch.Tensor]:
        batch, length, dim = x.shape
        heads, head_dim = self.num_heads, self.head_dim
        if context is None:  # self-attention: q, k, v from one fused matmul (same weights, same math)
            weight = torch.cat([self.q.weight, self.kv.weight])
            bias = None if self.q.bias is None else torch.cat([self.q.bias, self.kv.bias])
            q, k, v = F.linear(x, weight, bias).view(batch, length, 3, heads, head_dim).permute(2, 0, 3, 1, 4)
        else:
            q = self.q(x).view(batch, length, heads, head_dim).transpose(1, 2)
            k, v = self.kv(context).view(batch, context.shape[1], 2, heads, head_dim).permute(2, 0, 3, 1, 4)
        kernel = eager_attention_forward if output_attentions else self.attention_function()
        out, weights = kernel(self, q, k, v, None, dropout=0.0, scaling=self.scaling, is_causal=False)
        out = self.proj(out.reshape(batch, length, dim))
        return (out, weights) if output_attentions else out


class MLP(nn.Module):
    def __init__(self, dim: int, hidden: int) -> None:
        super().__init__()
        self.fc1 = nn.Linear(dim, hidden)
        self.fc2 = nn.Linear(hidden, dim)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.fc2(F.gelu(self.fc1(x)))


class TrunkBlock(GradientCheckpointingLayer):
    """Pre-norm transformer block of the trunk: self-attention, MLP."""

    def __init__(
        self, dim: int, num_heads: int, mlp_ratio: float, eps: float, qkv_bias: bool, config: CRJepaConfig | None = None
    ) -> None:
        super().__init__()
        self.norm1 = nn.LayerNorm(dim, eps=eps)
        self.attn = Attention(dim, num_heads, qkv_bias, config)
        self.norm2 = nn.LayerNorm(dim, eps=eps)
        self.mlp = MLP(dim, int(dim * mlp_ratio))

    def forward(
        self, x: torch.Tensor, output_attentions: bool = False
    ) -> torch.Tensor | tuple[torch.Tensor, torch.Tensor]:
        """x (B, n, D) -> (B, n, D); with output_attentions also the attention weights (B, heads, n, n)."""
        attended = self.attn(self.norm1(x), output_attentions=output_attentions)
        if output_attentions:
            attended, weights = attended
        x = x + attended
        x = x + self.mlp(self.norm2(x))
        return (x, weights) if output_attentions else x


class PredictorBlock(GradientCheckpointingLayer):
    """Predictor block: self-attention among mask queries, cross-attention to the visible context, MLP."""

    def __init__(
        self, dim: int, num_heads: int, mlp_ratio: float, eps: float, qkv_bias: bool, config: CRJepaConfig | None = None
    ) -> None:
        super().__init__()
        self.norm1 = nn.LayerNorm(dim, eps=eps)
        self.self_attn = Attention(dim, num_heads, qkv_bias, config)
        self.norm_q = nn.LayerNorm(dim, eps=eps)
        self.norm_ctx = nn.LayerNorm(dim, eps=eps)
        self.cross_attn = Attention(dim, num_heads, qkv_bias, config)
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
        patches = (
            pixel_values.reshape(batch, channels, height // p, p, width // p, p)
            .permute(0, 2, 4, 1, 3, 5)
            .reshape(batch, (height // p) * (width // p), channels * p * p)
        )
        weight = self.patch_embed.weight.reshape(self.patch_embed.out_channels, channels * p * p)
        return F.linear(patches, weight, self.patch_embed.bias) + self.pos_embed


class Trunk(nn.Module):
    """g: the shared transformer encoder over a subset of tokens (visible, masked, or all)."""

    def __init__(self, config: CRJepaConfig) -> None:
        super().__init__()
        self.blocks = nn.ModuleList(
            TrunkBlock(
                config.hidden_size,
                config.num_attention_heads,
                config.mlp_ratio,
                config.layer_norm_eps,
                config.qkv_bias,
                config,
            )
            for _ in range(config.num_hidden_layers)
        )
        self.norm = nn.LayerNorm(config.hidden_size, eps=config.layer_norm_eps)

    def forward(
        self, tokens: torch.Tensor, hidden_states: list | None = None, attentions: list | None = None
    ) -> torch.Tensor:
        """tokens (B, n, D) -> normalised latents (B, n, D); appends the input and each block's output to
        `hidden_states`, and each block's attention weights to `attentions`, when given."""
        for block in self.blocks:
            if hidden_states is not None:
                hidden_states.append(tokens)
            if attentions is not None:
                tokens, weights = block(tokens, output_attentions=True)
                attentions.append(weights)
            else:
                tokens = block(tokens)
        if hidden_states is not None:
            hidden_states.append(tokens)
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
            PredictorBlock(
                dim, config.predictor_num_heads, config.mlp_ratio, config.layer_norm_eps, config.qkv_bias, config
            )
            for _ in range(config.predictor_depth)
        )
        self.norm = nn.LayerNorm(dim, eps=config.layer_norm_eps)
        self.out_proj = nn.Linear(dim, config.hidden_size)

    def forward(
        self, context: torch.Tensor, target_positions: torch.Tensor, target_sensor: int | torch.Tensor
    ) -> torch.Tensor:
        """context (B, Nv, D), target_positions (B, Nm) long -> predicted latents (B, Nm, D).

        target_sensor: the target sensor's index in config.sensors (0 = a, 1 = b, ...), one int or a (B,) long
        tensor (one per row, so routes with different targets can share one call).
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
            self.proj: nn.Module = nn.Sequential(
                HeadLinear(config.hidden_size, config.head_hidden_size),
                nn.GELU(),
                HeadLinear(config.head_hidden_size, config.retrieval_dim),
            )
        else:
            self.proj = HeadLinear(config.hidden_size, config.retrieval_dim)

    def forward(self, pooled: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        raw = self.proj(self.norm(pooled))
        return raw, F.normalize(raw.float(), dim=-1)


SENSOR_LETTERS = "abcdefghijklmnopqrstuvwxyz"
"""Sensor i is letter i in predictor names (the paper's P_aa, P_bb, P_cross: the names checkpoints hold)."""


def predictor_for_route(config: CRJepaConfig) -> dict[str, str]:
    """{route: name of the predictor module serving it} for every route among the config's sensors.

    Names use the sensors' letters (sensor i = SENSOR_LETTERS[i]), so they do not depend on the sensor names and
    two-sensor models keep the keys of legacy (pre-N-sensor) checkpoints: paper: "aa", "bb", ... per sensor for its
    same-sensor route and "cross" for every cross-sensor route; independent: "ab" for a->b etc., one per route;
    shared: "shared".
    """
    names = list(config.sensors)
    if len(names) > len(SENSOR_LETTERS):
        raise ValueError(f"At most {len(SENSOR_LETTERS)} sensors, found {len(names)}")
    letter = dict(zip(names, SENSOR_LETTERS))
    serving = {}
    for route in all_routes(names):
        source, target = split_route(route)
        if config.predictor_sharing == "paper":
            serving[route] = letter[source] * 2 if source == target else "cross"
        elif config.predictor_sharing == "independent":
            serving[route] = letter[source] + letter[target]
        else:
            serving[route] = "shared"
    return serving


def num_masked(num_patches: int, mask_ratio: float) -> int:
    """How many of ``num_patches`` tokens a mask hides: round(N * mask_ratio), at least 1 and at most N - 1 (both
    the visible and the masked set are non-empty). The one formula of the counts: `random_masks` here and the
    training loop's hashed masks use it."""
    return min(max(int(round(num_patches * mask_ratio)), 1), num_patches - 1)


def random_masks(
    batch: int, num_patches: int, mask_ratio: float, device, generator=None
) -> tuple[torch.Tensor, torch.Tensor]:
    """Independent random split per sample into visible and masked token indices, (B, Nv) and (B, Nm).

    The counts are the same for every sample (static shapes): Nm = `num_masked`(N, mask_ratio).
    """
    masked = num_masked(num_patches, mask_ratio)
    order = torch.rand(batch, num_patches, device=device, generator=generator).argsort(dim=1)
    return order[:, masked:], order[:, :masked]


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
        parts = [o.split(sizes) for o in output] if isinstance(output, tuple) else [output.split(sizes)]
        for n, i in enumerate(members):
            results[i] = tuple(p[n] for p in parts) if isinstance(output, tuple) else parts[0][n]
    return results


# ---------------------------------------------------------------------------------------------- model
class CRJepaPreTrainedModel(PreTrainedModel):
    config_class = CRJepaConfig
    config: CRJepaConfig
    base_model_prefix = "crjepa"
    main_input_name = "pixel_values"
    input_modalities = ("image",)  # type: ignore[assignment]  # transformers' models use tuples; typed str | list there
    supports_gradient_checkpointing = True
    _no_split_modules = ["TrunkBlock", "PredictorBlock", "SensorStem"]
    _supports_sdpa = True
    _supports_flash_attn = True
    _supports_flex_attn = False
    _supports_attention_backend = True

    no_weight_decay_parameter_names = ("pos_embed", "mask_token", "target_sensor_embed")
    """Parameters (by their last name) trained without weight decay, besides every norm and bias (ndim <= 1)."""

    def _init_weights(self, module: nn.Module) -> None:
        std = self.config.initializer_range
        if isinstance(module, HeadLinear) and self.config.head_init == "unit":
            init.trunc_normal_(module.weight, std=module.in_features**-0.5)
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

    def get_input_embeddings(self) -> nn.ModuleDict:
        """The input embeddings: the sensor stems {sensor: SensorStem} of the encoder (`base_model`: `.crjepa` of the
        pretraining model; patch embedding + positional embedding per sensor, a vision model's counterpart of a token
        embedding table)."""
        encoder = self.base_model
        assert isinstance(encoder, CRJepaEncoderMixin)  # every CR-JEPA model is an encoder or holds one
        return encoder.stems

    def set_input_embeddings(self, value: nn.Module) -> None:
        """Replace the stems (the same sensors, each a module mapping (B, C, S, S) pixels to (B, N, D) tokens)."""
        if not isinstance(value, nn.ModuleDict) or list(value) != list(self.config.sensors):
            raise ValueError(
                f"set_input_embeddings takes an nn.ModuleDict with one stem per sensor "
                f"{list(self.config.sensors)}, found {type(value).__name__}"
                + (f" with keys {list(value)}" if isinstance(value, nn.ModuleDict) else "")
            )
        self.base_model.stems = value

    def enable_input_require_grads(self) -> None:
        """Make every stem's output require gradients (adapters / gradient checkpointing on a frozen model):
        transformers' version hooks get_input_embeddings(), a ModuleDict that is never called itself."""

        def make_output_require_grad(module: nn.Module, inputs: Any, output: torch.Tensor) -> None:
            output.requires_grad_(True)

        self._require_grads_hooks = [
            stem.register_forward_hook(make_output_require_grad) for stem in self.get_input_embeddings().values()
        ]
        self._require_grads_hook = self._require_grads_hooks[0]

    def disable_input_require_grads(self) -> None:
        for hook in getattr(self, "_require_grads_hooks", []):
            hook.remove()
        self._require_grads_hooks = []

    def no_weight_decay(self) -> set[str]:
        """Names of the parameters to train without weight decay: norms, biases (every tensor with ndim <= 1),
        positional embeddings, mask tokens and sensor embeddings (the ViT / I-JEPA recipe; optimisers read
        this, as open_clip's and timm's do)."""
        return {
            name
            for name, param in self.named_parameters()
            if param.ndim <= 1 or name.rsplit(".", 1)[-1] in self.no_weight_decay_parameter_names
        }

    def compile_blocks(self, **compile_kwargs: Any) -> CRJepaPreTrainedModel:
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

    def save_pretrained(self, save_directory, *args: Any, **kwargs: Any) -> Any:
        """transformers' save_pretrained, plus: config.json's auto_map names both the encoder (AutoModel) and
        the pretraining model (AutoModelForPreTraining), its custom_pipelines names the crjepa pipeline for
        "image-feature-extraction" (pipeline_crjepa.py is copied beside the model's files), the image processor of
        the config is written when the folder has none (AutoImageProcessor and the pipeline load it), and the crjepa
        model card is written as README.md when the folder has none (`crjepa.hub.cards` renders a fuller one with
        results)."""
        from transformers.dynamic_module_utils import custom_object_save

        from .image_processing_crjepa import CRJepaImageProcessor
        from .pipeline_crjepa import PIPELINE_CONFIG, CRJepaFeatureExtractionPipeline

        if isinstance(self, (CRJepaModel, CRJepaForPreTraining)):
            auto_map = dict(getattr(self.config, "auto_map", None) or {})
            auto_map.update(
                {
                    "AutoConfig": "configuration_crjepa.CRJepaConfig",
                    "AutoModel": "modeling_crjepa.CRJepaModel",
                    "AutoModelForPreTraining": "modeling_crjepa.CRJepaForPreTraining",
                }
            )
            self.config.auto_map = auto_map
            self.config.custom_pipelines = {task: dict(info) for task, info in PIPELINE_CONFIG.items()}
        result = super().save_pretrained(save_directory, *args, **kwargs)
        main = kwargs.get("is_main_process", True)
        if isinstance(self, (CRJepaModel, CRJepaForPreTraining)) and main:
            custom_object_save(CRJepaFeatureExtractionPipeline, save_directory)
            if not (Path(save_directory) / "preprocessor_config.json").exists():
                CRJepaImageProcessor.from_config(self.config).save_pretrained(save_directory)
        readme = Path(save_directory) / "README.md"
        if not readme.exists() and main:
            readme.write_text(default_model_card(self.config, type(self).__name__))
        return result

    # PreTrainedModel.push_to_hub is a functools.wraps object to the type checker, which no method matches;
    # this one takes PushToHubMixin.push_to_hub's arguments and adds keyword-only ones.
    def push_to_hub(  # type: ignore[override]
        self,
        repo_id: str,
        *,
        commit_message: str | None = None,
        commit_description: str | None = None,
        private: bool | None = None,
        token: bool | str | None = None,
        revision: str | None = None,
        create_pr: bool = False,
        max_shard_size: int | str | None = "50GB",
        tags: list[str] | None = None,
        encoder_only: bool = False,
        card: str | None = None,
        api: Any = None,
    ) -> Any:
        """transformers' push_to_hub (every argument means what it means there), with the image processor and the
        crjepa card instead of transformers' generic one.

        The card: ``card`` (text) when given, else the card beside the weights this model was loaded from (a
        trained model's card, with its model-index results), else the card already in the repo (kept), else
        `default_model_card`; ``tags`` are added to its metadata. encoder_only=True uploads CRJepaModel alone
        (retrieval needs no predictors). api: an `huggingface_hub.HfApi`-like client (default: a new HfApi).
        Returns what ``api.upload_folder`` returns (the commit)."""
        import tempfile

        from huggingface_hub import HfApi, ModelCard, ModelCardData

        api = api or HfApi(token=token)
        repo_id = api.create_repo(repo_id, private=private, token=token, exist_ok=True).repo_id
        model = self.get_encoder() if encoder_only and hasattr(self, "crjepa") else self
        text = (
            card
            if card is not None
            else (
                self._own_card()
                or _card_in_repo(api, repo_id, revision, token)
                or default_model_card(self.config, type(model).__name__)
            )
        )
        if tags:
            model_card = ModelCard(text)
            data = model_card.data
            assert isinstance(data, ModelCardData)  # what ModelCard parses its metadata into
            known = list(data.tags or [])
            data.tags = known + [tag for tag in tags if tag not in known]
            text = str(model_card)
        with tempfile.TemporaryDirectory() as tmp:
            (Path(tmp) / "README.md").write_text(text, encoding="utf-8")
            model.save_pretrained(tmp, max_shard_size=max_shard_size)  # + config, code, pipeline, processor
            return api.upload_folder(
                repo_id=repo_id,
                folder_path=tmp,
                commit_message=commit_message or "Upload CR-JEPA model",
                commit_description=commit_description,
                token=token,
                revision=revision,
                create_pr=create_pr,
            )

    def _own_card(self) -> str | None:
        """The README.md beside the weights this model was loaded from (a local folder), if any."""
        folder = Path(str(getattr(self, "name_or_path", "") or getattr(self.config, "_name_or_path", "") or ""))
        readme = folder / "README.md"
        return readme.read_text(encoding="utf-8") if str(folder) not in ("", ".") and readme.is_file() else None


def _card_in_repo(api: Any, repo_id: str, revision: str | None, token: Any) -> str | None:
    """The README.md already in a Hub repo (its text), or None when the repo or the revision has none."""
    from huggingface_hub.errors import EntryNotFoundError, RevisionNotFoundError

    try:
        path = api.hf_hub_download(repo_id=repo_id, filename="README.md", revision=revision, token=token)
    except (EntryNotFoundError, RevisionNotFoundError):
        return None
    return Path(path).read_text(encoding="utf-8")


def default_model_card(config: CRJepaConfig, architecture: str = "CRJepaModel") -> str:
    """A short crjepa card (YAML metadata + usage) for a saved folder that has no card yet."""
    sensors = list(config.sensors)
    first = config.default_sensor or sensors[0]
    directions = ", ".join(f"{s}->{t}" for s in sensors for t in sensors)
    return f"""---
library_name: transformers
pipeline_tag: image-feature-extraction
inference: false
tags:
- crjepa
- remote-sensing
- image-retrieval
- cross-modal-retrieval
---

# CR-JEPA ({architecture})

CR-JEPA (arXiv 2606.00706) for cross-modal remote-sensing retrieval: one stem per sensor
({", ".join(f"{s}: {c} bands" for s, c in config.sensors.items())}), a shared trunk, a **unified** space for
same-modal search and a **cross** space for cross-modal search. Retrieval directions: {directions}.
Needs torch, transformers, numpy and Pillow; not the crjepa package.

```python
from transformers import pipeline

embed = pipeline("image-feature-extraction", model="path/or/repo", trust_remote_code=True)
# image: native bands of one sensor (array, tensor, PIL image or .npy path), channel-first or channel-last
unified = embed(image, sensor="{first}", space="unified")  # same-sensor search
cross = embed(image, sensor="{first}", space="cross")      # cross-sensor search
```

The same vectors from the model: `AutoImageProcessor.from_pretrained(...)(images, sensor="{first}")["pixel_values"]`,
then `AutoModel.from_pretrained(..., trust_remote_code=True).get_embeddings(pixels, sensor="{first}", space="cross")`.
"""


class CRJepaEncoderMixin:
    """The encoder's parts and their use: one stem f_s per sensor, the trunk g (one shared, or one per sensor:
    ``config.trunk_mode``), the input checks and z = g(f_s(x)). CRJepaModel and the baselines (crjepa.baselines) are
    encoders of this kind; each adds its retrieval head(s) and its own `embed`, which `get_embeddings` serves.

    A class using it is a CRJepaPreTrainedModel (listed first among its bases, as transformers lists GenerationMixin
    after the model) that calls `_add_encoder(config)` in its __init__.
    """

    config: CRJepaConfig

    if TYPE_CHECKING:  # PreTrainedModel's, which every class using the mixin is

        @property
        def dtype(self) -> torch.dtype: ...

    def _add_encoder(self, config: CRJepaConfig) -> None:
        """The sensor-specific stems and the trunk(s), under the names every checkpoint uses: ``stems.<sensor>``,
        ``trunk`` / ``trunks.<sensor>``."""
        self.sensor_names = list(config.sensors)
        self.stems = nn.ModuleDict({name: SensorStem(ch, config) for name, ch in config.sensors.items()})
        if config.trunk_mode == "shared":
            self.trunk = Trunk(config)
        else:
            self.trunks = nn.ModuleDict({name: Trunk(config) for name in self.sensor_names})

    def trunk_for(self, sensor: str) -> Trunk:
        """The trunk that encodes `sensor` (the shared one, or the sensor's own)."""
        if self.config.trunk_mode == "shared":
            return self.trunk
        trunk = self.trunks[sensor]
        assert isinstance(trunk, Trunk)  # _add_encoder fills trunks with Trunk modules
        return trunk

    def check_pixel_values(self, pixel_values: torch.Tensor, sensor: str, check_finite: bool = True) -> None:
        """Raise a clear error for an unknown sensor, a wrong shape or non-finite values."""
        if sensor not in self.config.sensors:
            raise ValueError(f"Unknown sensor {sensor!r}; this model was built for sensors {self.sensor_names}")
        channels, size = self.config.sensors[sensor], self.config.image_size
        expected = ("B", channels, size, size)
        if not torch.is_tensor(pixel_values) or pixel_values.ndim != 4 or tuple(pixel_values.shape[1:]) != expected[1:]:
            found = tuple(pixel_values.shape) if torch.is_tensor(pixel_values) else type(pixel_values).__name__
            raise ValueError(
                f"Sensor {sensor!r}: expected pixel_values of shape {expected}, found {found}. "
                "Run CRJepaImageProcessor (or preprocess_batch) to normalise and resize native images."
            )
        if check_finite and not torch.isfinite(pixel_values).all():
            raise ValueError(
                f"Sensor {sensor!r}: pixel_values contain NaN or inf; CRJepaImageProcessor fills "
                "non-finite values (nan_policy='fill')"
            )

    def encode(
        self,
        pixel_values: torch.Tensor,
        sensor: str,
        index: torch.Tensor | None = None,
        hidden_states: list | None = None,
        attentions: list | None = None,
    ) -> torch.Tensor:
        """z = g(f_sensor(x; index)): trunk latents of the tokens at `index` (all tokens when None)."""
        tokens = self.stems[sensor](pixel_values.to(self.dtype))
        if index is not None:
            tokens = gather_tokens(tokens, index)
        return self.trunk_for(sensor)(tokens, hidden_states, attentions)

    def embed(
        self,
        pixel_values: torch.Tensor,
        sensor: str,
        spaces: Sequence[str] = SPACES,
        normalize: bool = True,
        check_finite: bool = True,
    ) -> dict[str, torch.Tensor]:
        """{space: (B, retrieval_dim)} for several spaces from one trunk pass (each encoder defines it)."""
        raise NotImplementedError(f"{type(self).__name__} defines no embed")

    @torch.no_grad()
    def get_embeddings(
        self,
        pixel_values: torch.Tensor,
        sensor: str,
        space: str = "unified",
        normalize: bool = True,
        check_finite: bool = True,
    ) -> torch.Tensor:
        """Embed a batch of one sensor with all tokens, no masking: (B, retrieval_dim).

        space="unified" for same-modal search (phi_uni), "cross" for cross-modal search (phi_cross).
        check_finite=False skips the NaN/inf check, the one host synchronisation (for throughput).
        """
        return self.embed(pixel_values, sensor, (space,), normalize, check_finite)[space]


class CRJepaModel(CRJepaPreTrainedModel, CRJepaEncoderMixin):
    """The CR-JEPA encoder for retrieval: sensor stems, the trunk and the retrieval heads (no predictors, no loss).

    `forward(pixel_values, sensor=...)` embeds one sensor's images (transformers' image-feature-extraction
    pipeline and AutoModel use it); `get_embeddings` / `embed` are the retrieval API. A CRJepaForPreTraining
    checkpoint (and a legacy, pre-N-sensor CRJepaModel one, which held the predictors) loads into it; the
    predictors are dropped silently.
    """

    _keys_to_ignore_on_load_unexpected = [r"^predictors\.", r"^crjepa\.predictors\."]

    def __init__(self, config: CRJepaConfig) -> None:
        config.check()
        super().__init__(config)
        self._add_encoder(config)
        if config.head_mode == "decoupled":
            self.heads = nn.ModuleDict({"unified": RetrievalHead(config), "cross": RetrievalHead(config)})
        else:
            self.heads = nn.ModuleDict({"shared": RetrievalHead(config)})
        self.post_init()

    # ------------------------------------------------------------------ building blocks
    def head_name(self, space: str) -> str:
        """The key in self.heads of the head serving `space` (one head serves both in head_mode='single')."""
        if space not in SPACES:
            raise ValueError(f"Unknown embedding space {space!r}; choose from {list(SPACES)}")
        return space if self.config.head_mode == "decoupled" else "shared"

    def head_for(self, space: str) -> RetrievalHead:
        head = self.heads[self.head_name(space)]
        assert isinstance(head, RetrievalHead)  # __init__ fills heads with RetrievalHead modules
        return head

    def sensor_of(self, pixel_values: torch.Tensor, sensor: str | None) -> str:
        """The sensor of a batch: the one named, else the only sensor with the batch's channel count, else
        config.default_sensor (or the first sensor)."""
        if sensor is not None:
            return sensor
        if torch.is_tensor(pixel_values) and pixel_values.ndim == 4:
            matching = [s for s, c in self.config.sensors.items() if c == pixel_values.shape[1]]
            if len(matching) == 1:
                return matching[0]
        return self.config.default_sensor or self.sensor_names[0]

    # ------------------------------------------------------------------ inference
    def forward(
        self,
        pixel_values: torch.Tensor,
        sensor: str | None = None,
        space: str | None = None,
        output_hidden_states: bool | None = None,
        return_dict: bool | None = None,
        check_finite: bool = True,
        output_attentions: bool | None = None,
        **kwargs: Any,
    ) -> CRJepaModelOutput | tuple:
        """Embed a batch of one sensor with all tokens (no masking).

        pixel_values: (B, C, image_size, image_size) from CRJepaImageProcessor, any float dtype (cast to the
        model's). sensor: which stem (default: `sensor_of`). space: "unified" or "cross" for image_embeds (None:
        both spaces, image_embeds = unified). output_attentions: each trunk block's attention weights (computed with
        the eager kernel). return_dict=False returns the output's set fields as a tuple. Other keyword arguments are
        refused (a TypeError naming them), never ignored.
        """
        if kwargs:
            raise TypeError(f"CRJepaModel.forward got unexpected keyword argument(s) {sorted(kwargs)}")
        output_hidden_states = (
            output_hidden_states if output_hidden_states is not None else self.config.output_hidden_states
        )
        output_attentions = output_attentions if output_attentions is not None else self.config.output_attentions
        return_dict = return_dict if return_dict is not None else self.config.return_dict
        sensor = self.sensor_of(pixel_values, sensor)
        self.check_pixel_values(pixel_values, sensor, check_finite)
        spaces = SPACES if space is None else (space,)
        names = {s: self.head_name(s) for s in spaces}
        hidden_states: list | None = [] if output_hidden_states else None
        attentions: list | None = [] if output_attentions else None
        last_hidden_state = self.encode(pixel_values, sensor, hidden_states=hidden_states, attentions=attentions)
        pooled = last_hidden_state.mean(dim=1)
        projected = {name: self.heads[name](pooled)[1] for name in dict.fromkeys(names.values())}
        embeds = {s: projected[name] for s, name in names.items()}
        output = CRJepaModelOutput(
            last_hidden_state=last_hidden_state,
            pooler_output=pooled,
            image_embeds=embeds[spaces[0]],
            unified_embeds=embeds.get("unified"),
            cross_embeds=embeds.get("cross"),
            hidden_states=tuple(hidden_states) if hidden_states is not None else None,
            attentions=tuple(attentions) if attentions is not None else None,
        )
        return output if return_dict else output.to_tuple()

    @torch.no_grad()
    def embed(
        self,
        pixel_values: torch.Tensor,
        sensor: str,
        spaces: Sequence[str] = SPACES,
        normalize: bool = True,
        check_finite: bool = True,
    ) -> dict[str, torch.Tensor]:
        """{space: (B, retrieval_dim)} for several spaces from ONE trunk pass (get_embeddings per space would
        run the trunk once per space)."""
        names = {space: self.head_name(space) for space in spaces}
        self.check_pixel_values(pixel_values, sensor, check_finite)
        pooled = self.encode(pixel_values, sensor).mean(dim=1)
        projected = {name: self.heads[name](pooled) for name in dict.fromkeys(names.values())}
        return {space: projected[name][1] if normalize else projected[name][0].float() for space, name in names.items()}


class CRJepaForPreTraining(CRJepaPreTrainedModel):
    """CR-JEPA pretraining: the encoder (`self.crjepa`, a CRJepaModel), the predictors and the objective.

    Needs two or more sensors. `forward({sensor: pixel_values}, sigreg_step, masks)` computes L over the config's
    routes; `objective` composes it from the named terms (`latents`, `prediction_terms`, `projections`,
    `cross_terms`, `unified_terms`, `sigreg_term`), each callable on its own. Everything the encoder does (embed,
    check inputs, its stems, trunk and heads) is `model.crjepa`'s, as IJepaForImageClassification keeps `.ijepa`.
    Legacy (pre-N-sensor) checkpoints, whose CRJepaModel held the predictors (keys stems.*, trunk.*, heads.*,
    predictors.*), load as they are: transformers puts the encoder's keys under `crjepa.` (its base_model_prefix
    rule), the predictors' keys are unchanged, and the config reads their route codes (`PAPER_ROUTES`).
    """

    def __init__(self, config: CRJepaConfig) -> None:
        config.check()
        if len(config.sensors) < 2:
            raise ValueError(
                f"Pretraining needs two or more sensors (pairs to predict across), found "
                f"{list(config.sensors)}; CRJepaModel embeds a single sensor"
            )
        super().__init__(config)
        self.crjepa = CRJepaModel(config)
        self.sensor_names = list(config.sensors)
        self.route_to_predictor = predictor_for_route(config)
        needed = sorted({self.route_to_predictor[r] for r in config.routes})
        self.predictors = nn.ModuleDict({name: Predictor(config) for name in needed})
        self.post_init()

    def get_encoder(self, modality: str | None = None) -> CRJepaModel:
        """The encoder (transformers' get_encoder): `self.crjepa`, what push_to_hub(encoder_only=True) uploads."""
        return self.crjepa

    def check_inputs(self, pixel_values: dict[str, torch.Tensor], check_finite: bool) -> dict[str, torch.Tensor]:
        """{sensor: pixel_values} in config order, each checked, all of one batch size (co-registered rows)."""
        if not isinstance(pixel_values, dict):
            raise ValueError(
                "CRJepaForPreTraining takes pixel_values as {sensor: (B, C, S, S) tensor}, found "
                f"{type(pixel_values).__name__}"
            )
        unknown = [s for s in pixel_values if s not in self.config.sensors]
        missing = [s for s in self.sensor_names if s not in pixel_values]
        if unknown or missing:
            raise ValueError(
                f"pixel_values must hold every sensor of the model {self.sensor_names}; "
                f"missing {missing}, unknown {unknown}"
            )
        for sensor in self.sensor_names:
            self.crjepa.check_pixel_values(pixel_values[sensor], sensor, check_finite)
        sizes = {s: pixel_values[s].shape[0] for s in self.sensor_names}
        if len(set(sizes.values())) != 1:
            raise ValueError(f"Every sensor needs the same batch size (co-registered rows), found {sizes}")
        dtype = self.dtype
        return {s: pixel_values[s].to(dtype) for s in self.sensor_names}

    # ------------------------------------------------------------------ training objective
    def forward(
        self,
        pixel_values: dict[str, torch.Tensor],
        sigreg_step: int = 0,
        masks: dict[str, tuple[torch.Tensor, torch.Tensor]] | None = None,
        check_finite: bool = True,
        return_dict: bool | None = None,
        present: dict[str, torch.Tensor] | None = None,
        **kwargs: Any,
    ) -> CRJepaPreTrainingOutput | tuple:
        """One training step's objective on a batch of co-registered rows (row i of every sensor is one place).

        pixel_values: {sensor: normalised (B, C_s, S, S)} for every sensor of the model.
        sigreg_step: seeds SIGReg's directions (the global step: identical on every process).
        masks: optional {sensor: (visible_index, masked_index)} to fix the masks (tests, benchmarks).
        present: optional {sensor: (B,) bool}, which rows really have each sensor (a partially paired batch: the
        loader zero-fills the images of absent sensors; `crjepa.data.loading.PairBatches` gives batch["present"]).
        Each term then uses exactly the rows that have what it needs: a same-sensor route the rows with that
        sensor, a cross route the rows with both, L_cross / L_uni the rows with both as queries and every row
        with the target sensor as a candidate (single-sensor rows are true negatives), SIGReg every projection
        of a present sensor; a term without rows is 0 (never NaN) and `output.rows` says how many rows it used.
        Shapes stay static (every row is computed, absent ones are weighted 0). None: every row has every sensor.
        Other keyword arguments (output_attentions, output_hidden_states, ...) are refused, never ignored: the
        objective returns losses; `model.crjepa(...)` returns the encoder's tokens and attention weights.
        """
        if kwargs:
            raise TypeError(
                f"CRJepaForPreTraining.forward computes the objective and takes no {sorted(kwargs)}; call "
                "the encoder (model.crjepa(pixel_values, sensor=..., output_attentions=True)) for those"
            )
        return_dict = return_dict if return_dict is not None else self.config.return_dict
        inputs = self.check_inputs(pixel_values, check_finite)
        output = self.objective(inputs, sigreg_step, masks, self.check_present(present, inputs))
        return output if return_dict else output.to_tuple()

    def check_present(
        self, present: dict[str, torch.Tensor] | None, inputs: dict[str, torch.Tensor]
    ) -> dict[str, torch.Tensor] | None:
        """{sensor: (B,) float32 weight in {0, 1}} on the inputs' device from {sensor: (B,) bool}; None stays None
        (every row has every sensor). A sensor missing from ``present`` counts as present in every row."""
        if present is None:
            return None
        unknown = [s for s in present if s not in self.config.sensors]
        if unknown:
            raise ValueError(
                f"present names sensor(s) {unknown} the model does not have; its sensors are {self.sensor_names}"
            )
        out = {}
        for sensor in self.sensor_names:
            pixels = inputs[sensor]
            mask = present.get(sensor)
            if mask is None:
                out[sensor] = pixels.new_ones(pixels.shape[0], dtype=torch.float32)
                continue
            mask = torch.as_tensor(mask, device=pixels.device)
            if mask.shape != (pixels.shape[0],):
                raise ValueError(
                    f"present[{sensor!r}] must have shape ({pixels.shape[0]},) (one flag per row), "
                    f"found {tuple(mask.shape)}"
                )
            out[sensor] = mask.to(torch.float32)
        return out

    def objective(
        self,
        inputs: dict[str, torch.Tensor],
        sigreg_step: int,
        masks: dict[str, tuple[torch.Tensor, torch.Tensor]] | None,
        present: dict[str, torch.Tensor] | None = None,
    ) -> CRJepaPreTrainingOutput:
        """L = L_pred + lambda_cross L_cross + lambda_uni L_uni + lambda_sigreg L_sigreg on checked inputs.

        masks: {sensor: (visible_index, masked_index)}, or None to draw them (`random_masks`, per sample and sensor).
        present: {sensor: (B,) float weight in {0, 1}} (`check_present`) or None (every row has every sensor:
        the paper's objective, computed exactly as without the argument)."""
        cfg, names = self.config, self.sensor_names
        first = inputs[names[0]]
        if masks is None:
            masks = {n: random_masks(first.shape[0], cfg.num_patches, cfg.mask_ratio, first.device) for n in names}
        # 1. latents: z_V (context) and z_M (targets) of every sensor
        visible, targets = self.latents(inputs, masks)
        # 2. L_pred: one term per active route, weighted by route
        route_losses = self.prediction_terms(visible, targets, masks, present)
        zero = first.new_zeros((), dtype=torch.float32)
        loss_pred = sum(cfg.route_weights[r] * route_losses[r] for r in cfg.routes) if cfg.routes else zero
        # 3. the retrieval heads on the pooled context: r and e per sensor and head
        projected = self.projections(visible)
        embeddings = {f"{n}_{space}": projected[(n, self.crjepa.head_name(space))] for n in names for space in SPACES}
        e = {k: v[1] for k, v in embeddings.items()}
        # 4. L_cross and L_uni: one term per sensor pair, averaged
        cross_terms, uni_terms = self.cross_terms(e, present), self.unified_terms(e, present)
        loss_cross = mean_of(list(cross_terms.values()))
        loss_uni = mean_of(list(uni_terms.values()))
        # 5. SIGReg on the raw projections
        loss_sigreg = self.sigreg_term(projected, sigreg_step, present)

        loss = loss_pred + cfg.lambda_cross * loss_cross + cfg.lambda_uni * loss_uni + cfg.lambda_sigreg * loss_sigreg
        losses = {
            "pred": loss_pred,
            **{f"pred/{r}": v for r, v in route_losses.items()},
            "cross": loss_cross,
            **cross_terms,
            "uni": loss_uni,
            **uni_terms,
            "sigreg": loss_sigreg,
        }
        used = None
        if present is not None:  # how many rows each term used (0: the term is 0 because no row had its sensors)
            used = {
                **{f"pred/{r}": rows_with(present, *split_route(r)).sum() for r in route_losses},
                **{
                    f"{term}/{a}-{b}": rows_with(present, a, b).sum()
                    for a, b in combinations(names, 2)
                    for term in ("cross", "uni")
                },
                "sigreg": torch.stack([present[n] for n, _ in projected]).sum(),
            }
        return CRJepaPreTrainingOutput(
            loss=loss, losses=losses, rows=used, embeddings={k: v[1].detach() for k, v in embeddings.items()}
        )

    def latents(
        self, inputs: dict[str, torch.Tensor], masks: dict[str, tuple[torch.Tensor, torch.Tensor]]
    ) -> tuple[dict[str, torch.Tensor], dict[str, torch.Tensor]]:
        """({sensor: z_V}, {sensor: z_M}): z_V = g(f(x; V)) the visible tokens' latents (B, Nv, D), z_M = g(f(x; M))
        the masked tokens' (B, Nm, D), each subset through the trunk on its own.

        With stop_gradient_targets z_M carries no gradient. With a shared trunk and pack_sensors every sensor's
        visible tokens go through it as one batch, and the targets likewise (one call for all subsets when the
        targets carry gradients and the counts agree)."""
        names, encoder, pack = self.sensor_names, self.crjepa, self.config.pack_sensors
        tokens = {name: encoder.stems[name](inputs[name]) for name in names}

        def trunk_calls(subset: int, detach: bool = False) -> list[tuple[nn.Module, tuple[torch.Tensor, ...]]]:
            return [
                (encoder.trunk_for(n), (gather_tokens(tokens[n].detach() if detach else tokens[n], masks[n][subset]),))
                for n in names
            ]

        if self.config.stop_gradient_targets:
            z_visible = run_packed(trunk_calls(0), pack)
            with torch.no_grad():
                z_masked = run_packed(trunk_calls(1, detach=True), pack)
        else:  # every subset carries gradients: one call when the visible and masked counts agree
            z_all = run_packed(trunk_calls(0) + trunk_calls(1), pack)
            z_visible, z_masked = z_all[: len(names)], z_all[len(names) :]
        return dict(zip(names, z_visible)), dict(zip(names, z_masked))

    def prediction_terms(
        self,
        visible: dict[str, torch.Tensor],
        targets: dict[str, torch.Tensor],
        masks: dict[str, tuple[torch.Tensor, torch.Tensor]],
        present: dict[str, torch.Tensor] | None = None,
    ) -> dict[str, torch.Tensor]:
        """{route: ||P(z_V^source; M^target) - z_M^target||^2} (unweighted) for the config's routes, in canonical
        order (same-sensor first); the predictor of each route (`route_to_predictor`) is told the target sensor.
        Routes served by one predictor run as one call (pack_sensors). present: each route counts the rows having
        both its sensors."""
        names, batch = self.sensor_names, next(iter(visible.values())).shape[0]
        active = [r for r in all_routes(names) if r in self.config.routes]
        calls = []
        for route in active:
            source, target = split_route(route)
            target_sensor = torch.full((batch,), names.index(target), dtype=torch.long, device=visible[source].device)
            predictor = self.predictors[self.route_to_predictor[route]]
            calls.append((predictor, (visible[source], masks[target][1], target_sensor)))
        predicted = dict(zip(active, run_packed(calls, self.config.pack_sensors)))
        return {
            r: prediction_loss(predicted[r], targets[split_route(r)[1]], rows_with(present, *split_route(r)))
            for r in active
        }

    def projections(self, visible: dict[str, torch.Tensor]) -> dict[tuple[str, str], tuple[torch.Tensor, torch.Tensor]]:
        """{(sensor, head name): (r, e)}: every retrieval head on every sensor's pooled visible latents (the mean of
        z_V; r raw, e = r / ||r||), each head once on all sensors (pack_sensors)."""
        heads = self.crjepa.heads
        pooled = {n: visible[n].mean(dim=1) for n in self.sensor_names}
        keys = [(n, h) for n in self.sensor_names for h in heads]
        return dict(zip(keys, run_packed([(heads[h], (pooled[n],)) for n, h in keys], self.config.pack_sensors)))

    def cross_terms(
        self, embeddings: dict[str, torch.Tensor], present: dict[str, torch.Tensor] | None = None
    ) -> dict[str, torch.Tensor]:
        """{"cross/<a>-<b>": symmetric InfoNCE of e_a and e_b in the cross space} per sensor pair; embeddings:
        {"<sensor>_cross": (B, R) e}. present: the rows with both sensors are the queries, every row with the target
        sensor a candidate."""
        return {
            f"cross/{a}-{b}": info_nce(
                embeddings[f"{a}_cross"],
                embeddings[f"{b}_cross"],
                self.config.temperature,
                rows_with(present, a, b),
                rows_with(present, a),
                rows_with(present, b),
            )
            for a, b in combinations(self.sensor_names, 2)
        }

    def unified_terms(
        self, embeddings: dict[str, torch.Tensor], present: dict[str, torch.Tensor] | None = None
    ) -> dict[str, torch.Tensor]:
        """{"uni/<a>-<b>": L_uni of e_a and e_b in the unified space (InfoNCE + 1 - cosine)} per sensor pair;
        embeddings: {"<sensor>_unified": (B, R) e}. present: as `cross_terms`."""
        return {
            f"uni/{a}-{b}": uni_loss(
                embeddings[f"{a}_unified"],
                embeddings[f"{b}_unified"],
                self.config.temperature,
                rows_with(present, a, b),
                rows_with(present, a),
                rows_with(present, b),
            )
            for a, b in combinations(self.sensor_names, 2)
        }

    def sigreg_term(
        self,
        projected: dict[tuple[str, str], tuple[torch.Tensor, torch.Tensor]],
        step: int,
        present: dict[str, torch.Tensor] | None = None,
    ) -> torch.Tensor:
        """L_sigreg: the mean of SIGReg over the raw projections r of `projections` (r_uni and r_cross of every
        sensor; one head: r of every sensor), with the directions of `step`. present: each projection counts the
        rows of its sensor. pack_sensors: one batched matmul for the stack (P, B, R)."""
        cfg = self.config
        raws = [r for r, _ in projected.values()]
        statistic = partial(
            sigreg,
            step=step,
            num_directions=cfg.sigreg_num_directions,
            num_knots=cfg.sigreg_num_knots,
            t_max=cfg.sigreg_t_max,
        )
        if cfg.pack_sensors:
            stacked_weight = None if present is None else torch.stack([rows_with(present, s) for s, _ in projected])
            return statistic(torch.stack(raws), weight=stacked_weight).mean()
        weights = [rows_with(present, sensor) for sensor, _ in projected]
        return torch.stack([statistic(r, weight=w) for r, w in zip(raws, weights)]).mean()


@overload
def rows_with(present: dict[str, torch.Tensor], *sensors: str) -> torch.Tensor: ...
@overload
def rows_with(present: None, *sensors: str) -> None: ...
@overload
def rows_with(present: dict[str, torch.Tensor] | None, *sensors: str) -> torch.Tensor | None: ...
def rows_with(present: dict[str, torch.Tensor] | None, *sensors: str) -> torch.Tensor | None:
    """The (B,) weight of the rows that have every one of `sensors` (the product of their presence weights), or
    None when `present` is None (every row has every sensor)."""
    if present is None:
        return None
    weight = present[sensors[0]]
    for sensor in sensors[1:]:
        weight = weight * present[sensor]
    return weight


def mean_of(terms: list[torch.Tensor]) -> torch.Tensor:
    """The mean of scalar terms; one term is returned as is (two sensors: bit-identical to the pair's term, as the
    two-sensor reference recorded it)."""
    return terms[0] if len(terms) == 1 else torch.stack(terms).mean()


__all__ = [
    "CRJepaModel",
    "CRJepaForPreTraining",
    "CRJepaPreTrainedModel",
    "CRJepaEncoderMixin",
    "CRJepaModelOutput",
    "CRJepaPreTrainingOutput",
    "SensorStem",
    "Trunk",
    "Predictor",
    "RetrievalHead",
    "random_masks",
    "predictor_for_route",
    "eager_attention_forward",
]
