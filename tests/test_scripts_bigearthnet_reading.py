"""datasets_scripts/bigearthnet/reading.py: band GeoTIFFs checked by name, shape and dtype; the ConfigILM LMDB read
bit for bit like the GeoTIFFs, at every resampling."""

from __future__ import annotations

import numpy as np
import pytest

from datasets_scripts.bigearthnet.reading import (
    BigEarthNetError,
    read_band,
    read_s1,
    read_s1_lmdb,
    read_s2,
    read_s2_lmdb,
)

from helpers import reben_pairs, write_band_tif


def test_read_band_names_file_and_shapes(tmp_path):
    path = tmp_path / "P_B05.tif"
    write_band_tif(path, np.ones((61, 60), np.uint16))
    with pytest.raises(BigEarthNetError, match=r"patch P: P_B05.tif .* \(1, 61, 60\), expected \(1, 60, 60\)"):
        read_band(path, "P", 60, "uint16")
    write_band_tif(path, np.ones((60, 60), np.float32))
    with pytest.raises(BigEarthNetError, match="dtype float32, expected uint16"):
        read_band(path, "P", 60, "uint16")


def test_lmdb_resampling_matches_rasterio_on_the_geotiffs(reben_lmdb, reben_dirs):
    row = reben_pairs(reben_dirs)[0]
    s2_folder = next(reben_dirs["s2"].glob(f"*/{row['patch_id']}"))
    s1_folder = next(reben_dirs["s1"].glob(f"*/{row['s1_name']}"))
    nearest = read_s2(s2_folder, row["patch_id"])
    for resampling in ("nearest", "bilinear", "bicubic"):  # bicubic is GDAL's "cubic" (it raised a KeyError)
        s2 = read_s2(s2_folder, row["patch_id"], resampling)
        np.testing.assert_array_equal(read_s2_lmdb(str(reben_lmdb), row["patch_id"], resampling), s2)
        assert s2.shape == (12, 120, 120) and s2.dtype == np.uint16
        np.testing.assert_array_equal(s2[1], nearest[1])  # a 10 m band is stored as it is, whatever the resampling
        assert resampling == "nearest" or not np.array_equal(s2[8], nearest[8])  # a 20 m band is smoothed
    np.testing.assert_array_equal(read_s1_lmdb(str(reben_lmdb), row["s1_name"]), read_s1(s1_folder, row["s1_name"]))
