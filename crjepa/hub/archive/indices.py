"""The faiss indices of an embeddings archive: one `crjepa.search.index.RetrievalIndex` per vector column, stored
as ``faiss/<column>/``, tied to the archive's model fingerprint and ids, and `add_indices` (the `crjepa index`
command), which swaps a complete new ``faiss/`` folder in or leaves the old one as it was."""

from __future__ import annotations

from collections.abc import Callable, Mapping, Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np

from crjepa.hub.archive.format import INDEX_DIR, INFO_FILE, EmbeddingsError, read_vector_column
from crjepa.hub.cards import render_embeddings_card, shell_word
from crjepa.utils.atomic import atomic_write_json, atomic_write_text

if TYPE_CHECKING:  # faiss is imported on use: reading an archive's ids and labels needs none
    from crjepa.search.index import RetrievalIndex


def build_indices(
    vectors: Mapping[str, np.ndarray],
    ids: Sequence[str],
    kind: str = "auto",
    fingerprint: str = "",
    columns: Sequence[str] | None = None,
    present: Mapping[str, np.ndarray] | None = None,
    **params: Any,
) -> dict[str, RetrievalIndex]:
    """One `crjepa.search.index.RetrievalIndex` per vector column, over the archive ids, tagged with the
    model fingerprint, sensor and space of the column. ``present`` ({sensor: (N,) bool}): a column indexes only
    the rows having its sensor (a partially paired archive)."""
    from crjepa.search.index import build_index

    out = {}
    for name in columns or list(vectors):
        if name not in vectors:
            raise EmbeddingsError(f"No vector column {name!r} to index; available: {sorted(vectors)}")
        sensor, space = name.rsplit("_", 1)
        rows = rows_with(present, sensor)
        matrix, row_ids = (
            (vectors[name], list(ids))
            if rows is None
            else (vectors[name][rows], [i for i, keep in zip(ids, rows) if keep])
        )
        if not len(row_ids):
            continue  # no row has this sensor: nothing to search in this column
        out[name] = build_index(
            matrix, kind=kind, ids=row_ids, fingerprint=fingerprint, space=space, sensor=sensor, **params
        )
    return out


def rows_with(present: Mapping[str, np.ndarray] | None, sensor: str) -> np.ndarray | None:
    """The rows having ``sensor`` (bool mask), or None when every row has it."""
    mask = None if present is None else present.get(sensor)
    return None if mask is None or np.all(mask) else np.asarray(mask, dtype=bool)


def calibration_summary(index: RetrievalIndex) -> dict[str, Any]:
    """What an index's recall calibration measured, for embeddings_info.json and the card ({} if none)."""
    cal = index.metadata.calibration
    keys = ("target", "recall", "recall_se", "k", "queries", "qps", "threads", "params", "seconds", "met")
    ann = {key: cal["ann"][key] for key in ("kind", "why", "recall", "qps", "params")} if cal.get("ann") else None
    return {**{key: cal[key] for key in keys}, **({"ann": ann} if ann else {})} if cal else {}


def save_indices(folder: Path, indices: Mapping[str, RetrievalIndex]) -> dict[str, str]:
    """Save indices as ``faiss/<column>/`` beside an archive (each save is atomic); returns column -> kind."""
    for name, index in indices.items():
        index.save(Path(folder) / INDEX_DIR / name)
    return {name: index.metadata.kind for name, index in indices.items()}


def load_index(folder: Path, name: str, fingerprint: str, ids: Sequence[str], dimension: int) -> RetrievalIndex:
    """Load ``faiss/<name>`` and check it was built by the archive's model, over its ids (those of the rows
    that have the column's sensor), at its dimension."""
    from crjepa.search.index import RetrievalIndex  # noqa: F811  (faiss is imported on use)

    try:
        index = RetrievalIndex.load(Path(folder) / INDEX_DIR / name, expected_fingerprint=fingerprint)
    except (ValueError, FileNotFoundError) as err:
        raise EmbeddingsError(f"faiss index {name!r} of the archive at {folder} is unusable: {err}") from err
    if index.metadata.dimension != dimension:
        raise EmbeddingsError(
            f"faiss index {name!r} holds {index.metadata.dimension}-d vectors; the archive holds "
            f"{dimension}-d vectors; rebuild it with `crjepa index {shell_word(folder)}`"
        )
    # same items; the order may differ (a calibrated index adds its held-out rows last)
    if len(index) != len(ids) or not np.array_equal(np.sort(index.ids), np.sort(np.asarray(ids, dtype=str))):
        raise EmbeddingsError(
            f"faiss index {name!r} covers other items than the archive at {folder}; rebuild it "
            f"with `crjepa index {shell_word(folder)}`"
        )
    return index


def add_indices(
    folder: str | Path,
    kind: str = "auto",
    columns: Sequence[str] | None = None,
    progress: Callable[[str], None] | None = None,
    recall: float | None = None,
    **params: Any,
) -> dict[str, str]:
    """Build and store faiss indices for an archive folder (the `crjepa index` command); returns column -> kind.
    ``progress`` is called with each column name once its index is saved. ``recall`` is the target the ANN
    kinds calibrate to (`crjepa.search.index.build_index`; None: its default). Vectors are read one column at a
    time and indexed in place, so the archive is never held twice in memory. Holds the archive's writer lock, so
    it never interleaves with `crjepa embed` (or another `crjepa index`) on the same folder."""
    from crjepa.utils.atomic import lock_file_for
    from crjepa.utils.locks import DirLock

    with DirLock(lock_file_for(Path(folder)), what="crjepa index", folder=Path(folder)):
        return _add_indices(folder, kind, columns, progress, recall, **params)


def _add_indices(
    folder: str | Path,
    kind: str,
    columns: Sequence[str] | None,
    progress: Callable[[str], None] | None,
    recall: float | None,
    **params: Any,
) -> dict[str, str]:
    """Build the new indices into a ``.faiss.tmp-*`` folder inside the archive (the indices not rebuilt are linked
    in), then swap it with ``faiss/`` in one step and write the info and the card: a failure (disk full, kill)
    leaves the archive's indices, info and card as they were."""
    import shutil
    import tempfile

    from crjepa.hub.archive.loading import load_embeddings  # loading imports this module
    from crjepa.search.calibration import DEFAULT_RECALL
    from crjepa.search.index import build_index
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
            vectors, valid = read_vector_column(
                archive.path, name, archive.dimension, with_validity=True, rows=len(archive.ids)
            )
            ids = archive.ids
            if valid is not None:  # rows lacking the sensor are not searchable in its columns
                vectors, ids = vectors[valid], [i for i, keep in zip(ids, valid) if keep]
            if not ids:
                raise EmbeddingsError(
                    f"No row of the archive at {archive.path} has sensor {sensor!r}: column {name!r} cannot be indexed"
                )
            index = build_index(
                vectors,
                kind=kind,
                ids=ids,
                fingerprint=archive.fingerprint,
                space=space,
                sensor=sensor,
                recall=DEFAULT_RECALL if recall is None else recall,
                copy=False,
                **params,
            )
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
    atomic_write_text(archive.path / "README.md", str(render_embeddings_card(info, archive.ids[0])))
    return kinds


def _link_or_copy(source: str, target: str) -> None:
    """A hard link (no second copy of a large index file), or a copy where links are not possible."""
    import os
    import shutil

    try:
        os.link(source, target)
    except OSError:
        shutil.copy2(source, target)


__all__ = ["add_indices", "build_indices", "calibration_summary", "load_index", "rows_with", "save_indices"]
