"""The paper's learning-rate schedule: linear warm-up from ``lr_start`` to ``lr`` over ``warmup_epochs``, then
cosine decay to ``lr_end`` at the end of ``epochs``; a pure function of the optimiser step, so a resumed run and a
run on any number of processes set the same rate at the same step."""

from __future__ import annotations

import math
from dataclasses import asdict, dataclass
from typing import Any

__all__ = ["Schedule", "learning_rate"]


def learning_rate(
    step: int, total_steps: int, warmup_steps: int, lr_start: float, lr_peak: float, lr_end: float
) -> float:
    """The paper's schedule at optimiser step ``step`` (0-based): linear warm-up lr_start -> lr_peak over
    ``warmup_steps``, then cosine decay to lr_end at ``total_steps``."""
    warmup_steps = min(max(int(warmup_steps), 0), int(total_steps))
    if step < warmup_steps:
        return lr_start + (lr_peak - lr_start) * step / warmup_steps
    progress = min(max((step - warmup_steps) / max(total_steps - warmup_steps, 1), 0.0), 1.0)
    return lr_end + (lr_peak - lr_end) * 0.5 * (1.0 + math.cos(math.pi * progress))


@dataclass(frozen=True)
class Schedule:
    """A run's schedule in optimiser steps; ``schedule(step)`` is the learning rate of step ``step`` (0-based).

    Its fields are what a checkpoint records and a resume must keep (`crjepa.train.checkpoints.check_resume`).
    """

    total_steps: int
    warmup_steps: int
    lr_start: float
    lr_peak: float
    lr_end: float

    @classmethod
    def of_run(cls, training: dict[str, Any], steps_per_epoch: int) -> Schedule:
        """The schedule of a run configuration's ``training`` section at ``steps_per_epoch`` optimiser steps per
        epoch: ``epochs`` and ``warmup_epochs`` rounded to whole steps (at least one step)."""
        return cls(
            total_steps=max(1, round(training["epochs"] * steps_per_epoch)),
            warmup_steps=round(training["warmup_epochs"] * steps_per_epoch),
            lr_start=training["lr_start"],
            lr_peak=training["lr"],
            lr_end=training["lr_end"],
        )

    def __call__(self, step: int) -> float:
        return learning_rate(step, **asdict(self))
