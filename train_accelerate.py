"""Train CR-JEPA with Hugging Face Accelerate, evaluate the four retrieval directions, save and publish.

    accelerate launch train_accelerate.py [--config configs/x.yaml] [--output_dir DIR] [--key value ...]

With no arguments: configs/cpu_default.yaml (the `tiny` model on the built-in synthetic pairs, CPU, ~3 minutes).
Any key of the YAML file can be overridden (`--training.epochs 3`, `--model.mask_ratio 0.25`, or a bare name
when it is unique: `--epochs 3`); values are YAML scalars. Mixed precision, DDP and FSDP2 come from
`accelerate config` / `accelerate launch` flags (or `training.mixed_precision`); nothing here is device-specific.

What a run does, in order (every check that can fail happens before the first training step):
  1. configuration (unknown key -> error), output directory writable, Hub access when pushing is asked for;
  2. data set loaded and checked against the model's sensors and channel counts;
  3. retrieval scores of the randomly initialised model (the baseline printed next to the trained one);
  4. training: AdamW (wd 0.04, none on norms/biases/positional embeddings/mask tokens/sensor embeddings),
     gradient clipping, the paper's warm-up + cosine schedule, gradient accumulation, on-device preprocessing,
     masks keyed by (seed, step, pair id), SIGReg directions seeded by the step, logging of every loss term, the learning
     rate and pairs/s, periodic evaluation, atomic checkpoints every N steps (`--resume` continues exactly);
  5. final scores, `save_pretrained` (remote code + safetensors + image processor) into output_dir/model with a
     model card (model-index results), the embeddings archive (Parquet + faiss) of the evaluation split, and the
     optional Hub uploads.
"""

from __future__ import annotations

import json
import math
import sys
import time
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import torch

from modeling_crjepa.model_card import comparison_table, render_model_card
from modeling_crjepa.training import (
    ConfigError,
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

RESULTS_FILE = "results.json"
RANDOM_INIT_FILE = "results_random_init.json"
TRAIN_LOG_FILE = "train_log.jsonl"


# ---------------------------------------------------------------------------------------------- set-up
def check_hub(config: dict[str, Any]) -> None:
    """Fail before training when a requested push cannot work (offline, no token, token refused)."""
    from modeling_crjepa.hub import check_hub_access

    hub = config["hub"]
    if hub["push_to_hub"]:
        check_hub_access(hub["hub_model_id"])
    if hub["push_embeddings"]:
        check_hub_access(hub["hub_embeddings_id"])


def load_data(config: dict[str, Any], model_config: Any) -> Any:
    """The paired data set, checked against the model's sensors and channel counts (before any training)."""
    from datasets_scripts.loading import check_sensors, load_paired_dataset

    data = config["data"]
    kwargs = dict(data["options"] or {})
    if data["path"] is not None:
        kwargs["path"] = data["path"]
    dataset = load_paired_dataset(data["source"], **kwargs)
    check_sensors(dataset, model_config.sensors)
    return dataset


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
    from modeling_crjepa.retrieval import compute_embeddings, evaluate_embeddings, select_split

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
              for metric, by_direction in results.metrics.items() for direction, value in by_direction.items()}
    accelerator.log(values, step=step)


# ---------------------------------------------------------------------------------------------- training
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


def train(argv: Sequence[str] | None = None) -> dict[str, Any]:
    """The whole run; returns a summary (paths, scores, timings). Raises ConfigError on bad input."""
    start_time = time.perf_counter()
    config_path, overrides = parse_cli(sys.argv[1:] if argv is None else argv)
    config = load_run_config(config_path, overrides)
    model_config = build_model_config(config)
    output_dir = prepare_output_dir(config["output_dir"], config["resume"], config["overwrite_output_dir"])
    if config["hub"]["push_to_hub"] or config["hub"]["push_embeddings"]:
        check_hub(config)

    from accelerate import Accelerator
    from accelerate.utils import ProjectConfiguration, set_seed
    from tqdm.auto import tqdm

    from modeling_crjepa import CRJepaImageProcessor, preprocess_batch
    from modeling_crjepa.baselines import after_optimizer_step, model_for_config
    from modeling_crjepa.retrieval import RetrievalResults, compute_embeddings, select_split

    training, data, ev, ckpt, logging_cfg = (config[k] for k in ("training", "data", "eval", "checkpoint", "logging"))
    trackers = report_to(config)
    accelerator = Accelerator(
        mixed_precision=training["mixed_precision"],
        gradient_accumulation_steps=training["gradient_accumulation_steps"],
        log_with=trackers or None,
        project_config=ProjectConfiguration(project_dir=str(output_dir), logging_dir=str(output_dir / "logs")),
            )
    say = accelerator.print
    seed = int(config["seed"])
    set_seed(seed)

    # ---- data (checked before the model is built)
    with accelerator.main_process_first():
        dataset = load_data(config, model_config)
    from datasets_scripts.loading import make_dataloader

    train_set = select_split(dataset, data["train_split"])
    sensor_a, sensor_b = model_config.sensor_names
    accumulation = training["gradient_accumulation_steps"]
    # Our own seeded sampler instead of accelerator.prepare(loader): the data order must be a function of
    # (seed, epoch) alone, identical for any number of processes and after a resume (see ShardedEpochSampler).
    sampler = ShardedEpochSampler(len(train_set), data["batch_size"], accelerator.num_processes,
                                  accelerator.process_index, seed, accumulation)
    if sampler.batches_per_epoch == 0:
        raise ConfigError(f"The training split {data['train_split']!r} has {len(train_set)} pairs, fewer than one "
                          f"global batch of {data['batch_size']} x {accelerator.num_processes} process(es) x "
                          f"{accumulation} accumulation step(s)")
    train_loader = make_dataloader(train_set, model_config.sensor_names, batch_size=data["batch_size"],
                                   shuffle=False, num_workers=data["num_workers"], drop_last=True, sampler=sampler)

    # ---- model and optimiser
    model = model_for_config(model_config)  # CRJepaModel, or a baseline (model.architecture)
    compile_mode = compile_for_training(model, training["compile"], accelerator.device)
    optimizer = make_optimizer(model, training["lr_start"], training["weight_decay"], training["betas"],
                               accelerator.device)
    model, optimizer = accelerator.prepare(model, optimizer)
    core = accelerator.unwrap_model(model)

    batches_per_epoch = sampler.batches_per_epoch
    steps_per_epoch = batches_per_epoch // accumulation
    total_steps = max(1, round(training["epochs"] * steps_per_epoch))
    warmup_steps = round(training["warmup_epochs"] * steps_per_epoch)
    stop_step = min(total_steps, training["max_steps"]) if training["max_steps"] else total_steps
    global_batch = data["batch_size"] * accelerator.num_processes * accumulation
    schedule = dict(total_steps=total_steps, warmup_steps=warmup_steps, lr_start=training["lr_start"],
                    lr_peak=training["lr"], lr_end=training["lr_end"])

    # ---- resume
    step, micro_step = 0, 0
    checkpoint = latest_checkpoint(output_dir) if config["resume"] else None
    if checkpoint is not None:
        accelerator.load_state(str(checkpoint))
        state = read_state(checkpoint)
        step, micro_step = int(state["step"]), int(state["micro_step"])
        say(f"Resuming from {checkpoint} (step {step} of {total_steps})")
    elif config["resume"]:
        say(f"--resume: no checkpoint in {output_dir / 'checkpoints'}; starting from scratch")

    if trackers:
        accelerator.init_trackers(logging_cfg["project_name"], config=flat_hparams(config))

    # ---- baseline: the same model at random initialisation
    random_init = None
    random_file = output_dir / RANDOM_INIT_FILE
    if checkpoint is None and accelerator.is_main_process:
        random_file.unlink(missing_ok=True)
    if checkpoint is None and ev["before_training"]:
        random_init, _ = evaluate(model, dataset, config, accelerator)
        log_results(accelerator, random_init, 0, prefix="eval_random_init")
        if accelerator.is_main_process:
            random_init.to_json(random_file)
        say(f"Random initialisation ({random_init.headline_metric}, %):\n{random_init.to_markdown()}")
    elif checkpoint is not None and random_file.is_file():
        random_init = RetrievalResults.from_dict(json.loads(random_file.read_text()))

    # ---- training loop
    say(f"Training {total_steps} steps ({training['epochs']} epochs x {steps_per_epoch} steps, global batch "
        f"{global_batch} pairs on {accelerator.num_processes} process(es), mixed precision: {accelerator.mixed_precision}, "
        f"compile: {compile_mode}, {compiled_modules(core)} compiled modules)"
        + (f", stopping at step {stop_step}" if stop_step < total_steps else ""))
    log_file = output_dir / TRAIN_LOG_FILE
    if accelerator.is_main_process and checkpoint is None and log_file.exists():
        log_file.unlink()
    meter, grad_norms = LossMeter(), []
    progress = tqdm(total=stop_step, initial=step, desc="training", unit="step",
                    disable=not (accelerator.is_local_main_process and logging_cfg["progress_bar"]))
    last_log_time, last_log_micro = time.perf_counter(), micro_step
    train_start = time.perf_counter()
    model.train()
    epoch = micro_step // batches_per_epoch
    while step < stop_step:
        sampler.set_epoch(epoch, skip_batches=micro_step - epoch * batches_per_epoch)
        for batch in train_loader:
            with accelerator.accumulate(model):
                pixels_a = preprocess_batch(batch[sensor_a].to(accelerator.device, non_blocking=True), sensor_a,
                                            model_config)
                pixels_b = preprocess_batch(batch[sensor_b].to(accelerator.device, non_blocking=True), sensor_b,
                                            model_config)
                masks = draw_masks(model_config, batch["id"], micro_step, seed, accelerator.device)
                output = model(pixel_values_a=pixels_a, pixel_values_b=pixels_b, sigreg_step=step, masks=masks,
                               check_finite=False)
                accelerator.backward(output.loss)
                meter.add(output.loss_terms())
                if accelerator.sync_gradients:
                    grad_norms.append(accelerator.clip_grad_norm_(model.parameters(), training["max_grad_norm"]))
                    lr = learning_rate(step, **schedule)
                    for group in optimizer.param_groups:
                        group["lr"] = lr
                optimizer.step()
                optimizer.zero_grad(set_to_none=True)
                if accelerator.sync_gradients:
                    after_optimizer_step(core, step + 1, total_steps)  # X-JEPA's EMA update; no-op for CR-JEPA
            micro_step += 1
            if not accelerator.sync_gradients:
                continue
            step += 1
            progress.update(1)
            finished = step >= stop_step
            if step % logging_cfg["every_steps"] == 0 or finished:
                now = time.perf_counter()
                values = {f"train/{name}": v for name, v in meter.reduce(accelerator).items()}
                values["train/grad_norm"] = torch.stack([torch.as_tensor(g).float() for g in grad_norms]).mean().item()
                values["train/lr"] = lr
                values["train/pairs_per_s"] = ((micro_step - last_log_micro) * data["batch_size"]
                                               * accelerator.num_processes / max(now - last_log_time, 1e-9))
                values["train/epoch"] = step / steps_per_epoch
                grad_norms, last_log_time, last_log_micro = [], now, micro_step
                accelerator.log(values, step=step)
                progress.set_postfix(loss=f"{values['train/loss']:.4f}", lr=f"{lr:.2e}")
                if accelerator.is_main_process:
                    with log_file.open("a") as f:
                        f.write(json.dumps({"step": step, **values}) + "\n")
            epoch_done = step % steps_per_epoch == 0
            if (ev["every_steps"] and step % ev["every_steps"] == 0) or (
                    ev["every_epochs"] and epoch_done and (step // steps_per_epoch) % ev["every_epochs"] == 0):
                results, _ = evaluate(model, dataset, config, accelerator)
                log_results(accelerator, results, step)
                say(f"step {step}: {results.headline_metric} " + ", ".join(
                    f"{d.upper()} {v * 100:.2f}" for d, v in results.metrics[results.headline_metric].items()))
                model.train()
            if (ckpt["every_steps"] and step % ckpt["every_steps"] == 0) or finished:
                save_checkpoint(accelerator, output_dir, step, {"micro_step": micro_step, "epoch": epoch,
                                                                "total_steps": total_steps},
                                keep_last=ckpt["keep_last"])
            if finished:
                break
        else:
            epoch += 1
            continue
        break
    progress.close()
    train_seconds = time.perf_counter() - train_start

    # ---- final evaluation, model, embeddings, card
    trained, embeddings = evaluate(model, dataset, config, accelerator)
    embed_split = config["embeddings"]["split"]
    if config["embeddings"]["write"] and embed_split not in embeddings:
        embeddings[embed_split] = compute_embeddings(model, select_split(dataset, embed_split),
                                                     batch_size=ev["batch_size"], accelerator=accelerator)
    log_results(accelerator, trained, step)
    model_dir = output_dir / "model"
    embeddings_dir = output_dir / "embeddings"
    state_dict = accelerator.get_state_dict(model)
    summary: dict[str, Any] = {}
    if accelerator.is_main_process:
        core.save_pretrained(model_dir, state_dict=state_dict)
        CRJepaImageProcessor.from_config(core.config).save_pretrained(model_dir)
        from modeling_crjepa.hub import build_indices, config_summary, model_fingerprint, write_embeddings_dataset

        fingerprint = model_fingerprint(core)
        if config["embeddings"]["write"]:
            embed_set = embeddings.get(config["embeddings"]["split"])
            write_embeddings_dataset(
                embeddings_dir, embed_set.ids, embed_set.labels, embed_set.class_names or _class_names(embed_set),
                embed_set.vectors, model_fingerprint=fingerprint, config_summary=config_summary(core.config),
                indices=build_indices(embed_set.vectors, embed_set.ids, kind=config["embeddings"]["index"],
                                      fingerprint=fingerprint),
                model_repo_id=config["hub"]["hub_model_id"], repo_id=config["hub"]["hub_embeddings_id"],
                source={"dataset": str(data["source"]), "split": config["embeddings"]["split"],
                        **(data["options"] or {})})
        card = render_model_card(core.config, config, trained, random_init,
                                 training_summary={"steps": step, "total_steps": total_steps, "epochs": training["epochs"],
                                                   "global_batch": global_batch, "processes": accelerator.num_processes,
                                                   "mixed_precision": accelerator.mixed_precision,
                                                   "train_seconds": round(train_seconds, 1),
                                                   "train_pairs": len(train_set),
                                                   "num_parameters": f"{core.num_parameters() / 1e6:.2f}M"})
        card.save(model_dir / "README.md")
        summary = {
            "output_dir": str(output_dir), "model_dir": str(model_dir),
            "embeddings_dir": str(embeddings_dir) if config["embeddings"]["write"] else None,
            "logs": str(output_dir / "logs"), "train_log": str(log_file),
            "checkpoints": str(output_dir / "checkpoints"), "steps": step, "train_seconds": train_seconds,
            "wall_seconds": time.perf_counter() - start_time, "model_fingerprint": fingerprint,
            "trained": trained.as_dict(), "random_init": random_init.as_dict() if random_init else None,
        }
        (output_dir / RESULTS_FILE).write_text(json.dumps(summary, indent=2) + "\n")
        push(config, model_dir, embeddings_dir, say)
        say(f"\nRetrieval on {trained.dataset_name} ({trained.query_split or 'all'} split, "
            f"{trained.num_queries} queries, {trained.headline_metric} in %):\n{comparison_table(random_init, trained)}")
        say(f"\nTrained {step} steps in {train_seconds:.1f} s; whole run {summary['wall_seconds']:.1f} s.")
        say(f"Model (save_pretrained, remote code, card): {model_dir}")
        if summary["embeddings_dir"]:
            say(f"Embeddings + faiss indices:               {embeddings_dir}")
        say(f"Checkpoints:                               {output_dir / 'checkpoints'}")
        say(f"Logs ({', '.join(trackers) or 'no tracker'}), train_log.jsonl:  {output_dir / 'logs'}, {log_file}")
        say(f"Scores (random init and trained):          {output_dir / RESULTS_FILE}")
    accelerator.wait_for_everyone()
    accelerator.end_training()
    return summary


def _class_names(embeddings: Any) -> list[str]:
    return [str(i) for i in range(embeddings.labels.shape[1])]


def push(config: dict[str, Any], model_dir: Path, embeddings_dir: Path, say: Any) -> None:
    """Upload the model folder and, when asked, the embeddings archive (main process only)."""
    from modeling_crjepa.hub import push_folder

    hub = config["hub"]
    if hub["push_to_hub"]:
        url = push_folder(model_dir, hub["hub_model_id"], repo_type="model", private=hub["private"])
        say(f"Pushed the model to {url}")
    if hub["push_embeddings"]:
        url = push_folder(embeddings_dir, hub["hub_embeddings_id"], repo_type="dataset", private=hub["private"])
        say(f"Pushed the embeddings to {url}")


def main(argv: Sequence[str] | None = None) -> int:
    """Console entry point: errors a person can fix are printed as one message with exit status 2."""
    from modeling_crjepa.hub import HubError

    errors: tuple[type[BaseException], ...] = (ConfigError, HubError)
    try:
        from datasets_scripts.common import DataError

        errors += (DataError,)
    except ImportError:
        pass
    try:
        train(argv)
    except errors as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    return 0


if __name__ == "__main__":
    sys.exit(main())
