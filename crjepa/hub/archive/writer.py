"""Writing an embeddings archive in one go (`write_embeddings_dataset`: Parquet shards, faiss indices,
embeddings_info.json and the card, into a temp folder renamed into place). `crjepa embed` writes large archives
shard by shard instead (`crjepa.hub.embedding`), with the same `vector_table` rows."""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np

from crjepa.data.labels import label_lists, multi_hot
from crjepa.hub.archive.format import DATA_DIR, FORMAT_VERSION, INFO_FILE, OUTPUT_KIND, EmbeddingsError
from crjepa.hub.archive.indices import calibration_summary, rows_with, save_indices
from crjepa.hub.archive.provenance import archive_split, public_source, source_license, write_local_source
from crjepa.hub.cards import render_embeddings_card
from crjepa.utils.atomic import atomic_dir, atomic_write_json

if TYPE_CHECKING:
    import pyarrow as pa

    from crjepa.search.index import RetrievalIndex


def vector_table(
    ids: Sequence[str],
    labels: Sequence[Sequence[int]],
    class_names: Sequence[str],
    vectors: Mapping[str, np.ndarray],
    metadata: Mapping[str, Sequence[Any]],
    present: Mapping[str, np.ndarray] | None = None,
) -> pa.Table:
    """A pyarrow table whose schema carries the `datasets` features (ClassLabel names, fixed-size vectors).
    ``present`` ({sensor: (N,) bool}): a row lacking a sensor gets a null vector in that sensor's columns."""
    import datasets
    import pyarrow as pa

    dim = next(iter(vectors.values())).shape[1]
    features = datasets.Features(
        {
            "id": datasets.Value("string"),
            "labels": datasets.List(datasets.ClassLabel(names=list(class_names))),
            **{name: datasets.Value("string") for name in metadata},
            **{name: datasets.List(datasets.Value("float32"), length=dim) for name in vectors},
        }
    )
    arrays = [
        pa.array([str(i) for i in ids], pa.string()),
        pa.array([list(map(int, r)) for r in labels], pa.list_(pa.int64())),
    ]
    arrays += [pa.array([None if v is None else str(v) for v in values], pa.string()) for values in metadata.values()]
    for name, matrix in vectors.items():
        flat = pa.array(np.ascontiguousarray(matrix, dtype=np.float32).reshape(-1))
        rows = rows_with(present, name.rsplit("_", 1)[0])
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
            raise EmbeddingsError(
                f"Vector column {name!r} has shape {matrix.shape}; expected ({len(ids)}, R), one row per id"
            )
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
    indices: Mapping[str, RetrievalIndex] | None = None,
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
    lists = (
        label_lists(multi_hot(labels, len(class_names)))
        if isinstance(labels, np.ndarray)
        else [list(r) for r in labels]
    )
    multi_hot(lists, len(class_names))  # validates class ids against class_names
    sensors = list(dict.fromkeys(name.rsplit("_", 1)[0] for name in vectors))
    spaces = list(dict.fromkeys(name.rsplit("_", 1)[1] for name in vectors))
    for index_name, index in (indices or {}).items():
        if index_name not in vectors:
            raise EmbeddingsError(f"Index {index_name!r} has no vector column; columns: {sorted(vectors)}")
        rows = rows_with(present, index_name.rsplit("_", 1)[0])
        count = len(ids) if rows is None else int(rows.sum())
        if index.metadata.dimension != dim or len(index) != count:
            raise EmbeddingsError(
                f"Index {index_name!r} holds {len(index)} x {index.metadata.dimension} vectors; "
                f"the archive has {count} x {dim}"
            )
        if index.metadata.fingerprint != model_fingerprint:
            raise EmbeddingsError(
                f"Index {index_name!r} was built from model {index.metadata.fingerprint!r}, "
                f"the vectors from {model_fingerprint!r}"
            )

    import pyarrow.parquet as pq

    output_dir = Path(output_dir)
    with atomic_dir(output_dir, kind=OUTPUT_KIND, overwrite=overwrite) as tmp:
        (tmp / DATA_DIR).mkdir()
        shards = max(1, -(-len(ids) // rows_per_shard))
        for shard in range(shards):
            rows = slice(shard * rows_per_shard, min((shard + 1) * rows_per_shard, len(ids)))
            table = vector_table(
                ids[rows],
                lists[rows],
                class_names,
                {k: v[rows] for k, v in vectors.items()},
                {k: list(v)[rows] for k, v in metadata.items()},
                {k: np.asarray(v)[rows] for k, v in (present or {}).items()},
            )
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
        render_embeddings_card(info, ids[0]).save(tmp / "README.md")
    return output_dir


__all__ = ["vector_table", "write_embeddings_dataset"]
