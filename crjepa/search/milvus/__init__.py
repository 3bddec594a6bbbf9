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

    crjepa.search.milvus.client   connections, names, index types and their parameters, the collections' records
    crjepa.search.milvus.loading  `index_archive`: the streamed, resumable load, index build and recall calibration
    crjepa.search.milvus.search   `open_archive`, `MilvusArchive`, `MilvusIndex`, `filter_expression`
"""

from crjepa.search.milvus.client import (
    INDEX_TYPES,
    KNOB,
    LITE_INDEX_TYPES,
    SERVER_INDEX_TYPES,
    MilvusMissing,
    archive_fingerprint,
    connect,
    describe,
    index_params,
    is_lite,
    knob_ladder,
    resolve_index_type,
    segment_rows,
)
from crjepa.search.milvus.loading import index_archive
from crjepa.search.milvus.search import MilvusArchive, MilvusIndex, filter_expression, open_archive

__all__ = [
    "INDEX_TYPES",
    "KNOB",
    "LITE_INDEX_TYPES",
    "SERVER_INDEX_TYPES",
    "MilvusArchive",
    "MilvusIndex",
    "MilvusMissing",
    "archive_fingerprint",
    "connect",
    "describe",
    "filter_expression",
    "index_archive",
    "index_params",
    "is_lite",
    "knob_ladder",
    "open_archive",
    "resolve_index_type",
    "segment_rows",
]
