"""Retrieval scores during and after a run (every direction, the paper's metrics), and the checks that make sure
the evaluation can run at all, done before the first training step."""

from __future__ import annotations

from typing import TYPE_CHECKING

import torch

from crjepa.train.config import ConfigError, RunConfig

if TYPE_CHECKING:
    from accelerate import Accelerator
    from datasets import Dataset

    from crjepa.eval.retrieval import EmbeddingSet, RetrievalResults

__all__ = ["check_evaluation_inputs", "evaluate", "log_results", "retrieval_encoder"]


def retrieval_encoder(model: torch.nn.Module) -> torch.nn.Module:
    """What embeds for retrieval: the encoder of a pretraining model (`CRJepaForPreTraining.crjepa`, the
    CRJepaModel that is saved and served), or a baseline itself (one model that both trains and embeds).
    ``model`` is unwrapped (no DDP / compile wrapper)."""
    encoder = getattr(model, "crjepa", None)
    return encoder if isinstance(encoder, torch.nn.Module) else model


def evaluate(
    model: torch.nn.Module, dataset: Dataset, config: RunConfig, accelerator: Accelerator
) -> tuple[RetrievalResults, dict[str, EmbeddingSet]]:
    """Embed the query (and gallery) split on every process with the model's `retrieval_encoder` and score every
    direction.

    Returns (RetrievalResults, {split: EmbeddingSet}) so the final embeddings are computed once.
    """
    from crjepa.eval.retrieval import compute_embeddings, evaluate_embeddings, select_split

    ev = config["eval"]
    encoder = retrieval_encoder(accelerator.unwrap_model(model))
    embeddings = {
        split: compute_embeddings(
            encoder, select_split(dataset, split), batch_size=ev["batch_size"], accelerator=accelerator
        )
        for split in dict.fromkeys([ev["query_split"], ev["gallery_split"] or ev["query_split"]])
    }
    results = evaluate_embeddings(
        embeddings[ev["query_split"]],
        embeddings.get(ev["gallery_split"]) if ev["gallery_split"] else None,
        encoder.config.sensor_names,
        ev["k"],
        dataset_name=config["data"]["name"] or str(config["data"]["source"]),
        query_split=ev["query_split"],
        gallery_split=ev["gallery_split"],
    )
    return results, embeddings


def log_results(accelerator: Accelerator, results: RetrievalResults, step: int, prefix: str = "eval") -> None:
    """Every scored direction of every metric, in %, to the trackers (``<prefix>/<metric>/<direction>``)."""
    values = {
        f"{prefix}/{metric}/{direction}": value * 100
        for metric, by_direction in results.metrics.items()
        for direction, value in by_direction.items()
        if value is not None
    }  # None: a direction not scored (no rows with its sensors)
    accelerator.log(values, step=step)


def check_evaluation_inputs(config: RunConfig, dataset: Dataset) -> None:
    """What would otherwise fail after all training: duplicate ids, eval.k larger than the gallery, missing or
    empty evaluation / embedding splits. One ConfigError naming the data and the key to change."""
    from collections import Counter

    from crjepa.eval.retrieval import select_split

    ev, data = config["eval"], config["data"]
    name = data["name"] or data["path"] or data["source"]
    errors = []
    sizes = {}
    splits = [ev["query_split"], ev["gallery_split"]] + (
        [config["embeddings"]["split"]] if config["embeddings"]["write"] else []
    )
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
            errors.append(
                f"{len(dupes)} id(s) of split {split!r} of {name} occur more than once (e.g. {dupes[:3]}); "
                "ids must be unique for retrieval and the embeddings archive: fix or re-export the data"
            )
        if sizes[split] == 0:
            errors.append(
                f"split {split!r} of {name} is empty; choose another eval.query_split / gallery_split / "
                "embeddings.split"
            )
    gallery = ev["gallery_split"] or ev["query_split"]
    if gallery in sizes and sizes[gallery]:
        candidates = sizes[gallery] - (0 if ev["gallery_split"] and ev["gallery_split"] != ev["query_split"] else 1)
        if candidates < 1:
            larger = sorted((n, s) for s, n in Counter(str(v) for v in dataset["split"]).items() if n > 1)
            hint = f" (e.g. --eval.query_split {larger[-1][1]}, {larger[-1][0]} rows)" if larger else ""
            errors.append(
                f"the gallery (split {gallery!r} of {name}) has {sizes[gallery]} item: nothing to rank once "
                f"the query's own item is removed; evaluate on a larger split{hint}, or re-export with "
                "more rows in it"
            )
        elif ev["k"] > candidates:
            errors.append(
                f"eval.k={ev['k']} is larger than the {candidates} candidates per query of the gallery "
                f"(split {gallery!r}, {sizes[gallery]} items, the query's own item removed); lower eval.k"
            )
    if errors:
        raise ConfigError(
            "The data cannot be evaluated as configured (checked before training):\n  - " + "\n  - ".join(errors)
        )
