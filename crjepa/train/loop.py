"""The training run of train_accelerate.py, as named steps (I-JEPA's src/train.py, open_clip's train_one_epoch).

    run = setup(argv)                      # 1. configuration, lock, Hub access, data + checks, model, optimiser,
                                           #    then the output folder (nothing is created before the checks)
    state = start(run)                     # 2. resume, trackers, the random-initialisation baseline
    for batch in batches(run, state):      # 3. the loop over the seeded, resumable data order
        train_step(run, state, batch)      #    one micro-step: preprocess, masks, forward, backward, optimiser
        after_step(run, state)             #    after an optimiser step: log / evaluate / checkpoint
    summary = finish(run, state)           # 4. final scores, model + card, embeddings + index, uploads

`train(argv)` chains them. `Run` holds what is fixed for the run, `TrainState` what changes step by step
(crjepa.train.state). The pieces live beside this file: the configuration (config), data and pairing checks
(data), the epoch's rows and order (sampler), masks (masks), optimiser (optim), schedule (schedule), compile
(compile), evaluation (evaluation), the output folder and checkpoints (checkpoints), what a finished run writes
(publish). Reliability (docs/RELIABILITY.md): the run holds a lock on its output folder; non-finite losses stop
it before anything is written (crjepa.train.guards); a resume must keep the settings of its checkpoint.
"""

from __future__ import annotations

import json
import logging
import os
import sys
import time
from collections.abc import Iterator, Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any, cast

import torch

from crjepa.train.checkpoints import (
    RANDOM_INIT_FILE,
    check_fresh_start,
    check_output_path,
    checkpoint_state,
    latest_checkpoint,
    load_checkpoint,
    lock_output_dir,
    prepare_output_dir,
    save_checkpoint,
    truncate_log,
)
from crjepa.train.compile import compile_for_training, compiled_modules
from crjepa.train.config import (
    ConfigError,
    RunConfig,
    build_model_config,
    load_run_config,
    parse_cli,
    report_to,
)
from crjepa.train.data import check_pairing, load_data
from crjepa.train.evaluation import check_evaluation_inputs, evaluate, log_results, retrieval_encoder
from crjepa.train.guards import FiniteGuard, json_safe
from crjepa.train.masks import draw_masks
from crjepa.train.optim import make_optimizer
from crjepa.train.publish import check_hub, publish
from crjepa.train.sampler import ShardedEpochSampler, training_rows
from crjepa.train.schedule import Schedule
from crjepa.train.state import Run, TrainState
from modeling_crjepa.configuration_crjepa import CRJepaConfig
from modeling_crjepa.modeling_crjepa import CRJepaPreTrainedModel

if TYPE_CHECKING:
    from accelerate import Accelerator

    from crjepa.utils.locks import DirLock

logger = logging.getLogger(__name__)

__all__ = [
    "after_step",
    "batches",
    "effective_precision",
    "finish",
    "flat_hparams",
    "log_step",
    "setup",
    "start",
    "train",
    "train_step",
]


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


def _setup(
    config: RunConfig,
    model_config: CRJepaConfig,
    output_dir: Path,
    lock: DirLock | None,
    main_process: bool,
    start_time: float,
) -> Run:
    check_fresh_start(output_dir, config["resume"], config["overwrite_output_dir"])
    if config["hub"]["push_to_hub"] or config["hub"]["push_embeddings"]:
        check_hub(config)

    from accelerate import Accelerator
    from accelerate.utils import ProjectConfiguration, set_seed

    from crjepa.baselines.models import architecture_of, model_for_config
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
    name = data["name"] or data["path"] or data["source"]  # after load_data, which names an export by its card
    if len(train_set) == 0:
        raise ConfigError(
            f"The training split {data['train_split']!r} of {name} is empty; choose another "
            "data.train_split or check the exported data"
        )
    check_evaluation_inputs(config, dataset)
    pairing = check_pairing(train_set, model_config, architecture_of(model_config), name, accelerator.print)
    accumulation = training["gradient_accumulation_steps"]
    # Our own seeded sampler instead of accelerator.prepare(loader): the data order must be a function of
    # (seed, epoch) alone, identical for any number of processes and after a resume (see ShardedEpochSampler).
    sampler = ShardedEpochSampler(
        len(train_set),
        data["batch_size"],
        accelerator.num_processes,
        accelerator.process_index,
        int(config["seed"]),
        accumulation,
    )
    if sampler.batches_per_epoch == 0:
        raise ConfigError(
            f"The training split {data['train_split']!r} has {len(train_set)} rows, fewer than one "
            f"global batch of {data['batch_size']} x {accelerator.num_processes} process(es) x "
            f"{accumulation} accumulation step(s)"
        )
    loader = make_dataloader(
        train_set,
        model_config.sensor_names,
        batch_size=data["batch_size"],
        shuffle=False,
        num_workers=data["num_workers"],
        drop_last=True,
        sampler=sampler,
    )

    # model and optimiser
    # CRJepaForPreTraining, or a baseline (model.architecture): every architecture is a CRJepaPreTrainedModel
    model = cast(CRJepaPreTrainedModel, model_for_config(model_config))
    if training.get("gradient_checkpointing"):  # transformers >= 5.x names it activation checkpointing
        getattr(model, "activation_checkpointing_enable", model.gradient_checkpointing_enable)()
    compile_mode = compile_for_training(model, training["compile"], accelerator.device)
    optimizer = make_optimizer(
        model, training["lr_start"], training["weight_decay"], training["betas"], accelerator.device
    )
    model, optimizer = accelerator.prepare(model, optimizer)

    # every check passed: now the output folder is created (and locked, if it was not there before)
    if accelerator.is_main_process:
        prepare_output_dir(output_dir, config["resume"], config["overwrite_output_dir"])
        lock = lock or lock_output_dir(output_dir, main_process)
    accelerator.wait_for_everyone()
    precision = effective_precision(accelerator)
    if precision != str(accelerator.mixed_precision):
        logger.warning("training.mixed_precision: %s", precision)

    steps_per_epoch = sampler.batches_per_epoch // accumulation
    schedule = Schedule.of_run(training, steps_per_epoch)
    stop_step = min(schedule.total_steps, training["max_steps"]) if training["max_steps"] else schedule.total_steps
    return Run(
        config=config,
        model_config=model_config,
        output_dir=output_dir,
        accelerator=accelerator,
        dataset=dataset,
        train_set=train_set,
        sampler=sampler,
        loader=loader,
        model=model,
        optimizer=optimizer,
        compile_mode=compile_mode,
        schedule=schedule,
        stop_step=stop_step,
        steps_per_epoch=steps_per_epoch,
        global_batch=data["batch_size"] * accelerator.num_processes * accumulation,
        trackers=trackers,
        start_time=start_time,
        lock=lock,
        guard=FiniteGuard(
            training["nonfinite"], training["max_skipped_steps"], lambda step: schedule(max(step - 1, 0))
        ),
        precision=precision,
        pairing=pairing,
    )


def effective_precision(accelerator: Accelerator) -> str:
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


# ---------------------------------------------------------------------------------------------- 2. start
def start(run: Run) -> TrainState:
    """Resume from the latest checkpoint (when asked), start the trackers, score the random initialisation."""
    from tqdm.auto import tqdm

    from crjepa.eval.retrieval import RetrievalResults

    config, accelerator, ev = run.config, run.accelerator, run.config["eval"]
    state = TrainState()
    state.checkpoint = latest_checkpoint(run.output_dir, report=run.say) if config["resume"] else None
    if state.checkpoint is not None:
        saved = load_checkpoint(run, state.checkpoint)
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
    precision_from = (
        "training.mixed_precision"
        if training["mixed_precision"] is not None
        else "the launcher: accelerate config / launch flags"
    )
    run.say(
        f"Training {run.total_steps} steps ({training['epochs']} epochs x {run.steps_per_epoch} steps, global "
        f"batch {run.global_batch} pairs on {accelerator.num_processes} process(es), mixed precision: "
        f"{run.precision} (from {precision_from}), compile: {run.compile_mode}, "
        f"{compiled_modules(run.core)} compiled modules)"
        + (f", stopping at step {run.stop_step}" if run.stop_step < run.total_steps else "")
    )
    if accelerator.is_main_process and state.checkpoint is None and run.log_file.exists():
        run.log_file.unlink()
    state.progress = tqdm(
        total=run.stop_step,
        initial=state.step,
        desc="training",
        unit="step",
        disable=not (accelerator.is_local_main_process and config["logging"]["progress_bar"]),
    )
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
    from crjepa.baselines.models import after_optimizer_step
    from modeling_crjepa import preprocess_batch

    accelerator, model, cfg = run.accelerator, run.model, run.model_config
    with accelerator.accumulate(model):
        pixels = {
            sensor: preprocess_batch(batch[sensor].to(accelerator.device, non_blocking=True), sensor, cfg)
            for sensor in cfg.sensor_names
        }
        masks = draw_masks(cfg, batch["id"], state.micro_step, int(run.config["seed"]), accelerator.device)
        # a partially paired split: every term uses only the rows having its sensors (None: all rows, all sensors)
        present = batch["present"] if run.pairing is not None and run.pairing.partial else None
        output = model(
            pixels,
            sigreg_step=state.step,
            masks=masks,
            check_finite=False,
            **({"present": present} if present is not None else {}),
        )
        accelerator.backward(output.loss)
        terms = output.loss_terms()
        if run.guard.keep_micro_step(terms):  # skip mode only: one sync per micro-step
            state.meter.add(terms)
        if accelerator.sync_gradients:
            state.grad_norms.append(
                accelerator.clip_grad_norm_(model.parameters(), run.config["training"]["max_grad_norm"])
            )
            state.lr = run.schedule(state.step)
            for group in run.optimizer.param_groups:
                group["lr"] = state.lr
        if not accelerator.sync_gradients or run.guard.allow_update(state.step + 1, state.grad_norms[-1], run.say):
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
    if state.progress is not None:
        state.progress.update(1)
    return True


def log_step(run: Run, state: TrainState) -> dict[str, float | None]:
    """Reduce the loss meter over processes and log it (trackers, progress bar, train_log.jsonl)."""
    accelerator, data = run.accelerator, run.config["data"]
    now = time.perf_counter()
    values: dict[str, float | None] = {f"train/{name}": v for name, v in state.meter.reduce(accelerator).items()}
    values["train/grad_norm"] = (
        torch.stack([torch.as_tensor(g).float() for g in state.grad_norms]).mean().item() if state.grad_norms else None
    )
    values["train/lr"] = state.lr
    values["train/pairs_per_s"] = (
        (state.micro_step - state.last_log_micro)
        * data["batch_size"]
        * accelerator.num_processes
        / max(now - state.last_log_time, 1e-9)
    )
    values["train/epoch"] = state.step / run.steps_per_epoch
    state.grad_norms, state.last_log_time, state.last_log_micro = [], now, state.micro_step
    accelerator.log(values, step=state.step)
    loss = values.get("train/loss")
    if loss is not None and state.progress is not None:
        state.progress.set_postfix(loss=f"{loss:.4f}", lr=f"{state.lr:.2e}")
    if accelerator.is_main_process:
        with run.log_file.open("a") as f:  # valid JSON always: a non-finite value is written as null
            f.write(json.dumps(json_safe({"step": state.step, **values}), allow_nan=False) + "\n")
    return values


def after_step(run: Run, state: TrainState) -> None:
    """What follows an optimiser step: log, evaluate, checkpoint, each at its interval (and at the end)."""
    ev, ckpt, step = run.config["eval"], run.config["checkpoint"], state.step
    finished = step >= run.stop_step
    guard = run.guard
    guard.observe(step, state.meter.sums, state.grad_norms[-1] if state.grad_norms else None)  # on the device
    if step % run.config["logging"]["every_steps"] == 0 or finished:
        guard.check(f"write the log line of step {step}")  # the one host sync of the check
        log_step(run, state)
    epoch_done = step % run.steps_per_epoch == 0
    if (ev["every_steps"] and step % ev["every_steps"] == 0) or (
        ev["every_epochs"] and epoch_done and (step // run.steps_per_epoch) % ev["every_epochs"] == 0
    ):
        guard.check(f"evaluate at step {step}")
        results, _ = evaluate(run.model, run.dataset, run.config, run.accelerator)
        log_results(run.accelerator, results, step)
        run.say(
            f"step {step}: {results.headline_metric} "
            + ", ".join(
                f"{d.upper()} {'n/a' if v is None else f'{v * 100:.2f}'}"
                for d, v in results.metrics[results.headline_metric].items()
            )
        )
        run.model.train()
    if (ckpt["every_steps"] and step % ckpt["every_steps"] == 0) or finished:
        guard.check(f"write the checkpoint of step {step}")
        save_checkpoint(
            run.accelerator,
            run.output_dir,
            step,
            checkpoint_state(run, state),
            keep_last=ckpt["keep_last"],
            model=run.core,
        )


# ---------------------------------------------------------------------------------------------- 4. finish
def finish(run: Run, state: TrainState) -> dict[str, Any]:
    """Final scores; model + processor + card, embeddings + indices, results.json; the Hub uploads
    (crjepa.train.publish). Returns the summary (empty on processes other than the main one)."""
    from crjepa.eval.retrieval import compute_embeddings, select_split

    config, accelerator = run.config, run.accelerator
    if state.progress is not None:
        state.progress.close()
    run.guard.check("evaluate and save the model")
    train_seconds = state.train_seconds_before + time.perf_counter() - state.train_start
    trained, embeddings = evaluate(run.model, run.dataset, config, accelerator)
    embed_split = config["embeddings"]["split"]
    if config["embeddings"]["write"] and embed_split not in embeddings:
        embeddings[embed_split] = compute_embeddings(
            retrieval_encoder(run.core),
            select_split(run.dataset, embed_split),
            batch_size=config["eval"]["batch_size"],
            accelerator=accelerator,
        )
    log_results(accelerator, trained, state.step)
    state_dict = accelerator.get_state_dict(run.model)
    summary: dict[str, Any] = {}
    if accelerator.is_main_process:
        summary = publish(run, state, trained, embeddings, state_dict, train_seconds)
    accelerator.wait_for_everyone()
    accelerator.end_training()
    return summary


def train(argv: Sequence[str] | None = None) -> dict[str, Any]:
    """The whole run; returns a summary (paths, scores, timings). Raises a CRJepaError on bad input."""
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
