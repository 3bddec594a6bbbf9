"""Result grids for retrieval queries (the paper's Figure 3 layout), with Pillow only.

One row per direction: the query tile, then the top-k results, each framed green (relevant: shares a label with
the query) or red (not relevant), grey when the query has no labels (an external image). Sensors are rendered
for people: S2 true colour (B04, B03, B02, one joint percentile stretch), S1 false colour (VV, VH, VV-VH in dB,
i.e. the VV/VH ratio, each stretched); any other sensor: RGB if it has 3 bands (named R, G, B if present),
grey if 1, its first three bands otherwise.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

import numpy as np
from PIL import Image, ImageDraw, ImageFont

from crjepa.data.loading import PairBatches
from crjepa.data.schema import DataError
from crjepa.eval.directions import parse_direction

RELEVANT = (0, 170, 0)
NOT_RELEVANT = (210, 0, 0)
UNKNOWN = (150, 150, 150)
BACKGROUND = (255, 255, 255)
BORDER = 4
PAD = 6
TITLE_HEIGHT = 14
CAPTION_HEIGHT = 24
QUERY_GAP = 10


# ---------------------------------------------------------------------------------------------- rendering bands
def _stretch(x: np.ndarray, low: float = 2.0, high: float = 98.0, joint: bool = False) -> np.ndarray:
    """Percentile stretch to uint8, per channel (or jointly for true colour); NaN/inf become 0."""
    x = np.asarray(x, dtype=np.float32)
    out = np.zeros(x.shape, dtype=np.uint8)
    groups = [slice(None)] if joint else [slice(c, c + 1) for c in range(x.shape[0])]
    for group in groups:
        values = x[group]
        finite = values[np.isfinite(values)]
        if finite.size == 0:
            continue
        lo, hi = np.percentile(finite, [low, high])
        scaled = (values - lo) / max(hi - lo, 1e-6)
        out[group] = (np.nan_to_num(np.clip(scaled, 0, 1), nan=0.0) * 255).round().astype(np.uint8)
    return out


def _band(band_names: Sequence[str], *wanted: str) -> list[int] | None:
    """Positions of the wanted band names (case-insensitive), or None if any is missing."""
    upper = [b.upper() for b in band_names]
    return [upper.index(w) for w in wanted] if all(w in upper for w in wanted) else None


def display_image(image: np.ndarray, band_names: Sequence[str] | None = None, sar: bool = False) -> Image.Image:
    """A native (C, H, W) image of any sensor -> an RGB PIL image people can read (see module doc)."""
    image = np.asarray(image)
    if image.ndim == 2:
        image = image[None]
    if image.ndim != 3:
        raise ValueError(f"Expected an image of shape (C, H, W), found {image.shape}")
    names = list(band_names or [f"band{i}" for i in range(image.shape[0])])
    if len(names) != image.shape[0]:
        raise ValueError(f"The image has {image.shape[0]} bands but {len(names)} band names are given: {names}")
    data = image.astype(np.float32)
    if (rgb := _band(names, "B04", "B03", "B02")) is not None:
        pixels = _stretch(data[rgb], joint=True)
    elif (pol := _band(names, "VV", "VH")) is not None:
        vv, vh = data[pol[0]], data[pol[1]]
        ratio = vv - vh if sar else vv / np.where(vh == 0, np.nan, vh)
        pixels = _stretch(np.stack([vv, vh, ratio]))
    elif (rgb := _band(names, "R", "G", "B")) is not None:
        pixels = _stretch(data[rgb], joint=True)
    elif data.shape[0] == 1:
        pixels = np.repeat(_stretch(data), 3, axis=0)
    elif data.shape[0] == 2:
        pixels = _stretch(np.stack([data[0], data[1], data[0] - data[1]]))
    else:
        pixels = _stretch(data[:3])
    return Image.fromarray(np.ascontiguousarray(pixels.transpose(1, 2, 0)), mode="RGB")


# ---------------------------------------------------------------------------------------------- the grid
@dataclass
class GridTile:
    """One framed tile: the picture, a caption (id, score) and its relevance (True/False/None = unknown)."""

    image: Image.Image
    caption: str
    relevant: bool | None = None


@dataclass
class GridRow:
    """One direction: a title (e.g. 'S1->S2'), the query tile and the ranked result tiles."""

    title: str
    query: GridTile
    results: list[GridTile] = field(default_factory=list)


def grid_size(num_rows: int, k: int, tile: int = 96) -> tuple[int, int]:
    """(width, height) in pixels of a grid with ``num_rows`` directions and ``k`` results per row."""
    cell_w, cell_h = tile + 2 * BORDER + PAD, tile + 2 * BORDER + CAPTION_HEIGHT
    return PAD + QUERY_GAP + (k + 1) * cell_w, PAD + num_rows * (TITLE_HEIGHT + cell_h + PAD)


def tile_origin(row: int, column: int, tile: int = 96) -> tuple[int, int]:
    """Top-left pixel of the frame of tile ``column`` (0 = query) in ``row``."""
    cell_w, cell_h = tile + 2 * BORDER + PAD, tile + 2 * BORDER + CAPTION_HEIGHT
    x = PAD + column * cell_w + (QUERY_GAP if column > 0 else 0)
    y = PAD + row * (TITLE_HEIGHT + cell_h + PAD) + TITLE_HEIGHT
    return x, y


def render_grid(rows: Sequence[GridRow], tile: int = 96) -> Image.Image:
    """Draw rows of framed tiles; all rows are padded to the longest row's k."""
    k = max((len(r.results) for r in rows), default=0)
    canvas = Image.new("RGB", grid_size(len(rows), k, tile), BACKGROUND)
    draw = ImageDraw.Draw(canvas)
    font = ImageFont.load_default()
    for r, row in enumerate(rows):
        x0, y0 = tile_origin(r, 0, tile)
        draw.text((x0, y0 - TITLE_HEIGHT + 1), row.title, fill=(0, 0, 0), font=font)
        for c, item in enumerate([row.query, *row.results]):
            x, y = tile_origin(r, c, tile)
            colour = (0, 0, 0) if c == 0 else {True: RELEVANT, False: NOT_RELEVANT, None: UNKNOWN}[item.relevant]
            draw.rectangle([x, y, x + tile + 2 * BORDER - 1, y + tile + 2 * BORDER - 1], fill=colour)
            resample = Image.Resampling.NEAREST if item.image.width < tile else Image.Resampling.BOX
            canvas.paste(item.image.resize((tile, tile), resample), (x + BORDER, y + BORDER))
            for line, text in enumerate(item.caption.split("\n")[:2]):
                draw.text(
                    (x, y + tile + 2 * BORDER + 1 + 11 * line),
                    _fit(text, tile + 2 * BORDER, draw, font),
                    fill=(0, 0, 0),
                    font=font,
                )
    return canvas


def _fit(text: str, width: int, draw: ImageDraw.ImageDraw, font: Any) -> str:
    """Shorten text from the left (ids differ at the end) until it fits ``width`` pixels."""
    while text and draw.textlength(text, font=font) > width:
        text = "…" + text[2:] if len(text) > 2 else ""
    return text


# ---------------------------------------------------------------------------------------------- archive queries
class DatasetImages:
    """Fetch native images of a paired datasets.Dataset by (archive id, sensor)."""

    def __init__(self, dataset: Any) -> None:
        self.dataset = dataset
        self.rows = {str(i): r for r, i in enumerate(dataset["id"])}
        self.readers: dict[str, PairBatches] = {}

    def __call__(self, archive_id: str, sensor: str) -> np.ndarray:
        if archive_id not in self.rows:
            raise DataError(
                f"Id {archive_id!r} is not in the image dataset ({len(self.rows)} rows); was the archive "
                "embedded from another dataset or split?"
            )
        if sensor not in self.readers:
            self.readers[sensor] = PairBatches(self.dataset, [sensor], in_order=True)
        return self.readers[sensor][[self.rows[archive_id]]][sensor][0].numpy()


def renderer(archive: Any) -> Callable[[np.ndarray, str], Image.Image]:
    """(image, sensor) -> the picture people see, with the band names and SAR sensors the archive records."""
    config = archive.info.get("config", {})
    bands, sar = config.get("band_names", {}), set(config.get("sar_sensors", []))
    return lambda image, sensor: display_image(image, bands.get(sensor), sensor in sar)


def _result_tiles(
    archive: Any,
    hits: Sequence[Any],
    target: str,
    images: Callable[[str, str], np.ndarray],
    query_labels: np.ndarray | None,
) -> list[GridTile]:
    render = renderer(archive)
    tiles = []
    for hit in hits:
        relevant = None if query_labels is None else bool((archive.labels[hit.position] & query_labels).any())
        tiles.append(GridTile(render(images(hit.id, target), target), f"{hit.id}\n{hit.score:.3f}", relevant))
    return tiles


def query_grid(
    archive: Any,
    images: Callable[[str, str], np.ndarray],
    query_id: str,
    directions: Sequence[str] | None = None,
    k: int = 5,
    tile: int = 96,
) -> Image.Image:
    """The top-k of an archive item for each direction (default: the paper's four), as a framed grid."""
    from crjepa.eval.directions import directions_of

    render = renderer(archive)
    position = archive.position(query_id)
    rows = []
    for direction in directions or directions_of(archive.sensors):
        source, target, _ = parse_direction(direction, archive.sensors)
        hits = archive.search_by_id(query_id, direction, k)
        query = GridTile(render(images(query_id, source), source), f"{query_id}\nquery")
        rows.append(
            GridRow(direction.upper(), query, _result_tiles(archive, hits, target, images, archive.labels[position]))
        )
    return render_grid(rows, tile)


def image_grid(
    archive: Any,
    images: Callable[[str, str], np.ndarray],
    query_image: np.ndarray,
    sensor: str,
    hits_by_target: Mapping[str, Sequence[Any]],
    tile: int = 96,
) -> Image.Image:
    """Grid for an external query image (no labels, so frames are grey): one row per searched target sensor."""
    render = renderer(archive)
    query = GridTile(render(query_image, sensor), "query image")
    rows = [
        GridRow(f"{sensor}->{target}".upper(), query, _result_tiles(archive, hits, target, images, None))
        for target, hits in hits_by_target.items()
    ]
    return render_grid(rows, tile)


__all__ = [
    "DatasetImages",
    "GridRow",
    "GridTile",
    "display_image",
    "grid_size",
    "image_grid",
    "query_grid",
    "render_grid",
    "renderer",
    "tile_origin",
]
