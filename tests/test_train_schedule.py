"""crjepa/train/schedule.py: the paper's warm-up + cosine schedule, and a run's schedule in optimiser steps."""

from __future__ import annotations

import math

import pytest

from crjepa.train.schedule import Schedule, learning_rate


def test_schedule_warm_up_then_cosine():
    kw = dict(total_steps=100, warmup_steps=15, lr_start=1e-4, lr_peak=1e-3, lr_end=1e-6)
    lrs = [learning_rate(s, **kw) for s in range(101)]
    assert lrs[0] == pytest.approx(1e-4) and lrs[15] == pytest.approx(1e-3) and lrs[100] == pytest.approx(1e-6)
    assert lrs[8] == pytest.approx(1e-4 + 0.9e-3 * 8 / 15)
    assert all(a < b for a, b in zip(lrs[:15], lrs[1:16])) and all(a >= b for a, b in zip(lrs[15:], lrs[16:]))
    middle = 15 + 85 / 2
    assert learning_rate(int(middle), **kw) == pytest.approx(
        1e-6 + (1e-3 - 1e-6) * 0.5 * (1 + math.cos(math.pi * (int(middle) - 15) / 85))
    )
    assert learning_rate(0, total_steps=10, warmup_steps=50, lr_start=1e-4, lr_peak=1e-3, lr_end=1e-6) == 1e-4


def test_a_runs_schedule_rounds_epochs_to_whole_steps_and_follows_the_papers_curve():
    training = {"epochs": 2.5, "warmup_epochs": 0.5, "lr_start": 1e-4, "lr": 1e-3, "lr_end": 1e-6}
    schedule = Schedule.of_run(training, steps_per_epoch=10)
    assert (schedule.total_steps, schedule.warmup_steps) == (25, 5)
    assert (schedule.lr_start, schedule.lr_peak, schedule.lr_end) == (1e-4, 1e-3, 1e-6)  # `lr` is the peak
    assert [schedule(s) for s in range(26)] == [learning_rate(s, 25, 5, 1e-4, 1e-3, 1e-6) for s in range(26)]
    assert schedule(5) == pytest.approx(1e-3) and schedule(25) == pytest.approx(1e-6)
    assert Schedule.of_run({**training, "epochs": 0.01}, steps_per_epoch=10).total_steps == 1  # at least one step
