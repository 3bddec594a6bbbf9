"""What a finished run leaves behind: the model folder (weights, image processor, card), the embeddings archive
(Parquet + faiss indices), results.json, the Hub uploads, and the closing lines on the console. Main process only.

Each folder is written atomically (a kill or a full disk leaves the previous one, never weights without a card),
and the Hub is checked before training when an upload is asked for (`check_hub`).
"""

from __future__ import annotations

import time
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any

from crjepa.hub.cards import comparison_table, render_model_card
from crjepa.train.checkpoints import RESULTS_FILE
from crjepa.train.config import RunConfig
from crjepa.utils.atomic import atomic_write_json

if TYPE_CHECKING:
    import torch
    from datasets import Dataset
    from huggingface_hub import ModelCard

    from crjepa.eval.retrieval import EmbeddingSet, RetrievalResults
    from crjepa.train.state import Run, TrainState

__all__ = ["archive_metadata", "check_hub", "publish", "push", "report"]


def check_hub(config: RunConfig) -> None:
    """Fail before training when a requested push cannot work (offline, no token, token refused)."""
    from crjepa.hub.access import check_hub_access

    hub = config["hub"]
    if hub["push_to_hub"]:
        check_hub_access(hub["hub_model_id"])
    if hub["push_embeddings"]:
        check_hub_access(hub["hub_embeddings_id"])


def publish(
    run: Run,
    state: TrainState,
    trained: RetrievalResults,
    embeddings: dict[str, EmbeddingSet],
    state_dict: dict[str, torch.Tensor],
    train_seconds: float,
) -> dict[str, Any]:
    """Write the embeddings archive (when ``embeddings.write``), the model folder and results.json, push what the
    ``hub`` section asks for, print the closing lines; returns the summary written to results.json."""
    from crjepa.hub.archive import model_fingerprint

    config, core = run.config, run.core
    model_dir, embeddings_dir = run.output_dir / "model", run.output_dir / "embeddings"
    fingerprint = model_fingerprint(core)
    if config["embeddings"]["write"]:
        write_archive(run, embeddings[config["embeddings"]["split"]], embeddings_dir, fingerprint)
    save_model(
        run,
        model_dir,
        state_dict,
        render_model_card(
            core.config,
            config,
            trained,
            state.random_init,
            training_summary=training_summary(run, state, train_seconds),
        ),
    )
    summary = {
        "output_dir": str(run.output_dir),
        "model_dir": str(model_dir),
        "embeddings_dir": str(embeddings_dir) if config["embeddings"]["write"] else None,
        "logs": str(run.output_dir / "logs"),
        "train_log": str(run.log_file),
        "checkpoints": str(run.output_dir / "checkpoints"),
        "steps": state.step,
        "train_seconds": train_seconds,
        "wall_seconds": time.perf_counter() - run.start_time,
        "model_fingerprint": fingerprint,
        "trained": trained.as_dict(),
        "random_init": state.random_init.as_dict() if state.random_init else None,
    }
    atomic_write_json(run.output_dir / RESULTS_FILE, summary)
    push(config, model_dir, embeddings_dir, run.say)
    report(run, summary, trained, state.random_init)
    return summary


def training_summary(run: Run, state: TrainState, train_seconds: float) -> dict[str, Any]:
    """What the model card says about the training: steps, batch, processes, precision, time, rows, size."""
    pairing, training = run.pairing, run.config["training"]
    return {
        "steps": state.step,
        "total_steps": run.total_steps,
        "epochs": training["epochs"],
        "global_batch": run.global_batch,
        "processes": run.accelerator.num_processes,
        "mixed_precision": run.precision,
        "train_seconds": round(train_seconds, 1),
        "train_pairs": sum(pairing.rows.values()) if pairing else len(run.train_set),
        "train_rows": pairing.rows if pairing else None,
        "epoch_rows": pairing.epoch_rows if pairing else None,
        "untrained_directions": pairing.untrained_directions if pairing else [],
        "num_parameters": f"{run.core.num_parameters() / 1e6:.2f}M",
    }


def write_archive(run: Run, embedded: EmbeddingSet, embeddings_dir: Path, fingerprint: str) -> None:
    """The embeddings archive of ``embeddings.split`` (Parquet, faiss indices of ``embeddings.index``, card),
    tied to the model by its fingerprint; the data source is recorded so `search --png` can find the images."""
    from crjepa.eval.retrieval import select_split
    from crjepa.hub.archive import build_indices, config_summary, write_embeddings_dataset

    config, data = run.config, run.config["data"]
    split = config["embeddings"]["split"]
    write_embeddings_dataset(
        embeddings_dir,
        embedded.ids,
        embedded.labels,
        embedded.class_names or _class_names(embedded),
        embedded.vectors,
        archive_metadata(select_split(run.dataset, split), embedded.ids),
        model_fingerprint=fingerprint,
        config_summary=config_summary(run.core.config),
        indices=build_indices(
            embedded.vectors,
            embedded.ids,
            kind=config["embeddings"]["index"],
            fingerprint=fingerprint,
            present=embedded.present,
        ),
        present=embedded.present,
        model_repo_id=config["hub"]["hub_model_id"],
        repo_id=config["hub"]["hub_embeddings_id"],
        source=(
            {"dataset": str(Path(str(data["path"])).expanduser().resolve()), "split": split}
            if data["path"]
            else {"dataset": str(data["source"]), "split": split, **(data["options"] or {})}
        ),
        overwrite=True,
    )  # embeddings/ inside the locked output folder of this run is ours


def save_model(run: Run, model_dir: Path, state_dict: dict[str, torch.Tensor], card: ModelCard) -> None:
    """save_pretrained (remote code, safetensors), the image processor and the card into ``model_dir``: all three
    appear together or not at all (a kill here leaves the previous model/)."""
    from crjepa.utils.atomic import atomic_dir
    from modeling_crjepa import CRJepaImageProcessor

    core = run.core
    with atomic_dir(model_dir, kind="model", overwrite=True) as tmp:
        core.save_pretrained(tmp, state_dict=state_dict)
        CRJepaImageProcessor.from_config(core.config).save_pretrained(tmp)
        card.save(tmp / "README.md")


def report(run: Run, summary: dict[str, Any], trained: RetrievalResults, random_init: RetrievalResults | None) -> None:
    """The closing lines on the console: scores next to the random initialisation, and where everything is."""
    say, out = run.say, run.output_dir
    say(
        f"\nRetrieval on {trained.describe()} ({trained.headline_metric} in %):\n"
        f"{comparison_table(random_init, trained)}"
    )
    say(
        f"\nTrained {summary['steps']} steps in {summary['train_seconds']:.1f} s; "
        f"whole run {summary['wall_seconds']:.1f} s."
    )
    say(f"Model (save_pretrained, remote code, card): {summary['model_dir']}")
    if summary["embeddings_dir"]:
        say(f"Embeddings + faiss indices:               {summary['embeddings_dir']}")
    say(f"Checkpoints:                               {out / 'checkpoints'}")
    say(f"Logs ({', '.join(run.trackers) or 'no tracker'}), train_log.jsonl:  {out / 'logs'}, {run.log_file}")
    say(f"Scores (random init and trained):          {out / RESULTS_FILE}")


def archive_metadata(rows: Dataset, ids: Sequence[str]) -> dict[str, list[Any]]:
    """The scalar metadata columns of the embedded rows (e.g. ``s1_name``, ``country``, ``tile``), as `crjepa
    embed` stores them: an archive of a training run then answers ``search --id`` with an S1 patch name too.
    Nothing when the rows are not the embedded ones, in order."""
    if list(map(str, rows["id"])) != list(ids):
        return {}
    skip = {"id", "labels"}
    return {
        name: rows[name]
        for name, feature in rows.features.items()
        if name not in skip and type(feature).__name__ == "Value"
    }


def _class_names(embeddings: EmbeddingSet) -> list[str]:
    return [str(i) for i in range(embeddings.labels.shape[1])]


def push(config: RunConfig, model_dir: Path, embeddings_dir: Path, say: Callable[..., None]) -> None:
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
