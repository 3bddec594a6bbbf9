"""Milvus as the search engine of an embeddings archive: for archives past one machine (docs/SCALE.md).

One URI, two deployments, the same client calls: a local path ending in ``.db`` is Milvus Lite (embedded, one
process at a time; ``pip install "crjepa[milvus]"``), ``http://host:19530`` (with a token where the server wants
one) a Milvus standalone server or cluster. faiss in-process (`crjepa.search.index`) stays the default.

Collections: one per vector column, ``<prefix>_<column>`` (prefix: ``crjepa_<archive name>`` unless given), with
the fields ``id`` (VARCHAR primary key), ``row`` (INT64, the archive row), ``labels`` (ARRAY of INT64 class ids),
one nullable VARCHAR per metadata column (the archive stores them as strings) and ``vector`` (FLOAT_VECTOR,
L2-normalised, metric IP: the cosine score faiss returns). Rows lacking the column's sensor are not loaded. The
collection's properties record the archive fingerprint (`archive_fingerprint`), the load plan, the progress and
the calibration, so any machine with the URI can resume, check and search it.

Loading (`index_archive`, ``crjepa index ARCHIVE --backend milvus --uri URI``) streams the archive's Parquet shards
in batches of ``batch_rows`` (memory flat in the archive size) and records after each acknowledged insert how many
archive rows are done. Killed and rerun, it resumes there; the first batch after the recorded point is upserted
(primary key = archive id), since its insert may have landed before the record: every row once, none twice. A
collection that holds another archive (another fingerprint) is refused. Then: index build, load, and the recall
calibration of `crjepa.search.index` (`walk_knob`, `finish_calibration`, the same held-out rows): held-out archive
vectors are kept out of the collection until calibrated, their exact top-k among the loaded rows is computed by
streaming the column (faiss.knn per batch, `merge_results`), and the engine's search knob (nprobe for IVF_*, ef for
HNSW*, search_list for DISKANN) is walked until the target recall@k is met; the held-out rows are added after.

Index types (``index_type``): Milvus Lite offers only FLAT, IVF_FLAT, IVF_SQ8, HNSW and HNSW_SQ, each built per
segment of at most 100,000 rows; a server adds IVF_PQ and DISKANN (and more this module does not choose). Their
build parameters come from `crjepa.search.index.default_params` (the faiss rules: nlist = 4 sqrt(segment rows) as
a power of two, PQ m = dim / 4, HNSW M 32 / efConstruction 40), `index_params`. ``"auto"``: FLAT below
`AUTO_EXACT_MAX` rows; IVF_FLAT on Lite; HNSW on a server, DISKANN from `DISKANN_FROM` rows.

Filters (`filter_expression`: labels containing a class, metadata equal to a value, metadata in a range such as
dates, or a raw Milvus expression) are passed to Milvus with the search, so they select before the top-k, not after.
"""

from __future__ import annotations

import hashlib
import json
import re
import time
from collections.abc import Callable, Iterator, Mapping, Sequence
from pathlib import Path
from typing import Any

import numpy as np

from crjepa.eval.directions import parse_direction
from crjepa.hub.archive import DATA_DIR, INFO_FILE, EmbeddingArchive, EmbeddingsError, Hit, _vector_block, check_info
from crjepa.search.index import (
    AUTO_EXACT_MAX, CALIBRATION_TARGETS, DEFAULT_RECALL, EF_LADDER, _ladder, default_params, finish_calibration,
    held_out_count, held_out_rows, merge_results, pick_point, timed_qps, walk_knob,
)
from crjepa.errors import CRJepaError

INSTALL = 'pip install "crjepa[milvus]"'
LITE_INDEX_TYPES = ("FLAT", "IVF_FLAT", "IVF_SQ8", "HNSW", "HNSW_SQ")
SERVER_INDEX_TYPES = (*LITE_INDEX_TYPES, "IVF_PQ", "DISKANN")
INDEX_TYPES = ("auto", *SERVER_INDEX_TYPES)
KNOB = {"FLAT": None, "IVF_FLAT": "nprobe", "IVF_SQ8": "nprobe", "IVF_PQ": "nprobe", "HNSW": "ef", "HNSW_SQ": "ef",
        "DISKANN": "search_list"}
"""The search-time knob each index type's calibration walks (None: exact search)."""
LITE_SEGMENT_ROWS = 100_000
"""Milvus Lite seals and indexes segments of at most this many rows (milvus_lite.constants.MAX_SEGMENT_ROWS)."""
SERVER_SEGMENT_BYTES = 1024 << 20
"""A Milvus server's default sealed segment size (dataCoord.segment.maxSize, 1,024 MB)."""
DISKANN_FROM = 10_000_000
"""``index_type="auto"`` on a server: DISKANN (vectors on NVMe, compressed codes in RAM) from this many rows."""
MAX_TOP_K = 16_384
FIELD = re.compile(r"[A-Za-z_][A-Za-z0-9_]{0,254}")
RESERVED = {"id", "row", "labels", "vector"}
PROP = "crjepa."  # prefix of the collection properties this module writes


class MilvusMissing(CRJepaError, ImportError):
    """pymilvus (or Milvus Lite for a .db URI) is not installed: the message names the install command."""


# ---------------------------------------------------------------------------------------------- connecting
def is_lite(uri: str) -> bool:
    """A Milvus Lite URI: a local path ending in .db (pymilvus's own rule)."""
    return str(uri).endswith(".db")


def connect(uri: str, token: str | None = None) -> Any:
    """A ``pymilvus.MilvusClient`` for ``uri``; `MilvusMissing` (one line with the install command) without it."""
    try:
        from pymilvus import MilvusClient
    except ImportError:
        raise MilvusMissing(f"the milvus backend needs pymilvus: {INSTALL}") from None
    if is_lite(uri):
        try:
            import milvus_lite  # noqa: F401
        except ImportError:
            raise MilvusMissing(f"a .db URI is Milvus Lite, which is not installed: {INSTALL}") from None
        Path(uri).expanduser().parent.mkdir(parents=True, exist_ok=True)
    elif not re.match(r"(https?|tcp|unix)://", str(uri)):
        raise ValueError(f"Milvus URI {uri!r}: give a local Milvus Lite file ending in .db or a server address "
                         "such as http://localhost:19530")
    try:
        return MilvusClient(uri=str(Path(uri).expanduser()) if is_lite(uri) else uri, token=token or "")
    except Exception as err:  # pymilvus raises its own exception types, one per failure
        hint = " (Milvus Lite serves one process at a time: is another one using it?)" if is_lite(uri) else ""
        raise EmbeddingsError(f"cannot open Milvus at {uri}: {_first_line(err)}{hint}") from None


def _first_line(err: BaseException) -> str:
    text = str(getattr(err, "message", "") or err).strip()
    return text.splitlines()[0] if text else type(err).__name__


# ---------------------------------------------------------------------------------------------- names and plans
def archive_fingerprint(info: Mapping[str, Any]) -> str:
    """A short hex id of an archive's contents from its embeddings_info.json alone (so a search client needs no
    Parquet): the model, the data source and split, the row count, the columns and classes; `crjepa index` rewrites
    none of them. A collection records it, so rows of another archive never join it."""
    keys = ("format_version", "num_rows", "dimension", "model_fingerprint", "vector_columns", "metadata_columns",
            "class_names", "source")
    return hashlib.sha256(json.dumps({key: info.get(key) for key in keys}, sort_keys=True).encode()).hexdigest()[:16]


def default_prefix(name: str) -> str:
    """``crjepa_<archive name>``: a folder's last component or a Hub repo id, as a Milvus name."""
    text = str(name).rstrip("/")
    text = text if text.count("/") == 1 and not Path(text).exists() else Path(text).name
    return "crjepa_" + re.sub(r"[^A-Za-z0-9_]", "_", text)


def collection_name(prefix: str, column: str) -> str:
    name = f"{prefix}_{column}"
    if not FIELD.fullmatch(name):
        raise ValueError(f"Milvus collection name {name!r}: the prefix must be letters, digits and _ (not starting "
                         "with a digit)")
    return name


def resolve_index_type(index_type: str, n: int, lite: bool) -> str:
    """``"auto"`` -> FLAT below `AUTO_EXACT_MAX` rows, IVF_FLAT on Milvus Lite, HNSW (DISKANN from
    `DISKANN_FROM` rows) on a server; an explicit type is checked against what the deployment offers."""
    kind = index_type.upper()
    if kind == "AUTO":
        if n < AUTO_EXACT_MAX:
            return "FLAT"
        return "IVF_FLAT" if lite else ("DISKANN" if n >= DISKANN_FROM else "HNSW")
    offered = LITE_INDEX_TYPES if lite else SERVER_INDEX_TYPES
    if kind not in offered:
        where = "Milvus Lite (a .db URI) offers only" if lite else "crjepa builds"
        raise ValueError(f"index type {index_type!r}: {where} {', '.join(offered)} (or auto)")
    return kind


def segment_rows(lite: bool, dim: int) -> int:
    """Rows of a full sealed segment, on which Milvus builds each index (IVF lists are per segment)."""
    return LITE_SEGMENT_ROWS if lite else SERVER_SEGMENT_BYTES // (4 * dim)


def index_params(index_type: str, n: int, dim: int, segment: int) -> dict[str, Any]:
    """Build parameters of a Milvus index from the faiss rules (`default_params`) at the size Milvus indexes: a
    segment of ``min(n, segment)`` rows. IVF_*: nlist; IVF_PQ: + m sub-quantisers of 8 bits; HNSW*: M and
    efConstruction; FLAT and DISKANN: none (DiskANN's graph degree and build list come from the server's config)."""
    rows = max(1, min(n, segment))
    if index_type.startswith("IVF"):
        ivf = default_params("ivfpq", rows, dim)[1]
        return {"nlist": ivf["nlist"], **({"m": ivf["m"], "nbits": 8} if index_type == "IVF_PQ" else {})}
    if index_type.startswith("HNSW"):
        hnsw = default_params("hnsw", rows, dim)[1]
        return {"M": hnsw["M"], "efConstruction": hnsw["efConstruction"]}
    return {}


def knob_ladder(index_type: str, params: Mapping[str, Any], k: int) -> list[int]:
    """The values of the index type's search knob the calibration walks: nprobe ~1.4x from 1 to nlist (IVF), the
    faiss efSearch ladder from k (HNSW ef, DiskANN search_list, both at least k)."""
    knob = KNOB[index_type]
    if knob == "nprobe":
        return _ladder(1, int(params["nlist"]))
    return [value for value in EF_LADDER if value >= k] if knob else []


# ---------------------------------------------------------------------------------------------- filters
def _literal(value: Any) -> str:
    """A Milvus string literal (double quotes, backslash escapes)."""
    return json.dumps(str(value), ensure_ascii=False)


def filter_expression(info: Mapping[str, Any], labels: Sequence[str] = (), equal: Mapping[str, Any] | None = None,
                      ranges: Mapping[str, tuple[Any, Any]] | None = None, where: str | None = None) -> str:
    """A Milvus boolean expression over the archive's fields ("" = no filter): every class in ``labels`` among the
    row's labels, metadata ``equal`` to a value, metadata within ``ranges`` ({column: (low, high)}, inclusive,
    string order: ISO dates compare as dates; either end may be None), and a raw Milvus ``where`` expression.
    Names are checked against the archive (unknown classes and columns are errors naming what exists)."""
    classes = list(info["class_names"])
    columns = list(info.get("metadata_columns", []))
    parts = []
    for name in labels:
        if name not in classes:
            raise EmbeddingsError(f"unknown class {name!r}; the archive's classes are {classes}")
        parts.append(f"array_contains(labels, {classes.index(name)})")
    for kind, items in (("equal", dict(equal or {})), ("range", dict(ranges or {}))):
        for key, value in items.items():
            if key not in columns:
                raise EmbeddingsError(f"no metadata column {key!r} to filter on; the archive has {columns}")
            if kind == "equal":
                parts.append(f"{key} == {_literal(value)}")
                continue
            low, high = value
            parts += [f"{key} >= {_literal(low)}"] if low not in (None, "") else []
            parts += [f"{key} <= {_literal(high)}"] if high not in (None, "") else []
    if where:
        parts.append(f"({where})")
    return " and ".join(parts)


# ---------------------------------------------------------------------------------------------- reading the archive
def _archive_info(folder: Path) -> dict[str, Any]:
    path = folder / INFO_FILE
    if not path.is_file():
        raise EmbeddingsError(f"{folder} is not a CR-JEPA embeddings archive: {INFO_FILE} is missing")
    try:
        return check_info(json.loads(path.read_text()), path)
    except (ValueError, UnicodeDecodeError) as err:
        if isinstance(err, EmbeddingsError):
            raise
        raise EmbeddingsError(f"{path} is not valid JSON ({err}); download or re-embed the archive") from None


def _shards(folder: Path) -> list[Path]:
    files = sorted((folder / DATA_DIR).glob("*.parquet"))
    if not files:
        raise EmbeddingsError(f"The archive at {folder} has no Parquet files under {DATA_DIR}/")
    return files


def _batches(folder: Path, columns: Sequence[str], batch_rows: int, start: int = 0) -> Iterator[tuple[int, Any]]:
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


def _rows_at(folder: Path, columns: Sequence[str], positions: np.ndarray) -> dict[int, Any]:
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


def _unit_rows(matrix: np.ndarray) -> np.ndarray:
    norms = np.linalg.norm(matrix, axis=1, keepdims=True)
    return (matrix / np.maximum(norms, np.finfo(np.float32).tiny)).astype(np.float32, copy=False)


def _records(batch: Any, first: int, column: str, metadata: Sequence[str], dim: int,
             skip: set[int] | frozenset[int] = frozenset()) -> list[dict[str, Any]]:
    """Milvus rows of a RecordBatch: rows lacking the column's sensor (null vectors) and ``skip`` rows left out."""
    vectors, valid = _vector_block(batch.column(batch.schema.get_field_index(column)), dim)
    vectors = _unit_rows(vectors)
    ids = batch.column(batch.schema.get_field_index("id")).to_pylist()
    labels = batch.column(batch.schema.get_field_index("labels")).to_pylist()
    meta = {name: batch.column(batch.schema.get_field_index(name)).to_pylist() for name in metadata}
    out = []
    for i in range(batch.num_rows):
        if (valid is not None and not valid[i]) or first + i in skip:
            continue
        out.append({"id": str(ids[i]), "row": first + i, "labels": sorted({int(c) for c in labels[i] or []}),
                    **{name: (None if values[i] is None else str(values[i])) for name, values in meta.items()},
                    "vector": vectors[i]})
    return out


def exact_top_k(folder: Path, column: str, queries: np.ndarray, k: int, dim: int, batch_rows: int,
                skip: set[int]) -> np.ndarray:
    """Ids (q, k) of the exact top-k (inner product) of ``queries`` among the archive rows of ``column``, minus
    ``skip`` rows and rows lacking the sensor: the column is streamed batch by batch (faiss.knn on each, the
    running top-k kept with `merge_results`), so memory stays flat in the archive size."""
    import faiss

    best = (np.full((len(queries), k), -np.inf, np.float32), np.full((len(queries), k), "", dtype=object))
    for first, batch in _batches(folder, ["id", column], batch_rows):
        vectors, valid = _vector_block(batch.column(1), dim)
        keep = np.ones(batch.num_rows, bool) if valid is None else valid.copy()
        keep[[p - first for p in skip if first <= p < first + batch.num_rows]] = False
        if not keep.any():
            continue
        ids = np.asarray(batch.column(0).to_pylist(), dtype=object)[keep]
        scores, rows = faiss.knn(queries, np.ascontiguousarray(_unit_rows(vectors[keep])), min(k, int(keep.sum())),
                                 metric=faiss.METRIC_INNER_PRODUCT)
        best = merge_results([best, (scores, np.where(rows >= 0, ids[np.maximum(rows, 0)], ""))], k)
    return best[1].astype(str)


# ---------------------------------------------------------------------------------------------- collections
def _schema(client: Any, dim: int, classes: int, metadata: Sequence[str]) -> Any:
    from pymilvus import DataType

    schema = client.create_schema(auto_id=False, enable_dynamic_field=False)
    schema.add_field("id", DataType.VARCHAR, is_primary=True, max_length=512)
    schema.add_field("row", DataType.INT64)
    schema.add_field("labels", DataType.ARRAY, element_type=DataType.INT64, max_capacity=max(1, min(4096, classes)))
    for name in metadata:
        schema.add_field(name, DataType.VARCHAR, max_length=65_535, nullable=True)
    schema.add_field("vector", DataType.FLOAT_VECTOR, dim=dim)
    return schema


def _properties(client: Any, name: str) -> dict[str, str]:
    return {key: str(value) for key, value in (client.describe_collection(name).get("properties") or {}).items()}


def _set(client: Any, name: str, **values: Any) -> None:
    """Record values in the collection's properties (after the work they describe was acknowledged)."""
    client.alter_collection_properties(name, properties={
        PROP + key: value if isinstance(value, str) else json.dumps(value) for key, value in values.items()})


def _check_owner(props: Mapping[str, str], name: str, uri: str, fingerprint: str) -> None:
    found = props.get(PROP + "archive")
    if found is None:
        raise EmbeddingsError(f"Milvus collection {name!r} at {uri} was not written by crjepa; choose another "
                              "--prefix, or drop it (--overwrite)")
    if found != fingerprint:
        raise EmbeddingsError(f"Milvus collection {name!r} at {uri} holds another archive (fingerprint {found}, "
                              f"this archive {fingerprint}); choose another --prefix, or replace it (--overwrite)")


def _plan(props: Mapping[str, str]) -> dict[str, Any]:
    return json.loads(props[PROP + "plan"])


# ---------------------------------------------------------------------------------------------- loading
def index_archive(folder: str | Path, uri: str, *, token: str | None = None, columns: Sequence[str] | None = None,
                  index_type: str = "auto", recall: float | None = DEFAULT_RECALL, prefix: str | None = None,
                  name: str | None = None, batch_rows: int = 8192, overwrite: bool = False, seed: int = 0,
                  calibration_queries: int = 500, calibration_k: int = 10, calibration_budget_s: float = 30.0,
                  progress: Callable[[str, int, int], None] | None = None, **params: Any) -> dict[str, dict[str, Any]]:
    """Load an archive folder into one Milvus collection per vector column, build and calibrate the index;
    returns {column: record} (`describe`). Resumable and idempotent (module docstring). ``params`` override
    the build parameters of `index_params`. ``progress(column, rows_done, rows)`` is called after each batch."""
    folder = Path(folder)
    info = _archive_info(folder)
    if recall is not None and not 0 < recall <= 1:
        raise ValueError(f"recall must be in (0, 1], got {recall}")
    if batch_rows < 1:
        raise ValueError(f"batch_rows must be >= 1, got {batch_rows}")
    bad = [m for m in info.get("metadata_columns", []) if not FIELD.fullmatch(m) or m in RESERVED]
    if bad:
        raise EmbeddingsError(f"metadata column(s) {bad} of the archive at {folder} cannot be Milvus fields (letters, "
                              f"digits and _, not {sorted(RESERVED)})")
    for column in columns or []:
        if column not in info["vector_columns"]:
            raise EmbeddingsError(f"No vector column {column!r}; this archive has {info['vector_columns']}")
    client = connect(uri, token)
    fingerprint = archive_fingerprint(info)
    prefix = prefix or default_prefix(name or str(folder))
    records = {}
    for column in columns or info["vector_columns"]:
        records[column] = _load_column(client, folder, info, fingerprint, uri, collection_name(prefix, column),
                                       column, index_type, recall, batch_rows, overwrite, seed, calibration_queries,
                                       calibration_k, calibration_budget_s, progress, params)
    return records


def _load_column(client: Any, folder: Path, info: dict[str, Any], fingerprint: str, uri: str, name: str,
                 column: str, index_type: str, recall: float | None, batch_rows: int, overwrite: bool, seed: int,
                 calibration_queries: int, k: int, budget_s: float,
                 progress: Callable[[str, int, int], None] | None, params: Mapping[str, Any]) -> dict[str, Any]:
    n, dim, metadata = int(info["num_rows"]), int(info["dimension"]), list(info.get("metadata_columns", []))
    if overwrite and client.has_collection(name):
        client.drop_collection(name)
    existed = client.has_collection(name)
    if existed:
        props = _properties(client, name)
        _check_owner(props, name, uri, fingerprint)
        plan = _plan(props)
        asked = resolve_index_type(index_type, n, is_lite(uri))
        if index_type.lower() != "auto" and asked != plan["index_type"] or params and dict(params) != plan["build"]:
            raise EmbeddingsError(f"Milvus collection {name!r} at {uri} is a {plan['index_type']} "
                                  f"{plan['build']} collection; pass --overwrite to rebuild it as {asked} "
                                  f"{dict(params)}")
    else:
        kind = resolve_index_type(index_type, n, is_lite(uri))
        build = {**index_params(kind, n, dim, segment_rows(is_lite(uri), dim)), **params}
        held = held_out_count(n, calibration_queries) if KNOB[kind] and recall is not None else 0
        plan = {"index_type": kind, "build": build, "metric": "IP", "seed": seed, "held_out": held, "k": k,
                "column": column, "rows": n}
        client.create_collection(name, schema=_schema(client, dim, len(info["class_names"]), metadata))
        _set(client, name, archive=fingerprint, plan=plan, state="loading", rows_done=0, present=0)
        props = _properties(client, name)
    held = set(held_out_rows(n, plan["held_out"], plan["seed"]).tolist()) if plan["held_out"] else set()
    started = time.perf_counter()
    if props[PROP + "state"] == "loading":
        _load_rows(client, name, folder, column, metadata, dim, n, held, batch_rows, props, existed, progress)
        props = _properties(client, name)
    if props[PROP + "state"] == "loading_done":
        calibration = _build_and_calibrate(client, name, folder, column, dim, plan, held, recall, batch_rows,
                                           budget_s)
        _set(client, name, state="calibrated", calibration=calibration)
        props = _properties(client, name)
    if props[PROP + "state"] == "calibrated":
        if held:  # the held-out rows join the collection only now that they are no longer fresh queries
            rows = _rows_at(folder, ["id", "labels", *metadata, column], np.fromiter(held, np.int64))
            records = [r for position, row in sorted(rows.items()) for r in _records(row, position, column,
                                                                                       metadata, dim)]
            if records:
                client.upsert(name, records)
        client.flush(name)
        client.load_collection(name)
        present = int(props[PROP + "present"])
        count = _count(client, name)
        if count != present:
            raise EmbeddingsError(f"Milvus collection {name!r} at {uri} holds {count} rows, the archive {present} with "
                                  f"a {column} vector; drop it and load again (--overwrite)")
        _set(client, name, state="complete")
        props = _properties(client, name)
    record = _record(props, name, uri)
    if recall is not None and record["calibration"].get("points"):  # another target: a measured point, not a rerun
        chosen = pick_point(record["calibration"]["points"], recall)
        search = {KNOB[plan["index_type"]]: chosen[KNOB[plan["index_type"]]]}
        if search != record["search"]:
            _set(client, name, search=search)
            record["search"] = search
    record["seconds"] = round(time.perf_counter() - started, 2)
    return record


def _count(client: Any, name: str) -> int:
    result = client.query(name, filter="", output_fields=["count(*)"], consistency_level="Strong")
    return int(result[0]["count(*)"])


def _load_rows(client: Any, name: str, folder: Path, column: str, metadata: Sequence[str], dim: int, n: int,
               held: set[int], batch_rows: int, props: Mapping[str, str], resumed: bool,
               progress: Callable[[str, int, int], None] | None) -> None:
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
        _set(client, name, rows_done=done, present=present)
        if progress:
            progress(column, done, n)
    client.flush(name)
    _set(client, name, state="loading_done")


def _build_and_calibrate(client: Any, name: str, folder: Path, column: str, dim: int, plan: dict[str, Any],
                         held: set[int], recall: float | None, batch_rows: int, budget_s: float) -> dict[str, Any]:
    """Build the index, load the collection and calibrate its search knob on the held-out rows (module
    docstring); returns the calibration record ({} for FLAT or without a recall target)."""
    kind, k = plan["index_type"], int(plan["k"])
    if not client.list_indexes(name):
        index = client.prepare_index_params()
        index.add_index(field_name="vector", index_name="vector", index_type=kind, metric_type="IP",
                        params=dict(plan["build"]))
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
    q = _unit_rows(np.concatenate([_vector_block(rows[p].column(0), dim)[0] for p in present]))
    truth = exact_top_k(folder, column, q, k, dim, batch_rows, held)
    exact_qps = len(q) / max(time.perf_counter() - t0, 1e-9)  # the streamed exact search, reading included
    knob = KNOB[kind]
    targets = sorted({*CALIBRATION_TARGETS, recall})

    def search(point: Mapping[str, int]) -> np.ndarray:
        return _ids(client.search(name, data=q, limit=k, anns_field="vector", consistency_level="Strong",
                                  search_params={"metric_type": "IP", "params": dict(point)}), k)

    points = walk_knob(knob, knob_ladder(kind, plan["build"], k), search,
                       lambda point: timed_qps(lambda: search(point), len(q)), truth, recall, targets,
                       time.perf_counter() + budget_s)
    return finish_calibration(points, [knob], recall, search, truth, t0, exact_qps, index_type=kind)


def _wait_for_index(client: Any, name: str, poll_s: float = 1.0) -> None:
    """Until the server has built the vector index of every sealed segment (Lite builds it at once)."""
    while True:
        described = client.describe_index(name, "vector") or {}
        state = str(described.get("state", "Finished"))
        if state == "Failed":
            raise EmbeddingsError(f"Milvus could not build the index of {name!r}: "
                                  f"{described.get('index_state_fail_reason', 'no reason given')}")
        if state == "Finished":
            return
        time.sleep(poll_s)


def _ids(results: Any, k: int) -> np.ndarray:
    out = np.full((len(results), k), "", dtype=object)
    for row, hits in enumerate(results):
        for col, hit in enumerate(list(hits)[:k]):
            out[row, col] = str(hit["id"])
    return out.astype(str)


def _record(props: Mapping[str, str], name: str, uri: str) -> dict[str, Any]:
    plan = _plan(props)
    calibration = json.loads(props.get(PROP + "calibration", "{}"))
    search = json.loads(props[PROP + "search"]) if PROP + "search" in props else dict(calibration.get("params", {}))
    return {"collection": name, "uri": uri, "lite": is_lite(uri), "index_type": plan["index_type"],
            "build": plan["build"], "rows": int(props.get(PROP + "present", 0)), "state": props[PROP + "state"],
            "calibration": calibration, "search": search}


def describe(record: Mapping[str, Any]) -> str:
    """One line for people: where the column went, what index, what recall it promises and measured."""
    engine = "Milvus Lite" if record["lite"] else "Milvus"
    build = ", ".join(f"{key} {value}" for key, value in record["build"].items())
    head = (f"{engine} collection {record['collection']} ({record['rows']:,} rows), {record['index_type']}"
            f"{f' ({build})' if build else ''}")
    c = record["calibration"]
    if record["index_type"] == "FLAT":
        return f"{head}: exact search (recall 1.0)"
    if not c:
        return f"{head}: search params {record['search'] or 'Milvus defaults'}, recall not measured"
    knobs = ", ".join(f"{key} {value}" for key, value in record["search"].items())
    verdict = "" if c["met"] else f" (target {c['target']} NOT reached: best found)"
    return (f"{head}: recall@{c['k']} {c['recall']:.3f} +- {c['recall_se']:.3f} for target {c['target']}{verdict}, "
            f"measured on {c['queries']} held-out archive vectors against exact search; {c['qps']:,} q/s; {knobs}; "
            f"calibration {c['seconds']:.1f} s")


# ---------------------------------------------------------------------------------------------- searching
class MilvusIndex:
    """One loaded collection, searched like a `crjepa.search.index.RetrievalIndex`: ``search`` returns (scores,
    ids), with filters run inside Milvus."""

    def __init__(self, client: Any, name: str, uri: str, props: Mapping[str, str]) -> None:
        self.client, self.name, self.uri = client, name, uri
        self.record = _record(props, name, uri)
        self.kind = self.record["index_type"]

    def __len__(self) -> int:
        return int(self.record["rows"])

    def __repr__(self) -> str:
        return f"MilvusIndex({self.name!r} at {self.uri}, {len(self)} rows, {self.kind})"

    def _params(self, recall: float | None, params: Mapping[str, Any]) -> dict[str, Any]:
        knob = KNOB[self.kind]
        unknown = set(params) - ({knob} if knob else set())
        if unknown:
            raise ValueError(f"{self.kind} collection: unknown search params {sorted(unknown)}; use {knob or 'none'}")
        if recall is not None:
            if params:
                raise ValueError("give either recall= or explicit search params, not both")
            points = self.record["calibration"].get("points")
            if not knob:
                return {}
            if not points:
                raise ValueError(f"collection {self.name!r} was loaded without recall calibration; pass {knob}=...")
            return {knob: pick_point(points, recall)[knob]}
        return {**self.record["search"], **params}

    def hits(self, queries: Any, k: int = 10, *, where: str = "", recall: float | None = None,
             output_fields: Sequence[str] = (), **params: Any) -> list[list[dict[str, Any]]]:
        """Milvus's hits per query ({"id", "distance", "entity"}), the filter applied inside Milvus."""
        q = _unit_rows(np.array(queries, dtype=np.float32, ndmin=2))
        if not 1 <= k <= MAX_TOP_K:
            raise ValueError(f"k must be between 1 and {MAX_TOP_K}, got {k}")
        try:
            return [list(hits) for hits in self.client.search(
                self.name, data=q, limit=int(k), filter=where or "", anns_field="vector",
                output_fields=list(output_fields), search_params={"metric_type": "IP",
                                                                  "params": self._params(recall, params)})]
        except Exception as err:
            if isinstance(err, ValueError):
                raise
            raise EmbeddingsError(f"Milvus search in {self.name!r} at {self.uri} failed"
                                  f"{f' (filter {where!r})' if where else ''}: {_first_line(err)}") from None

    def search(self, queries: Any, k: int = 10, *, where: str = "", recall: float | None = None,
               **params: Any) -> tuple[np.ndarray, np.ndarray]:
        """Top-k of each query: (scores (q, k) float32 cosine, ids (q, k) strings; "" and -inf where fewer match)."""
        results = self.hits(queries, k, where=where, recall=recall, **params)
        scores = np.full((len(results), k), -np.inf, np.float32)
        for row, hits in enumerate(results):
            scores[row, :len(hits)] = [hit["distance"] for hit in hits]
        return scores, _ids(results, k)


def open_archive(folder: str | Path, uri: str, *, token: str | None = None, prefix: str | None = None,
                 model: Any = None, name: str | None = None) -> MilvusArchive:
    """An archive searched in Milvus: only embeddings_info.json is read (no Parquet); the collections are checked
    against the archive's fingerprint when first used."""
    folder = Path(folder)
    archive = MilvusArchive(folder, _archive_info(folder), connect(uri, token), uri,
                            prefix or default_prefix(name or str(folder)))
    if model is not None:
        archive.check_model(model)
    return archive


class MilvusArchive(EmbeddingArchive):
    """`EmbeddingArchive`'s search methods over the Milvus collections of an archive: the same `Hit` lists (id,
    score, labels, position, metadata), plus ``where`` filters (`filter_expression`) run inside Milvus."""

    def __init__(self, path: Path, info: dict[str, Any], client: Any, uri: str, prefix: str) -> None:
        super().__init__(path, info, [], np.zeros((0, len(info["class_names"])), bool), {}, {}, {})
        self.client, self.uri, self.prefix = client, uri, prefix
        self._fingerprint = archive_fingerprint(info)
        self._resolved: dict[str, str] = {}  # query name (an id or a patch name) -> archive id
        self._row_labels: dict[int, list[str]] = {}

    def __len__(self) -> int:
        return int(self.info["num_rows"])

    def __repr__(self) -> str:
        return f"MilvusArchive({len(self)} rows, columns={self.columns}, uri={self.uri!r}, prefix={self.prefix!r})"

    @property
    def columns(self) -> list[str]:
        return list(self.info["vector_columns"])

    def _check_column(self, column: str) -> None:
        if column not in self.columns:
            sensor = column.rsplit("_", 1)[0]
            if sensor not in self.sensors:
                raise EmbeddingsError(f"Unknown sensor {sensor!r}; this archive has sensors {self.sensors}")
            raise EmbeddingsError(f"No vector column {column!r}; this archive has {self.columns}")

    def index(self, column: str) -> MilvusIndex:
        """The collection of a vector column, checked: written by crjepa, from this archive, completely loaded."""
        self._check_column(column)
        if column not in self.indices:
            name = collection_name(self.prefix, column)
            if not self.client.has_collection(name):
                raise EmbeddingsError(f"No Milvus collection {name!r} at {self.uri}; load it with `crjepa index "
                                      f"{self.path} --backend milvus --uri {self.uri}`")
            props = _properties(self.client, name)
            _check_owner(props, name, self.uri, self._fingerprint)
            if props[PROP + "state"] != "complete":
                raise EmbeddingsError(f"Milvus collection {name!r} at {self.uri} is not completely loaded "
                                      f"({props[PROP + 'state']}, {props[PROP + 'rows_done']} rows done); rerun "
                                      f"`crjepa index {self.path} --backend milvus --uri {self.uri}` to finish it")
            self.client.load_collection(name)
            self.indices[column] = MilvusIndex(self.client, name, self.uri, props)
        return self.indices[column]

    def resolve(self, name: str) -> tuple[int, str | None]:
        """(row, sensor) of a query name, looked up inside Milvus: an archive id gives (row, None); a patch name
        recorded in a ``<sensor>_name`` metadata column gives (row, sensor). Its labels and id are kept for
        `labels_of` and `search_by_id`."""
        name = str(name)
        lookups = [(None, f"id == {_literal(name)}")] + [
            (sensor, f"{sensor}_name == {_literal(name)}") for sensor in self.sensors
            if f"{sensor}_name" in self.info.get("metadata_columns", [])]
        for sensor, expression in lookups:
            for column in self.columns:
                found = self.client.query(self.index(column).name, filter=expression,
                                          output_fields=["id", "row", "labels"], limit=1)
                if found:
                    row = int(found[0]["row"])
                    self._resolved[name] = str(found[0]["id"])
                    self._row_labels[row] = [self.class_names[c] for c in found[0]["labels"]]
                    return row, sensor
        raise EmbeddingsError(f"No item with id {name!r} in the Milvus collections of the archive at {self.path} "
                              f"({self.uri})")

    def labels_of(self, position: int) -> list[str]:
        """The class names of a row found by `resolve` (asked of Milvus otherwise)."""
        if position not in self._row_labels:
            found = self.client.query(self.index(self.columns[0]).name, filter=f"row == {int(position)}",
                                      output_fields=["labels"], limit=1)
            self._row_labels[position] = [self.class_names[c] for c in (found[0]["labels"] if found else [])]
        return self._row_labels[position]

    def vector(self, column: str, archive_id: Any) -> np.ndarray:
        """The stored vector of an archive id in ``column`` (fetched from its collection)."""
        found = self.client.get(self.index(column).name, ids=[str(archive_id)], output_fields=["vector"])
        if not found:
            raise EmbeddingsError(f"No item with id {archive_id!r} and a {column.rsplit('_', 1)[0]!r} vector in the "
                                  f"archive at {self.path} (collection {self.index(column).name!r})")
        return np.asarray(found[0]["vector"], dtype=np.float32)

    def search(self, query: str | np.ndarray, column: str, k: int = 10, exclude_position: int | None = None,
               where: str = "", recall: float | None = None) -> list[Hit]:
        """Top-k archive items of ``column`` for an archive id (its vector in ``column``) or a vector (R,), among
        the rows matching ``where`` (a Milvus expression, e.g. from `filter_expression`), selected inside Milvus.
        ``exclude_position`` drops that archive row; ``recall`` picks a calibrated point for this call."""
        self._check_column(column)
        vector = self.vector(column, query) if isinstance(query, str) else np.asarray(query, dtype=np.float32)
        if vector.ndim == 2 and vector.shape[0] == 1:
            vector = vector[0]
        if vector.ndim != 1 or vector.shape[0] != self.dimension:
            raise EmbeddingsError(f"Query embedding has shape {vector.shape}; this archive holds {self.dimension}-d "
                                  "vectors (was it made by another model?)")
        if exclude_position is not None:
            where = " and ".join(part for part in (f"row != {int(exclude_position)}", where and f"({where})") if part)
        fields = ["row", "labels", *self.info.get("metadata_columns", [])]
        hits = self.index(column).hits(vector[None, :], k, where=where, recall=recall, output_fields=fields)[0]
        name_field = f"{column.rsplit('_', 1)[0]}_name"  # the searched sensor's patch name, when recorded
        return [Hit(rank, str(hit["id"]), float(hit["distance"]), [self.class_names[c] for c in
                                                                    hit["entity"]["labels"]],
                    int(hit["entity"]["row"]), {m: hit["entity"].get(m) for m in fields[2:]},
                    str(hit["entity"][name_field]) if hit["entity"].get(name_field) else None)
                for rank, hit in enumerate(hits, 1)]

    def search_by_id(self, archive_id: str, direction: str | None = None, k: int = 10, where: str = "",
                     recall: float | None = None) -> list[Hit]:
        """`EmbeddingArchive.search_by_id` in Milvus: the id's stored vector of the source sensor searches the
        target column; same-sensor directions skip the item itself (inside Milvus, by its id)."""
        if str(archive_id) not in self._resolved:
            self.resolve(archive_id)
        archive_id = self._resolved[str(archive_id)]
        source, target, space = parse_direction(direction or f"{self.sensors[0]}->{self.sensors[-1]}", self.sensors)
        vector = self.vector(self._column(source, space), archive_id)
        if source == target:
            where = " and ".join(part for part in (f"id != {_literal(archive_id)}", where and f"({where})") if part)
        return self.search(vector, self._column(target, space), k, where=where, recall=recall)

    def search_by_image(self, model: Any, image: Any, sensor: str, target_sensor: str | None = None, k: int = 10,
                        where: str = "", recall: float | None = None) -> list[Hit]:
        """`EmbeddingArchive.search_by_image` in Milvus (only the query is embedded)."""
        target_sensor = target_sensor or sensor
        _, _, space = parse_direction(f"{sensor}->{target_sensor}", self.sensors)
        vector = self.embed_query(model, image, sensor, space)
        return self.search(vector, self._column(target_sensor, space), k, where=where, recall=recall)

    def filter(self, labels: Sequence[str] = (), equal: Mapping[str, Any] | None = None,
               ranges: Mapping[str, tuple[Any, Any]] | None = None, where: str | None = None) -> str:
        """`filter_expression` over this archive's classes and metadata columns."""
        return filter_expression(self.info, labels, equal, ranges, where)


__all__ = [
    "INDEX_TYPES", "LITE_INDEX_TYPES", "SERVER_INDEX_TYPES", "MilvusArchive", "MilvusIndex", "MilvusMissing",
    "archive_fingerprint", "connect", "describe", "filter_expression", "index_archive", "index_params", "is_lite",
    "knob_ladder", "open_archive", "resolve_index_type",
]
