"""The training run's failure modes (crjepa/train/loop.py, checkpoints.py, guards.py): NaN, two runs on one
folder, checks before the work, strict resume, atomic outputs, published paths, what precision really ran.

In-process runs of `train_accelerate.main` on tiny synthetic data (a few seconds each); one subprocess run
where a real second process is the point."""

from __future__ import annotations

import errno
import json
import os
import re
import signal
import subprocess
import sys
from pathlib import Path

import pytest

import train_accelerate

from helpers import small_run_args, wait_for

ROOT = Path(__file__).resolve().parent.parent
TINY = [*small_run_args(64, 32, 16), "--eval.before_training", "false", "--embeddings.write", "false"]
DIVERGE = ["--warmup_epochs", "0", "--lr_start", "1e12", "--lr", "1e12"]


@pytest.fixture(autouse=True)
def _offline(monkeypatch):
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    monkeypatch.setenv("OMP_NUM_THREADS", "1")
    from accelerate.state import AcceleratorState

    AcceleratorState._reset_state(reset_partial_state=True)  # each in-process run picks its own precision


def strict_json_lines(path: Path) -> list[dict]:
    def no_nan(token: str) -> None:
        raise ValueError(f"bare {token} in {path}: not valid JSON")

    return [json.loads(line, parse_constant=no_nan) for line in path.read_text().splitlines()]


def error_line(capsys) -> str:
    """The run's error message (one `error:` entry, possibly listing several problems), never a traceback."""
    err = capsys.readouterr().err
    assert err.count("error: ") == 1 and "Traceback" not in err, err[-3000:]
    return err[err.index("error: ") :]


# ---------------------------------------------------------------------------------------------- non-finite values
def test_diverging_run_stops_naming_step_and_term_before_writing_anything(tmp_path, capsys):
    out = tmp_path / "run"
    code = train_accelerate.main(TINY + DIVERGE + ["--output_dir", str(out), "--checkpoint.every_steps", "2"])
    assert code == 2
    err = error_line(capsys)
    assert re.search(r"training diverged: loss term '[\w/>-]+' became NaN/inf at step 2 \(lr", err), err
    assert "training.nonfinite skip" in err
    assert not (out / "checkpoints").exists() and not (out / "model").exists()  # no NaN checkpoint or model
    logged = strict_json_lines(out / "train_log.jsonl")
    assert [r["step"] for r in logged] == [1]  # the finite step is logged, the NaN one is not


def test_skip_mode_skips_non_finite_steps_up_to_the_limit_and_the_log_stays_json(tmp_path, capsys):
    out = tmp_path / "run"
    code = train_accelerate.main(
        TINY + DIVERGE + ["--output_dir", str(out), "--training.nonfinite", "skip", "--training.max_skipped_steps", "3"]
    )
    assert code == 2
    err = error_line(capsys)
    assert "4 steps skipped for non-finite" in err and "steps [2, 3, 4, 5]" in err, err
    logged = strict_json_lines(out / "train_log.jsonl")
    assert [r["step"] for r in logged] == [1, 2, 3, 4]
    assert logged[1].get("train/loss") is None and logged[1]["train/grad_norm"] is None  # skipped: nothing to average


# ---------------------------------------------------------------------------------------------- one run per folder
@pytest.mark.slow
def test_second_run_on_a_folder_stops_at_once_and_a_killed_runs_lock_is_reported(tmp_path, capsys, monkeypatch):
    from crjepa.train import loop

    out = tmp_path / "run"
    first = subprocess.Popen(
        [
            sys.executable,
            "train_accelerate.py",
            *TINY,
            "--epochs",
            "200",
            "--checkpoint.every_steps",
            "3",
            "--output_dir",
            str(out),
        ],
        cwd=ROOT,
        env={**os.environ, "PYTHONPATH": str(ROOT)},
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    try:
        wait_for((out / "checkpoints" / "step_00000003").is_dir, first, "its first checkpoint was complete")
        assert (out / ".crjepa-run.lock").is_file()

        def no_data_work(*args, **kwargs):
            raise AssertionError("the second run went on to load data before checking the lock")

        with monkeypatch.context() as patched:
            patched.setattr(loop, "load_data", no_data_work)
            assert train_accelerate.main(TINY + ["--epochs", "200", "--output_dir", str(out), "--resume"]) == 2
        err = error_line(capsys)
        assert f"in use by another crjepa process: pid {first.pid} on host" in err and "training run" in err, err
    finally:
        first.send_signal(signal.SIGKILL)
        first.wait()
    # the killed run left its lock: the next run says so, takes over and resumes
    code = train_accelerate.main(TINY + ["--epochs", "200", "--output_dir", str(out), "--resume", "--max_steps", "1"])
    captured = capsys.readouterr()
    assert code == 0, captured.err[-2000:]
    assert f"stale lock of pid {first.pid}" in captured.err and "no longer running" in captured.err
    assert "Resuming from" in captured.out and not (out / ".crjepa-run.lock").exists()


# ---------------------------------------------------------------------------------------------- checks first
def test_data_problems_fail_before_training_and_leave_no_folder(tmp_path, capsys):
    from crjepa.data.loading import load_paired_dataset

    out = tmp_path / "out"
    assert train_accelerate.main(TINY + ["--output_dir", str(out), "--eval.k", "40"]) == 2
    err = error_line(capsys)
    assert "eval.k=40 is larger than the 31 candidates per query" in err and "lower eval.k" in err
    assert not out.exists()  # the output folder is created only once every check passed

    data = tmp_path / "dupes"
    test = load_paired_dataset("synthetic", split="test", num_train=0, num_validation=0, num_test=32, image_size=32)
    for shard in range(2):  # the same rows twice: duplicate ids
        test.to_parquet(str(data / "data" / f"test-{shard:05d}-of-00002.parquet"))
    train = load_paired_dataset("synthetic", split="train", num_train=32, num_validation=0, num_test=0, image_size=32)
    train.to_parquet(str(data / "data" / "train-00000-of-00001.parquet"))
    args = TINY + ["--data.options", "{}", "--data.source", str(data), "--output_dir", str(out)]
    assert train_accelerate.main(args) == 2
    assert "32 id(s) of " in error_line(capsys) and not out.exists()

    shard = data / "data" / "train-00000-of-00001.parquet"  # a truncated training shard
    shard.write_bytes(shard.read_bytes()[:2000])
    assert train_accelerate.main(args) == 2
    err = error_line(capsys)
    assert f"{shard} is not a readable Parquet file" in err and "export the data again" in err and not out.exists()

    args_empty = TINY + [
        "--data.options",
        "{num_train: 64, num_validation: 0, num_test: 32, image_size: 32}",
        "--data.train_split",
        "validation",
        "--output_dir",
        str(out),
    ]
    assert train_accelerate.main(args_empty) == 2
    assert "training split 'validation'" in error_line(capsys) and not out.exists()


# ---------------------------------------------------------------------------------------------- resume
@pytest.mark.slow
def test_resume_is_strict_falls_back_to_a_complete_checkpoint_and_does_not_repeat_the_log(tmp_path, capsys):
    out = tmp_path / "run"
    base = TINY + ["--output_dir", str(out), "--checkpoint.every_steps", "2", "--checkpoint.keep_last", "3"]
    assert train_accelerate.main(base + ["--max_steps", "5"]) == 0
    assert [p.name for p in sorted((out / "checkpoints").iterdir())] == [
        "step_00000002",
        "step_00000004",
        "step_00000005",
    ]
    capsys.readouterr()
    # a changed global batch or epoch count would reinterpret the step count and schedule: refused
    assert train_accelerate.main(base + ["--resume", "--data.batch_size", "32"]) == 2
    assert "global_batch: 16 in the checkpoint, 32 now" in error_line(capsys)
    assert train_accelerate.main(base + ["--resume", "--epochs", "3"]) == 2
    assert "epochs: 2 in the checkpoint, 3 now" in error_line(capsys)
    # another architecture: one line, no traceback
    assert train_accelerate.main(base + ["--resume", "--model.retrieval_dim", "48"]) == 2
    assert "does not fit this model" in error_line(capsys)
    # the newest checkpoint lost its weights (a kill, a bad copy): resume from the previous complete one
    for weights in (out / "checkpoints" / "step_00000005").glob("model*.safetensors"):
        weights.unlink()
    seconds_before = json.loads((out / "checkpoints" / "step_00000004" / "trainer_state.json").read_text())[
        "train_seconds"
    ]
    assert train_accelerate.main(base + ["--resume"]) == 0
    captured = capsys.readouterr()
    assert "step_00000005 is incomplete (model.safetensors is missing)" in captured.out + captured.err
    assert "Resuming from" in captured.out and "step 4 of 8" in captured.out
    assert [r["step"] for r in strict_json_lines(out / "train_log.jsonl")] == list(range(1, 9))  # no repeats
    results = json.loads((out / "results.json").read_text())
    assert results["train_seconds"] > seconds_before  # the earlier segment counts too


# ------------------------------------------------------------ outputs: published paths, precision, atomic folders
def test_card_names_no_local_path_and_the_precision_that_really_ran(tmp_path, capsys):
    out = tmp_path / "private-folder" / "run"
    code = train_accelerate.main(
        TINY
        + [
            "--output_dir",
            str(out),
            "--max_steps",
            "1",
            "--embeddings.write",
            "true",
            "--training.mixed_precision",
            "fp16",
        ]
    )
    assert code == 0, capsys.readouterr().err[-2000:]
    card = (out / "model" / "README.md").read_text()
    assert str(tmp_path) not in card and "private-folder" not in card
    assert "output_dir: run" in card
    assert "fp16 was requested but is not supported on cpu" in card
    assert "fp16 was requested but is not supported on cpu" in capsys.readouterr().err
    for published in (out / "embeddings").rglob("*"):
        if published.is_file() and published.suffix in (".json", ".md"):
            assert str(tmp_path) not in published.read_text(), published


def test_model_folder_is_written_whole_or_not_at_all(tmp_path, capsys, monkeypatch):
    """A failure (disk full, kill) while the card is written used to leave model/ with weights and no card."""
    from huggingface_hub import ModelCard

    def disk_full(self, path, *args, **kwargs):
        raise OSError(errno.ENOSPC, "No space left on device", str(path))

    monkeypatch.setattr(ModelCard, "save", disk_full)
    out = tmp_path / "run"
    assert train_accelerate.main(TINY + ["--output_dir", str(out), "--max_steps", "1"]) == 2
    err = error_line(capsys)
    assert "No space left on device" in err and "README.md" in err
    assert not (out / "model").exists() and [p.name for p in out.iterdir() if p.name.startswith(".model")] == []


def test_disk_full_during_a_checkpoint_keeps_the_previous_one(tmp_path, capsys, monkeypatch):
    from accelerate import Accelerator

    real_save = Accelerator.save_state
    calls = []

    def save_then_fill_the_disk(self, output_dir, *args, **kwargs):
        calls.append(output_dir)
        if len(calls) == 2:
            Path(output_dir).mkdir(parents=True, exist_ok=True)
            (Path(output_dir) / "model.safetensors").write_bytes(b"half")
            raise OSError(errno.ENOSPC, "No space left on device", str(Path(output_dir) / "optimizer.bin"))
        return real_save(self, output_dir, *args, **kwargs)

    monkeypatch.setattr(Accelerator, "save_state", save_then_fill_the_disk)
    out = tmp_path / "run"
    assert train_accelerate.main(TINY + ["--output_dir", str(out), "--checkpoint.every_steps", "2"]) == 2
    err = error_line(capsys)
    assert "could not write checkpoint" in err and "step_00000004" in err and "No space left on device" in err
    assert "the previous checkpoint" in err and "step_00000002 is intact" in err and "--resume" in err
    assert [p.name for p in (out / "checkpoints").iterdir()] == ["step_00000002"]  # no partial folder


def test_checkpoint_files_and_folder_are_fsynced_before_the_publishing_rename(tmp_path, monkeypatch):
    import torch
    from accelerate import Accelerator

    from crjepa.train.checkpoints import save_checkpoint

    accelerator = Accelerator(cpu=True)
    model = torch.nn.Linear(4, 4)
    optimizer = torch.optim.AdamW(model.parameters())
    model, optimizer = accelerator.prepare(model, optimizer)
    events = []
    real_fsync, real_replace = os.fsync, os.replace
    monkeypatch.setattr(
        os, "fsync", lambda fd: (events.append(("fsync", os.readlink(f"/proc/self/fd/{fd}"))), real_fsync(fd))
    )
    monkeypatch.setattr(os, "replace", lambda a, b: (events.append(("replace", str(a))), real_replace(a, b)))
    final = save_checkpoint(accelerator, tmp_path, 3, {"micro_step": 3}, model=model)
    publish = events.index(("replace", str(tmp_path / "checkpoints" / ".tmp-step_00000003")))
    synced = {path for kind, path in events[:publish] if kind == "fsync"}
    temporary = str(tmp_path / "checkpoints" / ".tmp-step_00000003")
    for file in final.iterdir():
        assert f"{temporary}/{file.name}" in synced, file.name
    assert temporary in synced  # the folder itself
    assert ("fsync", str(tmp_path / "checkpoints")) in events[publish:]  # and the rename, after it
    # never a checkpoint with non-finite weights
    with torch.no_grad():
        model.weight[0, 0] = float("nan")
    from crjepa.train.guards import NonFiniteError

    with pytest.raises(NonFiniteError, match="parameter 'weight' holds NaN"):
        save_checkpoint(accelerator, tmp_path, 4, {"micro_step": 4}, model=model)
    assert not (tmp_path / "checkpoints" / "step_00000004").exists()


# ---------------------------------------------------------------------------------------------- a real full disk
def _tiny_weight_bytes() -> int:
    from modeling_crjepa import CRJepaConfig, CRJepaForPreTraining

    return CRJepaForPreTraining(CRJepaConfig.from_preset("tiny")).num_parameters() * 4


def test_a_real_full_disk_during_a_checkpoint_or_the_final_save_is_one_line(small_disk, capsys):
    """On a real full disk (tmpfs + fallocate, not a faked OSError) torch's zip writer raised a RuntimeError and
    left checkpoints/.tmp-step_N, and the final save raised a SafetensorError: tracebacks. Now both are one line
    naming the disk, the partial folder is removed and the previous checkpoint stays resumable."""
    from helpers import fill_disk

    weights = _tiny_weight_bytes()  # a checkpoint holds them ~3 times (weights, AdamW's two moments)
    disk = small_disk("24m")
    out = disk / "run"
    # room for model.safetensors but not optimizer.bin: torch's zip writer fails inside the first checkpoint
    filler = fill_disk(disk, leave=weights * 3 // 2)
    assert train_accelerate.main(TINY + ["--output_dir", str(out), "--checkpoint.every_steps", "2"]) == 2
    err = error_line(capsys)
    assert "could not write checkpoint" in err and "No space left on device" in err, err
    assert not [p for p in out.rglob("*") if p.name.startswith(".tmp-")]
    filler.unlink()
    # room for the last checkpoint but not for the model folder after it: the final save fails
    out = disk / "run2"
    filler = fill_disk(disk, leave=weights * 7 // 2)
    assert train_accelerate.main(TINY + ["--output_dir", str(out), "--max_steps", "3"]) == 2
    err = error_line(capsys)
    assert "No space left on device" in err and "--resume continues from the last checkpoint" in err, err
    assert [p.name for p in (out / "checkpoints").iterdir()] == ["step_00000003"]
    assert not (out / "model").exists() and not [p for p in out.iterdir() if ".tmp-" in p.name]
    filler.unlink()
    assert train_accelerate.main(TINY + ["--output_dir", str(out), "--max_steps", "3", "--resume"]) == 0
    assert (out / "model" / "model.safetensors").is_file()


@pytest.mark.slow
def test_under_accelerate_launch_a_user_error_is_one_line_without_the_launchers_traceback(tmp_path):
    """`accelerate launch` (the documented launcher) printed every early error twice, then 15 lines of its own
    traceback (a CalledProcessError repeating the script's stderr; with two processes a ChildFailedError report).
    Now the script prints the line once and stops the launcher quietly, for one process and for two."""
    from helpers import free_port

    env = {**os.environ, "PYTHONPATH": str(ROOT), "HF_HUB_OFFLINE": "1", "ACCELERATE_USE_CPU": "yes"}
    launches = [
        ["--num_processes", "1"],
        ["--multi_gpu", "--num_processes", "2", "--main_process_port", str(free_port())],
    ]
    for launch in launches:
        for bad in (["--logging.every_steps", "0"], ["--bogus", "1"]):
            proc = subprocess.run(
                ["accelerate", "launch", *launch, "train_accelerate.py", *bad, "--output_dir", str(tmp_path / "out")],
                cwd=ROOT,
                env=env,
                capture_output=True,
                text=True,
                timeout=300,
            )
            assert proc.returncode != 0 and "Traceback" not in proc.stderr, (launch, bad, proc.stderr[-3000:])
            lines = [line for line in proc.stderr.splitlines() if "error:" in line or "Error" in line]
            assert len(lines) == 1 and lines[0].startswith("error: "), (launch, bad, proc.stderr[-3000:])
            assert not (tmp_path / "out").exists()
