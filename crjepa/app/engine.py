"""The search behind `crjepa app`, without Gradio: queries by archive id or by an uploaded image, label and metadata
filters, result rows with pictures and relevance, the archive's card facts and its per-direction scores.

Search goes through a backend object (`SearchBackend`: ``vector`` and ``search``), so another engine can serve
the same page: `FaissBackend` (the default) searches the archive's own faiss indices; a filter first selects the
items that pass it and then ranks exactly those (a filter never returns fewer than k items when k pass it), which
is what an engine with filtered search (e.g. Milvus' boolean expressions) does inside the engine.

Every problem a person can cause (an unknown id, a file with the wrong band count, an image of a sensor the model
lacks, a filter nothing passes, k out of range) is an `AppError` whose one sentence the page shows.
"""

from __future__ import annotations

import logging
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Protocol

import numpy as np

from crjepa.app.scores import load_scores
from crjepa.data.schema import BUILDER_MODULES, S1_BANDS, S2_BANDS, DataError
from crjepa.errors import CRJepaError
from crjepa.eval.directions import column_name, directions_of, parse_direction
from crjepa.hub.archive import EmbeddingArchive, EmbeddingsError, Hit

logger = logging.getLogger(__name__)

ALL = "all"
"""The direction (by id) or target sensor (by image) meaning every one the archive has."""
AUTO = "auto"
"""The sensor of an uploaded image, told from its bands."""
MAX_K = 50


class AppError(CRJepaError, ValueError):
    """A problem with what the person asked for, in one sentence the page shows (never a traceback)."""


# ---------------------------------------------------------------------------------------------- filters
@dataclass(frozen=True)
class Filter:
    """Which archive items may be returned: items with any of ``labels`` (class names), and whose metadata
    ``field`` matches ``value``: one value, several separated by commas (any of them), or an inclusive range
    ``low..high`` (numbers compared as numbers, anything else as text, e.g. ISO dates). Empty parts do not filter."""

    labels: tuple[str, ...] = ()
    field: str | None = None
    value: str = ""

    def __bool__(self) -> bool:
        return bool(self.labels) or bool(self.field and self.value.strip())

    def describe(self) -> str:
        parts = []
        if self.labels:
            parts.append("labels " + " or ".join(repr(label) for label in self.labels))
        if self.field and self.value.strip():
            parts.append(f"{self.field} = {self.value.strip()!r}")
        return " and ".join(parts) or "no filter"


def _as_number(text: str) -> float | None:
    try:
        return float(text)
    except ValueError:
        return None


def _value_test(value: str) -> Callable[[str | None], bool]:
    """The test one metadata cell must pass for ``Filter.value`` (see `Filter`)."""
    text = value.strip()
    if ".." in text:
        low, high = (part.strip() for part in text.split("..", 1))
        numbers = _as_number(low) if low else None, _as_number(high) if high else None
        numeric = (not low or numbers[0] is not None) and (not high or numbers[1] is not None)

        def in_range(cell: str | None) -> bool:
            if cell is None:
                return False
            if numeric:
                x = _as_number(cell)
                return x is not None and (not low or x >= numbers[0]) and (not high or x <= numbers[1])
            return (not low or cell >= low) and (not high or cell <= high)

        return in_range
    wanted = {part.strip() for part in text.split(",") if part.strip()}
    return lambda cell: cell is not None and cell.strip() in wanted


def filter_rows(archive: EmbeddingArchive, where: Filter) -> np.ndarray:
    """(N,) bool: the archive items that pass ``where``; an AppError for a label or field the archive lacks."""
    rows = np.ones(len(archive), dtype=bool)
    if where.labels:
        names = archive.class_names
        unknown = [label for label in where.labels if label not in names]
        if unknown:
            raise AppError(f"Unknown label(s) {unknown}: this archive's classes are {names}")
        rows &= archive.labels[:, [names.index(label) for label in where.labels]].any(axis=1)
    if where.field and where.value.strip():
        if where.field not in archive.metadata:
            raise AppError(f"Unknown metadata field {where.field!r}: this archive has {sorted(archive.metadata)}")
        test = _value_test(where.value)
        rows &= np.fromiter(
            (test(None if v is None else str(v)) for v in archive.metadata[where.field]), bool, count=len(archive)
        )
    return rows


# ---------------------------------------------------------------------------------------------- backends
class SearchBackend(Protocol):
    """What the app needs from a search engine. Results are `crjepa.hub.archive.search.Hit` (rank, id, cosine score,
    class names, archive row), as `EmbeddingArchive.search` returns them."""

    def vector(self, column: str, position: int) -> np.ndarray:
        """The stored vector of archive row ``position`` in ``column`` (an EmbeddingsError if the row lacks it)."""
        ...

    def search(
        self,
        vector: np.ndarray,
        column: str,
        k: int,
        *,
        exclude_position: int | None = None,
        where: Filter | None = None,
    ) -> list[Hit]:
        """The top-k items of ``column`` for a query vector, never ``exclude_position``, only items passing
        ``where``; fewer than k only when fewer are searchable; an AppError when none passes ``where``."""
        ...


class FaissBackend:
    """`SearchBackend` over an `EmbeddingArchive` and its faiss indices (exact ones are built on first use)."""

    def __init__(self, archive: EmbeddingArchive) -> None:
        self.archive = archive

    def vector(self, column: str, position: int) -> np.ndarray:
        return self.archive.vector(column, position)

    def search(
        self,
        vector: np.ndarray,
        column: str,
        k: int,
        *,
        exclude_position: int | None = None,
        where: Filter | None = None,
    ) -> list[Hit]:
        archive = self.archive
        if not where:
            available = archive.searchable(column) - (exclude_position is not None)
            if available < 1:
                raise AppError(f"Nothing to search in {column}: the archive has no other item with that sensor")
            return archive.search(vector, column, min(k, available), exclude_position=exclude_position)
        rows = filter_rows(archive, where)
        present = archive.present.get(column.rsplit("_", 1)[0])
        if present is not None:
            rows &= present
        if exclude_position is not None:
            rows[exclude_position] = False
        candidates = np.flatnonzero(rows)
        if not len(candidates):
            raise AppError(f"No archive item passes the filter ({where.describe()}); loosen it")
        query = np.asarray(vector, dtype=np.float32).reshape(-1)
        query = query / max(float(np.linalg.norm(query)), 1e-12)
        scores = archive.vectors[column][candidates] @ query  # the stored vectors are L2-normalised: cosine
        order = np.argsort(-scores, kind="stable")[:k]
        return [
            Hit(
                rank + 1,
                archive.ids[candidates[i]],
                float(scores[i]),
                _label_names(archive, candidates[i]),
                int(candidates[i]),
            )
            for rank, i in enumerate(order)
        ]


def _label_names(archive: EmbeddingArchive, position: int) -> list[str]:
    return [archive.class_names[c] for c in np.flatnonzero(archive.labels[position])]


# ---------------------------------------------------------------------------------------------- results
@dataclass
class Tile:
    """One picture of the page: the query or a result, with what a person needs to judge it."""

    id: str
    image: Any = None  # PIL image, or None when the data source lacks it
    labels: list[str] = field(default_factory=list)
    score: float | None = None  # None for the query
    rank: int | None = None
    relevant: bool | None = None  # shares a label with the query; None when the query has no labels
    note: str = ""  # why there is no picture


@dataclass
class ResultRow:
    """One direction: its query tile and the ranked result tiles."""

    direction: str
    space: str
    query: Tile
    results: list[Tile]


# ---------------------------------------------------------------------------------------------- the explorer
class Explorer:
    """The app's state: an archive, its search backend and, optionally, the model (search by image) and the
    images (a callable (id, sensor) -> native (C, H, W) array, e.g. `crjepa.eval.visualize.DatasetImages`)."""

    def __init__(
        self,
        archive: EmbeddingArchive,
        *,
        model: Any = None,
        images: Callable[[str, str], Any] | None = None,
        backend: SearchBackend | None = None,
        scores: dict[str, Any] | None = None,
        model_name: str | None = None,
    ) -> None:
        from crjepa.eval.visualize import renderer

        self.archive, self.model, self.images = archive, model, images
        self.backend = backend or FaissBackend(archive)
        self.scores, self.model_name = scores, model_name
        self.render = renderer(archive)
        self.directions = directions_of(archive.sensors)
        self._sorted_ids = sorted(archive.ids)

    # -- ids -------------------------------------------------------------------------------------------------
    def matching_ids(self, text: str = "", limit: int = 100) -> list[str]:
        """Search-as-you-type: ids starting with ``text`` first (sorted), then ids containing it; case-insensitive."""
        text = (text or "").strip().lower()
        if not text:
            return self._sorted_ids[:limit]
        starts = [i for i in self._sorted_ids if i.lower().startswith(text)][:limit]
        if len(starts) < limit:
            seen = set(starts)
            starts += [i for i in self._sorted_ids if text in i.lower() and i not in seen][: limit - len(starts)]
        return starts

    def position(self, archive_id: str | None) -> int:
        archive_id = (archive_id or "").strip()
        if not archive_id:
            raise AppError("Pick an archive id first (type a few characters to search the ids)")
        try:
            return self.archive.position(archive_id)
        except EmbeddingsError:
            near = self.matching_ids(archive_id[: max(3, len(archive_id) // 2)], limit=3)
            hint = f"; ids like {near}" if near else f"; e.g. {self._sorted_ids[:3]}"
            raise AppError(
                f"Unknown id {archive_id!r}: no item of this archive ({len(self.archive)} items) has it{hint}"
            ) from None

    # -- searches --------------------------------------------------------------------------------------------
    def search_id(
        self, archive_id: str, direction: str = ALL, k: int = 5, where: Filter | None = None
    ) -> list[ResultRow]:
        """The top-k of an archive item in one direction or in every direction (``ALL``) its sensors allow."""
        position = self.position(archive_id)
        k = self._check_k(k)
        archive_id = self.archive.ids[position]
        has = [s for s in self.archive.sensors if s not in self.archive.present or self.archive.present[s][position]]
        if direction in (None, "", ALL):
            directions = [d for d in self.directions if d.split("->")[0] in has]
        else:
            try:
                source = parse_direction(direction, self.archive.sensors)[0]
            except ValueError as err:
                raise AppError(str(err)) from None
            if source not in has:
                raise AppError(
                    f"Item {archive_id!r} has no {source} image in this archive; search from a sensor it "
                    f"has ({', '.join(has)})"
                )
            directions = [direction]
        query_labels = self.archive.labels[position]
        rows = []
        for d in directions:
            source, target, space = parse_direction(d, self.archive.sensors)
            vector = self.backend.vector(column_name(source, space), position)
            hits = self.backend.search(
                vector,
                column_name(target, space),
                k,
                exclude_position=position if source == target else None,
                where=where,
            )
            query = self._tile(archive_id, source, _label_names(self.archive, position))
            rows.append(ResultRow(d, space, query, [self._hit_tile(h, target, query_labels) for h in hits]))
        return rows

    def search_image(
        self,
        path: str | Path,
        sensor: str = AUTO,
        target: str = ALL,
        k: int = 5,
        where: Filter | None = None,
        name: str | None = None,
    ) -> list[ResultRow]:
        """The top-k archive items for an uploaded image (embedded by the model) in each target sensor."""
        from crjepa.app.uploads import read_upload
        from crjepa.hub.archive.search import embed_image

        if self.model is None:
            raise AppError(
                "Searching by image needs the model that embedded the archive: start the app with --model MODEL"
            )
        if not path:
            raise AppError("Upload a query image first (.npy, .tif, .png, or a BigEarthNet patch folder as .zip)")
        k = self._check_k(k)
        try:
            upload = read_upload(path, name)
            sensor = self.query_sensor(upload, sensor)
            image = upload.stacked(list(self.model.config.band_names[sensor]))
        except DataError as err:
            raise AppError(str(err)) from None
        targets = sorted(self.archive.sensors, key=lambda t: t != sensor) if target in (None, "", ALL) else [target]
        if any(t not in self.archive.sensors for t in targets):
            raise AppError(f"Unknown target sensor {target!r}; this archive has {self.archive.sensors}")
        from crjepa.eval.visualize import display_image

        config = self.model.config
        picture = display_image(image, config.band_names[sensor], sensor in getattr(config, "sar_sensors", ()))
        vectors: dict[str, np.ndarray] = {}
        rows = []
        for t in targets:
            space = "unified" if t == sensor else "cross"
            if space not in vectors:
                vectors[space] = embed_image(self.model, image, sensor, space)
            hits = self.backend.search(vectors[space], column_name(t, space), k, where=where)
            query = Tile(upload.name, picture, note="uploaded query")
            rows.append(ResultRow(f"{sensor}->{t}", space, query, [self._hit_tile(h, t, None) for h in hits]))
        return rows

    def query_sensor(self, upload: Any, chosen: str = AUTO) -> str:
        """The model sensor an upload belongs to: by band names (a patch folder) or band count (an image file)."""
        config = self.model.config
        sensors = {s: list(config.band_names[s]) for s in config.sensors}
        described = "; ".join(f"{s}: {len(b)} bands ({', '.join(b)})" for s, b in sensors.items())
        if chosen not in (None, "", AUTO) and chosen not in sensors:
            raise AppError(f"The model has no sensor {chosen!r}; its sensors are {described}")
        if upload.image is None:  # a patch folder: its band names say which sensor it is
            found = sorted(upload.bands)
            fits = [s for s, bands in sensors.items() if set(bands) <= set(found)]
            if chosen not in (None, "", AUTO):
                if chosen not in fits:
                    raise AppError(
                        f"{upload.name} holds the bands {found}; the model's {chosen} images have {sensors[chosen]}"
                    )
                return chosen
            if not fits:
                raise AppError(
                    f"{upload.name} is {_sensor_kind(found)} patch (bands {', '.join(found)}); the model "
                    f"has no sensor for it (its sensors: {described}): upload an image of one of those"
                )
            return fits[0]
        count = upload.band_count
        if chosen not in (None, "", AUTO):
            if count != len(sensors[chosen]):
                raise AppError(
                    f"{upload.name} has {count} band(s) but {chosen} images have {len(sensors[chosen])} "
                    f"({', '.join(sensors[chosen])}); wrong band count"
                )
            return chosen
        fits = [s for s, bands in sensors.items() if len(bands) == count]
        if not fits:
            raise AppError(
                f"{upload.name} has {count} band(s); no sensor of the model has that many (wrong band "
                f"count): {described}"
            )
        if len(fits) > 1:
            raise AppError(f"{upload.name} has {count} band(s), as the sensors {fits} do: choose its sensor")
        return fits[0]

    def _check_k(self, k: Any) -> int:
        try:
            k = int(k)
        except (TypeError, ValueError):
            raise AppError(f"k must be a whole number, found {k!r}") from None
        if not 1 <= k <= MAX_K:
            raise AppError(f"k must be between 1 and {MAX_K}, found {k}")
        return k

    # -- tiles -----------------------------------------------------------------------------------------------
    def _tile(self, archive_id: str, sensor: str, labels: list[str]) -> Tile:
        tile = Tile(archive_id, labels=labels)
        if self.images is None:
            tile.note = "no images: start the app with --data SOURCE"
            return tile
        try:
            tile.image = self.render(self.images(archive_id, sensor), sensor)
        except (KeyError, ValueError, IndexError) as err:
            tile.note = f"no {sensor} image in the data source"
            logger.info("no image for %s (%s): %s", archive_id, sensor, err)
        return tile

    def _hit_tile(self, hit: Hit, sensor: str, query_labels: np.ndarray | None) -> Tile:
        tile = self._tile(hit.id, sensor, list(hit.labels))
        tile.score, tile.rank = hit.score, hit.rank
        if query_labels is not None and query_labels.any():
            tile.relevant = bool((self.archive.labels[hit.position] & query_labels).any())
        return tile

    # -- what the archive is ---------------------------------------------------------------------------------
    def facts(self) -> list[tuple[str, str]]:
        """The archive card's facts for people: (what, value) pairs (model, data set, recall promise)."""
        from crjepa.search.index import describe_calibration

        info, archive = self.archive.info, self.archive
        config = info.get("config") or {}
        bands = config.get("band_names") or {}
        sensors = ", ".join(
            f"{s} ({len(bands[s])} bands: {_band_span(bands[s])})" if s in bands else s for s in archive.sensors
        )
        model = info.get("model_repo_id") or self.model_name or "not recorded"
        size = f", {config['image_size']} px input" if config.get("image_size") else ""
        source = dict(info.get("source") or {})
        dataset = str(source.pop("dataset", "not recorded"))
        split = source.pop("split", None)
        promises: dict[str, list[str]] = {}  # one line per distinct promise, naming its columns
        for name in info["vector_columns"]:
            index = archive.indices.get(name)
            text = describe_calibration(index.metadata) if index is not None else "exact search (recall 1.0)"
            promises.setdefault(text, []).append(name)
        return [
            ("Model", f"{model} (fingerprint {archive.fingerprint or 'none'}; {archive.dimension}-d embeddings{size})"),
            ("Sensors", sensors),
            (
                "Data set",
                f"{dataset}{f' ({split} split)' if split else ''}: {len(archive)} items, "
                f"{len(archive.class_names)} classes",
            ),
            ("Recall promise", "; ".join(f"{', '.join(columns)}: {text}" for text, columns in promises.items())),
        ]


def _band_span(bands: Sequence[str]) -> str:
    return ", ".join(bands) if len(bands) <= 4 else f"{bands[0]} … {bands[-1]}"


def _sensor_kind(bands: Sequence[str]) -> str:
    if set(bands) <= set(S1_BANDS):
        return "a Sentinel-1"
    if set(bands) <= set(S2_BANDS):
        return "a Sentinel-2"
    return "a"


# ---------------------------------------------------------------------------------------------- loading
def open_images(source: str | None, archive: EmbeddingArchive) -> Callable[[str, str], Any] | None:
    """The images of the archive's items: ``source`` is 'synthetic', a Parquet export folder, a builder name, a Hub
    data set id (an export pushed with --push-to-hub), or 'recorded' (the source the archive records, checked
    first); None: no pictures."""
    if not source:
        return None
    from crjepa.cli.common import load_data
    from crjepa.cli.search import recorded_source
    from crjepa.eval.visualize import DatasetImages

    if source == "recorded":
        options = recorded_source(dict(archive.info.get("source") or {}), archive.path)
    elif source == "synthetic" or source in BUILDER_MODULES or Path(source).expanduser().is_dir():
        options = {"dataset": source}
    else:
        return DatasetImages(_hub_dataset(source))
    split = options.pop("split", None)
    return DatasetImages(load_data(options, split))


def _hub_dataset(repo_id: str) -> Any:
    """Every split of a Hub data set (an export of `python -m datasets_scripts`), concatenated."""
    import datasets

    if repo_id.count("/") != 1:
        raise FileNotFoundError(
            f"Data source {repo_id!r} is not 'synthetic', 'recorded', a folder of Parquet nor a "
            "Hub data set id like 'user/name'"
        )
    parts = datasets.load_dataset(repo_id)
    return datasets.concatenate_datasets(list(parts.values())) if isinstance(parts, dict) else parts


def load_model(path: str, device: str = "cpu") -> Any:
    """The CR-JEPA model of a saved folder or Hub repo (the `crjepa` command's loader)."""
    from crjepa.cli.common import load_model

    return load_model(path, device)


def load_explorer(
    archive: str | Path,
    model: str | None = None,
    data: str | None = None,
    backend: Callable[[EmbeddingArchive], SearchBackend] | None = None,
    device: str = "cpu",
) -> Explorer:
    """Open everything the app shows: the archive (folder or Hub repo), the model (checked to be the one that
    embedded the archive), the images and the scores. ``backend`` builds the search backend from the archive
    (default `FaissBackend`)."""
    from crjepa.hub.archive import load_embeddings

    opened = load_embeddings(archive)
    loaded = None
    if model:
        loaded = load_model(model, device)
        opened.check_model(loaded)  # once here: every upload search then trusts it
    return Explorer(
        opened,
        model=loaded,
        images=open_images(data, opened),
        backend=(backend or FaissBackend)(opened),
        scores=load_scores(opened, model),
        model_name=model,
    )


__all__ = [
    "ALL",
    "AUTO",
    "AppError",
    "Explorer",
    "FaissBackend",
    "Filter",
    "MAX_K",
    "ResultRow",
    "SearchBackend",
    "Tile",
    "filter_rows",
    "load_explorer",
    "load_model",
    "open_images",
]
