"""Paired datasets -> torch batches, fast: used by the training script.

`load_paired_dataset` opens any source (the built-in synthetic set, an exported Parquet folder, or a builder
by name). `make_dataloader` reads WHOLE BATCHES of rows at once from Arrow (one ``take`` per batch, flattened
to numpy without per-row Python work and without changing dtypes: S2 stays uint16, S1 float32) and yields
``{sensor: (B, C, H, W) tensor, "present": {sensor: (B,) bool}, "labels": (B, num_classes) float multi-hot,
"id": list[str]}``.

Partially paired data: a row may lack any sensor (a null value in that sensor's column). Such a row's slot in
``batch[sensor]`` is ZERO-FILLED (shapes stay static) and ``batch["present"][sensor]`` is False there; a loss term
must use only the rows whose masks say it has what it needs. `load_paired_dataset` also combines a paired set
with single-sensor sets (``extra_sources``) into one stream with a sampling ``mix`` (see `combine_datasets`).
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
from crjepa.data.schema import BUILDER_MODULES, SPLITS, DataError, check_synthetic_options, sensor_columns


# ----------------------------------------------------------------------------------------------------------
# Opening a dataset
# ----------------------------------------------------------------------------------------------------------
def load_paired_dataset(
    source: str | os.PathLike,
    split: str | None = None,
    extra_sources: Mapping[str, Any] | None = None,
    mix: Mapping[str, float] | None = None,
    mix_seed: int = 0,
    **kw: Any,
) -> datasets.Dataset:
    """Open a paired dataset, optionally combined with more (e.g. single-sensor) data sets.

    source: ``"synthetic"`` (built in; kwargs num_train / num_validation / num_test / image_size / seed /
    pairing_rate (share of train rows kept paired, the rest single-sensor), built in memory, deterministic),
    a folder of exported Parquet (``data/<split>-*.parquet``; kwarg cache_dir), or a builder name
    (``"dsrsid"``, ``"cbrsir_vs"``, ``"paired"``, ``"bigearthnet"``) whose kwargs go to the builder (e.g.
    ``data_dir=...``, ``cache_dir=...``). ``split=None`` returns all splits
    concatenated (the ``split`` column tells them apart).

    extra_sources: ``{name: source}`` or ``{name: {"source": ..., **kwargs}}`` opened the same way (e.g.
    ``{"s2_only": "exports/s2-only"}``) and combined with this one, which is named ``"paired"``, by
    `combine_datasets` with ``mix`` (``{name: share}``; default: proportional to size) and ``mix_seed``; the mix
    resamples the rows of ``split`` (all splits: the train rows only, evaluation rows stay once)."""
    if extra_sources:
        parts = {"paired": load_paired_dataset(source, split, **kw)}
        where = {"paired": str(kw.get("path") or kw.get("data_dir") or kw.get("csv_path") or source)}
        for name, spec in extra_sources.items():
            if name in parts:
                raise DataError(f"extra_sources: the name {name!r} is taken (the main source is 'paired')")
            opts = dict(spec) if isinstance(spec, Mapping) else {"source": spec}
            if "source" not in opts:
                raise DataError(f"extra_sources[{name!r}] needs a 'source' (a folder, 'synthetic' or a builder)")
            where[name] = str(opts.get("path") or opts.get("data_dir") or opts.get("csv_path") or opts["source"])
            parts[name] = load_paired_dataset(opts.pop("source"), split, **opts)
        return combine_datasets(parts, mix=mix, seed=mix_seed, where=where, mix_split=split or "train")
    if mix is not None:
        raise DataError("mix needs extra_sources: there is only one data set to draw from")
    if split is not None and split not in SPLITS:
        raise DataError(f"Unknown split {split!r}; use one of {SPLITS}")
    if str(source) == "synthetic":
        return _load_synthetic(split, **kw)
    if str(source) in BUILDER_MODULES:
        return _load_builder(str(source), split, **kw)
    path = Path(source).expanduser()
    if path.is_dir():
        return _load_parquet(path, split, **kw)
    from crjepa.hub.access import is_repo_id

    if is_repo_id(str(source)):
        return load_hub_dataset(str(source), split, cache_dir=kw.get("cache_dir"))
    raise DataError(
        f"Unknown data source {str(source)!r}: use 'synthetic', a folder of exported Parquet, a Hub data "
        f"set id (user/name), or one of the builders {sorted(BUILDER_MODULES)}"
    )


def load_hub_dataset(
    repo_id: str, split: str | None = None, streaming: bool = False, cache_dir: str | None = None
) -> Any:
    """A paired data set on the Hugging Face Hub (an export of `python -m datasets_scripts ... --push-to-hub`: its
    card's `configs` name the Parquet shards of each split), one split or all of them concatenated in SPLITS
    order; ``streaming`` reads it without downloading it whole. A Hub that cannot be reached, or a repo that
    does not exist, is one DataError."""
    from crjepa.hub.access import reason

    try:
        loaded = datasets.load_dataset(repo_id, split=split, streaming=streaming, cache_dir=cache_dir)
    except Exception as err:  # offline, unknown repo, no such split: one line for a person
        raise DataError(
            f"Cannot load the Hub data set {repo_id!r} ({reason(err)}); check the name and the network "
            "(HF_HUB_OFFLINE=1 reads only what is cached), or pass a local export folder"
        ) from None
    if split is not None:
        return loaded
    parts = [loaded[s] for s in SPLITS if s in loaded]
    if not parts:
        raise DataError(f"The Hub data set {repo_id!r} has splits {list(loaded)}, none of {list(SPLITS)}")
    return datasets.concatenate_datasets(parts) if len(parts) > 1 else parts[0]


def export_card(folder: str | os.PathLike) -> dict[str, Any]:
    """The YAML metadata of an exported folder's dataset card (README.md written by `python -m datasets_scripts`);
    {} when there is none or it does not parse."""
    import yaml

    card = Path(folder) / "README.md"
    if card.is_file():
        text = card.read_text(encoding="utf-8")
        if text.startswith("---"):
            try:
                meta = yaml.safe_load(text.split("---", 2)[1]) or {}
            except yaml.YAMLError:
                meta = {}
            if isinstance(meta, dict):
                return meta
    return {}


def export_name(folder: str | os.PathLike) -> str:
    """The name of an exported folder: its dataset card's ``pretty_name`` (written by `python -m datasets_scripts`),
    else the folder's name. Used as the data set's name in model cards and results."""
    name = export_card(folder).get("pretty_name")
    return str(name) if name else Path(folder).resolve().name


def _load_synthetic(split: str | None, **kw: Any) -> datasets.Dataset:
    from crjepa.data.schema import SYNTHETIC_OPTIONS

    unknown = sorted(set(kw) - set(SYNTHETIC_OPTIONS))
    if unknown:  # a keyword the function does not take
        raise TypeError(f"Unknown options for the synthetic data: {unknown}; it takes {sorted(SYNTHETIC_OPTIONS)}")
    check_synthetic_options(kw)  # sizes before anything is generated
    synthetic = importlib.import_module(BUILDER_MODULES["synthetic"])

    sizes = {s: int(kw.pop(f"num_{s}", synthetic.DEFAULT_SIZES[s])) for s in synthetic.DEFAULT_SIZES}
    image_size = int(kw.pop("image_size", synthetic.DEFAULT_IMAGE_SIZE))
    seed = int(kw.pop("seed", 0))
    pairing_rate = float(kw.pop("pairing_rate", 1.0))
    kw.pop("cache_dir", None)
    if kw:
        raise TypeError(f"Unknown options for the synthetic data: {sorted(kw)}")
    wanted = [split] if split else [s for s, n in sizes.items() if n > 0]
    if split and split not in sizes:
        raise DataError(f"The synthetic data has splits {list(sizes)}, not {split!r}")
    parts = [
        datasets.Dataset.from_dict(
            synthetic.to_columns(
                synthetic.generate(sizes[s], seed, image_size, s, pairing_rate=pairing_rate if s == "train" else 1.0)
            ),
            features=synthetic.features(image_size),
            split=s,
        )
        for s in wanted
    ]
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
            raise DataError(
                f"{file} is not a readable Parquet file ({reason}); export the data again "
                "(`python -m datasets_scripts ...`) or remove the file"
            ) from None


def _load_builder(name: str, split: str | None, cache_dir: str | None = None, **kw: Any) -> datasets.Dataset:
    module = importlib.import_module(BUILDER_MODULES[name])
    builder_cls = getattr(module, "BUILDER_CLASS", None)
    if builder_cls is None:
        builder_cls = next(
            v
            for v in vars(module).values()
            if isinstance(v, type) and issubclass(v, datasets.DatasetBuilder) and v.__module__ == module.__name__
        )
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


def check_sensors(
    ds: datasets.Dataset, sensors: Mapping[str, int] | Sequence[str], exact: bool = False, where: str | None = None
) -> None:
    """Fail early, in words, if the dataset lacks a sensor column, has a different channel count than the model
    expects (``sensors`` maps name -> channels, e.g. ``config.sensors``), or no row at all has one of the
    sensors. With ``exact=True`` (training) a sensor column the model does not have is an error too, so a
    misnamed sensor stops the run before its first step instead of being silently ignored. ``where`` (a file
    or folder) is named in the message."""
    have = {name: ds.features[name].shape[0] for name in sensor_columns(ds.features)}
    want = dict(sensors) if isinstance(sensors, Mapping) else {s: None for s in sensors}
    not_images = [s for s in want if s not in have and s in ds.column_names]
    missing = [s for s in want if s not in have and s not in not_images]
    wrong = [
        f"{s!r} has {have[s]} channels, the model expects {c}"
        for s, c in want.items()
        if s in have and c is not None and have[s] != c
    ]
    problems = []
    if missing:
        problems.append(f"missing sensor column(s) {missing} (the dataset has {sorted(have)})")
    problems.extend(f"column {s!r} is not an Array3D(C, H, W) image column" for s in not_images)
    if exact:
        extra = [s for s in have if s not in want]
        if extra:
            problems.append(
                f"sensor column(s) {extra} not in the model's config (its sensors are {list(want)}); "
                "rename the column or add the sensor to the config"
            )
    problems.extend(wrong)
    if len(ds):
        empty = [s for s in want if s in have and not column_numpy(ds, s, valid=True).any()]
        if empty:
            problems.append(f"no row has sensor(s) {empty} (every value of the column is empty)")
    if problems:
        raise DataError(
            f"Dataset{f' {where}' if where else ''} does not match the model's sensors: " + "; ".join(problems)
        )


def column_numpy(ds: datasets.Dataset, name: str, valid: bool = False) -> np.ndarray:
    """One column of the dataset's rows as numpy (``valid``: its validity, i.e. non-null), read from the
    underlying table and mapped through the indices of a select / filter / shuffle view, so image columns are
    never copied."""
    column = ds.data.table.column(name)
    out = column.is_valid().to_numpy(zero_copy_only=False) if valid else np.asarray(column.to_pylist(), dtype=object)
    mapping = getattr(ds, "_indices", None)
    return out if mapping is None else out[mapping.column(0).to_numpy()]


def presence(ds: datasets.Dataset, sensors: Sequence[str] | None = None) -> dict[str, np.ndarray]:
    """{sensor: (N,) bool}: which rows of the dataset have each sensor (a null value means the row lacks it)."""
    names = list(sensors) if sensors is not None else sensor_columns(ds.features)
    return {s: column_numpy(ds, s, valid=True) for s in names}


def pairing_summary(ds: datasets.Dataset, sensors: Sequence[str] | None = None) -> dict[str, int]:
    """Row counts by which sensors a row has, e.g. ``{"s1+s2": 900, "s1": 50, "s2": 50}`` (for logs and cards)."""
    have = presence(ds, sensors)
    names = list(have)
    keys = np.stack([have[s] for s in names], axis=1) if names else np.zeros((len(ds), 0), bool)
    out: dict[str, int] = {}
    for pattern, count in zip(*np.unique(keys, axis=0, return_counts=True)):
        label = "+".join(s for s, on in zip(names, pattern) if on) or "none"
        out[label] = int(count)
    return dict(sorted(out.items(), key=lambda kv: (-kv[0].count("+"), kv[0])))


# ----------------------------------------------------------------------------------------------------------
# Combining data sets (paired + single-sensor) into one training stream
# ----------------------------------------------------------------------------------------------------------
ORIGIN = "origin"
"""Column added by `combine_datasets`: the name of the data set each row came from."""


def combine_datasets(
    parts: Mapping[str, datasets.Dataset],
    mix: Mapping[str, float] | None = None,
    seed: int = 0,
    where: Mapping[str, str] | None = None,
    mix_split: str = "train",
) -> datasets.Dataset:
    """One training stream from several data sets, e.g. ``{"paired": ..., "s2_only": ...}``.

    Columns: the union of the parts' sensor columns (a part without a sensor gets an all-null column: its rows
    lack that sensor), ``labels`` (the class names must be identical), ``split``, the union of metadata columns
    (missing values null) and ``origin`` (the part's name). A sensor in several parts must have the same shape and
    dtype in each; a mismatch is a DataError naming the sensor, both parts and their sources (``where``).

    Sampling mix: ``mix=None`` keeps every row once (each part in proportion to its size). ``mix={"paired": 0.5,
    "s2_only": 0.5}`` makes each epoch hold the parts in those shares: the epoch is as long as needed for no
    part to be subsampled (``max(n_i / share_i)`` rows), every row of a part appears at least once, smaller
    parts are repeated whole and topped up with a random (``seed``) draw without replacement. A share of 0
    leaves the part out. Only rows of ``mix_split`` are resampled; rows of other splits (evaluation) appear once,
    first. The result is a view (an indices mapping), so nothing is copied."""
    if not parts:
        raise DataError("combine_datasets: no data sets given")
    where = {name: where.get(name, name) if where else name for name in parts}
    names = list(parts)
    first = names[0]
    classes = label_names(parts[first])
    specs: dict[str, tuple[str, Any]] = {}  # sensor -> (part, feature)
    meta: dict[str, Any] = {}
    for name in names:
        ds = parts[name]
        if label_names(ds) != classes:
            raise DataError(
                f"{where[name]} ({name!r}) has classes {label_names(ds)}, but {where[first]} "
                f"({first!r}) has {classes}; combined data sets need the same class names in order"
            )
        for sensor in sensor_columns(ds.features):
            feat = ds.features[sensor]
            if sensor in specs and (specs[sensor][1].shape, specs[sensor][1].dtype) != (feat.shape, feat.dtype):
                other, ref = specs[sensor]
                raise DataError(
                    f"sensor {sensor!r}: {where[name]} ({name!r}) has images {tuple(feat.shape)} "
                    f"{feat.dtype}, {where[other]} ({other!r}) has {tuple(ref.shape)} {ref.dtype}"
                )
            specs.setdefault(sensor, (name, feat))
        for column, feat in ds.features.items():
            if column not in ("id", "labels", "split", ORIGIN) and column not in specs:
                meta.setdefault(column, feat)
    order = ["id", *specs, "labels", "split", *meta, ORIGIN]
    common = datasets.Features(
        {
            "id": datasets.Value("string"),
            **{s: f for s, (_, f) in specs.items()},
            "labels": parts[first].features["labels"],
            "split": datasets.Value("string"),
            **meta,
            ORIGIN: datasets.Value("string"),
        }
    )
    aligned = []
    for name in names:
        ds = parts[name].flatten_indices() if getattr(parts[name], "_indices", None) is not None else parts[name]
        for column in order:
            if column == ORIGIN:
                ds = ds.remove_columns([ORIGIN]) if ORIGIN in ds.features else ds
                ds = ds.add_column(ORIGIN, [name] * len(ds), feature=datasets.Value("string"))
            elif column not in ds.features:
                feat = specs[column][1] if column in specs else meta[column]
                ds = ds.add_column(column, [None] * len(ds), feature=feat)
        ds = ds.select_columns(order)
        if ds.features != common:
            try:
                ds = ds.cast(common)
            except (ValueError, TypeError) as exc:
                raise DataError(
                    f"{where[name]} ({name!r}): its columns do not cast to the combined schema "
                    f"({type(exc).__name__}: {exc})"
                ) from None
        aligned.append(ds)
    combined = datasets.concatenate_datasets(aligned)
    if mix is None:
        return combined
    split_of = column_numpy(combined, "split")
    origin = np.repeat(np.arange(len(names)), [len(parts[n]) for n in names])
    mixed = split_of == mix_split
    rows = {n: np.flatnonzero(mixed & (origin == i)) for i, n in enumerate(names)}
    picks = mix_indices({n: len(r) for n, r in rows.items()}, mix, seed)  # into the mixed rows, part by part
    flat = np.concatenate([rows[n] for n in names])
    return combined.select(np.concatenate([np.flatnonzero(~mixed), flat[picks]]).tolist())


def mix_indices(sizes: Mapping[str, int], mix: Mapping[str, float], seed: int = 0) -> np.ndarray:
    """Row indices (into the parts concatenated in ``sizes`` order) of one epoch with the shares ``mix``; see
    `combine_datasets`."""
    unknown = sorted(set(mix) - set(sizes))
    absent = sorted(set(sizes) - set(mix))
    if unknown or absent:
        raise DataError(
            f"mix {dict(mix)}: "
            + "; ".join(
                ([f"unknown data set(s) {unknown}"] if unknown else []) + ([f"no share for {absent}"] if absent else [])
            )
            + f" (the data sets are {list(sizes)})"
        )
    bad = {n: v for n, v in mix.items() if not (float(v) >= 0)}
    if bad or not sum(float(v) for v in mix.values()) > 0:
        raise DataError(f"mix {dict(mix)}: shares must be >= 0 and not all 0")
    total = sum(float(v) for v in mix.values())
    shares = {n: float(mix[n]) / total for n in sizes}
    empty = [n for n in sizes if shares[n] > 0 and sizes[n] == 0]
    if empty:
        raise DataError(f"mix {dict(mix)}: data set(s) {empty} have no rows but a share > 0")
    epoch = max(sizes[n] / shares[n] for n in sizes if shares[n] > 0)
    rng = np.random.default_rng(seed)
    out, offset = [], 0
    for name, n in sizes.items():
        count = int(round(shares[name] * epoch))
        if count:
            whole = [np.arange(n, dtype=np.int64)] * (count // n)
            rest = np.sort(rng.choice(n, count % n, replace=False)).astype(np.int64)
            out.extend(part + offset for part in (*whole, rest))
        offset += n
    return np.concatenate(out) if out else np.zeros(0, np.int64)


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
    one fancy-indexing copy per batch (which is also the only copy made before pinning / the GPU).

    Null values (rows lacking the sensor) take no space in Arrow's flattened values, so each chunk's view holds
    only its present rows; ``position`` maps a table row to its place among them (-1: absent)."""

    def __init__(self, column: pa.ChunkedArray, shape: Sequence[int], dtype: str | None = None) -> None:
        self.chunks = [array3d_to_numpy(chunk, shape) for chunk in column.chunks]
        if dtype is not None:  # an all-null chunk flattens to an empty array of Arrow's default type
            self.chunks = [c if c.dtype == np.dtype(dtype) else c.astype(dtype) for c in self.chunks]
        self.shape = tuple(int(x) for x in shape)
        self.dtype = np.dtype(dtype) if dtype is not None else self.chunks[0].dtype
        self.starts = np.cumsum([0] + [len(c) for c in self.chunks])
        self.position: np.ndarray | None = None
        if column.null_count:
            valid = column.is_valid().to_numpy(zero_copy_only=False)
            self.position = np.where(valid, np.cumsum(valid) - 1, -1).astype(np.int64)

    def take(self, rows: np.ndarray) -> torch.Tensor:
        """Rows (sorted ascending) -> (B, C, H, W) tensor, zero where a row lacks the sensor (see `present`). In
        a DataLoader worker the rows are gathered straight into shared memory, saving the copy torch would
        otherwise make to send the batch to the main process."""
        out = torch.from_numpy(np.empty((len(rows), *self.shape), self.dtype))
        if torch.utils.data.get_worker_info() is not None:
            out = out.share_memory_()
        target = out.numpy()
        if self.position is None:
            self._gather(rows, target)
            return out
        where = self.position[rows]
        have = where >= 0
        if have.all():
            self._gather(where, target)
        else:
            target[~have] = 0
            part = np.empty((int(have.sum()), *self.shape), self.dtype)
            self._gather(where[have], part)
            target[have] = part
        return out

    def present(self, rows: np.ndarray) -> np.ndarray:
        """(B,) bool: which of the rows have this sensor."""
        return np.ones(len(rows), bool) if self.position is None else self.position[rows] >= 0

    def _gather(self, values: np.ndarray, target: np.ndarray) -> None:
        """Copy values (ascending indices into the concatenated chunks) into target, chunk by chunk."""
        which = np.searchsorted(self.starts, values, side="right") - 1
        done = 0
        for c in np.unique(which):
            part = values[which == c] - self.starts[c]
            np.take(self.chunks[c], part, axis=0, out=target[done : done + len(part)])
            done += len(part)


# ----------------------------------------------------------------------------------------------------------
# Batches
# ----------------------------------------------------------------------------------------------------------
class PairBatches(torch.utils.data.Dataset):
    """Map-style dataset whose items are whole batches: ``reader[list_of_indices]`` -> batch dict
    ``{sensor: (B, C, H, W) native dtype, "present": {sensor: (B,) bool}, "labels": (B, num_classes) float
    multi-hot, "id": list[str]}``; a row that lacks a sensor (null value) has zeros there and False in "present".

    The one batch reader of crjepa: training (`make_dataloader`), embedding (`compute_embeddings`) and the result
    grids (`crjepa.eval.visualize`) read rows through it. Rows are read in ascending table order (sequential
    reads); ``in_order=True`` returns them in the order asked for (embedding keeps dataset order). ``labels``
    is present when the dataset's labels have class names.
    """

    def __init__(self, ds: datasets.Dataset, sensors: Sequence[str], in_order: bool = False) -> None:
        check_sensors(ds, sensors)
        self.sensors, self.in_order = list(sensors), in_order
        self.shapes = {s: ds.features[s].shape for s in self.sensors}
        self.dtypes = {s: ds.features[s].dtype for s in self.sensors}
        # the whole underlying table (a datasets Table: memory-mapped on-disk sets pickle as a path, cheap to send
        # to spawned workers) and this dataset's rows in it (select / filter / shuffle leave an indices mapping)
        self.table = ds.data
        mapping = getattr(ds, "_indices", None)
        self.rows = (mapping.column(0).to_numpy() if mapping is not None else np.arange(len(ds))).astype(np.int64)
        self._columns: dict[str, Array3DColumn] | None = None
        self.labels = multi_hot(ds, dtype=np.float32) if class_names_of(ds) is not None else None
        self.ids = ds.with_format("arrow")[:]["id"].to_pylist()

    def columns(self) -> dict[str, Array3DColumn]:
        """Zero-copy views of the sensor columns, built lazily (in each worker process)."""
        if self._columns is None:
            self._columns = {
                s: Array3DColumn(self.table.table.column(s), self.shapes[s], self.dtypes[s]) for s in self.sensors
            }
        return self._columns

    def __getstate__(self) -> dict[str, Any]:
        return {**self.__dict__, "_columns": None}

    def __len__(self) -> int:
        return len(self.ids)

    def __getitem__(self, indices: Sequence[int]) -> dict[str, Any]:
        idx = np.asarray(indices, dtype=np.int64)
        order = np.argsort(self.rows[idx], kind="stable")  # ascending table rows: sequential reads
        rows = self.rows[idx[order]]
        columns = self.columns()
        batch: dict[str, Any] = {s: col.take(rows) for s, col in columns.items()}
        present = {s: torch.from_numpy(col.present(rows)) for s, col in columns.items()}
        if self.in_order and np.any(order != np.arange(len(order))):  # already ascending: nothing to undo
            back = torch.from_numpy(np.argsort(order, kind="stable"))
            batch = {s: pixels[back] for s, pixels in batch.items()}
            present = {s: mask[back] for s, mask in present.items()}
        elif not self.in_order:
            idx = idx[order]
        batch["present"] = present
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
    """A DataLoader of batch dicts {sensor: (B, C, H, W) native dtype, zero where a row lacks the sensor,
    "present": {sensor: (B,) bool}, "labels": (B, K) float multi-hot, "id": list[str]}. Reads are batched (one
    Arrow take per batch); ``sampler`` (e.g. a DistributedSampler)
    replaces the built-in seeded shuffle; memory is pinned when CUDA is available."""
    names = list(sensors)
    reader = PairBatches(ds, names)
    if sampler is None:
        if shuffle:
            sampler = RandomSampler(reader, generator=torch.Generator().manual_seed(seed))
        else:
            sampler = SequentialSampler(reader)
    batches = BatchSampler(sampler, batch_size=batch_size, drop_last=drop_last)
    return DataLoader(
        reader,
        sampler=batches,
        batch_size=None,
        num_workers=num_workers,
        pin_memory=torch.cuda.is_available(),
        persistent_workers=num_workers > 0,
        collate_fn=_identity,
    )


def _identity(batch: dict[str, Any]) -> dict[str, Any]:
    """Batches are already assembled by `PairBatches`."""
    return batch
