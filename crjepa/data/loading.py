"""Paired datasets -> torch batches, fast: used by the training script.

`load_paired_dataset` opens any source (the built-in synthetic set, an exported Parquet folder, or a builder
by name). `make_dataloader` reads WHOLE BATCHES of rows at once from Arrow (one ``take`` per batch, flattened
to numpy without per-row Python work and without changing dtypes: S2 stays uint16, S1 float32) and yields
``{sensor: (B, C, H, W) tensor, "labels": (B, num_classes) float multi-hot, "id": list[str]}``.
"""

from __future__ import annotations

import importlib
import os
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

import datasets
import numpy as np
import pyarrow as pa
import torch
from torch.utils.data import BatchSampler, DataLoader, RandomSampler, Sampler, SequentialSampler

from crjepa.data.labels import class_names_of, multi_hot
from crjepa.data.schema import BUILDER_MODULES, SPLITS, DataError, sensor_columns


# ----------------------------------------------------------------------------------------------------------
# Opening a dataset
# ----------------------------------------------------------------------------------------------------------
def load_paired_dataset(source: str | os.PathLike, split: str | None = None, **kw: Any) -> datasets.Dataset:
    """Open a paired dataset.

    source: ``"synthetic"`` (built in; kwargs num_train / num_validation / num_test / image_size / seed,
    built in memory, deterministic), a folder of exported Parquet (``data/<split>-*.parquet``; kwarg
    cache_dir), or a builder name (``"dsrsid"``, ``"cbrsir_vs"``, ``"paired"``, ``"bigearthnet"``) whose
    kwargs go to the builder (e.g. ``data_dir=...``, ``cache_dir=...``). ``split=None`` returns all splits
    concatenated (the ``split`` column tells them apart)."""
    if split is not None and split not in SPLITS:
        raise ValueError(f"Unknown split {split!r}; use one of {SPLITS}")
    if str(source) == "synthetic":
        return _load_synthetic(split, **kw)
    if str(source) in BUILDER_MODULES:
        return _load_builder(str(source), split, **kw)
    path = Path(source).expanduser()
    if path.is_dir():
        return _load_parquet(path, split, **kw)
    raise DataError(f"Unknown data source {str(source)!r}: use 'synthetic', a folder of exported Parquet, or one "
                    f"of the builders {sorted(BUILDER_MODULES)}")


def export_name(folder: str | os.PathLike) -> str:
    """The name of an exported folder: its dataset card's ``pretty_name`` (written by `python -m datasets_scripts`),
    else the folder's name. Used as the data set's name in model cards and results."""
    import yaml

    folder = Path(folder)
    card = folder / "README.md"
    if card.is_file():
        text = card.read_text(encoding="utf-8")
        if text.startswith("---"):
            try:
                meta = yaml.safe_load(text.split("---", 2)[1]) or {}
            except yaml.YAMLError:
                meta = {}
            if isinstance(meta, dict) and meta.get("pretty_name"):
                return str(meta["pretty_name"])
    return folder.resolve().name


def _load_synthetic(split: str | None, **kw: Any) -> datasets.Dataset:
    synthetic = importlib.import_module(BUILDER_MODULES["synthetic"])

    sizes = {s: int(kw.pop(f"num_{s}", synthetic.DEFAULT_SIZES[s])) for s in synthetic.DEFAULT_SIZES}
    image_size = int(kw.pop("image_size", synthetic.DEFAULT_IMAGE_SIZE))
    seed = int(kw.pop("seed", 0))
    kw.pop("cache_dir", None)
    if kw:
        raise TypeError(f"Unknown options for the synthetic data: {sorted(kw)}")
    wanted = [split] if split else [s for s, n in sizes.items() if n > 0]
    if split and split not in sizes:
        raise ValueError(f"The synthetic data has splits {list(sizes)}, not {split!r}")
    parts = [datasets.Dataset.from_dict(synthetic.to_columns(synthetic.generate(sizes[s], seed, image_size, s)),
                                        features=synthetic.features(image_size), split=s) for s in wanted]
    return parts[0] if len(parts) == 1 else datasets.concatenate_datasets(parts)


def _load_parquet(folder: Path, split: str | None, cache_dir: str | None = None) -> datasets.Dataset:
    base = folder / "data" if (folder / "data").is_dir() else folder
    files = {s: sorted(str(p) for p in base.glob(f"{s}-*.parquet")) for s in SPLITS}
    files = {s: f for s, f in files.items() if f}
    if not files:
        raise DataError(f"No exported Parquet shards (<split>-NNNNN-of-NNNNN.parquet) in {base}")
    if split is not None and split not in files:
        raise DataError(f"{folder} has no {split!r} split; it has {list(files)}")
    _check_parquet_files([f for s, fs in files.items() if split in (None, s) for f in fs])
    dd = datasets.load_dataset("parquet", data_files=files, cache_dir=cache_dir)
    if split is not None:
        return dd[split]
    return datasets.concatenate_datasets([dd[s] for s in files])


def _check_parquet_files(files: Sequence[str]) -> None:
    """Read each shard's footer (cheap) so a truncated or corrupt file is one DataError naming it, not a
    traceback from deep inside `datasets`."""
    import pyarrow.parquet as pq

    for file in files:
        try:
            pq.read_metadata(file)
        except (OSError, pa.ArrowException) as exc:
            reason = (str(exc).splitlines() or [type(exc).__name__])[0]
            raise DataError(f"{file} is not a readable Parquet file ({reason}); export the data again "
                            "(`python -m datasets_scripts ...`) or remove the file") from None


def _load_builder(name: str, split: str | None, cache_dir: str | None = None, **kw: Any) -> datasets.Dataset:
    module = importlib.import_module(BUILDER_MODULES[name])
    builder_cls = getattr(module, "BUILDER_CLASS", None)
    if builder_cls is None:
        builder_cls = next(v for v in vars(module).values() if isinstance(v, type)
                           and issubclass(v, datasets.DatasetBuilder) and v.__module__ == module.__name__)
    builder = builder_cls(cache_dir=cache_dir, **kw)
    builder.download_and_prepare()
    if split is not None:
        return builder.as_dataset(split=split)
    dd = builder.as_dataset()
    return datasets.concatenate_datasets([dd[s] for s in SPLITS if s in dd])


# ----------------------------------------------------------------------------------------------------------
# Schema helpers
# ----------------------------------------------------------------------------------------------------------
def label_names(ds: datasets.Dataset) -> list[str]:
    """Class names of a paired dataset, from its ``labels`` feature."""
    names = class_names_of(ds)
    if names is None:
        raise DataError("The dataset's labels column has no class names (expected Sequence(ClassLabel(names=...)))")
    return names


def check_sensors(ds: datasets.Dataset, sensors: Mapping[str, int] | Sequence[str]) -> None:
    """Fail early, in words, if the dataset lacks a sensor column or has a different channel count than the
    model expects (``sensors`` maps name -> channels, e.g. ``config.sensors``)."""
    have = {name: ds.features[name].shape[0] for name in sensor_columns(ds.features)}
    want = dict(sensors) if isinstance(sensors, Mapping) else {s: None for s in sensors}
    not_images = [s for s in want if s not in have and s in ds.column_names]
    missing = [s for s in want if s not in have and s not in not_images]
    wrong = [f"{s!r} has {have[s]} channels, the model expects {c}" for s, c in want.items()
             if s in have and c is not None and have[s] != c]
    problems = []
    if missing:
        problems.append(f"missing sensor column(s) {missing} (the dataset has {sorted(have)})")
    problems.extend(f"column {s!r} is not an Array3D(C, H, W) image column" for s in not_images)
    problems.extend(wrong)
    if problems:
        raise DataError("Dataset does not match the model's sensors: " + "; ".join(problems))


def array3d_to_numpy(column: pa.ChunkedArray | pa.Array, shape: Sequence[int]) -> np.ndarray:
    """An Arrow Array3D column (or one chunk) -> (N, C, H, W) numpy array of its native dtype. Zero-copy where
    Arrow allows (a memory-mapped file stays on disk until rows are indexed), so the result may be read-only."""
    chunks = column.chunks if isinstance(column, pa.ChunkedArray) else [column]
    parts = []
    for arr in chunks:
        if isinstance(arr, pa.ExtensionArray):
            arr = arr.storage
        for _ in range(3):
            arr = arr.flatten()
        parts.append(arr.to_numpy(zero_copy_only=False).reshape(-1, *shape))
    return parts[0] if len(parts) == 1 else np.concatenate(parts)


class Array3DColumn:
    """Row access to an Array3D column without per-row Python: zero-copy numpy views of the Arrow chunks, and
    one fancy-indexing copy per batch (which is also the only copy made before pinning / the GPU)."""

    def __init__(self, column: pa.ChunkedArray, shape: Sequence[int]) -> None:
        self.chunks = [array3d_to_numpy(chunk, shape) for chunk in column.chunks]
        self.starts = np.cumsum([0] + [len(c) for c in self.chunks])

    def take(self, rows: np.ndarray) -> torch.Tensor:
        """Rows (sorted ascending) -> (B, C, H, W) tensor. In a DataLoader worker the rows are gathered straight
        into shared memory, saving the copy torch would otherwise make to send the batch to the main process."""
        first = self.chunks[0]
        out = torch.from_numpy(np.empty((len(rows), *first.shape[1:]), first.dtype))
        if torch.utils.data.get_worker_info() is not None:
            out = out.share_memory_()
        target = out.numpy()
        which = np.searchsorted(self.starts, rows, side="right") - 1
        done = 0
        for c in np.unique(which):
            part = rows[which == c] - self.starts[c]
            np.take(self.chunks[c], part, axis=0, out=target[done:done + len(part)])
            done += len(part)
        return out


# ----------------------------------------------------------------------------------------------------------
# Batches
# ----------------------------------------------------------------------------------------------------------
class PairBatches(torch.utils.data.Dataset):
    """Map-style dataset whose items are whole batches: ``reader[list_of_indices]`` -> batch dict
    ``{sensor: (B, C, H, W) native dtype, "labels": (B, num_classes) float multi-hot, "id": list[str]}``.

    The one batch reader of crjepa: training (`make_dataloader`), embedding (`compute_embeddings`) and the result
    grids (`crjepa.eval.visualize`) read rows through it. Rows are read in ascending table order (sequential
    reads); ``in_order=True`` returns them in the order asked for (embedding keeps dataset order). ``labels``
    is present when the dataset's labels have class names.
    """

    def __init__(self, ds: datasets.Dataset, sensors: Sequence[str], in_order: bool = False) -> None:
        check_sensors(ds, sensors)
        self.sensors, self.in_order = list(sensors), in_order
        self.shapes = {s: ds.features[s].shape for s in self.sensors}
        # the whole underlying table (a datasets Table: memory-mapped on-disk sets pickle as a path, cheap to send
        # to spawned workers) and this dataset's rows in it (select / filter / shuffle leave an indices mapping)
        self.table = ds.data
        mapping = getattr(ds, "_indices", None)
        self.rows = (mapping.column(0).to_numpy() if mapping is not None
                     else np.arange(len(ds))).astype(np.int64)
        self._columns: dict[str, Array3DColumn] | None = None
        self.labels = multi_hot(ds, dtype=np.float32) if class_names_of(ds) is not None else None
        self.ids = ds.with_format("arrow")[:]["id"].to_pylist()

    def columns(self) -> dict[str, Array3DColumn]:
        """Zero-copy views of the sensor columns, built lazily (in each worker process)."""
        if self._columns is None:
            self._columns = {s: Array3DColumn(self.table.table.column(s), self.shapes[s]) for s in self.sensors}
        return self._columns

    def __getstate__(self) -> dict[str, Any]:
        return {**self.__dict__, "_columns": None}

    def __len__(self) -> int:
        return len(self.ids)

    def __getitem__(self, indices: Sequence[int]) -> dict[str, Any]:
        idx = np.asarray(indices, dtype=np.int64)
        order = np.argsort(self.rows[idx], kind="stable")  # ascending table rows: sequential reads
        batch: dict[str, Any] = {s: col.take(self.rows[idx[order]]) for s, col in self.columns().items()}
        if self.in_order and np.any(order != np.arange(len(order))):  # already ascending: nothing to undo
            back = torch.from_numpy(np.argsort(order, kind="stable"))
            batch = {s: pixels[back] for s, pixels in batch.items()}
        elif not self.in_order:
            idx = idx[order]
        if self.labels is not None:
            batch["labels"] = torch.from_numpy(self.labels[idx])
        batch["id"] = [self.ids[i] for i in idx]
        return batch


def make_dataloader(
    ds: datasets.Dataset,
    sensors: Mapping[str, int] | Sequence[str],
    batch_size: int,
    shuffle: bool = True,
    seed: int = 0,
    num_workers: int = 0,
    drop_last: bool = True,
    sampler: Sampler | None = None,
) -> DataLoader:
    """A DataLoader of batch dicts {sensor: (B, C, H, W) native dtype, "labels": (B, K) float multi-hot,
    "id": list[str]}. Reads are batched (one Arrow take per batch); ``sampler`` (e.g. a DistributedSampler)
    replaces the built-in seeded shuffle; memory is pinned when CUDA is available."""
    names = list(sensors)
    reader = PairBatches(ds, names)
    if sampler is None:
        if shuffle:
            sampler = RandomSampler(reader, generator=torch.Generator().manual_seed(seed))
        else:
            sampler = SequentialSampler(reader)
    batches = BatchSampler(sampler, batch_size=batch_size, drop_last=drop_last)
    return DataLoader(reader, sampler=batches, batch_size=None, num_workers=num_workers,
                      pin_memory=torch.cuda.is_available(), persistent_workers=num_workers > 0,
                      collate_fn=_identity)


def _identity(batch: dict[str, Any]) -> dict[str, Any]:
    """Batches are already assembled by `PairBatches`."""
    return batch
