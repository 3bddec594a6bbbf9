"""A run's output folder and its checkpoints: layout, checks before anything is written, the lock, atomic
checkpoints with a manifest, pruning, and what a resume must find and keep.

- Output folder: checked writable before the data checks without creating anything (`check_output_path`),
  created once every check passed (`prepare_output_dir`), locked by the run's main process (`lock_output_dir`).
- Checkpoints: `accelerator.save_state` into a temporary folder, trainer_state.json (the run's state and the
  manifest of every file with its size) written last, everything fsynced, then renamed into ``checkpoints/step_N``;
  the last ``keep_last`` complete checkpoints are kept. A crash at any point leaves the previous one resumable.
- Resume: the newest complete checkpoint (`latest_checkpoint`), refused when the run's settings changed
  (`check_resume`), loaded with its files checked first (`load_checkpoint`); train_log.jsonl drops the lines
  after the resumed step (`truncate_log`).
"""

from __future__ import annotations

import json
import os
import re
import shutil
import tempfile
import time
from collections.abc import Callable
from pathlib import Path
from typing import TYPE_CHECKING, Any

import torch

from crjepa.errors import CRJepaError
from crjepa.train.config import ConfigError

if TYPE_CHECKING:
    from accelerate import Accelerator

    from crjepa.train.state import Run, TrainState
    from crjepa.utils.locks import DirLock

__all__ = [
    "CHECKPOINT_PREFIX",
    "RANDOM_INIT_FILE",
    "RESULTS_FILE",
    "RESUME_KEYS",
    "RUN_LOCK_FILE",
    "STATE_FILE",
    "TRAIN_LOG_FILE",
    "CheckpointError",
    "check_fresh_start",
    "check_output_dir",
    "check_output_path",
    "check_resume",
    "checkpoint_dir",
    "checkpoint_problem",
    "checkpoint_state",
    "latest_checkpoint",
    "list_checkpoints",
    "load_checkpoint",
    "lock_output_dir",
    "prepare_output_dir",
    "read_state",
    "resume_settings",
    "save_checkpoint",
    "truncate_log",
]

# ---------------------------------------------------------------------------------------------- the folder
RUN_LOCK_FILE = ".crjepa-run.lock"
"""Held (crjepa.utils.locks) by the main process of the run writing an output folder."""
TRAIN_LOG_FILE = "train_log.jsonl"
"""One strict-JSON line per logged step (non-finite values as null)."""
RESULTS_FILE = "results.json"
"""The trained model's scores, the random initialisation's, timings and where everything is."""
RANDOM_INIT_FILE = "results_random_init.json"
"""The scores of the randomly initialised model (kept for a resumed run's card)."""
CHECKPOINT_PREFIX = "step_"
STATE_FILE = "trainer_state.json"
"""Written last into a checkpoint folder: a folder without it is incomplete and never resumed from."""
MANIFEST_KEY = "files"
"""trainer_state.json lists every file of its checkpoint with its size (checked before a resume)."""
RESUME_KEYS = (
    "global_batch",
    "steps_per_epoch",
    "total_steps",
    "epochs",
    "seed",
    "warmup_steps",
    "lr_start",
    "lr_peak",
    "lr_end",
)
"""Run settings a checkpoint records; a resume that changes one of them would reinterpret the step count, the
data order or the schedule, and is refused."""


class CheckpointError(CRJepaError, RuntimeError):
    """A checkpoint could not be written (disk full, permissions); the message names it and what to do."""


def check_output_dir(path: str | os.PathLike) -> Path:
    """Create ``path`` if needed and prove it is writable (a probe file), or raise a ConfigError that says why."""
    path = Path(path).expanduser()
    try:
        path.mkdir(parents=True, exist_ok=True)
        with tempfile.NamedTemporaryFile(dir=path, prefix=".write-test-"):
            pass
    except OSError as exc:
        blocker = next((p for p in [path, *path.parents] if p.exists() and not p.is_dir()), None)
        reason = f"{blocker} is a file, not a folder" if blocker is not None else exc.strerror or str(exc)
        raise ConfigError(
            f"Cannot write to the output directory {str(path)!r}: {reason}. Choose another --output_dir."
        ) from exc
    return path.resolve()


def check_output_path(path: str | os.PathLike) -> Path:
    """Like `check_output_dir` but creates nothing: ``path`` is a folder, or can be created in its nearest
    existing ancestor (a folder we may write). Used before the data checks, so a failed run leaves no folder."""
    path = Path(path).expanduser().absolute()
    existing = next(p for p in [path, *path.parents] if p.exists() or p == p.parent)
    problem = None
    if not existing.is_dir():
        problem = f"{existing} is a file, not a folder"
    elif not os.access(existing, os.W_OK | os.X_OK):
        problem = f"{existing} is not writable"
    else:
        try:  # root ignores permissions; a read-only file system does not
            with tempfile.NamedTemporaryFile(dir=existing, prefix=".write-test-"):
                pass
        except OSError as exc:
            problem = exc.strerror or str(exc)
    if problem:
        raise ConfigError(
            f"Cannot write to the output directory {str(path)!r}: {problem}. Choose another --output_dir."
        )
    return path


def check_fresh_start(path: Path, resume: bool, overwrite: bool) -> None:
    """Refuse to mix a fresh run with an earlier run's checkpoints (which a later --resume would pick up)."""
    if path.is_dir() and list_checkpoints(path) and not resume and not overwrite:
        raise ConfigError(
            f"The output directory {str(path)!r} holds checkpoints of an earlier run. Pass "
            "--resume to continue it, --overwrite_output_dir to start over, or another --output_dir."
        )


def prepare_output_dir(path: str | os.PathLike, resume: bool, overwrite: bool) -> Path:
    """`check_output_dir`, then refuse to mix a fresh run with an earlier run's checkpoints (which a later
    --resume would pick up), unless ``overwrite`` removes them."""
    path = check_output_dir(path)
    if list_checkpoints(path) and not resume:
        if not overwrite:
            raise ConfigError(
                f"The output directory {str(path)!r} holds checkpoints of an earlier run. Pass "
                "--resume to continue it, --overwrite_output_dir to start over, or another --output_dir."
            )
        shutil.rmtree(checkpoint_dir(path), ignore_errors=True)
    return path


def lock_output_dir(output_dir: Path, main_process: bool) -> DirLock | None:
    """The run's lock on its output folder (main process only): a second run on the same folder stops at once
    naming the holder; a stale lock of a killed run is reported and taken over (crjepa.utils.locks)."""
    if not main_process:
        return None
    from crjepa.utils.locks import DirLock

    return DirLock(output_dir / RUN_LOCK_FILE, what="training run", folder=output_dir).acquire()


# ---------------------------------------------------------------------------------------------- checkpoints
def checkpoint_dir(output_dir: str | os.PathLike) -> Path:
    """The checkpoints folder of a run's output folder."""
    return Path(output_dir) / "checkpoints"


def list_checkpoints(output_dir: str | os.PathLike) -> list[Path]:
    """Checkpoint folders ``step_N`` holding trainer_state.json (written last), oldest first."""
    root = checkpoint_dir(output_dir)
    if not root.is_dir():
        return []
    found = [
        p
        for p in root.iterdir()
        if p.is_dir() and re.fullmatch(rf"{CHECKPOINT_PREFIX}\d+", p.name) and (p / STATE_FILE).is_file()
    ]
    return sorted(found, key=lambda p: int(p.name[len(CHECKPOINT_PREFIX) :]))


def checkpoint_problem(checkpoint: Path) -> str | None:
    """Why a checkpoint cannot be resumed from (a file of its manifest missing or of another size), or None."""
    try:
        state = read_state(checkpoint)
    except (OSError, ValueError) as exc:
        return f"{STATE_FILE} is unreadable ({exc})"
    manifest = state.get(MANIFEST_KEY)
    if not isinstance(manifest, dict):  # written before manifests existed: at least the weights must be there
        return (
            None
            if any(checkpoint.glob("model*.safetensors")) or any(checkpoint.glob("pytorch_model*.bin"))
            else "its model weights are missing"
        )
    for name, size in manifest.items():
        file = checkpoint / name
        if not file.is_file():
            return f"{name} is missing"
        if file.stat().st_size != size:
            return f"{name} has {file.stat().st_size} bytes, {size} were written"
    return None


def latest_checkpoint(output_dir: str | os.PathLike, report: Callable[[str], None] | None = None) -> Path | None:
    """The newest complete checkpoint; an incomplete newer one (a file of its manifest missing or truncated) is
    passed over, and ``report`` (a print-like callable) says which and why."""
    for checkpoint in reversed(list_checkpoints(output_dir)):
        problem = checkpoint_problem(checkpoint)
        if problem is None:
            return checkpoint
        if report is not None:
            report(f"warning: checkpoint {checkpoint} is incomplete ({problem}); falling back to the previous one")
    return None


def read_state(checkpoint: str | os.PathLike) -> dict[str, Any]:
    """A checkpoint's trainer_state.json."""
    return json.loads((Path(checkpoint) / STATE_FILE).read_text())


def save_checkpoint(
    accelerator: Accelerator,
    output_dir: str | os.PathLike,
    step: int,
    state: dict[str, Any],
    keep_last: int = 2,
    model: torch.nn.Module | None = None,
) -> Path:
    """`accelerator.save_state` into ``checkpoints/.tmp-step_N``, then (main process) write trainer_state.json
    (with the manifest of the files and their sizes), fsync every file and the folder, and rename to
    ``checkpoints/step_N``; older complete checkpoints beyond ``keep_last`` are removed after.

    A crash at any point leaves the previous complete checkpoint untouched and resumable. With ``model``, its
    weights are checked finite first (`crjepa.train.guards.check_finite_weights`): never a NaN checkpoint. An
    OSError (disk full, read-only) removes the partial folder and raises CheckpointError.
    """
    from crjepa.utils.atomic import fsync_dir, fsync_tree

    root = checkpoint_dir(output_dir)
    final = root / f"{CHECKPOINT_PREFIX}{step:08d}"
    temporary = root / f".tmp-{final.name}"
    if model is not None:
        from crjepa.train.guards import check_finite_weights

        check_finite_weights(model, f"checkpoint {final}")
    try:
        if accelerator.is_main_process:
            root.mkdir(parents=True, exist_ok=True)
            shutil.rmtree(temporary, ignore_errors=True)
        accelerator.wait_for_everyone()
        accelerator.save_state(str(temporary))
        accelerator.wait_for_everyone()
        if accelerator.is_main_process:
            manifest = {
                str(p.relative_to(temporary)): p.stat().st_size for p in sorted(temporary.rglob("*")) if p.is_file()
            }
            (temporary / STATE_FILE).write_text(
                json.dumps({**state, "step": step, MANIFEST_KEY: manifest}, indent=2) + "\n"
            )
            fsync_tree(temporary)
            if final.exists():  # a checkpoint of the same step from an earlier, interrupted run
                shutil.rmtree(final)
            os.replace(temporary, final)
            fsync_dir(root)
            for old in list_checkpoints(output_dir)[: -max(int(keep_last), 1)]:
                shutil.rmtree(old, ignore_errors=True)
            for stale in root.glob(".tmp-*"):
                shutil.rmtree(stale, ignore_errors=True)
    except Exception as exc:  # torch's zip writer and safetensors report a full disk in their own words
        from crjepa.utils.atomic import write_failure

        failure = write_failure(exc, temporary)  # before the partial files are removed: the disk is still full
        shutil.rmtree(temporary, ignore_errors=True)
        if failure is None:
            raise
        previous = latest_checkpoint(output_dir)
        raise CheckpointError(
            f"could not write checkpoint {final} ({failure.strerror or failure}"
            + (f": {failure.filename}" if failure.filename else "")
            + "); "
            + (
                f"the previous checkpoint {previous} is intact: free space (or fix the folder) and rerun with --resume"
                if previous
                else "no earlier checkpoint exists: free space (or fix the folder) and rerun"
            )
        ) from None
    accelerator.wait_for_everyone()
    return final


# ---------------------------------------------------------------------------------------------- resume
def resume_settings(run: Run) -> dict[str, Any]:
    """The run's values of `RESUME_KEYS`: what a checkpoint records and a resume must keep."""
    schedule = run.schedule
    return {
        "global_batch": run.global_batch,
        "steps_per_epoch": run.steps_per_epoch,
        "total_steps": run.total_steps,
        "epochs": run.config["training"]["epochs"],
        "seed": int(run.config["seed"]),
        "warmup_steps": schedule.warmup_steps,
        "lr_start": schedule.lr_start,
        "lr_peak": schedule.lr_peak,
        "lr_end": schedule.lr_end,
    }


def checkpoint_state(run: Run, state: TrainState) -> dict[str, Any]:
    """What trainer_state.json records besides the step: where the data order stands, the training time so far
    and the settings a resume must keep (RESUME_KEYS); and the run configuration, from which `crjepa
    export-checkpoint` rebuilds the model."""
    return {
        "micro_step": state.micro_step,
        "epoch": state.epoch,
        "total_steps": run.total_steps,
        "train_seconds": state.train_seconds_before + time.perf_counter() - state.train_start,
        **resume_settings(run),
        "run_config": run.config,
    }


def check_resume(run: Run, saved: dict[str, Any], checkpoint: Path) -> None:
    """Refuse a resume that changes the global batch, epochs, data size, seed or schedule: the saved step count
    would be reinterpreted (another data order, another learning rate at the same step)."""
    now = resume_settings(run)
    changed = [
        f"{key}: {saved[key]!r} in the checkpoint, {now[key]!r} now"
        for key in RESUME_KEYS
        if key in saved and saved[key] != now[key]
    ]
    if changed:
        raise ConfigError(
            f"--resume from {checkpoint} would change the run: " + "; ".join(changed) + ". The step "
            "count, data order and schedule would be reinterpreted: resume with the settings of the "
            "checkpoint (data.batch_size, training.epochs, ...), or start a new --output_dir."
        )


def load_checkpoint(run: Run, checkpoint: Path) -> dict[str, Any]:
    """Load ``checkpoint`` into the run's model, optimiser and random states (`accelerator.load_state`) after
    `check_resume` and a check of its safetensors headers; returns its trainer_state.json. A checkpoint that does
    not fit the model or optimiser is one ConfigError, not a traceback."""
    from crjepa.utils.files import FileCheckError, check_safetensors_in

    saved = read_state(checkpoint)
    check_resume(run, saved, checkpoint)
    try:
        check_safetensors_in(checkpoint)
    except FileCheckError as exc:
        raise ConfigError(f"Cannot resume: {exc}") from None
    try:
        run.accelerator.load_state(str(checkpoint))
    except (RuntimeError, KeyError, ValueError, OSError) as exc:
        reason = (str(exc).strip().splitlines() or [type(exc).__name__])[0]
        raise ConfigError(
            f"Cannot resume from {checkpoint}: it does not fit this model or optimiser "
            f"({reason[:300]}). Resume with the model.* settings it was trained with, or start "
            "over with --overwrite_output_dir or another --output_dir."
        ) from None
    return saved


def truncate_log(log_file: Path, step: int) -> None:
    """Drop train_log.jsonl lines after ``step`` (written after the checkpoint the run resumes from), atomically."""
    if not log_file.is_file():
        return
    kept = []
    for line in log_file.read_text().splitlines():
        try:
            if int(json.loads(line)["step"]) <= step:
                kept.append(line)
        except (ValueError, KeyError, TypeError):
            continue  # a torn last line of a killed run
    tmp = log_file.with_name(f".{log_file.name}.tmp")
    tmp.write_text("".join(f"{line}\n" for line in kept))
    os.replace(tmp, log_file)
