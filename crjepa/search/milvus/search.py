"""Searching an archive in Milvus: `open_archive` gives a `MilvusArchive`, `EmbeddingArchive`'s search methods and
`Hit` lists over the archive's collections, checked against the archive's fingerprint when first used; `MilvusIndex`
searches one collection like a `crjepa.search.index.RetrievalIndex`.

Filters (`filter_expression`: labels containing a class, metadata equal to a value, metadata in a range such as
dates, or a raw Milvus expression) are passed to Milvus with the search, so they select before the top-k, not after.
"""

from __future__ import annotations

import json
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np

from crjepa.data.labels import LabelRows
from crjepa.eval.directions import parse_direction
from crjepa.hub.archive.format import EmbeddingsError, read_info
from crjepa.hub.archive.search import EmbeddingArchive, Hit
from crjepa.search.calibration import pick_point
from crjepa.search.milvus.client import (
    KNOB,
    MAX_TOP_K,
    PROP,
    archive_fingerprint,
    check_owner,
    collection_name,
    connect,
    default_prefix,
    first_line,
    properties,
    record_of,
    result_ids,
    unit_rows,
)

if TYPE_CHECKING:
    from pymilvus import MilvusClient
    from torch import nn


def _literal(value: Any) -> str:
    """A Milvus string literal (double quotes, backslash escapes)."""
    return json.dumps(str(value), ensure_ascii=False)


def filter_expression(
    info: Mapping[str, Any],
    labels: Sequence[str] = (),
    equal: Mapping[str, Any] | None = None,
    ranges: Mapping[str, tuple[Any, Any]] | None = None,
    where: str | None = None,
) -> str:
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


# ---------------------------------------------------------------------------------------------- searching
class MilvusIndex:
    """One loaded collection, searched like a `crjepa.search.index.RetrievalIndex`: ``search`` returns (scores,
    ids), with filters run inside Milvus."""

    def __init__(self, client: MilvusClient, name: str, uri: str, props: Mapping[str, str]) -> None:
        self.client, self.name, self.uri = client, name, uri
        self.record = record_of(props, name, uri)
        self.kind = self.record["index_type"]

    def __len__(self) -> int:
        return int(self.record["rows"])

    def __repr__(self) -> str:
        return f"MilvusIndex({self.name!r} at {self.uri}, {len(self)} rows, {self.kind})"

    def _params(self, recall: float | None, params: Mapping[str, Any]) -> dict[str, Any]:
        knob = KNOB[self.kind]
        unknown = set(params) - ({knob} if knob else set())
        if unknown:
            raise EmbeddingsError(
                f"{self.kind} collection: unknown search params {sorted(unknown)}; use {knob or 'none'}"
            )
        if recall is not None:
            if params:
                raise EmbeddingsError("give either recall= or explicit search params, not both")
            points = self.record["calibration"].get("points")
            if not knob:
                return {}
            if not points:
                raise EmbeddingsError(
                    f"collection {self.name!r} was loaded without recall calibration; pass {knob}=..."
                )
            return {knob: pick_point(points, recall)[knob]}
        return {**self.record["search"], **params}

    def hits(
        self,
        queries: Any,
        k: int = 10,
        *,
        where: str = "",
        recall: float | None = None,
        output_fields: Sequence[str] = (),
        **params: Any,
    ) -> list[list[dict[str, Any]]]:
        """Milvus's hits per query ({"id", "distance", "entity"}), the filter applied inside Milvus."""
        q = unit_rows(np.array(queries, dtype=np.float32, ndmin=2))
        if not 1 <= k <= MAX_TOP_K:
            raise EmbeddingsError(f"k must be between 1 and {MAX_TOP_K}, got {k}")
        knobs = self._params(recall, params)
        try:
            return [
                list(hits)
                for hits in self.client.search(
                    self.name,
                    data=q,
                    limit=int(k),
                    filter=where or "",
                    anns_field="vector",
                    output_fields=list(output_fields),
                    search_params={"metric_type": "IP", "params": knobs},
                )
            ]
        except Exception as err:  # pymilvus raises its own exception types, one per failure
            raise EmbeddingsError(
                f"Milvus search in {self.name!r} at {self.uri} failed"
                f"{f' (filter {where!r})' if where else ''}: {first_line(err)}"
            ) from None

    def search(
        self, queries: Any, k: int = 10, *, where: str = "", recall: float | None = None, **params: Any
    ) -> tuple[np.ndarray, np.ndarray]:
        """Top-k of each query: (scores (q, k) float32 cosine, ids (q, k) strings; "" and -inf where fewer match)."""
        results = self.hits(queries, k, where=where, recall=recall, **params)
        scores = np.full((len(results), k), -np.inf, np.float32)
        for row, hits in enumerate(results):
            scores[row, : len(hits)] = [hit["distance"] for hit in hits]
        return scores, result_ids(results, k)


def open_archive(
    folder: str | Path,
    uri: str,
    *,
    token: str | None = None,
    prefix: str | None = None,
    model: nn.Module | None = None,
    name: str | None = None,
) -> MilvusArchive:
    """An archive searched in Milvus: only embeddings_info.json is read (no Parquet); the collections are checked
    against the archive's fingerprint when first used."""
    folder = Path(folder)
    archive = MilvusArchive(
        folder, read_info(folder), connect(uri, token), uri, prefix or default_prefix(name or str(folder))
    )
    if model is not None:
        archive.check_model(model)
    return archive


class MilvusArchive(EmbeddingArchive):
    """`EmbeddingArchive`'s search methods over the Milvus collections of an archive: the same `Hit` lists (id,
    score, labels, position, metadata), plus ``where`` filters (`filter_expression`) run inside Milvus."""

    def __init__(self, path: Path, info: dict[str, Any], client: MilvusClient, uri: str, prefix: str) -> None:
        no_rows = LabelRows(np.zeros(1, np.int64), np.zeros(0, np.int64), len(info["class_names"]))
        super().__init__(path, info, [], no_rows, {}, {}, {})
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
                raise EmbeddingsError(
                    f"No Milvus collection {name!r} at {self.uri}; load it with `crjepa index "
                    f"{self.path} --backend milvus --uri {self.uri}`"
                )
            props = properties(self.client, name)
            check_owner(props, name, self.uri, self._fingerprint)
            if props[PROP + "state"] != "complete":
                raise EmbeddingsError(
                    f"Milvus collection {name!r} at {self.uri} is not completely loaded "
                    f"({props[PROP + 'state']}, {props[PROP + 'rows_done']} rows done); rerun "
                    f"`crjepa index {self.path} --backend milvus --uri {self.uri}` to finish it"
                )
            self.client.load_collection(name)
            self.indices[column] = MilvusIndex(self.client, name, self.uri, props)
        return self.indices[column]

    def resolve(self, name: str) -> tuple[int, str | None]:
        """(row, sensor) of a query name, looked up inside Milvus: an archive id gives (row, None); a patch name
        recorded in a ``<sensor>_name`` metadata column gives (row, sensor). Its labels and id are kept for
        `labels_of` and `search_by_id`."""
        name = str(name)
        lookups = [(None, f"id == {_literal(name)}")] + [
            (sensor, f"{sensor}_name == {_literal(name)}")
            for sensor in self.sensors
            if f"{sensor}_name" in self.info.get("metadata_columns", [])
        ]
        for sensor, expression in lookups:
            for column in self.columns:
                found = self.client.query(
                    self.index(column).name, filter=expression, output_fields=["id", "row", "labels"], limit=1
                )
                if found:
                    row = int(found[0]["row"])
                    self._resolved[name] = str(found[0]["id"])
                    self._row_labels[row] = [self.class_names[c] for c in found[0]["labels"]]
                    return row, sensor
        raise EmbeddingsError(
            f"No item with id {name!r} in the Milvus collections of the archive at {self.path} ({self.uri})"
        )

    def labels_of(self, position: int) -> list[str]:
        """The class names of a row found by `resolve` (asked of Milvus otherwise)."""
        if position not in self._row_labels:
            found = self.client.query(
                self.index(self.columns[0]).name, filter=f"row == {int(position)}", output_fields=["labels"], limit=1
            )
            self._row_labels[position] = [self.class_names[c] for c in (found[0]["labels"] if found else [])]
        return self._row_labels[position]

    def vector(self, column: str, archive_id: Any) -> np.ndarray:
        """The stored vector of an archive id in ``column`` (fetched from its collection)."""
        found = self.client.get(self.index(column).name, ids=[str(archive_id)], output_fields=["vector"])
        if not found:
            raise EmbeddingsError(
                f"No item with id {archive_id!r} and a {column.rsplit('_', 1)[0]!r} vector in the "
                f"archive at {self.path} (collection {self.index(column).name!r})"
            )
        return np.asarray(found[0]["vector"], dtype=np.float32)

    def search(
        self,
        query: str | np.ndarray,
        column: str,
        k: int = 10,
        exclude_position: int | None = None,
        where: str = "",
        recall: float | None = None,
    ) -> list[Hit]:
        """Top-k archive items of ``column`` for an archive id (its vector in ``column``) or a vector (R,), among
        the rows matching ``where`` (a Milvus expression, e.g. from `filter_expression`), selected inside Milvus.
        ``exclude_position`` drops that archive row; ``recall`` picks a calibrated point for this call."""
        self._check_column(column)
        vector = self.vector(column, query) if isinstance(query, str) else np.asarray(query, dtype=np.float32)
        if vector.ndim == 2 and vector.shape[0] == 1:
            vector = vector[0]
        if vector.ndim != 1 or vector.shape[0] != self.dimension:
            raise EmbeddingsError(
                f"Query embedding has shape {vector.shape}; this archive holds {self.dimension}-d "
                "vectors (was it made by another model?)"
            )
        if exclude_position is not None:
            where = " and ".join(part for part in (f"row != {int(exclude_position)}", where and f"({where})") if part)
        fields = ["row", "labels", *self.info.get("metadata_columns", [])]
        hits = self.index(column).hits(vector[None, :], k, where=where, recall=recall, output_fields=fields)[0]
        name_field = f"{column.rsplit('_', 1)[0]}_name"  # the searched sensor's patch name, when recorded
        return [
            Hit(
                rank,
                str(hit["id"]),
                float(hit["distance"]),
                [self.class_names[c] for c in hit["entity"]["labels"]],
                int(hit["entity"]["row"]),
                {m: hit["entity"].get(m) for m in fields[2:]},
                str(hit["entity"][name_field]) if hit["entity"].get(name_field) else None,
            )
            for rank, hit in enumerate(hits, 1)
        ]

    def search_by_id(
        self, archive_id: str, direction: str | None = None, k: int = 10, where: str = "", recall: float | None = None
    ) -> list[Hit]:
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

    def search_by_image(
        self,
        model: nn.Module,
        image: np.ndarray,
        sensor: str,
        target_sensor: str | None = None,
        k: int = 10,
        where: str = "",
        recall: float | None = None,
    ) -> list[Hit]:
        """`EmbeddingArchive.search_by_image` in Milvus (only the query is embedded)."""
        target_sensor = target_sensor or sensor
        _, _, space = parse_direction(f"{sensor}->{target_sensor}", self.sensors)
        vector = self.embed_query(model, image, sensor, space)
        return self.search(vector, self._column(target_sensor, space), k, where=where, recall=recall)

    def filter(
        self,
        labels: Sequence[str] = (),
        equal: Mapping[str, Any] | None = None,
        ranges: Mapping[str, tuple[Any, Any]] | None = None,
        where: str | None = None,
    ) -> str:
        """`filter_expression` over this archive's classes and metadata columns."""
        return filter_expression(self.info, labels, equal, ranges, where)


__all__ = ["MilvusArchive", "MilvusIndex", "filter_expression", "open_archive"]
