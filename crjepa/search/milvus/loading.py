"""Loading an embeddings archive into Milvus: `index_archive` (``crjepa index ARCHIVE --backend milvus --uri URI``),
one collection per vector column, streamed, resumable, then indexed and calibrated.

The archive's Parquet shards are streamed in batches of ``batch_rows`` (memory flat in the archive size) and after
each acknowledged insert the collection's properties record how many archive rows are done. Killed and rerun, the
load resumes there; the first batch after the recorded point is upserted (primary key = archive id), since its
insert may have landed before the record: every row once, none twice. A collection that holds another archive
(another fingerprint) is refused. Then: index build, load, and the recall calibration of
`crjepa.search.calibration` (`walk_knob`, `finish_calibration`, the same held-out rows): held-out archive vectors
are kept out of the collection until calibrated, their exact top-k among the loaded rows is computed by streaming
the column (faiss.knn per batch, `merge_results`), and the engine's search knob (nprobe for IVF_*, ef for HNSW*,
search_list for DISKANN) is walked until the target recall@k is met; the held-out rows are added after.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Iterator, Mapping, Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np

from crjepa.hub.archive.format import DATA_DIR, EmbeddingsError, read_info, vector_block
from crjepa.search.calibration import (
    CALIBRATION_TARGETS,
    DEFAULT_RECALL,
    finish_calibration,
    held_out_count,
    held_out_rows,
    pick_point,
    timed_qps,
    walk_knob,
)
from crjepa.search.index import merge_results
from crjepa.search.milvus.client import (
    FIELD,
    KNOB,
    PROP,
    RESERVED,
    archive_fingerprint,
    check_owner,
    collection_name,
    collection_schema,
    connect,
    count_rows,
    default_prefix,
    index_params,
    is_lite,
    knob_ladder,
    plan_of,
    properties,
    record_of,
    resolve_index_type,
    result_ids,
    segment_rows,
    set_properties,
    unit_rows,
)

if TYPE_CHECKING:
    import pyarrow as pa
    from pymilvus import MilvusClient


def _shards(folder: Path) -> list[Path]:
    files = sorted((folder / DATA_DIR).glob("*.parquet"))
    if not files:
        raise EmbeddingsError(f"The archive at {folder} has no Parquet files under {DATA_DIR}/")
    return files


def _batches(
    folder: Path, columns: Sequence[str], batch_rows: int, start: int = 0
) -> Iterator[tuple[int, pa.RecordBatch]]:
    """(first archive row, pyarrow RecordBatch) over the archive's Parquet shards from row ``start``, batch by
    batch: one batch (and one row group) in memory, whatever the archive's size."""
    import pyarrow.parquet as pq

    offset = 0
    for file in _shards(folder):
        reader = pq.ParquetFile(file)
        rows = reader.metadata.num_rows
        if offset + rows <= start:
            offset += rows
            continue
        for batch in reader.iter_batches(batch_size=batch_rows, columns=list(columns)):
            if offset + batch.num_rows > start:
                skip = max(0, start - offset)
                yield offset + skip, batch.slice(skip)
            offset += batch.num_rows


def _rows_at(folder: Path, columns: Sequence[str], positions: np.ndarray) -> dict[int, pa.RecordBatch]:
    """The archive rows at ``positions`` (a few hundred) as one-row RecordBatches, read row group by row group:
    only the groups that hold one are read."""
    import pyarrow.parquet as pq

    wanted, out, offset = np.sort(np.asarray(positions, dtype=np.int64)), {}, 0
    for file in _shards(folder):
        reader = pq.ParquetFile(file)
        for group in range(reader.num_row_groups):
            rows = reader.metadata.row_group(group).num_rows
            inside = wanted[(wanted >= offset) & (wanted < offset + rows)]
            if len(inside):
                table = reader.read_row_group(group, columns=list(columns))
                for position in inside.tolist():
                    out[position] = table.slice(position - offset, 1).combine_chunks().to_batches()[0]
            offset += rows
    return out


def _records(
    batch: pa.RecordBatch,
    first: int,
    column: str,
    metadata: Sequence[str],
    dim: int,
    skip: set[int] | frozenset[int] = frozenset(),
) -> list[dict[str, Any]]:
    """Milvus rows of a RecordBatch: rows lacking the column's sensor (null vectors) and ``skip`` rows left out."""
    vectors, valid = vector_block(batch.column(batch.schema.get_field_index(column)), dim)
    vectors = unit_rows(vectors)
    ids = batch.column(batch.schema.get_field_index("id")).to_pylist()
    labels = batch.column(batch.schema.get_field_index("labels")).to_pylist()
    meta = {name: batch.column(batch.schema.get_field_index(name)).to_pylist() for name in metadata}
    out = []
    for i in range(batch.num_rows):
        if (valid is not None and not valid[i]) or first + i in skip:
            continue
        out.append(
            {
                "id": str(ids[i]),
                "row": first + i,
                "labels": sorted({int(c) for c in labels[i] or []}),
                **{name: (None if values[i] is None else str(values[i])) for name, values in meta.items()},
                "vector": vectors[i],
            }
        )
    return out


def exact_top_k(
    folder: Path, column: str, queries: np.ndarray, k: int, dim: int, batch_rows: int, skip: set[int]
) -> np.ndarray:
    """Ids (q, k) of the exact top-k (inner product) of ``queries`` among the archive rows of ``column``, minus
    ``skip`` rows and rows lacking the sensor: the column is streamed batch by batch (faiss.knn on each, the
    running top-k kept with `merge_results`), so memory stays flat in the archive size."""
    import faiss

    best = (np.full((len(queries), k), -np.inf, np.float32), np.full((len(queries), k), "", dtype=object))
    for first, batch in _batches(folder, ["id", column], batch_rows):
        vectors, valid = vector_block(batch.column(1), dim)
        keep = np.ones(batch.num_rows, bool) if valid is None else valid.copy()
        keep[[p - first for p in skip if first <= p < first + batch.num_rows]] = False
        if not keep.any():
            continue
        ids = np.asarray(batch.column(0).to_pylist(), dtype=object)[keep]
        scores, rows = faiss.knn(
            queries,
            np.ascontiguousarray(unit_rows(vectors[keep])),
            min(k, int(keep.sum())),
            metric=faiss.METRIC_INNER_PRODUCT,
        )
        best = merge_results([best, (scores, np.where(rows >= 0, ids[np.maximum(rows, 0)], ""))], k)
    return best[1].astype(str)


# ---------------------------------------------------------------------------------------------- loading
def index_archive(
    folder: str | Path,
    uri: str,
    *,
    token: str | None = None,
    columns: Sequence[str] | None = None,
    index_type: str = "auto",
    recall: float | None = DEFAULT_RECALL,
    prefix: str | None = None,
    name: str | None = None,
    batch_rows: int = 8192,
    overwrite: bool = False,
    seed: int = 0,
    calibration_queries: int = 500,
    calibration_k: int = 10,
    calibration_budget_s: float = 30.0,
    progress: Callable[[str, int, int], None] | None = None,
    **params: Any,
) -> dict[str, dict[str, Any]]:
    """Load an archive folder into one Milvus collection per vector column, build and calibrate the index;
    returns {column: record} (`describe`). Resumable and idempotent (module docstring). ``params`` override
    the build parameters of `index_params`. ``progress(column, rows_done, rows)`` is called after each batch."""
    folder = Path(folder)
    info = read_info(folder)
    if recall is not None and not 0 < recall <= 1:
        raise EmbeddingsError(f"recall must be in (0, 1], got {recall}")
    if batch_rows < 1:
        raise EmbeddingsError(f"batch_rows must be >= 1, got {batch_rows}")
    bad = [m for m in info.get("metadata_columns", []) if not FIELD.fullmatch(m) or m in RESERVED]
    if bad:
        raise EmbeddingsError(
            f"metadata column(s) {bad} of the archive at {folder} cannot be Milvus fields (letters, "
            f"digits and _, not {sorted(RESERVED)})"
        )
    for column in columns or []:
        if column not in info["vector_columns"]:
            raise EmbeddingsError(f"No vector column {column!r}; this archive has {info['vector_columns']}")
    client = connect(uri, token)
    fingerprint = archive_fingerprint(info)
    prefix = prefix or default_prefix(name or str(folder))
    records = {}
    for column in columns or info["vector_columns"]:
        records[column] = _load_column(
            client,
            folder,
            info,
            fingerprint,
            uri,
            collection_name(prefix, column),
            column,
            index_type,
            recall,
            batch_rows,
            overwrite,
            seed,
            calibration_queries,
            calibration_k,
            calibration_budget_s,
            progress,
            params,
        )
    return records


def _load_column(
    client: MilvusClient,
    folder: Path,
    info: dict[str, Any],
    fingerprint: str,
    uri: str,
    name: str,
    column: str,
    index_type: str,
    recall: float | None,
    batch_rows: int,
    overwrite: bool,
    seed: int,
    calibration_queries: int,
    k: int,
    budget_s: float,
    progress: Callable[[str, int, int], None] | None,
    params: Mapping[str, Any],
) -> dict[str, Any]:
    n, dim, metadata = int(info["num_rows"]), int(info["dimension"]), list(info.get("metadata_columns", []))
    if overwrite and client.has_collection(name):
        client.drop_collection(name)
    existed = client.has_collection(name)
    if existed:
        props = properties(client, name)
        check_owner(props, name, uri, fingerprint)
        plan = plan_of(props)
        asked = resolve_index_type(index_type, n, is_lite(uri))
        if index_type.lower() != "auto" and asked != plan["index_type"] or params and dict(params) != plan["build"]:
            raise EmbeddingsError(
                f"Milvus collection {name!r} at {uri} is a {plan['index_type']} "
                f"{plan['build']} collection; pass --overwrite to rebuild it as {asked} "
                f"{dict(params)}"
            )
    else:
        kind = resolve_index_type(index_type, n, is_lite(uri))
        build = {**index_params(kind, n, dim, segment_rows(is_lite(uri), dim)), **params}
        held = held_out_count(n, calibration_queries) if KNOB[kind] and recall is not None else 0
        plan = {
            "index_type": kind,
            "build": build,
            "metric": "IP",
            "seed": seed,
            "held_out": held,
            "k": k,
            "column": column,
            "rows": n,
        }
        client.create_collection(name, schema=collection_schema(client, dim, len(info["class_names"]), metadata))
        set_properties(client, name, archive=fingerprint, plan=plan, state="loading", rows_done=0, present=0)
        props = properties(client, name)
    held = set(held_out_rows(n, plan["held_out"], plan["seed"]).tolist()) if plan["held_out"] else set()
    started = time.perf_counter()
    if props[PROP + "state"] == "loading":
        _load_rows(client, name, folder, column, metadata, dim, n, held, batch_rows, props, existed, progress)
        props = properties(client, name)
    if props[PROP + "state"] == "loading_done":
        calibration = _build_and_calibrate(client, name, folder, column, dim, plan, held, recall, batch_rows, budget_s)
        set_properties(client, name, state="calibrated", calibration=calibration)
        props = properties(client, name)
    if props[PROP + "state"] == "calibrated":
        if held:  # the held-out rows join the collection only now that they are no longer fresh queries
            rows = _rows_at(folder, ["id", "labels", *metadata, column], np.fromiter(held, np.int64))
            records = [
                r for position, row in sorted(rows.items()) for r in _records(row, position, column, metadata, dim)
            ]
            if records:
                client.upsert(name, records)
        client.flush(name)
        client.load_collection(name)
        present = int(props[PROP + "present"])
        count = count_rows(client, name)
        if count != present:
            raise EmbeddingsError(
                f"Milvus collection {name!r} at {uri} holds {count} rows, the archive {present} with "
                f"a {column} vector; drop it and load again (--overwrite)"
            )
        set_properties(client, name, state="complete")
        props = properties(client, name)
    record = record_of(props, name, uri)
    if recall is not None and record["calibration"].get("points"):  # another target: a measured point, not a rerun
        chosen = pick_point(record["calibration"]["points"], recall)
        search = {KNOB[plan["index_type"]]: chosen[KNOB[plan["index_type"]]]}
        if search != record["search"]:
            set_properties(client, name, search=search)
            record["search"] = search
    record["seconds"] = round(time.perf_counter() - started, 2)
    return record


def _load_rows(
    client: MilvusClient,
    name: str,
    folder: Path,
    column: str,
    metadata: Sequence[str],
    dim: int,
    n: int,
    held: set[int],
    batch_rows: int,
    props: Mapping[str, str],
    resumed: bool,
    progress: Callable[[str, int, int], None] | None,
) -> None:
    """Stream the archive from the recorded row on; after each acknowledged write record the rows done and the
    rows with a vector so far. The first batch of a resumed load (``resumed``: the collection was there) is
    upserted: its insert may have landed before the record did."""
    done, present = int(props[PROP + "rows_done"]), int(props[PROP + "present"])
    fields = ["id", "labels", *metadata, column]
    for first, batch in _batches(folder, fields, batch_rows, start=done):
        records = _records(batch, first, column, metadata, dim)
        present += len(records)
        records = [r for r in records if r["row"] not in held]
        if records:
            (client.upsert if resumed else client.insert)(name, records)
        resumed = False
        done = first + batch.num_rows
        set_properties(client, name, rows_done=done, present=present)
        if progress:
            progress(column, done, n)
    client.flush(name)
    set_properties(client, name, state="loading_done")


def _build_and_calibrate(
    client: MilvusClient,
    name: str,
    folder: Path,
    column: str,
    dim: int,
    plan: dict[str, Any],
    held: set[int],
    recall: float | None,
    batch_rows: int,
    budget_s: float,
) -> dict[str, Any]:
    """Build the index, load the collection and calibrate its search knob on the held-out rows (module
    docstring); returns the calibration record ({} for FLAT or without a recall target)."""
    kind, k = plan["index_type"], int(plan["k"])
    if not client.list_indexes(name):
        index = client.prepare_index_params()
        index.add_index(
            field_name="vector", index_name="vector", index_type=kind, metric_type="IP", params=dict(plan["build"])
        )
        client.create_index(name, index, sync=False)
    _wait_for_index(client, name)
    client.load_collection(name)
    if not held or recall is None:
        return {}
    t0 = time.perf_counter()
    rows = _rows_at(folder, [column], np.fromiter(held, np.int64))
    present = sorted(p for p, row in rows.items() if row.column(0).is_valid().to_pylist()[0])
    if not present:
        return {}
    q = unit_rows(np.concatenate([vector_block(rows[p].column(0), dim)[0] for p in present]))
    truth = exact_top_k(folder, column, q, k, dim, batch_rows, held)
    exact_qps = len(q) / max(time.perf_counter() - t0, 1e-9)  # the streamed exact search, reading included
    knob = KNOB[kind]
    targets = sorted({*CALIBRATION_TARGETS, recall})

    def search(point: Mapping[str, int]) -> np.ndarray:
        return result_ids(
            client.search(
                name,
                data=q,
                limit=k,
                anns_field="vector",
                consistency_level="Strong",
                search_params={"metric_type": "IP", "params": dict(point)},
            ),
            k,
        )

    points = walk_knob(
        knob,
        knob_ladder(kind, plan["build"], k),
        search,
        lambda point: timed_qps(lambda: search(point), len(q)),
        truth,
        recall,
        targets,
        time.perf_counter() + budget_s,
    )
    return finish_calibration(points, [knob], recall, search, truth, t0, exact_qps, index_type=kind)


def _wait_for_index(client: MilvusClient, name: str, poll_s: float = 1.0) -> None:
    """Until the server has built the vector index of every sealed segment (Lite builds it at once)."""
    while True:
        described = client.describe_index(name, "vector") or {}
        state = str(described.get("state", "Finished"))
        if state == "Failed":
            raise EmbeddingsError(
                f"Milvus could not build the index of {name!r}: "
                f"{described.get('index_state_fail_reason', 'no reason given')}"
            )
        if state == "Finished":
            return
        time.sleep(poll_s)


__all__ = ["exact_top_k", "index_archive"]
