"""Hub-hosted CR-JEPA embeddings: write, publish, load and search an archive without re-embedding it.

An embeddings folder (a Hub dataset repo once pushed) holds
  data/<split>-*.parquet id, labels (ClassLabel ids), metadata columns, one fixed-size float32 list column per
                         sensor and space (``s1_unified``, ``s2_cross``, ...)
  README.md              dataset card (YAML ``configs`` so ``load_dataset(repo)`` works)
  faiss/<column>/        one faiss index per vector column (`crjepa.search.index`: index.faiss + sidecars)
  embeddings_info.json   dimension, sensors, spaces, the model fingerprint and model repo, index kinds.
The model fingerprint ties an archive and its indices to the exact weights that produced them: searching with
another model's query embeddings would silently return nonsense, so it is an error instead.

Not imported by the model (remote code): this module may use faiss, pyarrow, datasets and huggingface_hub.
"""

from __future__ import annotations

import hashlib
import json
import re
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from crjepa.hub.access import HubError, check_hub_access, is_repo_id, push_folder, reason
from crjepa.hub.cards import EMBEDDINGS_CARD_TEMPLATE as CARD_TEMPLATE  # noqa: F401  (the archive's template)
from crjepa.hub.cards import render_embeddings_card as render_card  # module global: tests make it fail
from crjepa.hub.cards import shell_word
from crjepa.utils.atomic import atomic_dir, atomic_write_json, atomic_write_text
from crjepa.data.labels import LabelRows, label_lists, multi_hot
from crjepa.eval.directions import SPACES, column_name, parse_direction
from crjepa.errors import CRJepaError

INFO_FILE = "embeddings_info.json"
OUTPUT_KIND = "embeddings"
INDEX_DIR = "faiss"
DATA_DIR = "data"
FORMAT_VERSION = 1

# Config fields that describe where or how a model was saved, not what it computes.
_VOLATILE_CONFIG_KEYS = {"_name_or_path", "transformers_version", "architectures", "auto_map", "dtype", "torch_dtype",
                         "_attn_implementation_autoset", "_commit_hash", "custom_pipelines"}
"""Config fields that say where and how a checkpoint was saved (or which pipeline class serves it), not what the
model computes: `model_fingerprint` leaves them out, so saving a model keeps its fingerprint."""


class EmbeddingsError(CRJepaError, ValueError):
    """An embeddings archive, index or query does not fit (dimension, model, sensor, empty archive)."""


# ---------------------------------------------------------------------------------------------- fingerprints
def model_fingerprint(model: Any) -> str:
    """A short hex id of a model's computation: sha256 over its config (minus save-location fields) and the
    bytes of every parameter and buffer. Equal after save_pretrained/from_pretrained; different after any
    training step or config change. Used to tie archives and indices to the model that made them."""
    import torch

    encoder = getattr(model, "get_encoder", None)
    model = encoder() if callable(encoder) and hasattr(model, "crjepa") else model  # the encoder makes the vectors
    config = {k: v for k, v in model.config.to_dict().items() if k not in _VOLATILE_CONFIG_KEYS}
    digest = hashlib.sha256(json.dumps(config, sort_keys=True, default=str).encode())
    for name, tensor in sorted(model.state_dict().items()):
        data = tensor.detach().cpu().contiguous()
        digest.update(f"{name}:{data.dtype}:{tuple(data.shape)}".encode())
        digest.update(data.reshape(-1).view(torch.uint8).numpy().tobytes() if data.numel() else b"")
    return digest.hexdigest()[:16]


def config_summary(config: Any) -> dict[str, Any]:
    """The facts about a model an archive needs: sensors, bands, sizes (stored in embeddings_info.json)."""
    return {
        "model_type": getattr(config, "model_type", "crjepa"),
        "sensors": dict(config.sensors),
        "band_names": {s: list(b) for s, b in config.band_names.items()},
        "sar_sensors": list(getattr(config, "sar_sensors", [])),
        "image_size": int(config.image_size),
        "retrieval_dim": int(config.retrieval_dim),
        "head_mode": getattr(config, "head_mode", "decoupled"),
    }


def public_path(value: Any) -> Any:
    """What may be published of a local path (`crjepa.hub.cards._public`: the one rule)."""
    from crjepa.hub.cards import _public

    return _public(value)


def archive_split(source: Mapping[str, Any] | None) -> str:
    """The split the archive's rows are published under (shard names, the card's data_files): the source's split,
    or "train" when the archive holds the whole source (datasets' name for a single split)."""
    return str((source or {}).get("split") or "train")


def source_license(source: Mapping[str, Any] | None) -> str | None:
    """The license of the data the vectors were computed from: a local export's card license, the built-in
    synthetic set's; None when unknown (a Hub data set: its own card says)."""
    dataset = str((source or {}).get("dataset") or "")
    if dataset == "synthetic":
        import importlib

        from crjepa.data.schema import BUILDER_MODULES

        return importlib.import_module(BUILDER_MODULES["synthetic"]).BUILDER_CLASS.CARD.get("license")
    if dataset and Path(dataset).expanduser().is_dir():
        from crjepa.data.loading import export_card

        found = export_card(Path(dataset).expanduser()).get("license")
        return str(found) if found else None
    return None


def public_source(source: Mapping[str, Any] | None) -> dict[str, Any]:
    """The data source recorded in a published archive, with local paths reduced by `public_path`."""
    return {key: public_path(value) for key, value in dict(source or {}).items()}


LOCAL_SOURCE_FILE = ".crjepa-source.json"
"""The data source of an archive as this machine knows it (an absolute local folder), next to the published
record whose paths are reduced to their last component (`public_source`). Local bookkeeping: never uploaded
(`crjepa.hub.access.LOCAL_ONLY`), so `search --data recorded` finds a local folder again from any working folder,
while a downloaded archive falls back to the published record."""


def write_local_source(folder: Path, source: Mapping[str, Any] | None) -> None:
    """Record a local folder source of an archive by its absolute path (nothing for synthetic / Hub sources)."""
    source = dict(source or {})
    dataset = source.get("dataset")
    if isinstance(dataset, str) and dataset != "synthetic" and Path(dataset).expanduser().is_dir():
        source["dataset"] = str(Path(dataset).expanduser().resolve())
        atomic_write_json(Path(folder) / LOCAL_SOURCE_FILE, source)


def read_local_source(folder: Path) -> dict[str, Any] | None:
    """The local record of `write_local_source`, or None (absent or unreadable: the published record is used)."""
    try:
        data = json.loads((Path(folder) / LOCAL_SOURCE_FILE).read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return None
    return data if isinstance(data, dict) else None


# ---------------------------------------------------------------------------------------------- faiss indices
def build_indices(vectors: Mapping[str, np.ndarray], ids: Sequence[str], kind: str = "auto",
                  fingerprint: str = "", columns: Sequence[str] | None = None,
                  present: Mapping[str, np.ndarray] | None = None, **params: Any) -> dict[str, Any]:
    """One `crjepa.search.index.RetrievalIndex` per vector column, over the archive ids, tagged with the
    model fingerprint, sensor and space of the column. ``present`` ({sensor: (N,) bool}): a column indexes only
    the rows having its sensor (a partially paired archive)."""
    from crjepa.search.index import build_index

    out = {}
    for name in columns or list(vectors):
        if name not in vectors:
            raise EmbeddingsError(f"No vector column {name!r} to index; available: {sorted(vectors)}")
        sensor, space = name.rsplit("_", 1)
        rows = _rows_with(present, sensor)
        matrix, row_ids = (vectors[name], list(ids)) if rows is None else (
            vectors[name][rows], [i for i, keep in zip(ids, rows) if keep])
        if not len(row_ids):
            continue  # no row has this sensor: nothing to search in this column
        out[name] = build_index(matrix, kind=kind, ids=row_ids, fingerprint=fingerprint, space=space,
                                sensor=sensor, **params)
    return out


def _rows_with(present: Mapping[str, np.ndarray] | None, sensor: str) -> np.ndarray | None:
    """The rows having ``sensor`` (bool mask), or None when every row has it."""
    mask = None if present is None else present.get(sensor)
    return None if mask is None or np.all(mask) else np.asarray(mask, dtype=bool)


def calibration_summary(index: Any) -> dict[str, Any]:
    """What an index's recall calibration measured, for embeddings_info.json and the card ({} if none)."""
    cal = index.metadata.calibration
    keys = ("target", "recall", "recall_se", "k", "queries", "qps", "threads", "params", "seconds", "met")
    ann = {key: cal["ann"][key] for key in ("kind", "why", "recall", "qps", "params")} if cal.get("ann") else None
    return {**{key: cal[key] for key in keys}, **({"ann": ann} if ann else {})} if cal else {}


def save_indices(folder: Path, indices: Mapping[str, Any]) -> dict[str, str]:
    """Save indices as ``faiss/<column>/`` beside an archive (each save is atomic); returns column -> kind."""
    for name, index in indices.items():
        index.save(Path(folder) / INDEX_DIR / name)
    return {name: index.metadata.kind for name, index in indices.items()}


def _load_index(folder: Path, name: str, fingerprint: str, ids: Sequence[str], dimension: int) -> Any:
    """Load ``faiss/<name>`` and check it was built by the archive's model, over its ids (those of the rows
    that have the column's sensor), at its dimension."""
    from crjepa.search.index import RetrievalIndex

    try:
        index = RetrievalIndex.load(Path(folder) / INDEX_DIR / name, expected_fingerprint=fingerprint)
    except (ValueError, FileNotFoundError) as err:
        raise EmbeddingsError(f"faiss index {name!r} of the archive at {folder} is unusable: {err}") from err
    if index.metadata.dimension != dimension:
        raise EmbeddingsError(f"faiss index {name!r} holds {index.metadata.dimension}-d vectors; the archive holds "
                              f"{dimension}-d vectors; rebuild it with `crjepa index {shell_word(folder)}`")
    # same items; the order may differ (a calibrated index adds its held-out rows last)
    if len(index) != len(ids) or not np.array_equal(np.sort(index.ids), np.sort(np.asarray(ids, dtype=str))):
        raise EmbeddingsError(f"faiss index {name!r} covers other items than the archive at {folder}; rebuild it "
                              f"with `crjepa index {shell_word(folder)}`")
    return index


# ---------------------------------------------------------------------------------------------- writing
def _vector_table(ids: Sequence[str], labels: Sequence[Sequence[int]], class_names: Sequence[str],
                  vectors: Mapping[str, np.ndarray], metadata: Mapping[str, Sequence[Any]],
                  present: Mapping[str, np.ndarray] | None = None) -> Any:
    """A pyarrow table whose schema carries the `datasets` features (ClassLabel names, fixed-size vectors).
    ``present`` ({sensor: (N,) bool}): a row lacking a sensor gets a null vector in that sensor's columns."""
    import datasets
    import pyarrow as pa

    dim = next(iter(vectors.values())).shape[1]
    features = datasets.Features({
        "id": datasets.Value("string"),
        "labels": datasets.List(datasets.ClassLabel(names=list(class_names))),
        **{name: datasets.Value("string") for name in metadata},
        **{name: datasets.List(datasets.Value("float32"), length=dim) for name in vectors},
    })
    arrays = [pa.array([str(i) for i in ids], pa.string()), pa.array([list(map(int, r)) for r in labels], pa.list_(pa.int64()))]
    arrays += [pa.array([None if v is None else str(v) for v in values], pa.string()) for values in metadata.values()]
    for name, matrix in vectors.items():
        flat = pa.array(np.ascontiguousarray(matrix, dtype=np.float32).reshape(-1))
        rows = _rows_with(present, name.rsplit("_", 1)[0])
        mask = None if rows is None else pa.array(~rows)
        arrays.append(pa.FixedSizeListArray.from_arrays(flat, dim, mask=mask))
    return pa.Table.from_arrays(arrays, schema=features.arrow_schema)


def _check_vectors(ids: Sequence[str], vectors: Mapping[str, np.ndarray]) -> int:
    """Validate row counts, dimensions and ids; returns the common dimension."""
    if len(ids) == 0:
        raise EmbeddingsError("Refusing to write an empty embeddings archive (0 rows); check the data source or split")
    if not vectors:
        raise EmbeddingsError("No vector columns given; expected e.g. {'s1_unified': array (N, R), ...}")
    dims = {}
    for name, matrix in vectors.items():
        if matrix.ndim != 2 or matrix.shape[0] != len(ids):
            raise EmbeddingsError(f"Vector column {name!r} has shape {matrix.shape}; expected ({len(ids)}, R), one row per id")
        if not np.isfinite(matrix).all():
            raise EmbeddingsError(f"Vector column {name!r} contains NaN or inf; the model or its inputs are broken")
        dims[name] = matrix.shape[1]
    if len(set(dims.values())) != 1:
        raise EmbeddingsError(f"All vector columns need one dimension, found {dims}")
    if len(set(ids)) != len(ids):
        dupes = sorted({i for i in ids if list(ids).count(i) > 1})[:5]
        raise EmbeddingsError(f"Archive ids must be unique (search by id needs it); duplicated: {dupes}")
    return next(iter(dims.values()))


def write_embeddings_dataset(
    output_dir: str | Path,
    ids: Sequence[str],
    labels: Sequence[Sequence[int]] | np.ndarray,
    class_names: Sequence[str],
    vectors: Mapping[str, np.ndarray],
    metadata: Mapping[str, Sequence[Any]] | None = None,
    model_fingerprint: str = "",
    config_summary: Mapping[str, Any] | None = None,
    indices: Mapping[str, Any] | None = None,
    *,
    model_repo_id: str | None = None,
    repo_id: str | None = None,
    source: Mapping[str, Any] | None = None,
    rows_per_shard: int = 200_000,
    overwrite: bool = False,
    present: Mapping[str, np.ndarray] | None = None,
) -> Path:
    """Write an embeddings archive folder (Parquet + card + faiss + embeddings_info.json), atomically.

    labels: class-id lists or multi-hot rows. vectors: ``{"s1_unified": (N, R) float32, ...}``.
    metadata: extra per-row columns (stored as strings). indices: prebuilt indices per vector column.
    source: how the images were obtained (e.g. {"dataset": "synthetic", "num_pairs": 200}); the CLI uses it to
    fetch images for result grids; local paths in it are published as their last component only (no path of
    the user's machine). repo_id: the dataset repo the card's usage snippet should name. An existing
    ``output_dir`` is replaced only if it is an earlier archive (or empty), unless ``overwrite``. present:
    {sensor: (N,) bool} for a partially paired archive: rows lacking a sensor store null vectors there and are
    not in that sensor's indices (EmbeddingSet.present).
    """
    ids = [str(i) for i in ids]
    dim = _check_vectors(ids, vectors)
    metadata = dict(metadata or {})
    for name, values in metadata.items():
        if len(values) != len(ids):
            raise EmbeddingsError(f"Metadata column {name!r} has {len(values)} values for {len(ids)} rows")
        if name in vectors or name in ("id", "labels"):
            raise EmbeddingsError(f"Metadata column {name!r} clashes with a reserved or vector column")
    lists = label_lists(multi_hot(labels, len(class_names))) if isinstance(labels, np.ndarray) else [list(r) for r in labels]
    multi_hot(lists, len(class_names))  # validates class ids against class_names
    sensors = list(dict.fromkeys(name.rsplit("_", 1)[0] for name in vectors))
    spaces = list(dict.fromkeys(name.rsplit("_", 1)[1] for name in vectors))
    for index_name, index in (indices or {}).items():
        if index_name not in vectors:
            raise EmbeddingsError(f"Index {index_name!r} has no vector column; columns: {sorted(vectors)}")
        rows = _rows_with(present, index_name.rsplit("_", 1)[0])
        count = len(ids) if rows is None else int(rows.sum())
        if index.metadata.dimension != dim or len(index) != count:
            raise EmbeddingsError(f"Index {index_name!r} holds {len(index)} x {index.metadata.dimension} vectors; "
                                  f"the archive has {count} x {dim}")
        if index.metadata.fingerprint != model_fingerprint:
            raise EmbeddingsError(f"Index {index_name!r} was built from model {index.metadata.fingerprint!r}, "
                                  f"the vectors from {model_fingerprint!r}")

    import pyarrow.parquet as pq

    output_dir = Path(output_dir)
    with atomic_dir(output_dir, kind=OUTPUT_KIND, overwrite=overwrite) as tmp:
        (tmp / DATA_DIR).mkdir()
        shards = max(1, -(-len(ids) // rows_per_shard))
        for shard in range(shards):
            rows = slice(shard * rows_per_shard, min((shard + 1) * rows_per_shard, len(ids)))
            table = _vector_table(ids[rows], lists[rows], class_names, {k: v[rows] for k, v in vectors.items()},
                                  {k: list(v)[rows] for k, v in metadata.items()},
                                  {k: np.asarray(v)[rows] for k, v in (present or {}).items()})
            pq.write_table(table, tmp / DATA_DIR / f"{archive_split(source)}-{shard:05d}-of-{shards:05d}.parquet")
        index_kinds = save_indices(tmp, indices) if indices else {}
        info = {
            "format_version": FORMAT_VERSION,
            "num_rows": len(ids),
            "dimension": int(dim),
            "model_fingerprint": model_fingerprint,
            "model_repo_id": model_repo_id,
            "sensors": sensors,
            "spaces": spaces,
            "vector_columns": list(vectors),
            "metadata_columns": list(metadata),
            "class_names": list(class_names),
            "indices": index_kinds,
            "index_calibration": {name: calibration_summary(index) for name, index in (indices or {}).items()},
            "config": dict(config_summary or {}),
            "source": public_source(source),
            "license": source_license(source),
            "repo_id": repo_id,
        }
        atomic_write_json(tmp / INFO_FILE, info)
        write_local_source(tmp, source)
        render_card(info, ids[0]).save(tmp / "README.md")
    return output_dir


def export_encoder(model_dir: str | Path, output_dir: str | Path, overwrite: bool = False) -> Path:
    """The retrieval-only copy of a saved CR-JEPA folder (a CRJepaForPreTraining run's ``output_dir/model``):
    CRJepaModel (stems, trunk, heads; no predictors) with its remote code, image processor and the folder's
    card, written atomically to ``output_dir`` (an existing folder only with ``overwrite`` or when it is an earlier
    export). Publishing this folder pushes the encoder only."""
    import shutil

    from modeling_crjepa import CRJepaModel

    from crjepa.utils.files import check_safetensors_in

    model_dir = Path(model_dir)
    if not (model_dir / "config.json").is_file():
        raise FileNotFoundError(f"No saved model in {model_dir} (config.json missing)")
    check_safetensors_in(model_dir)
    encoder = CRJepaModel.from_pretrained(model_dir)
    with atomic_dir(output_dir, kind="model-encoder", overwrite=overwrite) as tmp:
        for name in ("README.md", "preprocessor_config.json"):
            if (model_dir / name).is_file():
                shutil.copy2(model_dir / name, tmp / name)
        encoder.save_pretrained(tmp)
        if (model_dir / "preprocessor_config.json").is_file():  # the processor's remote code travels too
            shutil.copy2(model_dir / "image_processing_crjepa.py", tmp / "image_processing_crjepa.py")
    return Path(output_dir)


# ---------------------------------------------------------------------------------------------- loading & search
def embed_image(model: Any, image: Any, sensor: str, space: str) -> np.ndarray:
    """One native-resolution image (C, H, W) of ``sensor`` -> its (R,) float32 embedding in ``space``, through
    the model's own preprocessing (normalise, resize) on the model's device; the model's train/eval mode is kept.
    The image is checked first (`check_query_image`: numeric, the sensor's channels, a sane size)."""
    import torch

    from modeling_crjepa.image_processing_crjepa import preprocess_batch

    pixels = torch.from_numpy(check_query_image(image, sensor, model.config.sensors.get(sensor, 0)))[None]
    device = next(model.parameters()).device
    was_training = model.training
    model.eval()
    try:
        with torch.no_grad():
            ready = preprocess_batch(pixels.to(device), sensor, model.config)
            return model.get_embeddings(ready, sensor=sensor, space=space).float().cpu().numpy()[0]
    finally:
        model.train(was_training)


@dataclass
class Hit:
    """One search result: rank (1 = best), archive id, cosine score, class names, row position, the row's metadata
    columns (the same shape from faiss and from Milvus) and ``name``: the patch name of the searched sensor's image
    when the archive records one (e.g. the S1 patch name of an S1 hit; archive ids are the S2 names), else None."""

    rank: int
    id: str
    score: float
    labels: list[str]
    position: int
    metadata: dict[str, Any] = field(default_factory=dict)
    name: str | None = None


class EmbeddingArchive:
    """A loaded embeddings archive: ids, labels (`crjepa.data.labels.LabelRows`: multi-hot rows on request), vectors
    per column and one index per column."""

    def __init__(self, path: Path, info: dict[str, Any], ids: list[str], labels: Any,
                 vectors: dict[str, np.ndarray], metadata: dict[str, list[Any]], indices: dict[str, Any]) -> None:
        self.path, self.info, self.ids, self.labels = path, info, ids, labels
        self.vectors, self.metadata, self.indices = vectors, metadata, indices
        self._position = {archive_id: row for row, archive_id in enumerate(ids)}
        self.present: dict[str, np.ndarray] = {}  # {sensor: (N,) bool} for sensors some rows lack (null vectors)

    def __len__(self) -> int:
        return len(self.ids)

    def __repr__(self) -> str:
        return (f"EmbeddingArchive({len(self)} rows, columns={self.columns}, dimension={self.dimension}, "
                f"model={self.fingerprint})")

    @property
    def sensors(self) -> list[str]:
        return list(self.info["sensors"])

    @property
    def columns(self) -> list[str]:
        return list(self.vectors)

    @property
    def dimension(self) -> int:
        return int(self.info["dimension"])

    @property
    def fingerprint(self) -> str:
        return str(self.info.get("model_fingerprint") or "")

    @property
    def class_names(self) -> list[str]:
        return list(self.info["class_names"])

    def check_model(self, model: Any) -> None:
        """Raise unless ``model`` is the model that produced these embeddings (same fingerprint)."""
        found = model_fingerprint(model)
        if not self.fingerprint:
            raise EmbeddingsError(
                f"The archive at {self.path} records no model fingerprint, so it cannot be checked against the model "
                f"(fingerprint {found}); re-embed the archive with `crjepa embed`.")
        if found != self.fingerprint:
            raise EmbeddingsError(
                f"The archive at {self.path} was embedded by model {self.fingerprint}, but the model passed has "
                f"fingerprint {found}; use that model, or re-embed the archive with `crjepa embed`.")

    def position(self, archive_id: str) -> int:
        """Row of an archive id, or of a sensor's patch name the archive records (`resolve`)."""
        return self.resolve(archive_id)[0]

    def resolve(self, name: str) -> tuple[int, str | None]:
        """(row, sensor) of a query name: an archive id gives (row, None); a patch name recorded in a
        ``<sensor>_name`` metadata column (e.g. an S1 patch name in ``s1_name``, where ids are S2 names) gives
        (row, sensor), i.e. the item whose ``sensor`` image has that name."""
        name = str(name)
        if name in self._position:
            return self._position[name], None
        for sensor in self.sensors:
            names = self.metadata.get(f"{sensor}_name")
            if names is not None and name in names:
                return names.index(name), sensor
        recorded = [f"{s}_name" for s in self.sensors if f"{s}_name" in self.metadata]
        also = f" or {' / '.join(recorded)}" if recorded else ""
        raise EmbeddingsError(f"No item with id{also} {name!r} in the archive at {self.path} "
                              f"({len(self)} items, e.g. {self.ids[:3]})")

    def labels_of(self, position: int) -> list[str]:
        """The class names of an archive row."""
        return [self.class_names[c] for c in sorted(set(self.labels.classes(position).tolist()))]

    def patch_name(self, position: int, sensor: str) -> str | None:
        """The recorded patch name of a row's ``sensor`` image (metadata ``<sensor>_name``), or None."""
        names = self.metadata.get(f"{sensor}_name")
        value = names[position] if names is not None else None
        return str(value) if value else None

    def index(self, column: str) -> Any:
        """The index of a vector column; an exact one is built on the fly (and kept) when none is stored."""
        self._check_column(column)
        if column not in self.indices:
            self.indices.update(build_indices(self.vectors, self.ids, kind="exact", fingerprint=self.fingerprint,
                                              columns=[column], present=self.present))
        if column not in self.indices:
            raise EmbeddingsError(f"No row of the archive at {self.path} has sensor {column.rsplit('_', 1)[0]!r}")
        return self.indices[column]

    def searchable(self, column: str) -> int:
        """How many rows ``column`` can return (rows lacking its sensor are not in its index)."""
        rows = self.present.get(column.rsplit("_", 1)[0])
        return len(self) if rows is None else int(rows.sum())

    def vector(self, column: str, position: int) -> np.ndarray:
        """The stored vector of a row; an error naming the item when the row lacks the column's sensor."""
        sensor = column.rsplit("_", 1)[0]
        rows = self.present.get(sensor)
        if rows is not None and not rows[position]:
            raise EmbeddingsError(f"Item {self.ids[position]!r} has no {sensor!r} image in the archive at {self.path}; "
                                  f"search from a sensor it has ({[s for s in self.sensors if s not in self.present or self.present[s][position]]})")
        return self.vectors[column][position]

    def _check_column(self, column: str) -> None:
        if column not in self.vectors:
            sensor = column.rsplit("_", 1)[0]
            if sensor not in self.sensors:
                raise EmbeddingsError(f"Unknown sensor {sensor!r}; this archive has sensors {self.sensors}")
            raise EmbeddingsError(f"No vector column {column!r}; this archive has {self.columns}")

    def search(self, query: str | np.ndarray, column: str, k: int = 10,
               exclude_position: int | None = None) -> list[Hit]:
        """Top-k archive items of ``column`` for one query: an archive id (its stored vector in ``column``) or
        a vector (R,). ``exclude_position`` drops that row (a query's own item in same-modal search)."""
        self._check_column(column)
        if isinstance(query, str):
            query = self.vector(column, self.position(query))
        vector = np.asarray(query, dtype=np.float32)
        if vector.ndim == 2 and vector.shape[0] == 1:
            vector = vector[0]
        if vector.ndim != 1 or vector.shape[0] != self.dimension:
            raise EmbeddingsError(f"Query embedding has shape {vector.shape}; this archive holds {self.dimension}-d "
                                  "vectors (was it made by another model?)")
        searchable = self.searchable(column) - (exclude_position is not None)
        if not 0 < k <= searchable:
            raise EmbeddingsError(f"k={k} must be between 1 and the number of searchable items ({searchable})")
        wanted = k + (exclude_position is not None)
        scores, found = self.index(column).search(vector[None, :], wanted)
        hits = []
        sensor = column.rsplit("_", 1)[0]
        for score, archive_id in zip(scores[0], found[0]):
            position = self._position.get(str(archive_id), -1)
            if position < 0 or position == exclude_position or len(hits) == k:
                continue
            names = self.info["class_names"]
            hits.append(Hit(len(hits) + 1, self.ids[position], float(score),
                            [names[c] for c in sorted(set(self.labels.classes(position).tolist()))], position,
                            {name: values[position] for name, values in self.metadata.items()},
                            self.patch_name(position, sensor)))
        return hits

    def search_by_id(self, archive_id: str, direction: str | None = None, k: int = 10) -> list[Hit]:
        """Search with an archive item's stored embedding, no model needed: ``direction="s1->s2"`` takes the id's
        s1 vector in the cross space and searches the s2 cross column; same-modal directions use the unified
        space and skip the item itself (the paper removes self-matches). ``archive_id`` may also be a sensor's
        patch name the archive records (an S1 patch name); the search then starts from that sensor."""
        position, named = self.resolve(archive_id)
        start = named or self.sensors[0]
        default = f"{start}->{next((s for s in reversed(self.sensors) if s != start), start)}"  # cross-sensor first
        source, target, space = parse_direction(direction or default, self.sensors)
        if named is not None and source != named:
            raise EmbeddingsError(f"{archive_id!r} is the {named} patch of item {self.ids[position]!r}: search from "
                                  f"{named!r} ({', '.join(repr(f'{named}->{s}') for s in self.sensors)}), or use "
                                  "the item's id")
        vector = self.vector(self._column(source, space), position)
        return self.search(vector, self._column(target, space), k,
                           exclude_position=position if source == target else None)

    def search_by_image(self, model: Any, image: Any, sensor: str, target_sensor: str | None = None,
                        k: int = 10) -> list[Hit]:
        """Embed one native-resolution image (C, H, W) of ``sensor`` with ``model`` and search the archive's
        ``target_sensor`` column (default: the same sensor); only the query is embedded."""
        target_sensor = target_sensor or sensor
        _, _, space = parse_direction(f"{sensor}->{target_sensor}", self.sensors)
        return self.search(self.embed_query(model, image, sensor, space), self._column(target_sensor, space), k)

    def embed_query(self, model: Any, image: Any, sensor: str, space: str) -> np.ndarray:
        """The ``space`` embedding (R,) of one native-resolution image (C, H, W) of ``sensor``, by ``model``, which
        must be the archive's model (`check_model`)."""
        self.check_model(model)
        return embed_image(model, image, sensor, space)

    def _column(self, sensor: str, space: str) -> str:
        name = column_name(sensor, space)
        self._check_column(name)
        return name


MAX_IMAGE_SIDE = 16_384
"""The largest query image side `search_by_image` accepts (the image is resized to the model's input on the device)."""


def check_query_image(image: Any, sensor: str, channels: int) -> np.ndarray:
    """A query image as a (C, H, W) numeric array with the sensor's channel count and 1..`MAX_IMAGE_SIDE` pixels a
    side; an EmbeddingsError naming what is wrong otherwise (dates, strings, objects, an empty or huge image)."""
    array = np.asarray(image)
    if array.ndim == 4 and array.shape[0] == 1:  # a batch of one
        array = array[0]
    if array.dtype.kind not in "buif" or array.dtype.itemsize > 8:
        raise EmbeddingsError(f"The query image holds {array.dtype} values; a {sensor!r} image must be numeric "
                              "(uint8, uint16, int, float)")
    if array.ndim != 3:
        raise EmbeddingsError(f"The query image has shape {array.shape}; a {sensor!r} image is (C, H, W)")
    if array.shape[0] != channels:
        raise EmbeddingsError(f"The query image has {array.shape[0]} channel(s); the model's {sensor!r} images have "
                              f"{channels}")
    if not (1 <= array.shape[1] <= MAX_IMAGE_SIDE and 1 <= array.shape[2] <= MAX_IMAGE_SIDE):
        raise EmbeddingsError(f"The query image is {array.shape[1]}x{array.shape[2]} pixels; each side must be 1 to "
                              f"{MAX_IMAGE_SIDE}")
    return np.ascontiguousarray(array.astype(np.float32) if array.dtype.kind == "b" else array)


def _resolve_folder(repo_or_folder: str | Path, api: Any, revision: str | None, token: str | None,
                    patterns: list[str] | None = None) -> Path:
    """A local folder as is; otherwise download the Hub dataset repo (snapshot_download, injectable api; only the
    files matching ``patterns`` when given)."""
    path = Path(repo_or_folder).expanduser()
    if path.is_dir():
        return path
    text = str(repo_or_folder)
    if path.exists() or text.count("/") != 1 or text.startswith((".", "/", "~")):
        raise FileNotFoundError(f"No embeddings folder at {text} (and it is not a Hub repo id like 'user/name')")
    if api is None:
        from huggingface_hub import HfApi

        api = HfApi(token=token)
    try:
        extra = {"allow_patterns": patterns} if patterns else {}
        return Path(api.snapshot_download(text, repo_type="dataset", revision=revision, token=token, **extra))
    except Exception as err:
        raise HubError(f"Cannot download embeddings {text} from the Hub ({reason(err)}).") from err


def load_embeddings(repo_or_folder: str | Path, api: Any = None, *, revision: str | None = None,
                    token: str | None = None, model: Any = None, load_indices: bool = True,
                    vectors: bool = True, milvus_uri: str | None = None, milvus_token: str | None = None,
                    milvus_prefix: str | None = None) -> EmbeddingArchive:
    """Open an embeddings archive from a local folder or a Hub dataset repo.

    Stored faiss indices are loaded and checked against the archive's model fingerprint; missing ones are built
    on first search. With ``model``, the archive must have been embedded by that model. ``vectors=False``
    reads ids, labels and metadata only (``archive.vectors`` is then empty; see `read_vector_column`).
    ``milvus_uri`` (a Milvus Lite ``.db`` path or ``http://host:19530``, with ``milvus_token``): search the
    collections `crjepa index --backend milvus` loaded instead (`crjepa.search.milvus.MilvusArchive`: the same
    search methods and hits, plus filters; only embeddings_info.json is read here).
    """
    from crjepa.utils.atomic import read_consistently

    folder = _resolve_folder(repo_or_folder, api, revision, token, [INFO_FILE] if milvus_uri else None)
    if milvus_uri is not None:
        from crjepa.search.milvus import open_archive

        return open_archive(folder, milvus_uri, token=milvus_token, prefix=milvus_prefix, model=model,
                            name=str(repo_or_folder))
    # every file from one version of the folder, even while `crjepa embed` replaces it
    return read_consistently(folder, lambda path: _open_archive(path, model, load_indices, vectors))


def _open_archive(folder: Path, model: Any, load_indices: bool, vectors: bool = True) -> EmbeddingArchive:
    import pyarrow as pa
    import pyarrow.parquet as pq

    info_path = folder / INFO_FILE
    if not info_path.is_file():
        raise EmbeddingsError(f"{folder} is not a CR-JEPA embeddings archive: {INFO_FILE} is missing")
    info = check_info(_read_json(info_path), info_path)
    files = sorted((folder / DATA_DIR).glob("*.parquet"))
    if not files:
        raise EmbeddingsError(f"The archive at {folder} has no Parquet files under {DATA_DIR}/")
    wanted = None if vectors else ["id", "labels", *info.get("metadata_columns", [])]
    tables = []
    for file in files:
        try:
            tables.append(pq.read_table(file, columns=wanted))
        except (OSError, pa.ArrowException) as err:
            raise EmbeddingsError(f"{file} is not a readable Parquet file ({reason(err)}); download or re-embed "
                                  "the archive") from None
    try:
        table = pa.concat_tables(tables)
    except pa.ArrowException as err:
        raise EmbeddingsError(f"The Parquet files of {folder} do not share one schema ({reason(err)})") from None
    if table.num_rows == 0:
        raise EmbeddingsError(f"The archive at {folder} is empty (0 rows)")
    needed = ["id", "labels", *(info["vector_columns"] if vectors else []), *info.get("metadata_columns", [])]
    absent = [name for name in needed if name not in table.column_names]
    if absent:
        raise EmbeddingsError(f"The Parquet files of {folder} lack the column(s) {absent} that {INFO_FILE} lists")
    if table.num_rows != info["num_rows"]:
        raise EmbeddingsError(f"{info_path}: num_rows is {info['num_rows']} but the Parquet files of {folder} hold "
                              f"{table.num_rows} rows; download or re-embed the archive")
    ids = _check_ids(table["id"], folder)
    read_vectors, vectors = vectors, {}
    present: dict[str, np.ndarray] = {}
    for name in info["vector_columns"] if read_vectors else []:
        column = table[name].combine_chunks()
        width = _vector_width(column.type, name, folder)
        if width != info["dimension"]:
            raise EmbeddingsError(f"Column {name!r} holds {width}-d vectors but {INFO_FILE} says {info['dimension']}-d")
        vectors[name], valid = _vector_block(column, width)
        if valid is not None:
            present[name.rsplit("_", 1)[0]] = valid
    try:
        labels = LabelRows.from_arrow(table["labels"], len(info["class_names"]))
    except (TypeError, ValueError, IndexError, AttributeError, pa.ArrowException) as err:
        raise EmbeddingsError(f"The labels of the archive at {folder} do not fit its {len(info['class_names'])} "
                              f"classes ({err})") from None
    metadata = {name: table[name].to_pylist() for name in info.get("metadata_columns", [])}
    archive = EmbeddingArchive(folder, info, ids, labels, vectors, metadata, {})
    archive.present = present
    if model is not None:
        archive.check_model(model)
    if load_indices:
        for name in info.get("indices", {}):
            rows = present.get(name.rsplit("_", 1)[0]) if read_vectors else None
            ids = archive.ids if rows is None else [i for i, keep in zip(archive.ids, rows) if keep]
            archive.indices[name] = _load_index(folder, name, archive.fingerprint, ids, archive.dimension)
    return archive


def _check_ids(column: Any, folder: Path) -> list[str]:
    """The archive's ids: strings, none null or empty, none twice (search by id returns one item per id)."""
    from collections import Counter

    if column.null_count:
        raise EmbeddingsError(f"The archive at {folder} has {column.null_count} row(s) without an id (null); every "
                              "item needs a unique id: re-embed the data with ids")
    ids = [str(i) for i in column.to_pylist()]
    if "" in ids:
        raise EmbeddingsError(f"The archive at {folder} has row(s) with an empty id; every item needs a unique id")
    if len(set(ids)) != len(ids):
        dupes = [i for i, n in Counter(ids).items() if n > 1]
        raise EmbeddingsError(f"The archive at {folder} has {len(dupes)} id(s) on more than one row (e.g. "
                              f"{dupes[:3]}): search by id would mix those items; re-embed data with unique ids")
    return ids


def _vector_width(kind: Any, name: str, where: Any) -> int:
    """The width of a vector column: a fixed-size list of float32 (as `crjepa embed` writes it), else an error."""
    import pyarrow as pa

    if not pa.types.is_fixed_size_list(kind) or not pa.types.is_float32(kind.value_type):
        raise EmbeddingsError(f"Column {name!r} of {where} is {kind}, not fixed-size float32 vectors "
                              "(fixed_size_list<float>); it was not written by `crjepa embed`: re-embed the archive")
    return int(kind.list_size)


def _vector_block(column: Any, width: int) -> tuple[np.ndarray, np.ndarray | None]:
    """A FixedSizeList column -> float32 (N, width) and its validity (None: no nulls). Null vectors (rows lacking
    the sensor) are zeros in the array; Arrow's flattened values skip them, so they are scattered back."""
    values = column.flatten().to_numpy().reshape(-1, width).astype(np.float32, copy=False)
    if not column.null_count:
        return values, None
    valid = column.is_valid().to_numpy(zero_copy_only=False)
    out = np.zeros((len(column), width), np.float32)
    out[valid] = values
    return out, valid


MAX_DIMENSION = 65_536
MAX_CLASSES = 100_000
_NAME = re.compile(r"[A-Za-z0-9][A-Za-z0-9_\-]{0,63}")
_LABEL = re.compile(r"[^\x00-\x1f\x7f`|]{1,256}")
"""Metadata column names: printable, no backtick or table bar (they appear in the card's table)."""
_CLASS = re.compile(r"[^\x00-\x1f\x7f]{1,1024}")
MAX_INFO_BYTES = 64 << 20
"""embeddings_info.json is read whole: a larger file is refused before it is read."""
_INDEX_KINDS = {"exact", "hnsw", "ivfpq"}


def _read_json(path: Path, limit: int = MAX_INFO_BYTES) -> Any:
    size = path.stat().st_size
    if size > limit:
        raise EmbeddingsError(f"{path} is {size:,} bytes, more than the {limit:,} such a file can need; download or "
                              "re-embed the archive")
    try:
        return json.loads(path.read_text())
    except (ValueError, UnicodeDecodeError) as err:
        raise EmbeddingsError(f"{path} is not valid JSON ({err}); download or re-embed the archive") from None


def check_info(info: Any, path: Path) -> dict[str, Any]:
    """embeddings_info.json of a possibly downloaded archive, checked field by field (types, bounds, names that
    cannot leave the archive folder); raises EmbeddingsError naming the file and the field."""
    def bad(field: str, why: str) -> EmbeddingsError:
        return EmbeddingsError(f"{path}: {field} {why}; this archive was not written by `crjepa embed` as it is "
                               "(download it again or re-embed it)")

    if not isinstance(info, dict):
        raise bad("the file", "must hold a JSON object")
    version = info.get("format_version", 1)
    if not isinstance(version, int) or isinstance(version, bool) or version < 1:
        raise bad("format_version", f"must be a positive integer, found {version!r}")
    if version > FORMAT_VERSION:
        raise EmbeddingsError(f"{path}: format_version {version} is newer than this crjepa reads ({FORMAT_VERSION}); "
                              "upgrade crjepa (pip install -U crjepa)")
    rows = info.get("num_rows")
    if not isinstance(rows, int) or isinstance(rows, bool) or rows < 1:
        raise bad("num_rows", f"must be a positive integer, found {rows!r}")
    dim = info.get("dimension")
    if not isinstance(dim, int) or isinstance(dim, bool) or not 1 <= dim <= MAX_DIMENSION:
        raise bad("dimension", f"must be an integer in [1, {MAX_DIMENSION}], found {dim!r}")
    for field, limit in (("sensors", 64), ("vector_columns", 256), ("metadata_columns", 1024)):
        value = info.get(field, [] if field == "metadata_columns" else None)
        if not isinstance(value, list) or not value and field != "metadata_columns" or len(value) > limit or \
                not all(isinstance(v, str) and (_NAME.fullmatch(v) or field == "metadata_columns"
                                                and _LABEL.fullmatch(v)) for v in value):
            raise bad(field, f"must be a list of at most {limit} plain names (letters, digits, _ -), found {value!r}")
    for name in info["vector_columns"]:
        sensor, _, space = name.rpartition("_")
        if sensor not in info["sensors"] or space not in SPACES:
            raise bad("vector_columns", f"has {name!r}, not <sensor>_<space> of sensors {info['sensors']}")
    names = info.get("class_names")
    if not isinstance(names, list) or not 0 < len(names) <= MAX_CLASSES or not all(isinstance(n, str) for n in names):
        raise bad("class_names", f"must be a list of 1 to {MAX_CLASSES} strings")
    indices = info.get("indices", {})
    if not isinstance(indices, dict) or not all(k in info["vector_columns"] and v in _INDEX_KINDS
                                                for k, v in indices.items()):
        raise bad("indices", f"must map vector columns to {sorted(_INDEX_KINDS)}, found {indices!r}")
    fingerprint = info.get("model_fingerprint", "")
    if not isinstance(fingerprint, (str, type(None))) or fingerprint and not re.fullmatch(r"[0-9a-f]{1,64}", fingerprint):
        raise bad("model_fingerprint", f"must be a hex string, found {fingerprint!r}")
    source = info.get("source", {})
    if not isinstance(source, dict) or not all(isinstance(v, (str, int, float, bool, type(None))) for v in source.values()):
        raise bad("source", f"must be an object of scalars, found {source!r}")
    for field in ("model_repo_id", "repo_id"):
        value = info.get(field)
        if value is not None and not is_repo_id(value):
            raise bad(field, f"must be a Hub repo id like 'user/name', found {value!r}")
    if not isinstance(info.get("license"), (str, type(None))):
        raise bad("license", f"must be a string, found {info.get('license')!r}")
    if not all(_CLASS.fullmatch(n) for n in names):
        raise bad("class_names", "must be printable names of at most 1024 characters")
    return info


def read_vector_column(folder: str | Path, name: str, dimension: int | None = None,
                       with_validity: bool = False,
                       rows: int | None = None) -> np.ndarray | tuple[np.ndarray, np.ndarray | None]:
    """One vector column of an archive as float32 (N, R), read Parquet file by file into one preallocated array
    (the peak is the column plus one row group, not the archive: other columns are never read). Null vectors
    (rows lacking the sensor) read as zeros; ``with_validity`` also returns their (N,) bool validity (None: no
    nulls). ``rows``: the archive's row count, which the files' footers must agree with before anything is
    allocated."""
    import pyarrow.parquet as pq

    files = sorted((Path(folder) / DATA_DIR).glob("*.parquet"))
    if not files:
        raise EmbeddingsError(f"The archive at {folder} has no Parquet files under {DATA_DIR}/")
    claimed = sum(pq.ParquetFile(f).metadata.num_rows for f in files)
    if rows is not None and claimed != rows:  # the footers' counts size the array: checked against the rows read
        raise EmbeddingsError(f"The Parquet footers of {folder} claim {claimed:,} rows, the archive has {rows:,}; "
                              "download or re-embed the archive")
    rows = claimed
    out: np.ndarray | None = None
    validity = np.ones(rows, bool)
    start = 0
    for file in files:
        reader = pq.ParquetFile(file)
        for group in range(reader.num_row_groups):
            column = reader.read_row_group(group, columns=[name])[name].combine_chunks()
            width = _vector_width(column.type, name, file)
            if dimension is not None and width != dimension:
                raise EmbeddingsError(f"{file}: column {name!r} holds {width}-d vectors, expected {dimension}-d")
            if out is None:
                out = np.empty((rows, width), dtype=np.float32)
            block, valid = _vector_block(column, width)
            out[start:start + len(block)] = block
            if valid is not None:
                validity[start:start + len(block)] = valid
            start += len(block)
    assert out is not None and start == rows
    if with_validity:
        return out, (None if validity.all() else validity)
    return out


def add_indices(folder: str | Path, kind: str = "auto", columns: Sequence[str] | None = None,
                progress: Callable[[str], None] | None = None, recall: float | None = None,
                **params: Any) -> dict[str, str]:
    """Build and store faiss indices for an archive folder (the `crjepa index` command); returns column -> kind.
    ``progress`` is called with each column name once its index is saved. ``recall`` is the target the ANN
    kinds calibrate to (`crjepa.search.index.build_index`; None: its default). Vectors are read one column at a
    time and indexed in place, so the archive is never held twice in memory. Holds the archive's writer lock, so
    it never interleaves with `crjepa embed` (or another `crjepa index`) on the same folder."""
    from crjepa.utils.atomic import lock_file_for
    from crjepa.utils.locks import DirLock

    with DirLock(lock_file_for(Path(folder)), what="crjepa index", folder=Path(folder)):
        return _add_indices(folder, kind, columns, progress, recall, **params)


def _add_indices(folder: str | Path, kind: str, columns: Sequence[str] | None,
                 progress: Callable[[str], None] | None, recall: float | None, **params: Any) -> dict[str, str]:
    """Build the new indices into a ``.faiss.tmp-*`` folder inside the archive (the indices not rebuilt are linked
    in), then swap it with ``faiss/`` in one step and write the info and the card: a failure (disk full, kill)
    leaves the archive's indices, info and card as they were."""
    import shutil
    import tempfile

    from crjepa.search.index import DEFAULT_RECALL, build_index
    from crjepa.utils.atomic import publish_dir, write_failure

    archive = load_embeddings(folder, load_indices=False, vectors=False)
    kinds = dict(archive.info.get("indices", {}))
    calibration = dict(archive.info.get("index_calibration", {}))
    for stale in archive.path.glob(f".{INDEX_DIR}.tmp-*"):  # left by a killed run (we hold the archive's lock)
        shutil.rmtree(stale, ignore_errors=True)
    staging = Path(tempfile.mkdtemp(prefix=f".{INDEX_DIR}.tmp-", dir=archive.path))
    try:
        for name in columns or archive.info["vector_columns"]:
            if name not in archive.info["vector_columns"]:
                archive._check_column(name)
            sensor, space = name.rsplit("_", 1)
            vectors, valid = read_vector_column(archive.path, name, archive.dimension, with_validity=True,
                                                rows=len(archive.ids))
            ids = archive.ids
            if valid is not None:  # rows lacking the sensor are not searchable in its columns
                vectors, ids = vectors[valid], [i for i, keep in zip(ids, valid) if keep]
            if not ids:
                raise EmbeddingsError(f"No row of the archive at {archive.path} has sensor {sensor!r}: column "
                                      f"{name!r} cannot be indexed")
            index = build_index(vectors, kind=kind, ids=ids, fingerprint=archive.fingerprint, space=space,
                                sensor=sensor, recall=DEFAULT_RECALL if recall is None else recall, copy=False,
                                **params)
            del vectors
            kinds.update(save_indices(staging, {name: index}))
            calibration[name] = calibration_summary(index)
            if progress:
                progress(name)
        for name in kinds:  # the indices kept as they are
            old = archive.path / INDEX_DIR / name
            if not (staging / INDEX_DIR / name).exists() and old.is_dir():
                shutil.copytree(old, staging / INDEX_DIR / name, copy_function=_link_or_copy)
        (staging / INDEX_DIR).mkdir(exist_ok=True)
        publish_dir(staging / INDEX_DIR, archive.path / INDEX_DIR)
    except BaseException as exc:
        failure = write_failure(exc, archive.path / INDEX_DIR) if isinstance(exc, Exception) else None
        shutil.rmtree(staging, ignore_errors=True)
        if failure is not None and failure is not exc:
            raise failure from exc
        raise
    shutil.rmtree(staging, ignore_errors=True)
    info = {**archive.info, "indices": kinds, "index_calibration": calibration}
    atomic_write_json(archive.path / INFO_FILE, info)
    atomic_write_text(archive.path / "README.md", str(render_card(info, archive.ids[0])))
    return kinds


def _link_or_copy(source: str, target: str) -> None:
    """A hard link (no second copy of a large index file), or a copy where links are not possible."""
    import os
    import shutil

    try:
        os.link(source, target)
    except OSError:
        shutil.copy2(source, target)


__all__ = [
    "EmbeddingArchive", "EmbeddingsError", "Hit", "HubError", "add_indices", "build_indices", "calibration_summary",
    "check_hub_access", "config_summary", "embed_image", "export_encoder", "read_vector_column", "load_embeddings", "model_fingerprint", "push_folder", "render_card", "save_indices",
    "write_embeddings_dataset", "SPACES",
]
