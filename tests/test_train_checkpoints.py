"""crjepa/train/checkpoints.py: output folder checks, atomic checkpoints with a manifest, pruning, the newest
complete checkpoint. (The run's failure modes around them, real disks and fsyncs: tests/test_train_reliability.py.)"""

from __future__ import annotations

from pathlib import Path

import pytest

from crjepa.train.checkpoints import (
    check_output_dir,
    latest_checkpoint,
    list_checkpoints,
    prepare_output_dir,
    read_state,
    save_checkpoint,
)
from crjepa.train.config import ConfigError


def test_output_dir_checks(tmp_path):
    assert check_output_dir(tmp_path / "a" / "b").is_dir()
    blocker = tmp_path / "file"
    blocker.write_text("x")
    with pytest.raises(ConfigError, match="is a file, not a folder"):
        check_output_dir(blocker / "out")
    (tmp_path / "run" / "checkpoints" / "step_00000003").mkdir(parents=True)
    (tmp_path / "run" / "checkpoints" / "step_00000003" / "trainer_state.json").write_text("{}")
    with pytest.raises(ConfigError, match="--resume"):
        prepare_output_dir(tmp_path / "run", resume=False, overwrite=False)
    assert prepare_output_dir(tmp_path / "run", resume=True, overwrite=False)
    prepare_output_dir(tmp_path / "run", resume=False, overwrite=True)
    assert not list_checkpoints(tmp_path / "run")


class FakeAccelerator:
    """save_state writes one file; `fail` makes it crash half-way (after writing part of the folder)."""

    is_main_process = True
    fail = False

    def wait_for_everyone(self) -> None:
        pass

    def save_state(self, output_dir: str) -> None:
        Path(output_dir).mkdir(parents=True, exist_ok=True)
        (Path(output_dir) / "model.safetensors").write_text("weights")
        if self.fail:
            raise RuntimeError("disk full")


def test_checkpoints_are_atomic_and_pruned(tmp_path):
    accelerator = FakeAccelerator()
    for step in (2, 4, 6):
        save_checkpoint(accelerator, tmp_path, step, {"micro_step": step}, keep_last=2)
    assert [p.name for p in list_checkpoints(tmp_path)] == ["step_00000004", "step_00000006"]
    accelerator.fail = True
    with pytest.raises(RuntimeError, match="disk full"):
        save_checkpoint(accelerator, tmp_path, 8, {"micro_step": 8}, keep_last=2)
    latest = latest_checkpoint(tmp_path)  # the crash left the previous checkpoint as the one to resume from
    assert latest.name == "step_00000006"
    assert read_state(latest) == {"micro_step": 6, "step": 6, "files": {"model.safetensors": 7}}  # + its manifest
    assert not (tmp_path / "checkpoints" / ".tmp-step_00000008").exists()  # a failed save removes its folder
    (tmp_path / "checkpoints" / ".tmp-step_00000010").mkdir()  # a killed one leaves it: ignored ...
    assert latest_checkpoint(tmp_path).name == "step_00000006"
    accelerator.fail = False
    save_checkpoint(accelerator, tmp_path, 8, {"micro_step": 8}, keep_last=2)
    assert not list((tmp_path / "checkpoints").glob(".tmp-*"))  # ... and cleaned by the next save
    assert latest_checkpoint(tmp_path).name == "step_00000008"
