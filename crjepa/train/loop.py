"""The training run of train_accelerate.py, as named steps (I-JEPA's src/train.py, open_clip's train_one_epoch).

    run = setup(argv)                      # 1. configuration, lock, Hub access, data + checks, model, optimiser,
                                           #    then the output folder (nothing is created before the checks)
    state = start(run)                     # 2. resume, trackers, the random-initialisation baseline
    for batch in batches(run, state):      # 3. the loop over the seeded, resumable data order
        train_step(run, state, batch)      #    one micro-step: preprocess, masks, forward, backward, optimiser
        after_step(run, state)             #    after an optimiser step: log / evaluate / checkpoint
    summary = finish(run, state)           # 4. final scores, model + card, embeddings + index, uploads

Reliability (docs/RELIABILITY.md): the run holds a lock on its output folder (`lock_output_dir`); non-finite
losses stop it before anything is written (`crjepa.train.guards`); a resume must keep the settings of its
checkpoint (`check_resume`). `train(argv)` chains them. `Run` holds what is fixed for the run, `TrainState` what changes step by step
(the step counters, the loss meter, timings): nothing lives in loose locals, so each step is testable alone.
"""

from __future__ import annotations

import json
import os
import sys
import time
from collections.abc import Iterator, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch

from crjepa.hub.cards import comparison_table, render_model_card
from crjepa.train.guards import FiniteGuard, json_safe
from crjepa.utils.atomic import atomic_write_json
from crjepa.train.training import (
    ConfigError,
    check_fresh_start,
    check_output_path,
    ShardedEpochSampler,
    build_model_config,
    compile_for_training,
    compiled_modules,
    draw_masks,
    latest_checkpoint,
    learning_rate,
    load_run_config,
    make_optimizer,
    parse_cli,
    prepare_output_dir,
    read_state,
    report_to,
    save_checkpoint,
)

RUN_LOCK_FILE = ".crjepa-run.lock"
"""Held (crjepa.utils.locks) by the main process of the run writing an output folder."""
RESUME_KEYS = ("global_batch", "steps_per_epoch", "total_steps", "epochs", "seed", "warmup_steps", "lr_start",
               "lr_peak", "lr_end")
"""Run settings a checkpoint records; a resume that changes one of them would reinterpret the step count, the
data order or the schedule, and is refused."""
RESULTS_FILE = "results.json"
RANDOM_INIT_FILE = "results_random_init.json"
TRAIN_LOG_FILE = "train_log.jsonl"


# ---------------------------------------------------------------------------------------------- helpers
def check_hub(config: dict[str, Any]) -> None:
    """Fail before training when a requested push cannot work (offline, no token, token refused)."""
    from crjepa.hub.access import check_hub_access

    hub = config["hub"]
    if hub["push_to_hub"]:
        check_hub_access(hub["hub_model_id"])
    if hub["push_embeddings"]:
        check_hub_access(hub["hub_embeddings_id"])


def load_data(config: dict[str, Any], model_config: Any) -> Any:
    """The paired data set, checked against the model's sensors (names both ways, channel counts, each sensor
    present in some row) before any training.

    ``data.path`` set: the data is that exported Parquet folder (`python -m datasets_scripts ...`), whatever
    ``data.source`` says (the source then only names the kind of data, e.g. ``bigearthnet``); ``data.options``
    go to a builder, never to an export. A ``--data.source`` on the command line without ``--data.path``
    replaces the YAML's path. Unset: ``data.source`` ("synthetic", an export folder, or a builder
    name) with ``data.options``. ``data.name`` defaults to the export's own name (its card's pretty_name), so
    the model card names the data actually trained on.
    """
    from crjepa.data.loading import check_sensors, export_name, load_paired_dataset

    data = config["data"]
    cli_keys = config.get("cli_keys", ())
    if "data.source" in cli_keys and "data.path" not in cli_keys:
        data["path"] = None  # a source given on the command line replaces the YAML's path
    if data["path"] is not None:
        path = Path(str(data["path"])).expanduser()
        if not path.is_dir():
            raise ConfigError(f"data.path {str(data['path'])!r} is not a folder: pass --data.path with the folder "
                              "`python -m datasets_scripts <dataset> ... --output-dir DIR` wrote")
        dataset = load_paired_dataset(path)
        data["path"] = str(path.resolve())  # absolute: checkpoints and archives find the data from anywhere
        if "data.name" not in config.get("cli_keys", ()):
            data["name"] = export_name(path)
    else:
        try:
            dataset = load_paired_dataset(data["source"], **dict(data["options"] or {}))
        except TypeError as exc:  # an option the data source does not take
            raise ConfigError(f"data.options {dict(data['options'] or {})} do not fit the data source "
                              f"{data['source']!r}: {exc}") from None
    where = str(data["path"] or data["source"])
    # both directions: a config sensor the data lacks, or a data sensor the config lacks, stops the run here
    check_sensors(dataset, model_config.sensors, exact=True, where=where)
    return dataset


@dataclass
class Pairing:
    """Which sensors the training rows have: ``rows`` = `pairing_summary` (e.g. {"s1+s2": 900, "s2": 100}),
    ``partial`` = some row lacks a sensor (the objective then reads batch["present"]), ``unpaired`` = sensor
    pairs no training row has together (their cross routes, L_cross and L_uni stay 0: cross head untrained)."""

    rows: dict[str, int]
    partial: bool
    unpaired: list[tuple[str, str]]
    epoch_rows: dict[str, int] | None = None
    """The same counts over one epoch's draws when data.pair_share / data.mix repeat rows (else None): ``rows``
    counts each distinct row once."""

    @property
    def untrained_directions(self) -> list[str]:
        return [d for a, b in self.unpaired for d in (f"{a}->{b}", f"{b}->{a}")]


def balance_pairs(train: Any, sensors: Sequence[str], share: float, seed: int, split: str, name: str) -> Any:
    """The training rows with the rows that have every sensor drawn as ``share`` of each epoch (data.pair_share):
    `combine_datasets` of the paired and the other rows with that mix (the smaller part repeated, none
    subsampled). Unchanged when every row, or no row, is paired."""
    import numpy as np

    from crjepa.data.loading import combine_datasets, presence

    have = presence(train, sensors)
    both = np.logical_and.reduce([have[s] for s in sensors])
    if both.all() or not both.any():
        return train
    parts = {"paired": train.select(np.flatnonzero(both).tolist()), "single": train.select(np.flatnonzero(~both).tolist())}
    return combine_datasets(parts, mix={"paired": share, "single": 1 - share}, seed=seed,
                            where={"paired": f"{name} (rows with {' + '.join(sensors)})",
                                   "single": f"{name} (the other rows)"}, mix_split=split)


def check_pairing(train_set: Any, model_config: Any, architecture: str, name: str, say: Any) -> Pairing:
    """How the training rows are paired; a baseline that needs every sensor in every row stops here (one error
    naming the counts), and sensor pairs without a single joint row are announced (the card repeats it)."""
    from itertools import combinations

    from crjepa.data.loading import pairing_summary, presence

    sensors = list(model_config.sensor_names)
    have = presence(train_set, sensors)
    distinct = distinct_rows(train_set)
    rows = pairing_summary(distinct, sensors)
    epoch_rows = pairing_summary(train_set, sensors) if len(distinct) != len(train_set) else None
    partial = not all(mask.all() for mask in have.values())
    unpaired = [(a, b) for a, b in combinations(sensors, 2) if not (have[a] & have[b]).any()]
    if partial and architecture != "crjepa":
        lacking = ", ".join(f"{int((~mask).sum()):,} lack {s!r}" for s, mask in have.items() if not mask.all())
        raise ConfigError(f"The {architecture} baseline needs every sensor in every training row, but of the "
                          f"{len(train_set):,} training rows of {name}, {lacking}. Train it on the paired rows "
                          "(re-export without --keep-unpaired, pairing_rate: 1), or use model.architecture: crjepa, "
                          "whose objective uses the rows each term needs")
    if partial:
        drawn = f" (each epoch draws {epoch_rows})" if epoch_rows else ""
        say(f"Training rows by sensors present: {rows}{drawn}; each loss term uses the rows that have its sensors "
            "(rows/<term> in the log)")
    for a, b in unpaired:
        say(f"warning: no training row has both {a!r} and {b!r}: the routes {a}->{b} and {b}->{a}, L_cross and L_uni "
            f"for {a}-{b} stay 0, so the cross head is untrained for {a}<->{b} retrieval (the model card says so); "
            f"same-sensor training ({a}->{a}, {b}->{b}) and SIGReg proceed")
    return Pairing(rows=rows, partial=partial, unpaired=unpaired, epoch_rows=epoch_rows)


def distinct_rows(ds: Any) -> Any:
    """The rows of a data set view once each: a mix (`combine_datasets`, data.pair_share) repeats rows of the
    smaller parts, which must not be counted as more rows than there are."""
    import numpy as np

    mapping = getattr(ds, "_indices", None)
    if mapping is None:
        return ds
    _, first = np.unique(mapping.column(0).to_numpy(), return_index=True)
    return ds if len(first) == len(ds) else ds.select(np.sort(first).tolist())


def training_rows(config: dict[str, Any], dataset: Any, model_config: Any) -> Any:
    """The rows trained on: the train split of the data set, plus the train splits of ``data.extra_sources``
    (e.g. single-sensor exports) combined by `crjepa.data.loading.combine_datasets` in the shares of
    ``data.mix``. Extra sets add training rows only: evaluation and the embeddings archive keep the main data
    set's splits (a mix may repeat rows, which must not become duplicate archive items)."""
    from crjepa.data.loading import check_sensors, combine_datasets, load_paired_dataset
    from crjepa.eval.retrieval import select_split

    data = config["data"]
    name = data["name"] or data["path"] or data["source"]
    try:
        train = select_split(dataset, data["train_split"])
    except ValueError as exc:  # no such split / no rows in it
        raise ConfigError(f"The training split {data['train_split']!r} of {name} is unusable: {exc}; choose another "
                          "data.train_split or check the exported data") from None
    if data["pair_share"] is not None:
        train = balance_pairs(train, model_config.sensor_names, float(data["pair_share"]), int(config["seed"]),
                              data["train_split"], str(name))
    if not data["extra_sources"]:
        return train
    parts, where = {"paired": train}, {"paired": str(name)}
    for part, source in data["extra_sources"].items():
        folder = Path(str(source)).expanduser()
        if not folder.is_dir():
            raise ConfigError(f"data.extra_sources.{part}: {str(source)!r} is not a folder: pass a folder "
                              "`python -m datasets_scripts <dataset> ... --output-dir DIR` wrote")
        data["extra_sources"][part] = str(folder.resolve())
        parts[part], where[part] = load_paired_dataset(folder, split=data["train_split"]), str(folder)
    combined = combine_datasets(parts, mix=data["mix"], seed=int(config["seed"]), where=where,
                                mix_split=data["train_split"])
    check_sensors(combined, model_config.sensors, exact=True, where=" + ".join(where.values()))
    return combined


def lock_output_dir(output_dir: Path, main_process: bool) -> Any:
    """The run's lock on its output folder (main process only): a second run on the same folder stops at once
    naming the holder; a stale lock of a killed run is reported and taken over (crjepa.utils.locks)."""
    if not main_process:
        return None
    from crjepa.utils.locks import DirLock

    return DirLock(output_dir / RUN_LOCK_FILE, what="training run", folder=output_dir).acquire()


def check_evaluation_inputs(config: dict[str, Any], dataset: Any) -> None:
    """What would otherwise fail after all training: duplicate ids, eval.k larger than the gallery, missing or
    empty evaluation / embedding splits. One ConfigError naming the data and the key to change."""
    from collections import Counter

    from crjepa.eval.retrieval import select_split

    ev, data = config["eval"], config["data"]
    name = data["name"] or data["path"] or data["source"]
    errors = []
    sizes = {}
    splits = [ev["query_split"], ev["gallery_split"]] + ([config["embeddings"]["split"]]
                                                        if config["embeddings"]["write"] else [])
    for split in dict.fromkeys(s for s in splits if s):
        try:
            rows = select_split(dataset, split)
        except (KeyError, ValueError) as exc:
            errors.append(f"split {split!r} of {name}: {exc}")
            continue
        sizes[split] = len(rows)
        # ids name archive items, so they must be unique where they are searched (a data.mix may repeat
        # training rows on purpose)
        ids = [str(i) for i in rows["id"]]
        if len(set(ids)) != len(ids):
            dupes = [i for i, n in Counter(ids).items() if n > 1]
            errors.append(f"{len(dupes)} id(s) of split {split!r} of {name} occur more than once (e.g. {dupes[:3]}); "
                          "ids must be unique for retrieval and the embeddings archive: fix or re-export the data")
        if sizes[split] == 0:
            errors.append(f"split {split!r} of {name} is empty; choose another eval.query_split / gallery_split / "
                          "embeddings.split")
    gallery = ev["gallery_split"] or ev["query_split"]
    if gallery in sizes and sizes[gallery]:
        candidates = sizes[gallery] - (0 if ev["gallery_split"] and ev["gallery_split"] != ev["query_split"] else 1)
        if candidates < 1:
            larger = sorted((n, s) for s, n in Counter(str(v) for v in dataset["split"]).items() if n > 1)
            hint = f" (e.g. --eval.query_split {larger[-1][1]}, {larger[-1][0]} rows)" if larger else ""
            errors.append(f"the gallery (split {gallery!r} of {name}) has {sizes[gallery]} item: nothing to rank once "
                          f"the query's own item is removed; evaluate on a larger split{hint}, or re-export with "
                          "more rows in it")
        elif ev["k"] > candidates:
            errors.append(f"eval.k={ev['k']} is larger than the {candidates} candidates per query of the gallery "
                          f"(split {gallery!r}, {sizes[gallery]} items, the query's own item removed); lower eval.k")
    if errors:
        raise ConfigError("The data cannot be evaluated as configured (checked before training):\n  - "
                          + "\n  - ".join(errors))


def effective_precision(accelerator: Any) -> str:
    """The mixed precision that really runs: accelerate accepts fp16 on the CPU but trains in fp32 there."""
    requested = str(accelerator.mixed_precision)
    if requested in ("no", "None") or getattr(accelerator, "native_amp", True):
        return requested
    return f"no (fp32: {requested} was requested but is not supported on {accelerator.device.type})"


def flat_hparams(config: dict[str, Any], prefix: str = "") -> dict[str, Any]:
    """The run configuration as flat scalar hyper-parameters for the trackers (TensorBoard accepts scalars only)."""
    out: dict[str, Any] = {}
    for key, value in config.items():
        if isinstance(value, dict):
            out.update(flat_hparams(value, f"{prefix}{key}."))
        elif isinstance(value, (int, float, str, bool)):
            out[f"{prefix}{key}"] = value
        else:
            out[f"{prefix}{key}"] = json.dumps(value)
    return out



# ---------------------------------------------------------------------------------------------- evaluation
def evaluate(model: Any, dataset: Any, config: dict[str, Any], accelerator: Any) -> tuple[Any, dict[str, Any]]:
    """Embed the query (and gallery) split on every process and score the four directions.

    Returns (RetrievalResults, {split: EmbeddingSet}) so the final embeddings are computed once.
    """
    from crjepa.eval.retrieval import compute_embeddings, evaluate_embeddings, select_split

    ev = config["eval"]
    embeddings = {split: compute_embeddings(model, select_split(dataset, split), batch_size=ev["batch_size"],
                                            accelerator=accelerator)
                  for split in dict.fromkeys([ev["query_split"], ev["gallery_split"] or ev["query_split"]])}
    results = evaluate_embeddings(
        embeddings[ev["query_split"]], embeddings.get(ev["gallery_split"]) if ev["gallery_split"] else None,
        accelerator.unwrap_model(model).config.sensor_names, ev["k"],
        dataset_name=config["data"]["name"] or str(config["data"]["source"]),
        query_split=ev["query_split"], gallery_split=ev["gallery_split"])
    return results, embeddings


def log_results(accelerator: Any, results: Any, step: int, prefix: str = "eval") -> None:
    values = {f"{prefix}/{metric}/{direction}": value * 100
              for metric, by_direction in results.metrics.items() for direction, value in by_direction.items()
              if value is not None}  # None: a direction not scored (no rows with its sensors)
    accelerator.log(values, step=step)



# ---------------------------------------------------------------------------------------------- state
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

    def reduce(self, accelerator: Any) -> dict[str, float]:
        """Means over the micro-steps since the last call and over processes."""
        if not self.count:
            return {}
        names = list(self.sums)
        stacked = accelerator.reduce(torch.stack([self.sums[n] for n in names]) / self.count, reduction="mean")
        self.sums, self.count = {}, 0
        return dict(zip(names, stacked.tolist()))



@dataclass
class Run:
    """What is fixed for a run: configuration, accelerator, data, model, optimiser, schedule."""

    config: dict[str, Any]
    model_config: Any
    output_dir: Path
    accelerator: Any
    dataset: Any
    train_set: Any
    sampler: ShardedEpochSampler
    loader: Any
    model: Any
    optimizer: Any
    compile_mode: str
    total_steps: int
    stop_step: int
    steps_per_epoch: int
    global_batch: int
    schedule: dict[str, Any]
    trackers: list[str]
    start_time: float
    lock: Any = None  # the DirLock on output_dir (main process)
    guard: Any = None  # FiniteGuard: non-finite loss terms / gradient norms
    precision: str = "no"  # the mixed precision that really runs (effective_precision)
    pairing: Pairing | None = None  # which sensors the training rows have (check_pairing)

    @property
    def core(self) -> Any:
        """The model without its DDP / compile wrappers."""
        return self.accelerator.unwrap_model(self.model)

    @property
    def log_file(self) -> Path:
        return self.output_dir / TRAIN_LOG_FILE

    def say(self, *args: Any) -> None:
        self.accelerator.print(*args)


@dataclass
class TrainState:
    """What changes during the run: counters, the loss meter, gradient norms, learning rate, timings."""

    step: int = 0
    micro_step: int = 0
    epoch: int = 0
    lr: float = 0.0
    checkpoint: Path | None = None  # the checkpoint the run resumed from
    random_init: Any = None  # RetrievalResults of the randomly initialised model
    meter: LossMeter = field(default_factory=LossMeter)
    grad_norms: list[Any] = field(default_factory=list)
    last_log_time: float = 0.0
    last_log_micro: int = 0
    train_start: float = 0.0
    train_seconds_before: float = 0.0  # training time of the earlier segments of a resumed run
    progress: Any = None

    @property
    def finished_at(self) -> int:
        return self.step


# ---------------------------------------------------------------------------------------------- 1. set-up
def setup(argv: Sequence[str] | None = None) -> Run:
    """Configuration, output folder, Hub access, data (checked), model, optimiser and schedule."""
    start_time = time.perf_counter()
    config_path, overrides = parse_cli(sys.argv[1:] if argv is None else argv)
    config = load_run_config(config_path, overrides)
    model_config = build_model_config(config)
    output_dir = check_output_path(config["output_dir"])  # nothing is created before the data checks
    main_process = int(os.environ.get("RANK", "0")) == 0
    lock = lock_output_dir(output_dir, main_process) if output_dir.is_dir() else None  # a second run stops here
    try:
        return _setup(config, model_config, output_dir, lock, main_process, start_time)
    except BaseException:
        if lock is not None:
            lock.release()
        raise


def _setup(config: dict[str, Any], model_config: Any, output_dir: Path, lock: Any, main_process: bool,
           start_time: float) -> Run:
    check_fresh_start(output_dir, config["resume"], config["overwrite_output_dir"])
    if config["hub"]["push_to_hub"] or config["hub"]["push_embeddings"]:
        check_hub(config)

    from accelerate import Accelerator
    from accelerate.utils import ProjectConfiguration, set_seed

    from crjepa.baselines.models import model_for_config
    from crjepa.data.loading import make_dataloader

    training, data = config["training"], config["data"]
    trackers = report_to(config)
    accelerator = Accelerator(
        mixed_precision=training["mixed_precision"],
        gradient_accumulation_steps=training["gradient_accumulation_steps"],
        log_with=trackers or None,
        project_config=ProjectConfiguration(project_dir=str(output_dir), logging_dir=str(output_dir / "logs")),
    )
    set_seed(int(config["seed"]))

    # data, checked before the model is built
    with accelerator.main_process_first():
        dataset = load_data(config, model_config)
        train_set = training_rows(config, dataset, model_config)
    if len(train_set) == 0:
        raise ConfigError(f"The training split {data['train_split']!r} of {data['name'] or data['path'] or data['source']} "
                          "is empty; choose another data.train_split or check the exported data")
    check_evaluation_inputs(config, dataset)
    from crjepa.baselines.models import architecture_of

    pairing = check_pairing(train_set, model_config, architecture_of(model_config),
                            data["name"] or data["path"] or data["source"], accelerator.print)
    accumulation = training["gradient_accumulation_steps"]
    # Our own seeded sampler instead of accelerator.prepare(loader): the data order must be a function of
    # (seed, epoch) alone, identical for any number of processes and after a resume (see ShardedEpochSampler).
    sampler = ShardedEpochSampler(len(train_set), data["batch_size"], accelerator.num_processes,
                                  accelerator.process_index, int(config["seed"]), accumulation)
    if sampler.batches_per_epoch == 0:
        raise ConfigError(f"The training split {data['train_split']!r} has {len(train_set)} rows, fewer than one "
                          f"global batch of {data['batch_size']} x {accelerator.num_processes} process(es) x "
                          f"{accumulation} accumulation step(s)")
    loader = make_dataloader(train_set, model_config.sensor_names, batch_size=data["batch_size"],
                             shuffle=False, num_workers=data["num_workers"], drop_last=True, sampler=sampler)

    # model and optimiser
    model = model_for_config(model_config)  # CRJepaForPreTraining, or a baseline (model.architecture)
    if training.get("gradient_checkpointing"):  # transformers >= 5.x names it activation checkpointing
        getattr(model, "activation_checkpointing_enable", model.gradient_checkpointing_enable)()
    compile_mode = compile_for_training(model, training["compile"], accelerator.device)
    optimizer = make_optimizer(model, training["lr_start"], training["weight_decay"], training["betas"],
                               accelerator.device)
    model, optimizer = accelerator.prepare(model, optimizer)

    # every check passed: now the output folder is created (and locked, if it was not there before)
    if accelerator.is_main_process:
        prepare_output_dir(output_dir, config["resume"], config["overwrite_output_dir"])
        lock = lock or lock_output_dir(output_dir, main_process)
    accelerator.wait_for_everyone()
    precision = effective_precision(accelerator)
    if precision != str(accelerator.mixed_precision):
        print(f"warning: training.mixed_precision: {precision}", file=sys.stderr)

    steps_per_epoch = sampler.batches_per_epoch // accumulation
    total_steps = max(1, round(training["epochs"] * steps_per_epoch))
    stop_step = min(total_steps, training["max_steps"]) if training["max_steps"] else total_steps
    schedule = dict(total_steps=total_steps, warmup_steps=round(training["warmup_epochs"] * steps_per_epoch),
                    lr_start=training["lr_start"], lr_peak=training["lr"], lr_end=training["lr_end"])
    return Run(config=config, model_config=model_config, output_dir=output_dir, accelerator=accelerator,
               dataset=dataset, train_set=train_set, sampler=sampler, loader=loader, model=model,
               optimizer=optimizer, compile_mode=compile_mode, total_steps=total_steps, stop_step=stop_step,
               steps_per_epoch=steps_per_epoch,
               global_batch=data["batch_size"] * accelerator.num_processes * accumulation,
               schedule=schedule, trackers=trackers, start_time=start_time, lock=lock,
               guard=FiniteGuard(training["nonfinite"], training["max_skipped_steps"],
                                 lambda step: learning_rate(max(step - 1, 0), **schedule)),
               precision=precision, pairing=pairing)


# ---------------------------------------------------------------------------------------------- 2. start
def start(run: Run) -> TrainState:
    """Resume from the latest checkpoint (when asked), start the trackers, score the random initialisation."""
    from tqdm.auto import tqdm

    from crjepa.eval.retrieval import RetrievalResults

    config, accelerator, ev = run.config, run.accelerator, run.config["eval"]
    state = TrainState()
    state.checkpoint = latest_checkpoint(run.output_dir, report=run.say) if config["resume"] else None
    if state.checkpoint is not None:
        saved = read_state(state.checkpoint)
        check_resume(run, saved, state.checkpoint)
        from crjepa.utils.files import FileCheckError, check_safetensors_in

        try:
            check_safetensors_in(state.checkpoint)
        except FileCheckError as exc:
            raise ConfigError(f"Cannot resume: {exc}") from None
        try:
            accelerator.load_state(str(state.checkpoint))
        except (RuntimeError, KeyError, ValueError, OSError) as exc:
            reason = (str(exc).strip().splitlines() or [type(exc).__name__])[0]
            raise ConfigError(f"Cannot resume from {state.checkpoint}: it does not fit this model or optimiser "
                              f"({reason[:300]}). Resume with the model.* settings it was trained with, or start "
                              "over with --overwrite_output_dir or another --output_dir.") from None
        state.step, state.micro_step = int(saved["step"]), int(saved["micro_step"])
        state.train_seconds_before = float(saved.get("train_seconds", 0.0))
        if accelerator.is_main_process:
            truncate_log(run.log_file, state.step)
        run.say(f"Resuming from {state.checkpoint} (step {state.step} of {run.total_steps})")
    elif config["resume"]:
        run.say(f"--resume: no checkpoint in {run.output_dir / 'checkpoints'}; starting from scratch")
    if run.trackers:
        accelerator.init_trackers(config["logging"]["project_name"], config=flat_hparams(config))

    # the baseline: the same model at random initialisation
    random_file = run.output_dir / RANDOM_INIT_FILE
    if state.checkpoint is None and accelerator.is_main_process:
        random_file.unlink(missing_ok=True)
    if state.checkpoint is None and ev["before_training"]:
        state.random_init, _ = evaluate(run.model, run.dataset, config, accelerator)
        log_results(accelerator, state.random_init, 0, prefix="eval_random_init")
        if accelerator.is_main_process:
            state.random_init.to_json(random_file)
        run.say(f"Random initialisation ({state.random_init.headline_metric}, %):\n{state.random_init.to_markdown()}")
    elif state.checkpoint is not None and random_file.is_file():
        state.random_init = RetrievalResults.from_dict(json.loads(random_file.read_text()))

    training = config["training"]
    precision_from = ("training.mixed_precision" if training["mixed_precision"] is not None
                      else "the launcher: accelerate config / launch flags")
    run.say(f"Training {run.total_steps} steps ({training['epochs']} epochs x {run.steps_per_epoch} steps, global batch "
            f"{run.global_batch} pairs on {accelerator.num_processes} process(es), mixed precision: "
            f"{run.precision} (from {precision_from}), compile: {run.compile_mode}, {compiled_modules(run.core)} compiled modules)"
            + (f", stopping at step {run.stop_step}" if run.stop_step < run.total_steps else ""))
    if accelerator.is_main_process and state.checkpoint is None and run.log_file.exists():
        run.log_file.unlink()
    state.progress = tqdm(total=run.stop_step, initial=state.step, desc="training", unit="step",
                          disable=not (accelerator.is_local_main_process and config["logging"]["progress_bar"]))
    state.last_log_time, state.last_log_micro = time.perf_counter(), state.micro_step
    state.train_start = time.perf_counter()
    state.epoch = state.micro_step // run.sampler.batches_per_epoch
    return state


# ---------------------------------------------------------------------------------------------- 3. the loop
def batches(run: Run, state: TrainState) -> Iterator[dict[str, Any]]:
    """The batches of the run from where `state` stands, epoch after epoch, until the stop step."""
    run.model.train()
    while state.step < run.stop_step:
        run.sampler.set_epoch(state.epoch, skip_batches=state.micro_step - state.epoch * run.sampler.batches_per_epoch)
        for batch in run.loader:
            yield batch
            if state.step >= run.stop_step:
                return
        state.epoch += 1


def train_step(run: Run, state: TrainState, batch: dict[str, Any]) -> bool:
    """One micro-step: on-device preprocessing, masks, forward, backward and (on a sync step) the optimiser.

    Returns True when an optimiser step happened (state.step advanced).
    """
    from modeling_crjepa import preprocess_batch

    from crjepa.baselines.models import after_optimizer_step

    accelerator, model, cfg = run.accelerator, run.model, run.model_config
    with accelerator.accumulate(model):
        pixels = {sensor: preprocess_batch(batch[sensor].to(accelerator.device, non_blocking=True), sensor, cfg)
                  for sensor in cfg.sensor_names}
        masks = draw_masks(cfg, batch["id"], state.micro_step, int(run.config["seed"]), accelerator.device)
        # a partially paired split: every term uses only the rows having its sensors (None: all rows, all sensors)
        present = batch["present"] if run.pairing is not None and run.pairing.partial else None
        output = model(pixel_values=pixels, sigreg_step=state.step, masks=masks, check_finite=False,
                       **({"present": present} if present is not None else {}))
        accelerator.backward(output.loss)
        terms = output.loss_terms()
        if run.guard is None or run.guard.keep_micro_step(terms):  # skip mode only: one sync per micro-step
            state.meter.add(terms)
        if accelerator.sync_gradients:
            state.grad_norms.append(accelerator.clip_grad_norm_(model.parameters(),
                                                                run.config["training"]["max_grad_norm"]))
            state.lr = learning_rate(state.step, **run.schedule)
            for group in run.optimizer.param_groups:
                group["lr"] = state.lr
        if (not accelerator.sync_gradients or run.guard is None
                or run.guard.allow_update(state.step + 1, state.grad_norms[-1], run.say)):
            run.optimizer.step()
        else:  # skip mode: a non-finite step changes nothing
            state.grad_norms.pop()
        run.optimizer.zero_grad(set_to_none=True)
        if accelerator.sync_gradients:
            after_optimizer_step(run.core, state.step + 1, run.total_steps)  # X-JEPA's EMA update; no-op for CR-JEPA
    state.micro_step += 1
    if not accelerator.sync_gradients:
        return False
    state.step += 1
    state.progress.update(1)
    return True


def log_step(run: Run, state: TrainState) -> dict[str, float]:
    """Reduce the loss meter over processes and log it (trackers, progress bar, train_log.jsonl)."""
    accelerator, data = run.accelerator, run.config["data"]
    now = time.perf_counter()
    values = {f"train/{name}": v for name, v in state.meter.reduce(accelerator).items()}
    values["train/grad_norm"] = (torch.stack([torch.as_tensor(g).float() for g in state.grad_norms]).mean().item()
                                 if state.grad_norms else None)
    values["train/lr"] = state.lr
    values["train/pairs_per_s"] = ((state.micro_step - state.last_log_micro) * data["batch_size"]
                                   * accelerator.num_processes / max(now - state.last_log_time, 1e-9))
    values["train/epoch"] = state.step / run.steps_per_epoch
    state.grad_norms, state.last_log_time, state.last_log_micro = [], now, state.micro_step
    accelerator.log(values, step=state.step)
    if values.get("train/loss") is not None:
        state.progress.set_postfix(loss=f"{values['train/loss']:.4f}", lr=f"{state.lr:.2e}")
    if accelerator.is_main_process:
        with run.log_file.open("a") as f:  # valid JSON always: a non-finite value is written as null
            f.write(json.dumps(json_safe({"step": state.step, **values}), allow_nan=False) + "\n")
    return values


def after_step(run: Run, state: TrainState) -> None:
    """What follows an optimiser step: log, evaluate, checkpoint, each at its interval (and at the end)."""
    ev, ckpt, step = run.config["eval"], run.config["checkpoint"], state.step
    finished = step >= run.stop_step
    guard = run.guard or FiniteGuard()
    guard.observe(step, state.meter.sums, state.grad_norms[-1] if state.grad_norms else None)  # on the device
    if step % run.config["logging"]["every_steps"] == 0 or finished:
        guard.check("write the log line of step %d" % step)  # the one host sync of the check
        log_step(run, state)
    epoch_done = step % run.steps_per_epoch == 0
    if (ev["every_steps"] and step % ev["every_steps"] == 0) or (
            ev["every_epochs"] and epoch_done and (step // run.steps_per_epoch) % ev["every_epochs"] == 0):
        guard.check(f"evaluate at step {step}")
        results, _ = evaluate(run.model, run.dataset, run.config, run.accelerator)
        log_results(run.accelerator, results, step)
        run.say(f"step {step}: {results.headline_metric} " + ", ".join(
            f"{d.upper()} {'n/a' if v is None else f'{v * 100:.2f}'}"
            for d, v in results.metrics[results.headline_metric].items()))
        run.model.train()
    if (ckpt["every_steps"] and step % ckpt["every_steps"] == 0) or finished:
        guard.check(f"write the checkpoint of step {step}")
        save_checkpoint(run.accelerator, run.output_dir, step, checkpoint_state(run, state),
                        keep_last=ckpt["keep_last"], model=run.core)


def checkpoint_state(run: Run, state: TrainState) -> dict[str, Any]:
    """What trainer_state.json records besides the step: where the data order stands, the training time so far
    and the settings a resume must keep (RESUME_KEYS); and the run configuration, from which `crjepa
    export-checkpoint` rebuilds the model."""
    return {"micro_step": state.micro_step, "epoch": state.epoch, "total_steps": run.total_steps,
            "train_seconds": state.train_seconds_before + time.perf_counter() - state.train_start,
            **_resume_settings(run), "run_config": run.config}


def _resume_settings(run: Run) -> dict[str, Any]:
    sched = run.schedule
    return {"global_batch": run.global_batch, "steps_per_epoch": run.steps_per_epoch, "total_steps": run.total_steps,
            "epochs": run.config["training"]["epochs"], "seed": int(run.config["seed"]),
            "warmup_steps": sched["warmup_steps"], "lr_start": sched["lr_start"], "lr_peak": sched["lr_peak"],
            "lr_end": sched["lr_end"]}


def check_resume(run: Run, saved: dict[str, Any], checkpoint: Path) -> None:
    """Refuse a resume that changes the global batch, epochs, data size, seed or schedule: the saved step count
    would be reinterpreted (another data order, another learning rate at the same step)."""
    now = _resume_settings(run)
    changed = [f"{key}: {saved[key]!r} in the checkpoint, {now[key]!r} now" for key in RESUME_KEYS
               if key in saved and saved[key] != now[key]]
    if changed:
        raise ConfigError(f"--resume from {checkpoint} would change the run: " + "; ".join(changed) + ". The step "
                          "count, data order and schedule would be reinterpreted: resume with the settings of the "
                          "checkpoint (data.batch_size, training.epochs, ...), or start a new --output_dir.")


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


# ---------------------------------------------------------------------------------------------- 4. finish
def finish(run: Run, state: TrainState) -> dict[str, Any]:
    """Final scores; model + processor + card, embeddings + indices, results.json; the Hub uploads."""
    from modeling_crjepa import CRJepaImageProcessor

    from crjepa.eval.retrieval import compute_embeddings, select_split

    config, accelerator, core = run.config, run.accelerator, run.core
    ev, data, training = config["eval"], config["data"], config["training"]
    state.progress.close()
    (run.guard or FiniteGuard()).check("evaluate and save the model")
    train_seconds = state.train_seconds_before + time.perf_counter() - state.train_start
    trained, embeddings = evaluate(run.model, run.dataset, config, accelerator)
    embed_split = config["embeddings"]["split"]
    if config["embeddings"]["write"] and embed_split not in embeddings:
        embeddings[embed_split] = compute_embeddings(run.model, select_split(run.dataset, embed_split),
                                                     batch_size=ev["batch_size"], accelerator=accelerator)
    log_results(accelerator, trained, state.step)
    model_dir = run.output_dir / "model"
    embeddings_dir = run.output_dir / "embeddings"
    state_dict = accelerator.get_state_dict(run.model)
    summary: dict[str, Any] = {}
    if accelerator.is_main_process:
        from crjepa.hub.archive import build_indices, config_summary, model_fingerprint, write_embeddings_dataset
        from crjepa.utils.atomic import atomic_dir

        fingerprint = model_fingerprint(core)
        if config["embeddings"]["write"]:
            embed_set = embeddings.get(embed_split)
            write_embeddings_dataset(
                embeddings_dir, embed_set.ids, embed_set.labels, embed_set.class_names or _class_names(embed_set),
                embed_set.vectors, archive_metadata(select_split(run.dataset, embed_split), embed_set.ids),
                model_fingerprint=fingerprint, config_summary=config_summary(core.config),
                indices=build_indices(embed_set.vectors, embed_set.ids, kind=config["embeddings"]["index"],
                                      fingerprint=fingerprint, present=embed_set.present),
                present=embed_set.present,
                model_repo_id=config["hub"]["hub_model_id"], repo_id=config["hub"]["hub_embeddings_id"],
                source=({"dataset": str(Path(str(data["path"])).expanduser().resolve()), "split": embed_split}
                        if data["path"] else
                        {"dataset": str(data["source"]), "split": embed_split, **(data["options"] or {})}),
                overwrite=True)  # embeddings/ inside the locked output folder of this run is ours
        card = render_model_card(core.config, config, trained, state.random_init,
                                 training_summary={"steps": state.step, "total_steps": run.total_steps,
                                                   "epochs": training["epochs"], "global_batch": run.global_batch,
                                                   "processes": accelerator.num_processes,
                                                   "mixed_precision": run.precision,
                                                   "train_seconds": round(train_seconds, 1),
                                                   "train_pairs": (sum(run.pairing.rows.values()) if run.pairing
                                                                   else len(run.train_set)),
                                                   "train_rows": run.pairing.rows if run.pairing else None,
                                                   "epoch_rows": run.pairing.epoch_rows if run.pairing else None,
                                                   "untrained_directions": (run.pairing.untrained_directions
                                                                            if run.pairing else []),
                                                   "num_parameters": f"{core.num_parameters() / 1e6:.2f}M"})
        # weights, processor and card appear together or not at all (a kill here leaves the previous model/)
        with atomic_dir(model_dir, kind="model", overwrite=True) as tmp:
            core.save_pretrained(tmp, state_dict=state_dict)
            CRJepaImageProcessor.from_config(core.config).save_pretrained(tmp)
            card.save(tmp / "README.md")
        summary = {
            "output_dir": str(run.output_dir), "model_dir": str(model_dir),
            "embeddings_dir": str(embeddings_dir) if config["embeddings"]["write"] else None,
            "logs": str(run.output_dir / "logs"), "train_log": str(run.log_file),
            "checkpoints": str(run.output_dir / "checkpoints"), "steps": state.step, "train_seconds": train_seconds,
            "wall_seconds": time.perf_counter() - run.start_time, "model_fingerprint": fingerprint,
            "trained": trained.as_dict(), "random_init": state.random_init.as_dict() if state.random_init else None,
        }
        atomic_write_json(run.output_dir / RESULTS_FILE, summary)
        push(config, model_dir, embeddings_dir, run.say)
        report(run, summary, trained, state.random_init)
    accelerator.wait_for_everyone()
    accelerator.end_training()
    return summary


def report(run: Run, summary: dict[str, Any], trained: Any, random_init: Any) -> None:
    """The closing lines on the console: scores next to the random initialisation, and where everything is."""
    say, out = run.say, run.output_dir
    say(f"\nRetrieval on {trained.describe()} ({trained.headline_metric} in %):\n"
        f"{comparison_table(random_init, trained)}")
    say(f"\nTrained {summary['steps']} steps in {summary['train_seconds']:.1f} s; whole run {summary['wall_seconds']:.1f} s.")
    say(f"Model (save_pretrained, remote code, card): {summary['model_dir']}")
    if summary["embeddings_dir"]:
        say(f"Embeddings + faiss indices:               {summary['embeddings_dir']}")
    say(f"Checkpoints:                               {out / 'checkpoints'}")
    say(f"Logs ({', '.join(run.trackers) or 'no tracker'}), train_log.jsonl:  {out / 'logs'}, {run.log_file}")
    say(f"Scores (random init and trained):          {out / RESULTS_FILE}")


def archive_metadata(rows: Any, ids: Sequence[str]) -> dict[str, list[Any]]:
    """The scalar metadata columns of the embedded rows (e.g. ``s1_name``, ``country``, ``tile``), as `crjepa
    embed` stores them: an archive of a training run then answers ``search --id`` with an S1 patch name too.
    Nothing when the rows are not the embedded ones, in order."""
    if list(map(str, rows["id"])) != list(ids):
        return {}
    skip = {"id", "labels"}
    return {name: rows[name] for name, feature in rows.features.items()
            if name not in skip and type(feature).__name__ == "Value"}


def _class_names(embeddings: Any) -> list[str]:
    return [str(i) for i in range(embeddings.labels.shape[1])]


def push(config: dict[str, Any], model_dir: Path, embeddings_dir: Path, say: Any) -> None:
    """Upload the model folder and, when asked, the embeddings archive (main process only)."""
    from crjepa.hub.access import push_folder

    hub = config["hub"]
    if hub["push_to_hub"]:
        if hub.get("encoder_only"):
            from crjepa.hub.encoder import export_encoder

            model_dir = export_encoder(model_dir, model_dir.with_name(model_dir.name + "_encoder"), overwrite=True)
        url = push_folder(model_dir, hub["hub_model_id"], repo_type="model", private=hub["private"])
        say(f"Pushed the model to {url}")
    if hub["push_embeddings"]:
        url = push_folder(embeddings_dir, hub["hub_embeddings_id"], repo_type="dataset", private=hub["private"])
        say(f"Pushed the embeddings to {url}")



def train(argv: Sequence[str] | None = None) -> dict[str, Any]:
    """The whole run; returns a summary (paths, scores, timings). Raises ConfigError on bad input."""
    run = setup(argv)
    try:
        state = start(run)
        for batch in batches(run, state):
            if train_step(run, state, batch):
                after_step(run, state)
        return finish(run, state)
    finally:
        if run.lock is not None:
            run.lock.release()
