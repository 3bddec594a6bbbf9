"""Embedding an archive with CR-JEPA and scoring the paper's four retrieval directions.

`compute_embeddings` turns a paired dataset (or a loader) into float32 vectors per sensor and embedding space,
batched on the model's device (on-device normalisation and resize with `preprocess_batch`, bf16 autocast on
GPU) and sharded over processes when an `accelerate.Accelerator` is passed, so several GPUs share one archive.

`evaluate_retrieval` scores a->a and b->b in the unified space (self-matches removed when the queries are the
gallery) and a->b, b->a in the cross space, with the paper's metrics: F1@k (plus CSMAE's F1 and mAP@k with
any-shared relevance) for multi-label sets such as BEN-14K, global mAP and P@k (same class) for single-label
sets. The metrics themselves live in `crjepa.eval.metrics`.

Not imported by the model (remote code): this module may use datasets, accelerate and numpy freely.
"""

from __future__ import annotations

import json
import math
import re
from collections.abc import Callable, Iterable, Sequence
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import torch

from crjepa.data.labels import class_names_of, label_lists, multi_hot, num_classes_of
from crjepa.data.loading import PairBatches
from crjepa.data.schema import DataError
from crjepa.eval.directions import SPACES, column_name, directions_of, parse_direction  # noqa: F401 (re-exported)
from crjepa.eval.metrics import f1_at_k, mean_average_precision, precision_at_k
from crjepa.utils.atomic import atomic_write_text
from modeling_crjepa.image_processing_crjepa import preprocess_batch

DEFAULT_MAX_SIMILARITY_ELEMENTS = 1 << 28
"""Largest query x gallery similarity held at once (1 GiB of float32); larger evaluations run in chunks."""


# ---------------------------------------------------------------------------------------------- embeddings
@dataclass
class EmbeddingSet:
    """Vectors per column (``{sensor}_{space}``: float32 (N, R), L2-normalised) with ids and multi-hot labels,
    all in dataset order. ``present`` ({sensor: (N,) bool}, None: every row has every sensor) marks the rows that
    really have each sensor; the vectors of the others are placeholders that retrieval never uses."""

    vectors: dict[str, np.ndarray]
    ids: list[str]
    labels: np.ndarray
    class_names: list[str] | None = None
    present: dict[str, np.ndarray] | None = None

    def rows_with(self, sensor: str) -> np.ndarray | None:
        """The rows having ``sensor`` (a bool mask), or None when every row has it."""
        if self.present is None or sensor not in self.present or self.present[sensor].all():
            return None
        return self.present[sensor]

    def __getitem__(self, column: str) -> np.ndarray:
        if column not in self.vectors:
            raise KeyError(f"No embedding column {column!r}; available: {sorted(self.vectors)}")
        return self.vectors[column]

    def __len__(self) -> int:
        return len(self.ids)

    @property
    def columns(self) -> list[str]:
        return list(self.vectors)


def _shard(num_items: int, accelerator: Any) -> tuple[np.ndarray, int]:
    """This process's contiguous share of range(num_items), padded to an equal length on every process
    (the padding repeats the last item and is cut after gathering). Returns (indices, real count)."""
    processes = accelerator.num_processes if accelerator is not None else 1
    rank = accelerator.process_index if accelerator is not None else 0
    per = math.ceil(num_items / processes)
    start, stop = min(rank * per, num_items), min((rank + 1) * per, num_items)
    real = np.arange(start, stop)
    return np.concatenate([real, np.full(per - len(real), num_items - 1)]).astype(np.int64), len(real)


def _model_device(model: torch.nn.Module, accelerator: Any) -> torch.device:
    if accelerator is not None:
        return accelerator.device
    try:
        return next(model.parameters()).device
    except StopIteration:
        return torch.device("cpu")


def compute_embeddings(
    model: Any,
    dataset_or_loader: Any,
    sensors: Sequence[str] | None = None,
    spaces: Sequence[str] = SPACES,
    batch_size: int = 64,
    accelerator: Any = None,
    preprocess: bool | Callable[[torch.Tensor, str], torch.Tensor] = True,
    *,
    num_workers: int = 0,
    progress: bool = False,
) -> EmbeddingSet:
    """Embed every item of a paired dataset with each sensor's image in each space, in dataset order.

    dataset_or_loader: a `datasets.Dataset` (rows with ``id``, one column per sensor, ``labels``) or an iterable
        of batches shaped like `crjepa.data.loading.make_dataloader`'s.
    preprocess: True normalises and resizes native images on the device with `preprocess_batch` (same math as
        CRJepaImageProcessor); a callable (pixels, sensor) -> pixels replaces it; False means the inputs are
        already model-ready.
    accelerator: with an `accelerate.Accelerator`, each process embeds a contiguous shard of a Dataset and the
        shards are gathered in order (a loader is taken as already sharded and gathered with
        `gather_for_metrics`). Every process gets the full result.
    Vectors are float32 and re-normalised in float32 (bf16 autocast on GPU keeps cosine scores comparable).
    """
    core = accelerator.unwrap_model(model) if accelerator is not None else model
    encoder = core.get_encoder()  # the pretraining model's `.crjepa`; an encoder (CRJepaModel, a baseline) itself
    config = core.config
    sensors = list(sensors or config.sensor_names)
    for sensor in sensors:
        if sensor not in config.sensors:
            raise ValueError(f"Unknown sensor {sensor!r}; this model was built for sensors {config.sensor_names}")
    for space in spaces:
        if space not in SPACES:
            raise ValueError(f"Unknown embedding space {space!r}; choose from {list(SPACES)}")
    device = _model_device(core, accelerator)
    is_dataset = hasattr(dataset_or_loader, "features") and hasattr(dataset_or_loader, "with_format")
    class_names = class_names_of(dataset_or_loader) if is_dataset else None
    if is_dataset:
        if len(dataset_or_loader) == 0:
            raise DataError("The dataset to embed is empty (0 rows); check the split name or the data source")
        indices, real = _shard(len(dataset_or_loader), accelerator)
        reader = PairBatches(dataset_or_loader, sensors, in_order=True)
        sampler = torch.utils.data.BatchSampler(indices.tolist(), batch_size=batch_size, drop_last=False)
        batches: Iterable = torch.utils.data.DataLoader(
            reader, sampler=sampler, batch_size=None, num_workers=num_workers
        )
    else:
        batches = dataset_or_loader
    show = progress and (accelerator is None or accelerator.is_local_main_process)
    if show:
        from tqdm.auto import tqdm

        total = math.ceil(len(indices) / batch_size) if is_dataset else None
        batches = tqdm(batches, total=total, desc="embedding", unit="batch")

    prepare = (lambda x, s: preprocess_batch(x, s, config)) if preprocess is True else preprocess
    chunks: dict[str, list[torch.Tensor]] = {column_name(s, sp): [] for s in sensors for sp in spaces}
    ids: list[str] = []
    labels: list[torch.Tensor] = []
    present: dict[str, list[torch.Tensor]] = {sensor: [] for sensor in sensors}
    was_training = core.training
    core.eval()
    try:
        with (
            torch.no_grad(),
            torch.autocast(device_type=device.type, dtype=torch.bfloat16, enabled=device.type == "cuda"),
        ):
            for batch in batches:
                for sensor in sensors:
                    pixels = batch[sensor].to(device, non_blocking=True)
                    pixels = prepare(pixels, sensor) if prepare else pixels
                    for space in spaces:
                        emb = encoder.get_embeddings(pixels, sensor=sensor, space=space, normalize=False).float()
                        chunks[column_name(sensor, space)].append(torch.nn.functional.normalize(emb, dim=-1))
                ids.extend(str(i) for i in batch.get("id", []))
                if not is_dataset and "present" in batch:  # a loader's rows lacking a sensor
                    for sensor in sensors:
                        present[sensor].append(torch.as_tensor(batch["present"][sensor]).to(device))
                if "labels" in batch:
                    labels.append(torch.as_tensor(batch["labels"]).float().to(device))
    finally:
        core.train(was_training)

    def collect(parts: list[torch.Tensor]) -> torch.Tensor:
        local = torch.cat(parts) if parts else torch.zeros(0, device=device)
        if accelerator is None:
            return local
        return accelerator.gather(local) if is_dataset else accelerator.gather_for_metrics(local)

    vectors = {name: collect(parts).cpu().numpy().astype(np.float32) for name, parts in chunks.items()}
    if is_dataset:
        size = len(dataset_or_loader)
        vectors = {name: v[:size] for name, v in vectors.items()}
        ids = [str(i) for i in dataset_or_loader["id"]]
        raw = dataset_or_loader["labels"] if "labels" in dataset_or_loader.column_names else [[] for _ in ids]
        label_array = multi_hot(raw, len(class_names) if class_names else num_classes_of(raw))
        from crjepa.data.loading import presence

        have = presence(dataset_or_loader, sensors)
    else:
        if accelerator is not None:
            ids = [str(i) for i in accelerator.gather_for_metrics(ids, use_gather_object=True)]
        label_array = (
            (collect(labels).cpu().numpy() != 0).astype(np.uint8) if labels else np.zeros((len(ids), 0), np.uint8)
        )
        have = {s: collect(parts).cpu().numpy().astype(bool) for s, parts in present.items() if parts}
    have = have if have and not all(mask.all() for mask in have.values()) else None
    return EmbeddingSet(vectors=vectors, ids=ids, labels=label_array, class_names=class_names, present=have)


# ---------------------------------------------------------------------------------------------- evaluation
@dataclass
class RetrievalResults:
    """The four-direction scores of one evaluation: ``metrics[metric][direction]`` as fractions in [0, 1]."""

    dataset_name: str
    sensors: list[str]
    metrics: dict[str, dict[str, float]]
    k: int
    multi_label: bool
    query_split: str | None = None
    gallery_split: str | None = None
    num_queries: int = 0
    num_gallery: int = 0
    notes: list[str] = field(default_factory=list)
    direction_counts: dict[str, list[int]] | None = None
    """{direction: [queries, gallery items]} when some rows lack a sensor (each direction then has its own)."""

    @property
    def directions(self) -> list[str]:
        return directions_of(self.sensors)

    @property
    def headline_metric(self) -> str:
        """The metric the paper reports first: F1@k (multi-label) or mAP (single-label)."""
        return next(iter(self.metrics))

    def __getitem__(self, metric: str) -> dict[str, float]:
        return self.metrics[metric]

    def describe(self) -> str:
        """What was scored, in one line: the data set, the splits and the counts (per direction when rows lack a
        sensor, since each direction then has its own queries and gallery), e.g. ``BigEarthNet-MM (reben), test
        split as queries and gallery: 6 queries x 6 gallery items``."""
        if self.gallery_split and self.gallery_split != self.query_split:
            splits = (
                f"queries from the {self.query_split or 'whole'} split, gallery from the {self.gallery_split} split"
            )
        else:
            splits = f"{self.query_split + ' split' if self.query_split else 'all rows'} as queries and gallery"
        return f"{self.dataset_name}, {splits}: {self.counts()}"

    def counts(self) -> str:
        """How many queries and gallery items were scored: ``6 queries x 6 gallery items``, or per direction when
        rows lack a sensor (``queries x gallery items per direction: S1->S1 2 x 2, ...``)."""
        if self.direction_counts:
            counts = ", ".join(f"{d.upper()} {q:,} x {g:,}" for d, (q, g) in self.direction_counts.items())
            return f"queries x gallery items per direction: {counts}"
        return f"{self.num_queries:,} queries x {self.num_gallery:,} gallery items"

    def to_markdown(self, percent: bool = True, digits: int = 2) -> str:
        """The paper's table: one row per metric, columns S1->S1, S2->S2, S1->S2, S2->S1 (values in %)."""
        header = "| metric | " + " | ".join(d.upper() for d in self.directions) + " |"
        lines = [header, "|" + "---|" * (len(self.directions) + 1)]
        for metric, values in self.metrics.items():
            cells = [
                f"{values[d] * (100 if percent else 1):.{digits}f}" if values.get(d) is not None else "n/a"
                for d in self.directions
            ]
            lines.append(f"| {metric} | " + " | ".join(cells) + " |")
        return "\n".join(lines)

    def as_dict(self) -> dict[str, Any]:
        return {**asdict(self), "directions": self.directions, "headline_metric": self.headline_metric}

    def to_json(self, path: str | Path | None = None) -> str:
        """JSON text of `as_dict`; also written to ``path`` when given."""
        text = json.dumps(self.as_dict(), indent=2)
        if path is not None:
            atomic_write_text(path, text + "\n")
        return text

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> RetrievalResults:
        names = {f for f in cls.__dataclass_fields__}
        return cls(**{key: value for key, value in data.items() if key in names})

    def model_index(self, dataset_type: str | None = None, dataset_split: str | None = None) -> list[Any]:
        """huggingface_hub `EvalResult`s (values in %), ready for `ModelCardData(eval_results=...)`.

        task: the Hub task of the model (`MODEL_INDEX_TASK`, its pipeline tag); dataset.type: ``dataset_type`` (the
        data set's Hub id) or an id made from the data set's name; metric.type: the `evaluate` module that computes
        the metric (crjepa/eval/metrics_modules/), metric.args its compute() arguments, metric.config the direction.
        """
        from huggingface_hub import EvalResult

        split = dataset_split or self.query_split or None
        results = []
        for metric, values in self.metrics.items():
            module, args = metric_module(metric)
            for direction in self.directions:
                if values.get(direction) is None:  # not scored (no queries or gallery with its sensors)
                    continue
                results.append(
                    EvalResult(
                        task_type=MODEL_INDEX_TASK,
                        task_name="Cross-modal remote-sensing image retrieval",
                        dataset_type=dataset_type or dataset_id(self.dataset_name),
                        dataset_name=self.dataset_name,
                        dataset_split=split,
                        metric_type=module,
                        metric_args=args,
                        metric_name=f"{metric} {direction.upper()}",
                        metric_value=round(values[direction] * 100, 2),
                        metric_config=direction,
                    )
                )
        return results


MODEL_INDEX_TASK = "image-feature-extraction"
"""The Hub task of the model-index results: the model's pipeline tag (the Hub has no retrieval task for images)."""


def dataset_id(name: str) -> str:
    """An id for a data set known only by its name (no Hub id): lower case, runs of other characters as one "-"
    ("BEN-14K (reBEN)" -> "ben-14k-reben")."""
    return re.sub(r"[^a-z0-9._-]+", "-", name.lower()).strip("-") or "dataset"


def metric_module(metric: str) -> tuple[str, dict[str, Any]]:
    """The `evaluate` module (crjepa/eval/metrics_modules/) and its compute() arguments that give a metric of
    `_metric_names`: "F1@5" -> ("crjepa_f1_at_k", {"k": 5, "variant": "paper"})."""
    match = re.fullmatch(r"(F1|P|mAP)(?:@(\d+))?(?: \((CSMAE|any shared)\))?", metric)
    if match is None:
        raise ValueError(f"No evaluate module computes the metric {metric!r}")
    name, k, variant = match.groups()
    args: dict[str, Any] = {"k": int(k)} if k else {}
    if name == "F1":
        return "crjepa_f1_at_k", {**args, "variant": "csmae" if variant == "CSMAE" else "paper"}
    relevance = "any_shared" if variant == "any shared" else "same_class"
    return ("crjepa_map" if name == "mAP" else "crjepa_precision_at_k"), {**args, "relevance": relevance}


def _similarity_chunks(queries: np.ndarray, gallery: np.ndarray, max_elements: int) -> Iterable[slice]:
    step = max(1, max_elements // max(len(gallery), 1))
    return [slice(s, min(s + step, len(queries))) for s in range(0, len(queries), step)]


def _score_direction(
    queries: np.ndarray,
    gallery: np.ndarray,
    query_labels: np.ndarray,
    gallery_labels: np.ndarray,
    same_set: bool,
    multi_label: bool,
    k: int,
    max_elements: int,
) -> tuple[dict[str, float], list[str]]:
    """All metrics of one direction; cosine similarity (the vectors are unit length).

    When the queries are the gallery, each query's own item is excluded (by position, so duplicate ids are
    harmless). Large evaluations run over query chunks; every metric is a mean over queries except CSMAE's F1
    (a harmonic mean of global averages), which is only reported when one chunk covers all queries.
    """
    chunks = _similarity_chunks(queries, gallery, max_elements)
    sums: dict[str, float] = {}
    notes: list[str] = []
    gallery_pos = np.arange(len(gallery))
    for rows in chunks:
        sim = queries[rows] @ gallery.T
        exclude = {"query_ids": np.arange(rows.start, rows.stop), "gallery_ids": gallery_pos} if same_set else {}
        ql = query_labels[rows]
        if multi_label:
            parts = {
                f"F1@{k}": f1_at_k(sim, ql, gallery_labels, k=k, variant="paper", **exclude),
                f"mAP@{k} (any shared)": mean_average_precision(
                    sim, ql, gallery_labels, k=k, relevance="any_shared", **exclude
                ),
            }
            if len(chunks) == 1:
                parts[f"F1@{k} (CSMAE)"] = f1_at_k(sim, ql, gallery_labels, k=k, variant="csmae", **exclude)
        else:
            parts = {
                "mAP": mean_average_precision(sim, ql, gallery_labels, k=None, relevance="same_class", **exclude),
                f"P@{k}": precision_at_k(sim, ql, gallery_labels, k=k, relevance="same_class", **exclude),
            }
        for name, value in parts.items():
            sums[name] = sums.get(name, 0.0) + value * (rows.stop - rows.start)
    if multi_label and len(chunks) > 1:
        notes.append(
            f"F1@{k} (CSMAE) skipped: {len(queries)} x {len(gallery)} similarities exceed "
            f"max_similarity_elements={max_elements}"
        )
    return {name: sums[name] / len(queries) for name in _metric_names(multi_label, k) if name in sums}, notes


def _metric_names(multi_label: bool, k: int) -> list[str]:
    return [f"F1@{k}", f"F1@{k} (CSMAE)", f"mAP@{k} (any shared)"] if multi_label else ["mAP", f"P@{k}"]


def evaluate_embeddings(
    query_set: EmbeddingSet,
    gallery_set: EmbeddingSet | None = None,
    sensors: Sequence[str] | None = None,
    k: int = 5,
    *,
    multi_label: bool | None = None,
    dataset_name: str = "dataset",
    query_split: str | None = None,
    gallery_split: str | None = None,
    max_similarity_elements: int = DEFAULT_MAX_SIMILARITY_ELEMENTS,
) -> RetrievalResults:
    """Score the four directions on precomputed embeddings (``gallery_set=None``: the queries are the gallery,
    self-matches excluded). ``multi_label=None`` decides from the labels (any item with two or more labels)."""
    same_set = gallery_set is None or gallery_set is query_set
    gallery_set = query_set if gallery_set is None else gallery_set
    if len(query_set) == 0 or len(gallery_set) == 0:
        raise DataError(f"Cannot evaluate: {len(query_set)} queries and {len(gallery_set)} gallery items")
    if query_set.labels.shape[1] != gallery_set.labels.shape[1]:
        raise DataError(
            f"Queries have {query_set.labels.shape[1]} classes but the gallery has "
            f"{gallery_set.labels.shape[1]}; both must come from one dataset"
        )
    sensors = list(sensors or dict.fromkeys(c.rsplit("_", 1)[0] for c in query_set.columns))
    if multi_label is None:
        multi_label = bool((query_set.labels.sum(1) > 1).any() or (gallery_set.labels.sum(1) > 1).any())
    metrics: dict[str, dict[str, float]] = {}
    notes: list[str] = []
    counts: dict[str, list[int]] = {}
    for direction in directions_of(sensors):
        source, target, space = parse_direction(direction, sensors)
        # rows lacking a sensor are neither queries of its directions nor candidates in its gallery
        query_rows, gallery_rows = query_set.rows_with(source), gallery_set.rows_with(target)
        queries, query_labels = query_set[column_name(source, space)], query_set.labels
        gallery, gallery_labels = gallery_set[column_name(target, space)], gallery_set.labels
        if query_rows is not None:
            queries, query_labels = queries[query_rows], query_labels[query_rows]
        if gallery_rows is not None:
            gallery, gallery_labels = gallery[gallery_rows], gallery_labels[gallery_rows]
        counts[direction] = [len(queries), len(gallery)]
        candidates = len(gallery) - (1 if same_set and source == target else 0)
        if len(queries) == 0 or candidates < k:
            notes.append(
                f"{direction}: not scored ({len(queries)} queries with {source!r}, {len(gallery)} gallery "
                f"items with {target!r}; k={k})"
            )
            for name in _metric_names(multi_label, k):
                metrics.setdefault(name, {})[direction] = None
            continue
        scores, direction_notes = _score_direction(
            queries,
            gallery,
            query_labels,
            gallery_labels,
            same_set and source == target,
            multi_label,
            k,
            max_similarity_elements,
        )
        notes.extend(n for n in direction_notes if n not in notes)
        for name, value in scores.items():
            metrics.setdefault(name, {})[direction] = value
    partial = query_set.present is not None or gallery_set.present is not None
    return RetrievalResults(
        dataset_name=dataset_name,
        sensors=list(sensors),
        metrics=metrics,
        k=k,
        multi_label=multi_label,
        query_split=query_split,
        gallery_split=gallery_split if not same_set else query_split,
        num_queries=len(query_set),
        num_gallery=len(gallery_set),
        notes=notes,
        direction_counts=counts if partial else None,
    )


def present_sensors(model_sensors: Sequence[str], dataset: Any) -> list[str]:
    """The model's sensors the data holds a column for (an S2-only archive: just ``s2``); an error naming both
    sides when there is none."""
    names = getattr(dataset, "column_names", None) or []
    columns = set(next(iter(names.values()), [])) if isinstance(names, dict) else set(names)  # DatasetDict
    if not columns:  # not a datasets.Dataset (a loader): trust the model's sensors
        return list(model_sensors)
    present = [s for s in model_sensors if s in columns]
    if not present:
        raise DataError(
            f"The data has none of the model's sensor columns {list(model_sensors)}; its columns are {sorted(columns)}"
        )
    return present


def select_split(dataset: Any, split: str | None) -> Any:
    """Rows of one split: ``dataset[split]`` for a DatasetDict, the rows whose ``split`` column equals it for a
    Dataset; None returns the dataset unchanged."""
    if split is None:
        return dataset
    if hasattr(dataset, "keys") and not hasattr(dataset, "features"):  # DatasetDict
        if split not in dataset:
            raise DataError(f"No split {split!r}; available: {list(dataset.keys())}")
        return dataset[split]
    if "split" not in dataset.column_names:
        raise DataError(f"Cannot select split {split!r}: the dataset has no 'split' column")
    values = np.asarray(dataset["split"])
    rows = np.flatnonzero(values == split)
    if len(rows) == 0:
        raise DataError(f"No rows in split {split!r}; the dataset has splits {sorted(set(values.tolist()))}")
    return dataset.select(rows)


def evaluate_retrieval(
    model: Any,
    dataset: Any,
    query_split: str | None = None,
    gallery_split: str | None = None,
    k: int = 5,
    *,
    batch_size: int = 64,
    accelerator: Any = None,
    dataset_name: str | None = None,
    multi_label: bool | None = None,
    num_workers: int = 0,
    progress: bool = False,
    max_similarity_elements: int = DEFAULT_MAX_SIMILARITY_ELEMENTS,
) -> RetrievalResults:
    """Embed and score the paper's four directions.

    Protocols: no split -> the whole dataset is queries and gallery; ``query_split`` only -> that split is
    both; ``query_split`` and another ``gallery_split`` -> queries from one, the archive from the other (CSMAE
    on BEN-14K: validation queries against the test archive). Self-matches are excluded whenever the queries
    are the gallery. Multi-label sets give F1@k (paper), F1@k (CSMAE) and mAP@k (any shared); single-label sets
    give global mAP and P@k (same class).
    """
    config = (accelerator.unwrap_model(model) if accelerator is not None else model).config
    sensors = present_sensors(config.sensor_names, dataset)
    options = dict(
        batch_size=batch_size, accelerator=accelerator, num_workers=num_workers, progress=progress, sensors=sensors
    )
    queries = compute_embeddings(model, select_split(dataset, query_split), **options)
    gallery = None
    if gallery_split is not None and gallery_split != query_split:
        gallery = compute_embeddings(model, select_split(dataset, gallery_split), **options)
    name = dataset_name or getattr(getattr(dataset, "info", None), "dataset_name", None) or "dataset"
    return evaluate_embeddings(
        queries,
        gallery,
        sensors,
        k,
        multi_label=multi_label,
        dataset_name=name,
        query_split=query_split,
        gallery_split=gallery_split,
        max_similarity_elements=max_similarity_elements,
    )


__all__ = [
    "SPACES",
    "EmbeddingSet",
    "RetrievalResults",
    "column_name",
    "compute_embeddings",
    "directions_of",
    "evaluate_embeddings",
    "evaluate_retrieval",
    "label_lists",
    "multi_hot",
    "parse_direction",
    "present_sensors",
    "select_split",
]
