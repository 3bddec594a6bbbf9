"""datasets_scripts/dsrsid.py: DSRSID from PNG folders (paired by index, last per class to test) and from the HDF5
.mat in both array orders, on tiny files written here; unequal PAN/MS counts are an error."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

from datasets_scripts.common import DataError
from datasets_scripts.dsrsid import DSRSID

from helpers import random_image, rows_by_id, write_png


@pytest.fixture
def dsrsid_png(tmp_path) -> tuple[Path, dict]:
    root, truth = tmp_path / "dsrsid", {}
    for cls in ("forest", "water"):
        for i in (1, 2, 10):  # natural order: 2 before 10
            pan = write_png(root / "Pandata" / cls / f"{i}.png", random_image((1, 32, 32)))
            ms = write_png(root / "Muldata" / cls / f"{i}.png", random_image((4, 8, 8)))
            truth[f"{cls}/{i}"] = (pan, ms, cls)
    return root, truth


def test_dsrsid_png_folders_pair_by_index_and_split_last_per_class(dsrsid_png, tmp_path):
    root, truth = dsrsid_png
    builder = DSRSID(cache_dir=str(tmp_path / "c"), data_dir=str(root), test_per_class=1)
    rows = rows_by_id(builder)
    assert set(rows) == set(truth)
    assert builder.info.features["ms"].shape == (4, 8, 8) and builder.info.features["ms"].dtype == "uint8"
    names = ["forest", "water"]
    for key, (pan, ms, cls) in truth.items():
        np.testing.assert_array_equal(rows[key]["pan"], pan)
        np.testing.assert_array_equal(rows[key]["ms"], ms)
        assert list(rows[key]["labels"]) == [names.index(cls)]
        assert rows[key]["_split"] == rows[key]["split"] == ("test" if key.endswith("/10") else "train")


def test_dsrsid_unequal_pan_ms_counts_is_an_error(dsrsid_png, tmp_path):
    root, _ = dsrsid_png
    (root / "Muldata" / "water" / "2.png").unlink()
    with pytest.raises(DataError, match="water.*3 PAN.*2 MS"):
        DSRSID(cache_dir=str(tmp_path / "c"), data_dir=str(root)).download_and_prepare()


@pytest.mark.parametrize("matlab_order", [False, True], ids=["N-first", "matlab-transposed"])
def test_dsrsid_mat_hdf5(tmp_path, matlab_order):
    import h5py

    pan, ms = random_image((6, 1, 16, 16)), random_image((6, 4, 4, 4))
    types = np.array([[1, 2, 1, 2, 1, 2]], dtype=np.float64)  # MATLAB stores doubles
    path = tmp_path / "DSRSID.mat"
    flip = (lambda a: a.transpose(3, 2, 1, 0)) if matlab_order else (lambda a: a)
    with h5py.File(path, "w") as h5:
        h5["PAN_IMAGES"], h5["MUL_IMAGES"], h5["LAND_COVER_TYPES"] = flip(pan), flip(ms), types
    rows = rows_by_id(
        DSRSID(cache_dir=str(tmp_path / "c"), data_dir=str(path), test_per_class=1, class_names=("a", "b"))
    )
    assert len(rows) == 6
    for i in range(6):
        cls = "ab"[int(types[0, i]) - 1]
        row = rows[f"{cls}/{i:06d}"]
        np.testing.assert_array_equal(row["pan"], pan[i])
        np.testing.assert_array_equal(row["ms"], ms[i])
        assert list(row["labels"]) == [int(types[0, i]) - 1]
    assert {k for k, r in rows.items() if r["split"] == "test"} == {"a/000004", "b/000005"}
