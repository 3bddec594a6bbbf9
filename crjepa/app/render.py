"""Result rows -> the HTML of the app's result area: one section per direction, the query tile, then the ranked
tiles with id, cosine score, labels and a relevant / not relevant mark framed in the result grid's colours
(`crjepa.eval.visualize`: green relevant, red not relevant, grey unknown). Every text from the archive is escaped
(a downloaded archive's ids and labels are data, never markup). Pictures are inline PNGs."""

from __future__ import annotations

import base64
import html
import io
from collections.abc import Sequence
from typing import Any

from crjepa.app.engine import ResultRow, Tile
from crjepa.eval.visualize import NOT_RELEVANT, RELEVANT, UNKNOWN

TILE_PX = 112
SPACE_NAMES = {"unified": "same sensor · unified head", "cross": "cross-sensor · cross head"}

CSS = f"""
.crjepa-results {{ display: flex; flex-direction: column; gap: 14px; }}
.crjepa-row h3 {{ margin: 0 0 6px 0; font-size: 1.05em; }}
.crjepa-row h3 small {{ font-weight: normal; opacity: 0.7; margin-left: 8px; }}
.crjepa-tiles {{ display: flex; flex-wrap: nowrap; overflow-x: auto; gap: 10px; align-items: flex-start;
  padding-bottom: 4px; }}
.crjepa-tile {{ flex: 0 0 {TILE_PX + 8}px; width: {TILE_PX + 8}px; margin: 0; font-size: 12px; line-height: 1.3; }}
.crjepa-tile .crjepa-frame {{ border: 4px solid var(--crjepa-frame); border-radius: 4px; width: {TILE_PX}px;
  height: {TILE_PX}px; display: flex; align-items: center; justify-content: center; background: #f2f2f2;
  color: #555; text-align: center; font-size: 11px; overflow: hidden; }}
.crjepa-tile img {{ width: {TILE_PX}px; height: {TILE_PX}px; image-rendering: pixelated; display: block; }}
.crjepa-query {{ margin-right: 14px; padding-right: 14px; border-right: 2px dashed #bbb; }}
.crjepa-head {{ margin-top: 3px; white-space: nowrap; }}
.crjepa-mark {{ font-weight: 600; color: var(--crjepa-frame); white-space: nowrap; }}
.crjepa-id {{ font-family: ui-monospace, monospace; font-size: 11px; white-space: nowrap; overflow: hidden;
  text-overflow: ellipsis; direction: rtl; text-align: left; }}
.crjepa-labels {{ display: flex; flex-wrap: wrap; gap: 2px; margin-top: 2px; }}
.crjepa-label {{ background: rgba(120, 120, 120, 0.16); border-radius: 3px; padding: 0 3px; max-width: 100%;
  white-space: nowrap; overflow: hidden; text-overflow: ellipsis; font-size: 10.5px; }}
.crjepa-empty {{ opacity: 0.75; padding: 24px 4px; }}
#crjepa-message p {{ margin: 0; }}
"""


def _rgb(colour: tuple[int, int, int]) -> str:
    return "rgb({}, {}, {})".format(*colour)


def png_data_uri(image: Any, side: int = TILE_PX) -> str:
    """A PIL image as an inline PNG of ``side`` pixels (nearest-neighbour when enlarging: pixels stay visible)."""
    from PIL import Image

    resample = Image.Resampling.NEAREST if image.width < side else Image.Resampling.BOX
    buffer = io.BytesIO()
    image.resize((side, side), resample).save(buffer, format="PNG", optimize=True)
    return "data:image/png;base64," + base64.b64encode(buffer.getvalue()).decode("ascii")


def _tile_html(tile: Tile, query: bool = False) -> str:
    esc = html.escape
    if query:
        colour, mark, relevant = (40, 40, 40), "&nbsp;", "query"
    else:
        colour, mark, relevant = {
            True: (RELEVANT, "✓ relevant", "true"),
            False: (NOT_RELEVANT, "✗ not relevant", "false"),
            None: (UNKNOWN, "no query labels", "unknown"),
        }[tile.relevant]
    picture = (
        f'<img src="{png_data_uri(tile.image)}" alt="{esc(tile.id)}">'
        if tile.image is not None
        else f"<span>{esc(tile.note or 'no image')}</span>"
    )
    score = "<b>query</b>" if query else f"<b>#{tile.rank}</b>&nbsp;{tile.score:.3f}"
    labels = "".join(f'<span class="crjepa-label" title="{esc(label)}">{esc(label)}</span>' for label in tile.labels)
    labels = labels or '<span class="crjepa-label">no labels</span>'
    return (
        f'<figure class="crjepa-tile{" crjepa-query" if query else ""}" data-id="{esc(tile.id)}" '
        f'data-relevant="{relevant}" style="--crjepa-frame: {_rgb(colour)}">'
        f'<div class="crjepa-frame">{picture}</div><figcaption>'
        f'<div class="crjepa-head">{score}</div><div class="crjepa-mark">{mark}</div>'
        f'<div class="crjepa-id" title="{esc(tile.id)}">&lrm;{esc(tile.id)}&lrm;</div>'
        f'<div class="crjepa-labels">{labels}</div></figcaption></figure>'
    )


def results_html(rows: Sequence[ResultRow]) -> str:
    """The result area for a search: one section per direction."""
    sections = []
    for row in rows:
        arrow = row.direction.upper().replace("->", " → ")
        sections.append(
            f'<section class="crjepa-row" data-direction="{html.escape(row.direction)}">'
            f"<h3>{html.escape(arrow)}<small>{SPACE_NAMES.get(row.space, row.space)}</small></h3>"
            f'<div class="crjepa-tiles">{_tile_html(row.query, query=True)}'
            + "".join(_tile_html(tile) for tile in row.results)
            + "</div></section>"
        )
    return f'<div class="crjepa-results" data-rows="{len(rows)}">' + "".join(sections) + "</div>"


SERIES_COLOURS = {"trained": "#0f766e", "random init": "#cbd5e1"}


def scores_svg(scores: dict[str, Any], width: int = 560, height: int = 250) -> str:
    """The per-direction scores as grouped bars (one group per direction, one bar per model: trained next to
    random init), an inline SVG with the values written on the bars; ``scores`` as
    `crjepa.app.scores.load_scores` gives."""
    rows = scores["rows"]
    directions = list(dict.fromkeys(r["direction"] for r in rows))
    series = list(dict.fromkeys(r["model"] for r in rows))
    value = {(r["direction"], r["model"]): float(r["score"]) for r in rows}
    left, bottom, top = 34, 40, 26
    plot_h = height - bottom - top
    group_w = (width - left - 8) / max(1, len(directions))
    bar_w = min(46.0, 0.8 * group_w / max(1, len(series)))
    parts = [
        f'<svg class="crjepa-scores" xmlns="http://www.w3.org/2000/svg" width="{width}" height="{height}" '
        f'viewBox="0 0 {width} {height}" font-family="system-ui, sans-serif" font-size="11" role="img">',
        f'<text x="{left}" y="14" font-size="13" font-weight="600">{html.escape(scores["metric"] or "score")} '
        "per direction (%)</text>",
    ]
    for tick in range(0, 101, 25):
        y = top + plot_h * (1 - tick / 100)
        parts.append(
            f'<line x1="{left}" x2="{width - 8}" y1="{y:.1f}" y2="{y:.1f}" stroke="#e5e7eb"/>'
            f'<text x="{left - 5}" y="{y + 4:.1f}" text-anchor="end" fill="#6b7280">{tick}</text>'
        )
    for g, direction in enumerate(directions):
        x0 = left + g * group_w + (group_w - bar_w * len(series)) / 2
        for b, name in enumerate(series):
            if (direction, name) not in value:
                continue
            v = max(0.0, min(100.0, value[direction, name]))
            x, h = x0 + b * bar_w, plot_h * v / 100
            parts.append(
                f'<rect x="{x:.1f}" y="{top + plot_h - h:.1f}" width="{bar_w - 3:.1f}" height="{h:.1f}" '
                f'fill="{SERIES_COLOURS.get(name, "#64748b")}" data-direction="{html.escape(direction)}" '
                f'data-model="{html.escape(name)}" data-score="{v:.2f}"><title>{html.escape(name)} '
                f"{html.escape(direction)}: {v:.2f}</title></rect>"
                f'<text x="{x + (bar_w - 3) / 2:.1f}" y="{top + plot_h - h - 3:.1f}" text-anchor="middle">'
                f"{v:.1f}</text>"
            )
        parts.append(
            f'<text x="{left + (g + 0.5) * group_w:.1f}" y="{top + plot_h + 16:.1f}" text-anchor="middle" '
            f'font-weight="600">{html.escape(direction.replace("->", " → "))}</text>'
        )
    x = left
    for name in series:
        parts.append(
            f'<rect x="{x}" y="{height - 14}" width="10" height="10" '
            f'fill="{SERIES_COLOURS.get(name, "#64748b")}"/><text x="{x + 14}" y="{height - 5}">'
            f"{html.escape(name)}</text>"
        )
        x += 24 + 7 * len(name)
    return "".join(parts) + "</svg>"


def empty_html(text: str) -> str:
    return f'<div class="crjepa-results crjepa-empty" data-rows="0">{html.escape(text)}</div>'


__all__ = ["CSS", "TILE_PX", "empty_html", "png_data_uri", "results_html", "scores_svg"]
