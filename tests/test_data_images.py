"""crjepa.data.images: the one image reader (builders and ``crjepa search --image`` both use it)."""

from __future__ import annotations

import numpy as np
import pytest
from PIL import Image

from crjepa.data.images import probe_image, read_image
from crjepa.data.schema import DataError

from helpers import random_image, write_band_tif, write_png, write_tif


def test_png_npy_and_tif_read_as_native_chw(tmp_path):
    rgb = np.random.default_rng(0).integers(0, 255, (5, 7, 3), dtype=np.uint8)
    Image.fromarray(rgb).save(tmp_path / "a.png")
    got = read_image(tmp_path / "a.png")
    assert got.shape == (3, 5, 7) and got.dtype == np.uint8
    np.testing.assert_array_equal(got, rgb.transpose(2, 0, 1))
    assert probe_image(tmp_path / "a.png").shape == (3, 5, 7)
    grey16 = np.arange(35, dtype=np.uint16).reshape(5, 7) * 1000
    Image.fromarray(grey16).save(tmp_path / "b.tif")  # Pillow-written TIFF: rasterio or Pillow reads it
    np.testing.assert_array_equal(read_image(tmp_path / "b.tif"), grey16[None])
    np.save(tmp_path / "c.npy", np.ones((2, 4, 4), np.float32))
    assert read_image(tmp_path / "c.npy").shape == (2, 4, 4)


def test_bad_files_are_one_data_error_naming_the_file(tmp_path):
    np.save(tmp_path / "four_d.npy", np.ones((1, 2, 4, 4), np.float32))
    with pytest.raises(DataError, match=r"four_d\.npy: .npy images must be \(C, H, W\) or \(H, W\)"):
        read_image(tmp_path / "four_d.npy")
    with pytest.raises(DataError, match="Missing image file: .*nothing.png"):
        read_image(tmp_path / "nothing.png")
    (tmp_path / "x.gif").write_bytes(b"GIF89a")
    with pytest.raises(DataError, match="Unsupported image format '.gif'"):
        read_image(tmp_path / "x.gif")


def test_the_builders_and_the_cli_read_images_through_it():
    import crjepa.cli
    import datasets_scripts.common

    assert datasets_scripts.common.read_image is read_image and datasets_scripts.common.probe_image is probe_image
    assert not hasattr(crjepa.cli, "_load_image")  # the CLI's own reader is gone


def test_read_image_formats_are_chw_native_dtype(tmp_path):
    rgba = write_png(tmp_path / "a.png", random_image((4, 5, 6)))
    grey = write_png(tmp_path / "g.png", random_image((1, 5, 6)))
    tif = write_tif(tmp_path / "t.tif", random_image((2, 5, 6), np.float32))
    np.save(tmp_path / "n.npy", random_image((3, 5, 6), np.uint16))
    np.testing.assert_array_equal(read_image(tmp_path / "a.png"), rgba)  # RGBA PNG -> 4 bands
    np.testing.assert_array_equal(read_image(tmp_path / "g.png"), grey)
    np.testing.assert_array_equal(read_image(tmp_path / "t.tif"), tif)
    assert read_image(tmp_path / "n.npy").dtype == np.uint16 and read_image(tmp_path / "n.npy").shape == (3, 5, 6)


def test_npy_with_pickles_is_refused(tmp_path):
    np.save(tmp_path / "obj.npy", np.array([{"a": 1}], dtype=object), allow_pickle=True)
    with pytest.raises(DataError, match="obj.npy"):
        read_image(tmp_path / "obj.npy")


def test_a_patch_folder_of_band_files_reads_in_the_given_band_order_on_the_finest_grid(tmp_path):
    """A BigEarthNet-style patch folder (one file per band, 10 m / 20 m / 60 m grids) is one (C, H, W) image:
    bands in the order asked for (not file order), coarser bands repeated onto the finest grid."""
    from crjepa.data.images import band_folder_sensor, read_band_folder

    patch = tmp_path / "P_1_2"
    b02, b8a, b01 = (random_image((1, n, n), np.uint16) for n in (12, 6, 2))
    for band, array in (("B02", b02), ("B8A", b8a), ("B01", b01)):
        write_tif(patch / f"P_1_2_{band}.tif", array)
    got = read_image(patch, bands=["B01", "B02", "B8A"])
    assert got.shape == (3, 12, 12) and got.dtype == np.uint16
    np.testing.assert_array_equal(got[1], b02[0])
    np.testing.assert_array_equal(got[2, ::2, ::2], b8a[0])
    np.testing.assert_array_equal(got[0], np.kron(b01[0], np.ones((6, 6), np.uint16)))
    bands = {"s1": ["VV", "VH"], "s2": ["B01", "B02", "B8A"]}
    assert band_folder_sensor(patch, bands) == "s2"
    with pytest.raises(DataError, match="no sensor has all its bands here"):
        band_folder_sensor(patch, {"s1": ["VV", "VH"]})
    with pytest.raises(DataError, match=r"band\(s\) \['B12'\]"):
        read_band_folder(patch, ["B02", "B12"])
    with pytest.raises(DataError, match="is a folder"):
        read_image(patch)


def test_a_npy_header_declaring_more_than_the_file_holds_is_refused_before_numpy_allocates(tmp_path):
    """numpy allocates what a .npy header declares before it reads: a few-byte file may not declare gigabytes."""
    path = tmp_path / "big.npy"
    with open(path, "wb") as f:
        np.lib.format.write_array_header_1_0(f, {"descr": "<u2", "fortran_order": False, "shape": (12, 40000, 40000)})
        f.write(bytes(384))
    with pytest.raises(DataError, match=r"declares a \(12, 40000, 40000\) uint16 array \(38,400,000,000 bytes\)"):
        read_image(path)


def test_band_files_are_read_with_the_band_their_description_states_and_named_by_their_file_name(tmp_path):
    """The one reader of band files (the BigEarthNet converter and the app's uploads): the pixels as stored, the
    GeoTIFF's own band description (which the converter checks against the file name), one DataError for a
    truncated file."""
    import rasterio

    from crjepa.data.images import band_name, read_band_file

    assert band_name("S2A_MSIL2A_20170613T101031_87_48/S2A_MSIL2A_20170613T101031_87_48_B8A.tif") == "B8A"
    assert band_name("P_1_2_vv.TIFF") == "vv"  # as written: the caller decides about case
    assert [band_name(n) for n in ("P_1_2_labels_metadata.json", "B02.tif", "P/._P_B02.tif")] == [None] * 3
    band = random_image((1, 6, 6), np.uint16)
    write_band_tif(tmp_path / "P_B8A.tif", band[0])
    assert read_band_file(tmp_path / "P_B8A.tif")[1] == ""
    with rasterio.open(tmp_path / "P_B8A.tif", "r+") as dst:
        dst.set_band_description(1, "B8A")
    pixels, described = read_band_file(tmp_path / "P_B8A.tif")
    assert described == "B8A" and pixels.dtype == np.uint16
    np.testing.assert_array_equal(pixels, band)
    data = (tmp_path / "P_B8A.tif").read_bytes()
    (tmp_path / "P_B02.tif").write_bytes(data[: len(data) // 2])
    with pytest.raises(DataError, match=r"cannot read .*P_B02.tif \(truncated or corrupt GeoTIFF\)"):
        read_band_file(tmp_path / "P_B02.tif")


def test_bands_stack_on_the_finest_grid_by_pixel_repetition_in_the_order_asked(tmp_path):
    from crjepa.data.images import repeat_to, stack_bands

    b02, b8a, b01 = random_image((12, 12), np.uint16), random_image((6, 6), np.uint16), random_image((2, 2), np.uint8)
    np.testing.assert_array_equal(repeat_to(b8a, 12), np.kron(b8a, np.ones((2, 2), np.uint16)))
    assert repeat_to(b02, 12) is b02  # the finest band is stored as it is
    stacked = stack_bands({"B02": b02, "B8A": b8a, "B01": b01}, ["B01", "B02", "B8A"], "patch P")
    assert stacked.shape == (3, 12, 12) and stacked.dtype == np.uint16  # the dtype that holds every band
    np.testing.assert_array_equal(stacked[0, ::6, ::6], b01)  # lossless: every 6th pixel is the 60 m band
    np.testing.assert_array_equal(stacked[2, ::2, ::2], b8a)
    with pytest.raises(DataError, match=r"patch P: band B05 is 5x5, not a square whose side divides 12"):
        stack_bands({"B02": b02, "B05": random_image((5, 5), np.uint16)}, ["B02", "B05"], "patch P")
    with pytest.raises(DataError, match=r"patch P: lacks the band\(s\) \['B12'\]"):
        stack_bands({"B02": b02}, ["B02", "B12"], "patch P")
