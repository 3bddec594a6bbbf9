"""torch.compile for training (``training.compile``): speed only, never the math.

auto: blocks on CUDA, none elsewhere (Inductor's CPU kernels compile slowly and gain little). blocks: the model's
`compile_blocks()`, a regional compile of the stems and the trunk and predictor blocks (static shapes); model:
that plus the whole training forward compiled as one region (losses, SIGReg, gathers fused too; fastest on one
H200 and the longest to compile: BENCHMARKS.md); none: eager.
"""

from __future__ import annotations

from typing import Any

import torch

from crjepa.train.config import COMPILE_MODES, ConfigError
from modeling_crjepa.modeling_crjepa import CRJepaPreTrainedModel

__all__ = ["compile_for_training", "compiled_modules"]


def compiled_modules(model: torch.nn.Module) -> int:
    """How many of the model's modules (itself included) run through torch.compile."""
    return sum(getattr(m, "_compiled_call_impl", None) is not None for m in model.modules())


def compile_for_training(
    model: CRJepaPreTrainedModel, scope: str, device: torch.device | str, **compile_kwargs: Any
) -> str:
    """Apply training.compile to the model in place, before accelerate wraps it; returns the scope applied
    (none, blocks or model; auto resolved). compile_kwargs go to torch.compile (e.g. mode="reduce-overhead")."""
    if scope not in COMPILE_MODES:
        raise ConfigError(f"training.compile must be one of {list(COMPILE_MODES)}, found {scope!r}")
    if scope == "auto":
        scope = "blocks" if torch.device(device).type == "cuda" else "none"
    if scope in ("blocks", "model"):
        model.compile_blocks(**compile_kwargs)
    if scope == "model":
        model.compile(**compile_kwargs)
    return scope
