"""CR-JEPA's loss terms in pure torch: SIGReg, symmetric InfoNCE, the unified-head loss and the prediction loss.

L = L_pred + lambda_cross * L_cross + lambda_uni * L_uni + lambda_sigreg * L_sigreg  (docs/PAPER.md, Objective).

Partially paired batches (beyond the paper): every term takes an optional per-row weight or validity (B,) in
{0, 1} saying which rows have what the term needs; a term is then computed on exactly those rows with static
shapes (masked logits, weighted means), and is 0, not NaN, when no row qualifies. Without it, every row counts
and the value is the paper's.

This module travels with the model as remote code: it imports only torch (and its sibling devices.py).
"""

from __future__ import annotations

import torch
import torch.nn.functional as F

from .devices import host_to_device


def _dist_ready() -> bool:
    return torch.distributed.is_available() and torch.distributed.is_initialized()


@torch.compiler.disable  # a CPU generator seeded per step: run eagerly, never traced or specialised on `step`
def sigreg_directions(
    dim: int, num_directions: int, step: int, seed: int = 0, device: torch.device | str | None = None
) -> torch.Tensor:
    """J random unit directions in R^dim as a (dim, J) float32 matrix.

    Drawn from a CPU generator seeded with (seed, step), so every process of a distributed run draws the
    same directions at the same step, and they change every step (LeJEPA's recipe).
    """
    generator = torch.Generator(device="cpu")
    generator.manual_seed((int(seed) * 1_000_003 + int(step)) % (2**63 - 1))
    directions = torch.randn(dim, num_directions, generator=generator, dtype=torch.float32)
    return host_to_device(directions / directions.norm(dim=0, keepdim=True), device)


@torch.compiler.disable  # constants built eagerly on the CPU, also inside a compiled forward
def epps_pulley_knots(num_knots: int = 17, t_max: float = 3.0, device=None) -> tuple[torch.Tensor, torch.Tensor]:
    """Knots t_k on [0, t_max] and weights w_k = trapezoid weight * exp(-t_k^2 / 2).

    Built on the CPU and copied once (pinned): writing the end weights into a GPU tensor would be two
    synchronising host-to-device copies per call.
    """
    t = torch.linspace(0.0, float(t_max), int(num_knots), dtype=torch.float32)
    dt = float(t_max) / (int(num_knots) - 1)
    trapezoid = torch.full_like(t, dt)
    trapezoid[0] = trapezoid[-1] = dt / 2
    knots = host_to_device(torch.stack([t, trapezoid * torch.exp(-t.square() / 2)]), device)
    return knots[0], knots[1]


class _AllReduceSum(torch.autograd.Function):
    """Sum over all processes with a gradient: forward all-reduces a copy, backward all-reduces the gradient
    (every process's loss depends on every process's rows). The math of torch.distributed.nn.functional's
    all_reduce, which torch deprecates (a FutureWarning on every call) in favour of a private module."""

    @staticmethod
    def forward(ctx: torch.autograd.function.FunctionCtx, tensor: torch.Tensor) -> torch.Tensor:
        tensor = tensor.clone(memory_format=torch.contiguous_format)
        torch.distributed.all_reduce(tensor, op=torch.distributed.ReduceOp.SUM)
        return tensor

    @staticmethod
    def backward(ctx: torch.autograd.function.FunctionCtx, grad_output: torch.Tensor) -> torch.Tensor:
        return _AllReduceSum.apply(grad_output)


def _all_reduce_sum(x: torch.Tensor) -> torch.Tensor:
    """Differentiable sum over all processes (identity when torch.distributed is not initialised)."""
    if not _dist_ready() or torch.distributed.get_world_size() == 1:
        return x
    return _AllReduceSum.apply(x)


def weighted_mean(values: torch.Tensor, weight: torch.Tensor | None) -> torch.Tensor:
    """mean(values) when weight is None, else sum(weight * values) / max(sum(weight), 1): 0 when no row counts."""
    if weight is None:
        return values.mean()
    weight = weight.to(values.dtype)
    return (values * weight).sum() / weight.sum().clamp(min=1)


def _all_reduce_mean(x: torch.Tensor) -> torch.Tensor:
    """Differentiable mean over all processes (identity when torch.distributed is not initialised)."""
    if not _dist_ready() or torch.distributed.get_world_size() == 1:
        return x
    return _AllReduceSum.apply(x) / torch.distributed.get_world_size()


def sigreg(
    projections: torch.Tensor,
    step: int = 0,
    num_directions: int = 1024,
    num_knots: int = 17,
    t_max: float = 3.0,
    seed: int = 0,
    directions: torch.Tensor | None = None,
    weight: torch.Tensor | None = None,
) -> torch.Tensor:
    """SIGReg (LeJEPA): sliced Epps-Pulley test of the projections against an isotropic Gaussian.

    For R in R^{B x D}, s_ij = <R_i, u_j> over J unit directions u_j, and
        SIGReg = (B / J) sum_j sum_k w_k [ (mean_i cos(t_k s_ij) - exp(-t_k^2/2))^2 + (mean_i sin(t_k s_ij))^2 ].
    Under torch.distributed the per-slice means are averaged across processes (equal local batches) and B
    is the global batch, so every process returns the same value. Computed in float32 whatever the autocast.
    A stack (P, B, D) of P projections gives the P statistics (P,) from one batched matmul, each equal to
    SIGReg of its (B, D) slice with the same directions.

    weight: optional (B,) (or (P, B) for a stack) in {0, 1}: only rows with weight 1 count (rows lacking the
    sensor in a partially paired batch); B becomes their number over all processes, and a slice without any row
    gives 0. Local batches may then differ in size across processes.
    """
    if projections.ndim not in (2, 3):
        raise ValueError(
            f"SIGReg expects a (batch, dim) matrix or a (projections, batch, dim) stack, found shape "
            f"{tuple(projections.shape)}"
        )
    x = projections.float()
    if directions is None:
        directions = sigreg_directions(x.shape[-1], num_directions, step, seed, device=x.device)
    t, weights = epps_pulley_knots(num_knots, t_max, device=x.device)
    with torch.autocast(device_type=x.device.type, enabled=False):
        slices = x @ directions.to(x.device, torch.float32)  # (..., B, J): one matmul for all directions
        phase = slices.unsqueeze(-1) * t  # (..., B, J, K)
        gaussian_cf = torch.exp(-t.square() / 2)
        global_batch: int | torch.Tensor  # B: the row count, or (weighted) the per-slice counts of rows that count
        if weight is None:
            cos_mean = _all_reduce_mean(torch.cos(phase).mean(dim=-3))  # (..., J, K)
            sin_mean = _all_reduce_mean(torch.sin(phase).mean(dim=-3))
            global_batch = x.shape[-2] * (torch.distributed.get_world_size() if _dist_ready() else 1)
        else:  # weighted sums and row counts, summed over processes
            w = weight.to(device=x.device, dtype=torch.float32)[..., None, None]  # (..., B, 1, 1)
            count = _all_reduce_sum(w.sum(dim=-3))  # (..., 1, 1)
            cos_mean = _all_reduce_sum((torch.cos(phase) * w).sum(dim=-3)) / count.clamp(min=1)
            sin_mean = _all_reduce_sum((torch.sin(phase) * w).sum(dim=-3)) / count.clamp(min=1)
            global_batch = count[..., 0, 0]
        error = (cos_mean - gaussian_cf).square() + sin_mean.square()  # (..., J, K)
        return global_batch * (error @ weights).mean(dim=-1)


MASKED_LOGIT = -1e9
"""The logit given to a pair that is not a candidate (a row lacking one of the sensors): exp() of it is 0 in float32."""


def info_nce(
    e_a: torch.Tensor,
    e_b: torch.Tensor,
    temperature: float = 0.1,
    valid: torch.Tensor | None = None,
    has_a: torch.Tensor | None = None,
    has_b: torch.Tensor | None = None,
) -> torch.Tensor:
    """Symmetric batch InfoNCE between paired, L2-normalised embeddings (row i of a matches row i of b).

    Partially paired batches: ``valid`` (B,) in {0, 1} marks the rows that have both sensors; only they are
    queries (they have a positive). The candidates of an a->b query are the rows that have b (``has_b``, default
    ``valid``): a row with b alone is a true negative (another place), so single-sensor rows still sharpen the
    contrast. Other pairs get MASKED_LOGIT (static shapes); the value equals InfoNCE over those rows alone, and
    is 0 when no row is valid.
    """
    logits = (e_a.float() @ e_b.float().T) / temperature
    target = torch.arange(logits.shape[0], device=logits.device)
    if valid is None:
        return (F.cross_entropy(logits, target) + F.cross_entropy(logits.T, target)) / 2
    eye = torch.eye(len(valid), dtype=torch.bool, device=logits.device)
    columns_b = (has_b if has_b is not None else valid).bool()
    columns_a = (has_a if has_a is not None else valid).bool()
    a_to_b = logits.masked_fill(~(columns_b[None, :] | eye), MASKED_LOGIT)
    b_to_a = logits.T.masked_fill(~(columns_a[None, :] | eye), MASKED_LOGIT)
    per_row = (
        F.cross_entropy(a_to_b, target, reduction="none") + F.cross_entropy(b_to_a, target, reduction="none")
    ) / 2
    return weighted_mean(per_row, valid)


def uni_loss(
    e_a: torch.Tensor,
    e_b: torch.Tensor,
    temperature: float = 0.1,
    valid: torch.Tensor | None = None,
    has_a: torch.Tensor | None = None,
    has_b: torch.Tensor | None = None,
) -> torch.Tensor:
    """L_uni = InfoNCE(e_a, e_b) + mean_i (1 - cos(e_a_i, e_b_i)) on the unified head's embeddings (partially
    paired: InfoNCE as in `info_nce`, the cosine term over the ``valid`` rows)."""
    cosine = F.cosine_similarity(e_a.float(), e_b.float(), dim=-1)
    return info_nce(e_a, e_b, temperature, valid, has_a, has_b) + weighted_mean(1 - cosine, valid)


def prediction_loss(predicted: torch.Tensor, target: torch.Tensor, weight: torch.Tensor | None = None) -> torch.Tensor:
    """||z_hat_M - z_M||^2 averaged over samples, masked tokens and channels (a per-element MSE); with ``weight``
    (B,) only the rows with weight 1 count (every row has the same number of masked tokens)."""
    if weight is None:
        return F.mse_loss(predicted.float(), target.float())
    per_row = (predicted.float() - target.float()).square().flatten(1).mean(dim=1)
    return weighted_mean(per_row, weight)


__all__ = [
    "sigreg",
    "sigreg_directions",
    "epps_pulley_knots",
    "info_nce",
    "uni_loss",
    "prediction_loss",
    "weighted_mean",
    "MASKED_LOGIT",
]
