"""crjepa.train.guards: the non-finite check folds each step in on the device and syncs only when asked."""

from __future__ import annotations

import pytest
import torch

from crjepa.train.guards import FiniteGuard, NonFiniteError, json_safe


def test_observe_never_reads_values_on_the_host_and_check_names_the_first_bad_step_and_term(monkeypatch):
    guard = FiniteGuard("stop")
    sums = {"loss": torch.tensor(0.0), "pred/s1->s2": torch.tensor(0.0), "sigreg": torch.tensor(0.0)}

    def host_read(*args, **kwargs):
        raise AssertionError("observe() moved a value to the host (a GPU sync per step)")

    with monkeypatch.context() as patch:  # every way a tensor reaches Python
        for name in ("item", "tolist", "cpu", "numpy", "__bool__", "__float__", "__int__", "__index__"):
            patch.setattr(torch.Tensor, name, host_read)
        for step in range(1, 6):
            if step == 3:
                sums["pred/s1->s2"] = sums["pred/s1->s2"] + float("nan")  # a running sum stays NaN afterwards
                sums["loss"] = sums["loss"] + float("inf")
            guard.observe(step, sums, grad_norm=torch.tensor(1.0 if step < 4 else float("nan")))
    with pytest.raises(NonFiniteError, match=r"loss term 'pred/s1->s2' became NaN/inf at step 3 \(also 'loss'\)"):
        guard.check("write the log line")


def test_finite_run_passes_and_log_values_stay_json():
    guard = FiniteGuard("stop")
    for step in range(1, 4):
        guard.observe(step, {"loss": torch.tensor(float(step))}, torch.tensor(0.5))
    guard.check()
    assert json_safe({"a": float("nan"), "b": 1.0, "c": None}) == {"a": None, "b": 1.0, "c": None}
