"""Every documented journey on real BigEarthNet patches (issue 12): v2/reBEN and v1 folders -> export -> training
with the paper's config -> card -> fresh-process AutoModel -> crjepa embed / index / search / evaluate; S2-only
archives; every YAML of configs/ on an export. Real data: tests/conftest.py (wheels of bigearthnet-common and
configilm). Tiny model and a few steps: seconds each."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pyarrow.parquet as pq
import pytest

from conftest import REPO, reben_pairs, run_module

rasterio = pytest.importorskip("rasterio")


def _rows(export: Path) -> dict[str, dict]:
    from crjepa.data.loading import load_paired_dataset

    ds = load_paired_dataset(export)
    assert ds.features["s2"].dtype == "uint16" and ds.features["s2"].shape == (12, 120, 120)
    return {r["id"]: r for r in ds}


def test_reben_export_has_real_pairs_bands_by_name_and_splits(reben_dirs, reben_export):
    rows = _rows(reben_export)
    meta = {r["patch_id"]: r for r in reben_pairs(reben_dirs)}
    assert set(rows) == set(meta) and len(rows) == 18
    assert {r["split"] for r in rows.values()} == {"train", "validation", "test"}
    patch = sorted(rows)[0]
    folder = next(reben_dirs["s2"].glob(f"*/{patch}"))
    s2 = np.asarray(rows[patch]["s2"])
    assert s2.shape == (12, 120, 120)
    with rasterio.open(folder / f"{patch}_B8A.tif") as src:  # B8A is the 9th band, 20 m -> every 2nd pixel
        np.testing.assert_array_equal(s2[8, ::2, ::2], src.read(1))
    with rasterio.open(folder / f"{patch}_B09.tif") as src:
        np.testing.assert_array_equal(s2[9, ::6, ::6], src.read(1))
    assert rows[patch]["s1_name"] == meta[patch]["s1_name"] and rows[patch]["country"] == meta[patch]["country"]
    assert "BigEarthNet-MM (reben)" in (reben_export / "README.md").read_text()
