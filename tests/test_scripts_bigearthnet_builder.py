"""datasets_scripts/bigearthnet/builder.py: the `datasets` builder on the 6 real v1 pairs of bigearthnet-common
(rows, band order, labels, splits, several processes) and its bad-input policy (skipped and counted, or strict)."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import numpy as np
import pytest
import rasterio  # the dev extra: a missing reader fails these tests, never skips them

from datasets_scripts import ben_metadata as meta
from datasets_scripts.bigearthnet import BigEarthNetMM

from helpers import (
    BEN_V1_EXAMPLES,
    BEN_V1_SNOWY,
    build_bigearthnet,
    copy_ben_v1,
    read_native_band,
    write_band_tif,
)


def test_examples_all_subset_rows(ben_v1_all, ben_v1_dirs):
    builder, ds = ben_v1_all
    assert {k: v.num_rows for k, v in ds.items()} == {"train": 4, "test": 1, "unassigned": 1}
    report = builder.conversion_report(ds)
    assert report.skipped == {} and report.missing == 590_326 - 6
    rows = {r["id"]: r for split in ds.values() for r in split}
    assert set(rows) == set(BEN_V1_EXAMPLES)
    for s2_name, (s1_name, country, split) in BEN_V1_EXAMPLES.items():
        r = rows[s2_name]
        assert (r["s1_name"], r["s2_name"], r["country"], r["split"]) == (s1_name, s2_name, country, split)
    feats = ds["train"].features
    assert feats["s1"].shape == (2, 120, 120) and feats["s1"].dtype == "float32"
    assert feats["s2"].shape == (12, 120, 120) and feats["s2"].dtype == "uint16"
    assert feats["labels"].feature.names == list(meta.BEN19_CLASSES)
    storage = ds["train"].data.column("s2").type.storage_type
    while hasattr(storage, "value_type"):
        storage = storage.value_type
    assert str(storage) == "uint16"

    s1_dir, s2_dir = ben_v1_dirs
    for s2_name, r in rows.items():
        s2 = np.asarray(r["s2"], dtype=np.float64)
        s1 = np.asarray(r["s1"], dtype=np.float64)
        assert s2.shape == (12, 120, 120) and s1.shape == (2, 120, 120)
        assert 0 <= s2.min() and s2.max() < 20_000 and 100 < s2.mean() < 5_000  # L2A reflectance * 10^4
        assert -60 < s1.min() and s1.max() < 40 and np.median(s1) < 0  # backscatter in dB
        assert np.median(s1[1]) < np.median(s1[0])  # VH is weaker than VV: channel order VV, VH
        # pairing: the S1 array is the S1 patch whose JSON names this S2 patch
        s1_name = r["s1_name"]
        s1_json = json.loads((s1_dir / s1_name / f"{s1_name}_labels_metadata.json").read_text())
        assert s1_json["corresponding_s2_patch"] == s2_name
        np.testing.assert_array_equal(r["s1"][0], read_native_band(s1_dir / s1_name / f"{s1_name}_VV.tif"))
        np.testing.assert_array_equal(r["s1"][1], read_native_band(s1_dir / s1_name / f"{s1_name}_VH.tif"))


def test_s2_band_order_and_nearest_upsampling(ben_v1_all, ben_v1_dirs):
    _, ds = ben_v1_all
    name = "S2A_MSIL2A_20170613T101031_87_48"
    s2 = np.asarray(ds["test"][0]["s2"])
    folder = ben_v1_dirs[1] / name
    for c, band in enumerate(("B01", "B02", "B03", "B04", "B05", "B06", "B07", "B08", "B8A", "B09", "B11", "B12")):
        native = read_native_band(folder / f"{name}_{band}.tif")
        step = 120 // native.shape[0]
        np.testing.assert_array_equal(s2[c, ::step, ::step], native, err_msg=band)  # lossless: native values back
        np.testing.assert_array_equal(s2[c], np.kron(native, np.ones((step, step), native.dtype)), err_msg=band)


def test_labels_mapped_by_hand(ben_v1_all):
    _, ds = ben_v1_all
    rows = {r["id"]: r for split in ds.values() for r in split}
    # JSON: Coniferous forest, Mixed forest, Transitional woodland/shrub, Peatbogs, Water bodies
    finland = rows["S2B_MSIL2A_20170924T93020_69_24"]
    assert finland["labels"] == [9, 10, 13, 15, 17]  # Coniferous, Mixed, Transitional, Inland wetlands, Inland waters
    assert finland["labels_43"][3] == "Peatbogs"
    # JSON: Non-irrigated arable land, Land principally occupied by agriculture, ...
    austria = rows["S2A_MSIL2A_20170613T101031_87_48"]
    assert austria["labels"] == [2, 6]  # Arable land, Land principally occupied by agriculture...
    assert (austria["tile"], austria["s2_date"]) == ("33UUP", "2017-06-13")


def test_recommended_subset_multiprocess(ben_v1_dirs, tmp_path):
    builder, ds = build_bigearthnet(*ben_v1_dirs, "recommended", tmp_path, num_proc=2)
    ids = {r for split in ds.values() for r in split["id"]}
    assert ids == set(BEN_V1_EXAMPLES) - {BEN_V1_SNOWY}  # the snowy pair is on the official exclusion list
    report = builder.conversion_report(ds)
    assert report.missing == 519_284 - 5 and report.converted == {"train": 4, "test": 1}
    assert "converted 5 pairs" in report.summary() and "missing 519,279 of the 519,284" in report.summary()


def _corrupt(s1: Path, s2: Path) -> dict[str, str]:
    """Break five of the six pairs in five ways; return S2/S1 name -> expected skip reason."""
    names = sorted(BEN_V1_EXAMPLES)
    (s2 / names[0] / f"{names[0]}_B05.tif").unlink()  # missing band
    b02 = s2 / names[1] / f"{names[1]}_B02.tif"
    b02.write_bytes(b02.read_bytes()[:3000])  # truncated GeoTIFF
    write_band_tif(s2 / names[2] / f"{names[2]}_B8A.tif", np.ones((50, 50), np.uint16))  # wrong size
    shutil.rmtree(s2 / names[3])  # S2 partner gone
    s1_name = BEN_V1_EXAMPLES[names[4]][0]
    vv = read_native_band(s1 / s1_name / f"{s1_name}_VV.tif").copy()
    vv[5, 7] = np.nan
    write_band_tif(s1 / s1_name / f"{s1_name}_VV.tif", vv)  # NaN in SAR
    return {
        names[0]: "missing band file",
        names[1]: "corrupt GeoTIFF",
        names[2]: "wrong band size",
        names[3]: "S2 partner missing",
        names[4]: "NaN/inf in SAR",
    }


def test_bad_inputs_are_skipped_and_counted(ben_v1_dirs, tmp_path):
    s1, s2 = copy_ben_v1(ben_v1_dirs, tmp_path / "data")
    expected = _corrupt(s1, s2)
    builder, ds = build_bigearthnet(s1, s2, "all", tmp_path / "cache")
    assert [r for split in ds.values() for r in split["id"]] == [BEN_V1_SNOWY]  # only the intact pair is written
    report = builder.conversion_report(ds)
    assert {k: e.reason for k, e in report.skipped.items()} == expected
    msgs = {k: str(e) for k, e in report.skipped.items()}
    names = sorted(BEN_V1_EXAMPLES)
    assert names[0] in msgs[names[0]] and f"{names[0]}_B05.tif" in msgs[names[0]]
    assert f"{names[1]}_B02.tif" in msgs[names[1]]
    assert f"{names[2]}_B8A.tif" in msgs[names[2]]
    assert "(1, 50, 50)" in msgs[names[2]] and "(1, 60, 60)" in msgs[names[2]]
    assert BEN_V1_EXAMPLES[names[3]][0] in msgs[names[3]] and names[3] in msgs[names[3]]
    assert "_VV.tif" in msgs[names[4]] and "1 NaN/inf" in msgs[names[4]]
    summary = report.summary()
    assert "converted 1 pairs" in summary and "skipped 5" in summary and "wrong band size: 1" in summary


def test_strict_failure_mid_build_leaves_no_dataset(ben_v1_dirs, tmp_path):
    s1, s2 = copy_ben_v1(ben_v1_dirs, tmp_path / "data")
    s1_name = BEN_V1_EXAMPLES[BEN_V1_SNOWY][0]  # `unassigned` is generated last: train/test are written before it
    vv = read_native_band(s1 / s1_name / f"{s1_name}_VV.tif").copy()
    vv[0, 0] = np.nan
    write_band_tif(s1 / s1_name / f"{s1_name}_VV.tif", vv)
    cache = tmp_path / "cache"
    builder = BigEarthNetMM(s1_dir=s1, s2_dir=s2, subset="all", cache_dir=str(cache), strict=True)
    with pytest.raises(Exception) as info:
        builder.download_and_prepare()
    chain, err = [], info.value
    while err is not None:
        chain.append(str(err))
        err = err.__cause__ or err.__context__
    assert any(s1_name in m and "_VV.tif" in m for m in chain)
    left = [p.name for p in cache.rglob("*") if p.is_file() and not p.name.endswith(".lock")]
    assert left == [] and not list(cache.rglob("*.incomplete"))
    with pytest.raises(FileNotFoundError):
        BigEarthNetMM(s1_dir=s1, s2_dir=s2, subset="all", cache_dir=str(cache)).as_dataset()
    # default (non-strict) mode on the same input converts the other five
    _, ds = build_bigearthnet(s1, s2, "all", tmp_path / "cache2")
    assert sum(d.num_rows for d in ds.values()) == 5


def test_bands_are_mapped_by_name_and_a_folder_with_other_bands_is_refused(ben_v1_dirs, tmp_path):
    s1, s2 = copy_ben_v1(ben_v1_dirs, tmp_path / "data")
    names = sorted(BEN_V1_EXAMPLES)
    extra = s2 / names[0] / f"{names[0]}_B10.tif"  # a band BigEarthNet does not have: not silently dropped
    write_band_tif(extra, np.ones((20, 20), np.uint16))
    relabelled = s2 / names[1] / f"{names[1]}_B02.tif"  # the file says B02, its GeoTIFF band says B8A
    with rasterio.open(relabelled, "r+") as dst:
        dst.set_band_description(1, "B8A")
    builder, ds = build_bigearthnet(s1, s2, "all", tmp_path / "cache")
    written = {r for split in ds.values() for r in split["id"]}
    assert names[0] not in written and names[1] not in written and len(written) == 4
    report = builder.conversion_report(ds)
    assert report.skipped[names[0]].reason == "band mismatch" and "B10" in str(report.skipped[names[0]])
    assert report.skipped[names[1]].reason == "band mismatch"
    assert "named band B02" in str(report.skipped[names[1]]) and "says B8A" in str(report.skipped[names[1]])
