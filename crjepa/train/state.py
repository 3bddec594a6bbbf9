"""What a training run holds: `Run` (fixed for the run: configuration, accelerator, data, model, optimiser,
schedule) and `TrainState` (what changes step by step: counters, the loss meter, gradient norms, timings).
Nothing lives in loose locals of the loop, so each of its steps is testable alone (crjepa.train.loop)."""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, cast

import torch

from crjepa.train.checkpoints import TRAIN_LOG_FILE
from crjepa.train.config import RunConfig
from crjepa.train.data import Pairing
from crjepa.train.guards import FiniteGuard
from crjepa.train.sampler import ShardedEpochSampler
from crjepa.train.schedule import Schedule
from modeling_crjepa.configuration_crjepa import CRJepaConfig
from modeling_crjepa.modeling_crjepa import CRJepaPreTrainedModel

if TYPE_CHECKING:
    from accelerate import Accelerator
    from datasets import Dataset
    from tqdm.auto import tqdm

    from crjepa.eval.retrieval import RetrievalResults
    from crjepa.utils.locks import DirLock

__all__ = ["LossMeter", "Run", "TrainState"]


class LossMeter:
    """Sums every loss term on the device and syncs with the host only when logging (one reduce per log)."""

    def __init__(self) -> None:
        self.sums: dict[str, torch.Tensor] = {}
        self.count = 0

    def add(self, terms: dict[str, torch.Tensor]) -> None:
        for name, value in terms.items():
            value = value.detach().float()
            self.sums[name] = self.sums[name] + value if name in self.sums else value
        self.count += 1

    def reduce(self, accelerator: Accelerator) -> dict[str, float]:
        """Means over the micro-steps since the last call and over processes."""
        if not self.count:
            return {}
        names = list(self.sums)
        stacked = accelerator.reduce(torch.stack([self.sums[n] for n in names]) / self.count, reduction="mean")
        self.sums, self.count = {}, 0
        return dict(zip(names, stacked.tolist(), strict=True))


@dataclass
class Run:
    """What is fixed for a run: configuration, accelerator, data, model, optimiser, schedule.

    ``model`` is the model as accelerate prepared it (DDP / compile wrappers around it: call it for the training
    forward); ``core`` is the model itself (CRJepaForPreTraining, or a baseline of crjepa.baselines.models).
    """

    config: RunConfig
    model_config: CRJepaConfig
    output_dir: Path
    accelerator: Accelerator
    dataset: Dataset  # every split of the main data set (evaluation, the embeddings archive)
    train_set: Dataset  # the rows one epoch draws (crjepa.train.sampler.training_rows)
    sampler: ShardedEpochSampler
    loader: torch.utils.data.DataLoader
    model: torch.nn.Module
    optimizer: torch.optim.Optimizer
    compile_mode: str  # the training.compile scope applied (auto resolved)
    schedule: Schedule
    stop_step: int  # training.max_steps, else the schedule's total_steps
    steps_per_epoch: int
    global_batch: int
    trackers: list[str]
    start_time: float
    lock: DirLock | None = None  # the lock on output_dir (main process)
    guard: FiniteGuard = field(default_factory=FiniteGuard)  # non-finite loss terms / gradient norms
    precision: str = "no"  # the mixed precision that really runs (loop.effective_precision)
    pairing: Pairing | None = None  # which sensors the training rows have (crjepa.train.data.check_pairing)

    @property
    def total_steps(self) -> int:
        """The optimiser steps of the whole schedule (``epochs`` x steps per epoch)."""
        return self.schedule.total_steps

    @property
    def core(self) -> CRJepaPreTrainedModel:
        """The model without its DDP / compile wrappers."""
        return cast(CRJepaPreTrainedModel, self.accelerator.unwrap_model(self.model))

    @property
    def log_file(self) -> Path:
        return self.output_dir / TRAIN_LOG_FILE

    def say(self, *args: object) -> None:
        """Print on the main process (progress and results of the command: stdout)."""
        self.accelerator.print(*args)


@dataclass
class TrainState:
    """What changes during the run: counters, the loss meter, gradient norms, learning rate, timings."""

    step: int = 0  # optimiser steps done
    micro_step: int = 0  # batches done (gradient accumulation: several per optimiser step)
    epoch: int = 0
    lr: float = 0.0
    checkpoint: Path | None = None  # the checkpoint the run resumed from
    random_init: RetrievalResults | None = None  # scores of the randomly initialised model
    meter: LossMeter = field(default_factory=LossMeter)
    grad_norms: list[torch.Tensor] = field(default_factory=list)  # since the last log line, on the device
    last_log_time: float = 0.0
    last_log_micro: int = 0
    train_start: float = 0.0
    train_seconds_before: float = 0.0  # training time of the earlier segments of a resumed run
    progress: tqdm | None = None  # the progress bar (crjepa.train.loop.start)
