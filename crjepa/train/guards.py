"""Non-finite losses and gradients: the run stops (or skips the step) before anything is written from them.

``training.nonfinite`` chooses:

* ``stop`` (default): no host sync per step. After every optimiser step `FiniteGuard.observe` folds the loss
  meter's running sums (one per loss term, whatever names ``output.loss_terms()`` uses, e.g. ``pred/s1->s2``)
  and the gradient norm into a per-term "first non-finite step" tensor ON THE DEVICE (a running sum turns NaN /
  inf at the first bad micro-step and stays so until the next log, where it is checked anyway). `check`
  brings that tensor to the host once, and the loop calls it only where something would be written or shown:
  before each log line, evaluation, checkpoint and the final save. A diverged run therefore stops at the
  next of those points (at most ``logging.every_steps`` steps later) naming the first bad step and term,
  and nothing it wrote came from non-finite weights.
* ``skip``: a step whose loss terms or gradient norm are not finite is skipped (no optimiser update; the step
  counter, data order and schedule move on) and reported; more than ``training.max_skipped_steps`` skipped
  steps stop the run. Deciding before the update needs the values on the host: one sync per micro-step, the
  price of this mode (on the CPU it is free).

`check_finite_weights` runs before a checkpoint is written: a checkpoint never holds non-finite weights.
"""

from __future__ import annotations

import math
from typing import Any

import torch

from crjepa.errors import CRJepaError

NONFINITE_MODES = ("stop", "skip")

__all__ = ["FiniteGuard", "NONFINITE_MODES", "NonFiniteError", "check_finite_weights", "json_safe"]


class NonFiniteError(CRJepaError, RuntimeError):
    """Training produced a NaN / inf loss, gradient norm or weight; the message names the step and the term."""


def json_safe(values: dict[str, Any]) -> dict[str, Any]:
    """Non-finite floats as null, so a log line stays valid JSON (json.dumps writes bare NaN otherwise)."""
    return {k: (None if isinstance(v, float) and not math.isfinite(v) else v) for k, v in values.items()}


def check_finite_weights(model: torch.nn.Module, where: str) -> None:
    """Raise NonFiniteError naming the first non-finite parameter (one host sync)."""
    params = [(n, p) for n, p in model.named_parameters()]
    if not params:
        return
    flags = torch.stack([torch.isfinite(p.detach()).all() for _, p in params]).cpu()
    if not bool(flags.all()):
        name = params[int((~flags).nonzero()[0])][0]
        raise NonFiniteError(
            f"refusing to write {where}: parameter {name!r} holds NaN or inf values (training "
            "diverged; lower training.lr)"
        )


class FiniteGuard:
    """Tracks the first non-finite step of every loss term and of the gradient norm (see the module docstring)."""

    def __init__(self, mode: str = "stop", max_skipped: int = 10, lr_hint: Any = None) -> None:
        if mode not in NONFINITE_MODES:
            raise ValueError(f"training.nonfinite must be one of {list(NONFINITE_MODES)}, found {mode!r}")
        self.mode, self.max_skipped, self.lr_hint = mode, int(max_skipped), lr_hint
        self.first: dict[str, torch.Tensor] = {}  # term -> first non-finite optimiser step (-1: none), on device
        self.skipped: list[int] = []
        self._group_bad: list[str] = []

    # ------------------------------------------------------------------ stop mode: on the device, no sync
    def observe(self, step: int, sums: dict[str, torch.Tensor], grad_norm: Any = None) -> None:
        """Fold this optimiser step's running loss sums and gradient norm in (device ops only)."""
        if self.mode != "stop":
            return
        values = dict(sums)
        if grad_norm is not None:
            values["grad_norm"] = torch.as_tensor(grad_norm)
        for name, value in values.items():
            bad = ~torch.isfinite(value.detach()).all()
            first = self.first.get(name)
            if first is None:
                first = torch.full((), -1, dtype=torch.int64, device=value.device)
            self.first[name] = torch.where(bad & (first < 0), torch.full_like(first, int(step)), first)

    def check(self, what: str = "continue") -> None:
        """One host sync: raise NonFiniteError if any term went non-finite since the run started."""
        if not self.first:
            return
        names = list(self.first)
        steps = torch.stack([self.first[n].to("cpu") for n in names]).tolist()
        bad = {n: s for n, s in zip(names, steps) if s >= 0}
        if bad:
            step = min(bad.values())
            terms = [n for n in names if bad.get(n) == step]
            terms.sort(key=lambda n: (n in ("loss", "grad_norm"), n))  # the specific loss term first
            raise NonFiniteError(self._message(step, terms, what))

    def _message(self, step: int, terms: list[str], what: str) -> str:
        lr = f" (lr {self.lr_hint(step):.3g})" if callable(self.lr_hint) else ""
        return (
            f"training diverged: {'loss term' if terms[0] != 'grad_norm' else ''} {terms[0]!r} became NaN/inf "
            f"at step {step}{lr}"
            + (
                f" (also {', '.join(map(repr, terms[1:4]))}"
                + (f" and {len(terms) - 4} more" if len(terms) > 4 else "")
                + ")"
                if terms[1:]
                else ""
            )
            + f"; stopped before it could {what}, so no log line, checkpoint or model holds non-finite values. "
            "Lower training.lr, or set training.nonfinite skip to skip such steps "
            "(at most training.max_skipped_steps)."
        ).replace("  ", " ")

    # ------------------------------------------------------------------ skip mode: decide before the update
    def keep_micro_step(self, terms: dict[str, torch.Tensor]) -> bool:
        """Skip mode: False when a loss term of this micro-step is not finite (its group of micro-steps will be
        skipped); always True in stop mode (no sync)."""
        if self.mode != "skip":
            return True
        names = list(terms)
        finite = torch.stack([torch.isfinite(terms[n].detach()).all() for n in names]).cpu().tolist()
        bad = [n for n, ok in zip(names, finite) if not ok]
        self._group_bad += bad
        return not bad

    def allow_update(self, step: int, grad_norm: Any, say: Any = print) -> bool:
        """Skip mode, on an optimiser step: False (skip the update) when the group had a non-finite loss term or
        the gradient norm is not finite; raises once more than max_skipped steps were skipped."""
        if self.mode != "skip":
            return True
        bad = list(self._group_bad)
        if not bool(torch.isfinite(torch.as_tensor(grad_norm)).all()):
            bad.append("grad_norm")
        self._group_bad = []
        if not bad:
            return True
        self.skipped.append(int(step))
        say(
            f"warning: step {step}: skipped (non-finite {', '.join(dict.fromkeys(bad))}); "
            f"{len(self.skipped)} of at most {self.max_skipped} skipped steps"
        )
        if len(self.skipped) > self.max_skipped:
            raise NonFiniteError(
                f"training diverged: {len(self.skipped)} steps skipped for non-finite "
                f"{', '.join(map(repr, dict.fromkeys(bad)))} (steps {self.skipped[:10]}), more than "
                "training.max_skipped_steps; lower training.lr"
            )
        return False
