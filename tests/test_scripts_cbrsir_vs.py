"""datasets_scripts/cbrsir_vs.py: CBRSIR_VS optical/SAR folders paired by stem, with a splits.csv or a deterministic
default split; a missing partner is named."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

from datasets_scripts.cbrsir_vs import CBRSIRVS
from datasets_scripts.common import DataError

from helpers import random_image, rows_by_id, write_png, write_tif


@pytest.fixture
def cbrsir(tmp_path) -> tuple[Path, dict]:
    root, truth = tmp_path / "cbrsir", {}
    for cls in ("farmland", "harbour"):
        for stem in ("x1", "x2", "x3"):
            rgb = write_png(root / "optical" / cls / f"{stem}.png", random_image((3, 16, 16)))
            sar = write_tif(root / "sar" / cls / f"{stem}.tif", random_image((1, 8, 8), np.float32))
            truth[f"{cls}/{stem}"] = (rgb, sar, cls)
    return root, truth


def test_cbrsir_pairs_by_stem_with_splits_csv(cbrsir, tmp_path):
    root, truth = cbrsir
    (root / "splits.csv").write_text("id,split\nfarmland/x1,test\nharbour/x2,validation\nfarmland/x2,train\n")
    rows = rows_by_id(CBRSIRVS(cache_dir=str(tmp_path / "c"), data_dir=str(root)))
    assert set(rows) == set(truth)
    for key, (rgb, sar, cls) in truth.items():
        np.testing.assert_array_equal(rows[key]["rgb"], rgb)
        np.testing.assert_array_equal(rows[key]["sar"], sar)
        assert list(rows[key]["labels"]) == [["farmland", "harbour"].index(cls)]
    assert rows["farmland/x1"]["split"] == "test" and rows["harbour/x2"]["split"] == "validation"
    assert rows["harbour/x3"]["split"] == "unassigned"


def test_cbrsir_default_split_is_deterministic(cbrsir, tmp_path):
    root, _ = cbrsir
    a = rows_by_id(CBRSIRVS(cache_dir=str(tmp_path / "a"), data_dir=str(root), test_fraction=0.34))
    b = rows_by_id(CBRSIRVS(cache_dir=str(tmp_path / "b"), data_dir=str(root), test_fraction=0.34))
    assert {k: r["split"] for k, r in a.items()} == {k: r["split"] for k, r in b.items()}
    assert sum(r["split"] == "test" for r in a.values()) == 2  # one per class


def test_cbrsir_missing_partner_names_the_file(cbrsir, tmp_path):
    root, _ = cbrsir
    (root / "sar" / "harbour" / "x3.tif").unlink()
    with pytest.raises(DataError, match=r"x3\.png has no partner"):
        CBRSIRVS(cache_dir=str(tmp_path / "c"), data_dir=str(root)).download_and_prepare()
