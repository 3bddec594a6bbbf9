"""The optimiser of a run: AdamW with the paper's weight decay on the parameters the model says take it.

The model declares which parameters train without weight decay (`no_weight_decay()`, as open_clip's models do;
CR-JEPA: norms, biases, positional embeddings, mask tokens, sensor embeddings); the optimiser reads that
declaration and matches no names itself.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import torch

__all__ = ["make_optimizer", "no_decay_names", "param_groups"]


def _unwrapped(model: torch.nn.Module) -> torch.nn.Module:
    """The model inside a DDP / accelerate wrapper (``.module``), or the model itself."""
    inner = getattr(model, "module", model)
    return inner if isinstance(inner, torch.nn.Module) else model


def no_decay_names(model: torch.nn.Module) -> list[str]:
    """Names of the parameters trained without weight decay, as the model declares them (`no_weight_decay()`,
    CR-JEPA: norms, biases, positional embeddings, mask tokens, sensor embeddings); a model without the
    method: every tensor with ndim <= 1."""
    model = _unwrapped(model)
    declaration = getattr(model, "no_weight_decay", None)
    declared = set(declaration()) if callable(declaration) else None
    return [n for n, p in model.named_parameters() if (n in declared if declared is not None else p.ndim <= 1)]


def param_groups(model: torch.nn.Module, weight_decay: float) -> list[dict[str, Any]]:
    """AdamW groups: weight decay on every parameter except those the model exempts (`no_decay_names`)."""
    exempt = set(no_decay_names(model))
    decay: list[torch.nn.Parameter] = []
    no_decay: list[torch.nn.Parameter] = []
    for name, param in _unwrapped(model).named_parameters():
        if param.requires_grad:
            (no_decay if name in exempt else decay).append(param)
    return [{"params": decay, "weight_decay": weight_decay}, {"params": no_decay, "weight_decay": 0.0}]


def make_optimizer(
    model: torch.nn.Module, lr: float, weight_decay: float, betas: Sequence[float], device: torch.device | str
) -> torch.optim.AdamW:
    """AdamW over `param_groups` (decay on weight matrices only); the fused CUDA kernel on GPUs (same update)."""
    fused = True if torch.device(device).type == "cuda" else None
    beta1, beta2 = betas
    return torch.optim.AdamW(param_groups(model, weight_decay), lr=lr, betas=(beta1, beta2), fused=fused)
