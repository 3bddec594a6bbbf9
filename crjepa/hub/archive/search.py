"""Searching an embeddings archive: `EmbeddingArchive` (by archive id without the model, by image with it) and its
`Hit` results; `embed_image` and `check_query_image` for image queries."""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np

from crjepa.data.labels import LabelRows
from crjepa.eval.directions import column_name, parse_direction
from crjepa.hub.archive.format import EmbeddingsError
from crjepa.hub.archive.indices import build_indices
from crjepa.hub.archive.provenance import model_fingerprint

if TYPE_CHECKING:
    from torch import nn

    from crjepa.search.index import RetrievalIndex


def embed_image(model: nn.Module, image: np.ndarray, sensor: str, space: str) -> np.ndarray:
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

    def __init__(
        self,
        path: Path,
        info: dict[str, Any],
        ids: list[str],
        labels: LabelRows,
        vectors: dict[str, np.ndarray],
        metadata: dict[str, list[Any]],
        indices: dict[str, RetrievalIndex],
    ) -> None:
        self.path, self.info, self.ids, self.labels = path, info, ids, labels
        self.vectors, self.metadata, self.indices = vectors, metadata, indices
        self._position = {archive_id: row for row, archive_id in enumerate(ids)}
        self.present: dict[str, np.ndarray] = {}  # {sensor: (N,) bool} for sensors some rows lack (null vectors)

    def __len__(self) -> int:
        return len(self.ids)

    def __repr__(self) -> str:
        return (
            f"EmbeddingArchive({len(self)} rows, columns={self.columns}, dimension={self.dimension}, "
            f"model={self.fingerprint})"
        )

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

    def check_model(self, model: nn.Module) -> None:
        """Raise unless ``model`` is the model that produced these embeddings (same fingerprint)."""
        found = model_fingerprint(model)
        if not self.fingerprint:
            raise EmbeddingsError(
                f"The archive at {self.path} records no model fingerprint, so it cannot be checked against the model "
                f"(fingerprint {found}); re-embed the archive with `crjepa embed`."
            )
        if found != self.fingerprint:
            raise EmbeddingsError(
                f"The archive at {self.path} was embedded by model {self.fingerprint}, but the model passed has "
                f"fingerprint {found}; use that model, or re-embed the archive with `crjepa embed`."
            )

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
        raise EmbeddingsError(
            f"No item with id{also} {name!r} in the archive at {self.path} ({len(self)} items, e.g. {self.ids[:3]})"
        )

    def labels_of(self, position: int) -> list[str]:
        """The class names of an archive row."""
        return [self.class_names[c] for c in sorted(set(self.labels.classes(position).tolist()))]

    def patch_name(self, position: int, sensor: str) -> str | None:
        """The recorded patch name of a row's ``sensor`` image (metadata ``<sensor>_name``), or None."""
        names = self.metadata.get(f"{sensor}_name")
        value = names[position] if names is not None else None
        return str(value) if value else None

    def index(self, column: str) -> RetrievalIndex:
        """The index of a vector column; an exact one is built on the fly (and kept) when none is stored."""
        self._check_column(column)
        if column not in self.indices:
            self.indices.update(
                build_indices(
                    self.vectors,
                    self.ids,
                    kind="exact",
                    fingerprint=self.fingerprint,
                    columns=[column],
                    present=self.present,
                )
            )
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
            has = [s for s in self.sensors if s not in self.present or self.present[s][position]]
            raise EmbeddingsError(
                f"Item {self.ids[position]!r} has no {sensor!r} image in the archive at {self.path}; "
                f"search from a sensor it has ({has})"
            )
        return self.vectors[column][position]

    def _check_column(self, column: str) -> None:
        if column not in self.vectors:
            sensor = column.rsplit("_", 1)[0]
            if sensor not in self.sensors:
                raise EmbeddingsError(f"Unknown sensor {sensor!r}; this archive has sensors {self.sensors}")
            raise EmbeddingsError(f"No vector column {column!r}; this archive has {self.columns}")

    def search(
        self, query: str | np.ndarray, column: str, k: int = 10, exclude_position: int | None = None
    ) -> list[Hit]:
        """Top-k archive items of ``column`` for one query: an archive id (its stored vector in ``column``) or
        a vector (R,). ``exclude_position`` drops that row (a query's own item in same-modal search)."""
        self._check_column(column)
        if isinstance(query, str):
            query = self.vector(column, self.position(query))
        vector = np.asarray(query, dtype=np.float32)
        if vector.ndim == 2 and vector.shape[0] == 1:
            vector = vector[0]
        if vector.ndim != 1 or vector.shape[0] != self.dimension:
            raise EmbeddingsError(
                f"Query embedding has shape {vector.shape}; this archive holds {self.dimension}-d "
                "vectors (was it made by another model?)"
            )
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
            hits.append(
                Hit(
                    len(hits) + 1,
                    self.ids[position],
                    float(score),
                    [names[c] for c in sorted(set(self.labels.classes(position).tolist()))],
                    position,
                    {name: values[position] for name, values in self.metadata.items()},
                    self.patch_name(position, sensor),
                )
            )
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
            raise EmbeddingsError(
                f"{archive_id!r} is the {named} patch of item {self.ids[position]!r}: search from "
                f"{named!r} ({', '.join(repr(f'{named}->{s}') for s in self.sensors)}), or use "
                "the item's id"
            )
        vector = self.vector(self._column(source, space), position)
        return self.search(
            vector, self._column(target, space), k, exclude_position=position if source == target else None
        )

    def search_by_image(
        self, model: nn.Module, image: np.ndarray, sensor: str, target_sensor: str | None = None, k: int = 10
    ) -> list[Hit]:
        """Embed one native-resolution image (C, H, W) of ``sensor`` with ``model`` and search the archive's
        ``target_sensor`` column (default: the same sensor); only the query is embedded."""
        target_sensor = target_sensor or sensor
        _, _, space = parse_direction(f"{sensor}->{target_sensor}", self.sensors)
        return self.search(self.embed_query(model, image, sensor, space), self._column(target_sensor, space), k)

    def embed_query(self, model: nn.Module, image: np.ndarray, sensor: str, space: str) -> np.ndarray:
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
        raise EmbeddingsError(
            f"The query image holds {array.dtype} values; a {sensor!r} image must be numeric "
            "(uint8, uint16, int, float)"
        )
    if array.ndim != 3:
        raise EmbeddingsError(f"The query image has shape {array.shape}; a {sensor!r} image is (C, H, W)")
    if array.shape[0] != channels:
        raise EmbeddingsError(
            f"The query image has {array.shape[0]} channel(s); the model's {sensor!r} images have {channels}"
        )
    if not (1 <= array.shape[1] <= MAX_IMAGE_SIDE and 1 <= array.shape[2] <= MAX_IMAGE_SIDE):
        raise EmbeddingsError(
            f"The query image is {array.shape[1]}x{array.shape[2]} pixels; each side must be 1 to {MAX_IMAGE_SIDE}"
        )
    return np.ascontiguousarray(array.astype(np.float32) if array.dtype.kind == "b" else array)


__all__ = ["MAX_IMAGE_SIDE", "EmbeddingArchive", "Hit", "check_query_image", "embed_image"]
