"""The HTML of the app's results (crjepa/app/render.py): archive text is escaped, frames and marks follow the
relevance, pictures are the renderers' images, scores are grouped bars with their values."""

from __future__ import annotations

import base64
import io

import numpy as np
from PIL import Image

from crjepa.app.engine import ResultRow, Tile
from crjepa.app.render import TILE_PX, png_data_uri, results_html, scores_svg
from crjepa.eval.visualize import NOT_RELEVANT, RELEVANT, display_image


def test_archive_text_is_escaped_and_frames_follow_relevance():
    evil = '<img src=x onerror="alert(1)">'
    picture = display_image(np.arange(2 * 8 * 8, dtype=np.float32).reshape(2, 8, 8), ["VV", "VH"], sar=True)
    row = ResultRow(
        "s1->s2",
        "cross",
        Tile("q&1", picture, labels=["Arable land"]),
        [
            Tile(evil, picture, labels=[evil], score=0.91, rank=1, relevant=True),
            Tile("b", None, labels=[], score=0.5, rank=2, relevant=False, note="no s2 image in the data source"),
            Tile("c", picture, labels=["Pastures"], score=0.25, rank=3, relevant=None),
        ],
    )
    page = results_html([row])
    assert evil not in page and "&lt;img src=x onerror=&quot;alert(1)&quot;&gt;" in page
    assert 'data-id="q&amp;1"' in page and "S1 → S2" in page and "cross-sensor · cross head" in page
    assert page.count('<figure class="crjepa-tile') == 4 and page.count('data-relevant="query"') == 1
    green, red = "rgb({}, {}, {})".format(*RELEVANT), "rgb({}, {}, {})".format(*NOT_RELEVANT)
    assert f'data-relevant="true" style="--crjepa-frame: {green}"' in page and "✓ relevant" in page
    assert f'data-relevant="false" style="--crjepa-frame: {red}"' in page and "✗ not relevant" in page
    assert 'data-relevant="unknown"' in page and "no query labels" in page
    assert "<b>#1</b>&nbsp;0.910" in page and "no s2 image in the data source" in page


def test_tiles_are_the_renderers_pictures_enlarged_pixel_by_pixel():
    picture = display_image(
        np.random.default_rng(0).integers(0, 3000, (12, 16, 16)).astype(np.uint16),
        ["B01", "B02", "B03", "B04", "B05", "B06", "B07", "B08", "B8A", "B09", "B11", "B12"],
    )
    uri = png_data_uri(picture)
    decoded = Image.open(io.BytesIO(base64.b64decode(uri.split(",", 1)[1])))
    assert decoded.size == (TILE_PX, TILE_PX)
    assert np.array_equal(np.asarray(decoded)[:: TILE_PX // 16, :: TILE_PX // 16][:16, :16], np.asarray(picture))


def test_scores_are_grouped_bars_with_their_values():
    scores = {
        "metric": "F1@5",
        "rows": [
            {"direction": "S1->S1", "model": "trained", "score": 75.11},
            {"direction": "S1->S1", "model": "random init", "score": 21.5},
            {"direction": "S1->S2", "model": "trained", "score": 75.82},
        ],
    }
    svg = scores_svg(scores)
    assert svg.startswith("<svg") and "F1@5 per direction (%)" in svg
    assert 'data-direction="S1-&gt;S1" data-model="trained" data-score="75.11"' in svg
    assert 'data-model="random init" data-score="21.50"' in svg and svg.count("<rect") == 3 + 2  # bars + legend
    assert "S1 → S2" in svg
