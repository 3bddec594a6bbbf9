"""Milvus connections, names and plans, and the collections this package writes (schema, recorded properties).

One URI, two deployments, the same client calls: a local path ending in ``.db`` is Milvus Lite (embedded, one
process at a time; ``pip install "crjepa[milvus]"``), ``http://host:19530`` (with a token where the server wants
one) a Milvus standalone server or cluster.

Index types (``index_type``): Milvus Lite offers only FLAT, IVF_FLAT, IVF_SQ8, HNSW and HNSW_SQ, each built per
segment of at most 100,000 rows; a server adds IVF_PQ and DISKANN (and more this package does not choose). Their
build parameters come from `crjepa.search.kinds.default_params` (the faiss rules: nlist = 4 sqrt(segment rows) as
a power of two, PQ m = dim / 4, HNSW M 32 / efConstruction 40), `index_params`. ``"auto"``: FLAT below
`AUTO_EXACT_MAX` rows; IVF_FLAT on Lite; HNSW on a server, DISKANN from `DISKANN_FROM` rows.
"""

from __future__ import annotations

import hashlib
import json
import re
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np

from crjepa.errors import CRJepaError
from crjepa.hub.archive.format import EmbeddingsError
from crjepa.search.calibration import EF_LADDER, ladder
from crjepa.search.kinds import AUTO_EXACT_MAX, default_params

if TYPE_CHECKING:
    from pymilvus import CollectionSchema, MilvusClient

INSTALL = 'pip install "crjepa[milvus]"'
LITE_INDEX_TYPES = ("FLAT", "IVF_FLAT", "IVF_SQ8", "HNSW", "HNSW_SQ")
SERVER_INDEX_TYPES = (*LITE_INDEX_TYPES, "IVF_PQ", "DISKANN")
INDEX_TYPES = ("auto", *SERVER_INDEX_TYPES)
KNOB = {
    "FLAT": None,
    "IVF_FLAT": "nprobe",
    "IVF_SQ8": "nprobe",
    "IVF_PQ": "nprobe",
    "HNSW": "ef",
    "HNSW_SQ": "ef",
    "DISKANN": "search_list",
}
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
PROP = "crjepa."  # prefix of the collection properties this package writes


class MilvusMissing(CRJepaError, ImportError):
    """pymilvus (or Milvus Lite for a .db URI) is not installed: the message names the install command."""


# ---------------------------------------------------------------------------------------------- connecting
def is_lite(uri: str) -> bool:
    """A Milvus Lite URI: a local path ending in .db (pymilvus's own rule)."""
    return str(uri).endswith(".db")


def connect(uri: str, token: str | None = None) -> MilvusClient:
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
        raise EmbeddingsError(
            f"Milvus URI {uri!r}: give a local Milvus Lite file ending in .db or a server "
            "address such as http://localhost:19530"
        )
    try:
        return MilvusClient(uri=str(Path(uri).expanduser()) if is_lite(uri) else uri, token=token or "")
    except Exception as err:  # pymilvus raises its own exception types, one per failure
        hint = " (Milvus Lite serves one process at a time: is another one using it?)" if is_lite(uri) else ""
        raise EmbeddingsError(f"cannot open Milvus at {uri}: {first_line(err)}{hint}") from None


def first_line(err: BaseException) -> str:
    text = str(getattr(err, "message", "") or err).strip()
    return text.splitlines()[0] if text else type(err).__name__


# ---------------------------------------------------------------------------------------------- names and plans
def archive_fingerprint(info: Mapping[str, Any]) -> str:
    """A short hex id of an archive's contents from its embeddings_info.json alone (so a search client needs no
    Parquet): the model, the data source and split, the row count, the columns and classes; `crjepa index` rewrites
    none of them. A collection records it, so rows of another archive never join it."""
    keys = (
        "format_version",
        "num_rows",
        "dimension",
        "model_fingerprint",
        "vector_columns",
        "metadata_columns",
        "class_names",
        "source",
    )
    return hashlib.sha256(json.dumps({key: info.get(key) for key in keys}, sort_keys=True).encode()).hexdigest()[:16]


def default_prefix(name: str) -> str:
    """``crjepa_<archive name>``: a folder's last component or a Hub repo id, as a Milvus name."""
    text = str(name).rstrip("/")
    text = text if text.count("/") == 1 and not Path(text).exists() else Path(text).name
    return "crjepa_" + re.sub(r"[^A-Za-z0-9_]", "_", text)


def collection_name(prefix: str, column: str) -> str:
    name = f"{prefix}_{column}"
    if not FIELD.fullmatch(name):
        raise EmbeddingsError(
            f"Milvus collection name {name!r}: the prefix must be letters, digits and _ (not starting with a digit)"
        )
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
        raise EmbeddingsError(f"index type {index_type!r}: {where} {', '.join(offered)} (or auto)")
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
        return ladder(1, int(params["nlist"]))
    return [value for value in EF_LADDER if value >= k] if knob else []


def unit_rows(matrix: np.ndarray) -> np.ndarray:
    norms = np.linalg.norm(matrix, axis=1, keepdims=True)
    return (matrix / np.maximum(norms, np.finfo(np.float32).tiny)).astype(np.float32, copy=False)


# ---------------------------------------------------------------------------------------------- collections
def collection_schema(client: MilvusClient, dim: int, classes: int, metadata: Sequence[str]) -> CollectionSchema:
    from pymilvus import DataType

    schema = client.create_schema(auto_id=False, enable_dynamic_field=False)
    schema.add_field("id", DataType.VARCHAR, is_primary=True, max_length=512)
    schema.add_field("row", DataType.INT64)
    schema.add_field("labels", DataType.ARRAY, element_type=DataType.INT64, max_capacity=max(1, min(4096, classes)))
    for name in metadata:
        schema.add_field(name, DataType.VARCHAR, max_length=65_535, nullable=True)
    schema.add_field("vector", DataType.FLOAT_VECTOR, dim=dim)
    return schema


def properties(client: MilvusClient, name: str) -> dict[str, str]:
    return {key: str(value) for key, value in (client.describe_collection(name).get("properties") or {}).items()}


def set_properties(client: MilvusClient, name: str, **values: Any) -> None:
    """Record values in the collection's properties (after the work they describe was acknowledged)."""
    client.alter_collection_properties(
        name,
        properties={
            PROP + key: value if isinstance(value, str) else json.dumps(value) for key, value in values.items()
        },
    )


def check_owner(props: Mapping[str, str], name: str, uri: str, fingerprint: str) -> None:
    found = props.get(PROP + "archive")
    if found is None:
        raise EmbeddingsError(
            f"Milvus collection {name!r} at {uri} was not written by crjepa; choose another "
            "--prefix, or drop it (--overwrite)"
        )
    if found != fingerprint:
        raise EmbeddingsError(
            f"Milvus collection {name!r} at {uri} holds another archive (fingerprint {found}, "
            f"this archive {fingerprint}); choose another --prefix, or replace it (--overwrite)"
        )


def plan_of(props: Mapping[str, str]) -> dict[str, Any]:
    return json.loads(props[PROP + "plan"])


def count_rows(client: MilvusClient, name: str) -> int:
    result = client.query(name, filter="", output_fields=["count(*)"], consistency_level="Strong")
    return int(result[0]["count(*)"])


def result_ids(results: Any, k: int) -> np.ndarray:
    out = np.full((len(results), k), "", dtype=object)
    for row, hits in enumerate(results):
        for col, hit in enumerate(list(hits)[:k]):
            out[row, col] = str(hit["id"])
    return out.astype(str)


def record_of(props: Mapping[str, str], name: str, uri: str) -> dict[str, Any]:
    plan = plan_of(props)
    calibration = json.loads(props.get(PROP + "calibration", "{}"))
    search = json.loads(props[PROP + "search"]) if PROP + "search" in props else dict(calibration.get("params", {}))
    return {
        "collection": name,
        "uri": uri,
        "lite": is_lite(uri),
        "index_type": plan["index_type"],
        "build": plan["build"],
        "rows": int(props.get(PROP + "present", 0)),
        "state": props[PROP + "state"],
        "calibration": calibration,
        "search": search,
    }


def describe(record: Mapping[str, Any]) -> str:
    """One line for people: where the column went, what index, what recall it promises and measured."""
    engine = "Milvus Lite" if record["lite"] else "Milvus"
    build = ", ".join(f"{key} {value}" for key, value in record["build"].items())
    head = (
        f"{engine} collection {record['collection']} ({record['rows']:,} rows), {record['index_type']}"
        f"{f' ({build})' if build else ''}"
    )
    c = record["calibration"]
    if record["index_type"] == "FLAT":
        return f"{head}: exact search (recall 1.0)"
    if not c:
        return f"{head}: search params {record['search'] or 'Milvus defaults'}, recall not measured"
    knobs = ", ".join(f"{key} {value}" for key, value in record["search"].items())
    verdict = "" if c["met"] else f" (target {c['target']} NOT reached: best found)"
    return (
        f"{head}: recall@{c['k']} {c['recall']:.3f} +- {c['recall_se']:.3f} for target {c['target']}{verdict}, "
        f"measured on {c['queries']} held-out archive vectors against exact search; {c['qps']:,} q/s; {knobs}; "
        f"calibration {c['seconds']:.1f} s"
    )


__all__ = [
    "INDEX_TYPES",
    "KNOB",
    "LITE_INDEX_TYPES",
    "SERVER_INDEX_TYPES",
    "MilvusMissing",
    "archive_fingerprint",
    "check_owner",
    "collection_name",
    "collection_schema",
    "connect",
    "count_rows",
    "default_prefix",
    "describe",
    "first_line",
    "index_params",
    "is_lite",
    "knob_ladder",
    "plan_of",
    "properties",
    "record_of",
    "resolve_index_type",
    "result_ids",
    "segment_rows",
    "set_properties",
    "unit_rows",
]
