"""BigEarthNet-MM builder, BEN-14K list and bad-input handling, on the 6 real example pairs shipped in
bigearthnet-common (offline; a few seconds)."""

from __future__ import annotations

import argparse
import hashlib
import importlib.util
import json
import re
import shutil
import sys
import tarfile
from pathlib import Path

import numpy as np
import pytest
import rasterio  # the dev extra: a missing reader fails these tests, never skips them

from helpers import reben_pairs, run_python, write_band_tif
from datasets_scripts import ben_metadata as meta
from datasets_scripts.bigearthnet import (
    BigEarthNetError,
    BigEarthNetMM,
    add_cli,
    read_band,
)

# The 6 example pairs: S2 name -> (S1 name, country, official split; the last one is on the snow list).
EXAMPLES = {
    "S2A_MSIL2A_20170613T101031_87_48": ("S1A_IW_GRDH_1SDV_20170613T165043_33UUP_87_48", "Austria", "test"),
    "S2A_MSIL2A_20170617T113321_36_85": ("S1A_IW_GRDH_1SDV_20170617T064724_29UPU_36_85", "Ireland", "train"),
    "S2A_MSIL2A_20170617T113321_4_55": ("S1A_IW_GRDH_1SDV_20170617T064724_29UPU_4_55", "Ireland", "train"),
    "S2A_MSIL2A_20171221T112501_56_35": ("S1A_IW_GRDH_1SDV_20171221T064238_29SND_56_35", "Portugal", "train"),
    "S2B_MSIL2A_20170924T93020_69_24": ("S1A_IW_GRDH_1SDV_20170925T043256_35VPK_69_24", "Finland", "train"),
    "S2B_MSIL2A_20180204T94161_57_38": ("S1A_IW_GRDH_1SDV_20180204T043253_35VPK_57_38", "Finland", "unassigned"),
}
SNOWY = "S2B_MSIL2A_20180204T94161_57_38"


@pytest.fixture(scope="module")
def example_dirs(ben_v1_dirs: tuple[Path, Path]) -> tuple[Path, Path]:
    """The 6 real v1 pairs of bigearthnet-common's wheel (tests/conftest.py): (s1_dir, s2_dir)."""
    return ben_v1_dirs


def _copy(example_dirs: tuple[Path, Path], dst: Path) -> tuple[Path, Path]:
    s1, s2 = dst / "S1", dst / "S2"
    shutil.copytree(example_dirs[0], s1)
    shutil.copytree(example_dirs[1], s2)
    return s1, s2


def _build(s1: Path, s2: Path, subset: str, cache: Path, **kw):
    num_proc = kw.pop("num_proc", None)
    builder = BigEarthNetMM(s1_dir=s1, s2_dir=s2, subset=subset, cache_dir=str(cache), **kw)
    builder.download_and_prepare(num_proc=num_proc)
    return builder, builder.as_dataset()


def _native(path: Path) -> np.ndarray:
    with rasterio.open(path) as src:
        return src.read(1)


@pytest.fixture(scope="module")
def all_examples(example_dirs, tmp_path_factory):
    """Subset `all` built once from the untouched examples."""
    return _build(*example_dirs, "all", tmp_path_factory.mktemp("cache_all"))


# ------------------------------------------------------------------------------------------ metadata


def test_ben14k_list_reproduces_paper_md5():
    rows = meta.ben14k_pairs()
    assert len(rows) == 14_832
    counts = {s: sum(r[2] == s for r in rows) for s in ("train", "validation", "test")}
    assert counts == {"train": 7_761, "validation": 3_508, "test": 3_563}
    data = meta.pair_list_bytes(rows)
    assert len(data) == 1_228_273 and data.count(b"\n") == 14_832
    assert hashlib.md5(data).hexdigest() == "0fcce0ed1b79a7432f9e9ea5f9888b90"
    assert b",val\n" in data and b",validation" not in data  # official CSV split names in the list file
    assert all(meta.s2_date(s2).isoformat() <= "2017-08-31" for s2, _, _ in rows)


def test_official_subset_sizes():
    assert len(meta.subset_pairs("recommended")) == 519_284
    assert len(meta.subset_pairs("all")) == 590_326
    with pytest.raises(ValueError, match="unknown BigEarthNet subset"):
        meta.subset_pairs("ben15k")


def test_43_to_19_mapping_table():
    table = meta.CLC43_TO_BEN19
    assert len(table) == 43
    dropped = {k for k, v in table.items() if v is None}
    assert dropped == {
        "Road and rail networks and associated land", "Port areas", "Airports", "Mineral extraction sites",
        "Dump sites", "Construction sites", "Green urban areas", "Sport and leisure facilities", "Bare rock",
        "Burnt areas", "Intertidal flats",
    }  # fmt: skip
    assert {v for v in table.values() if v} == set(meta.BEN19_CLASSES) and len(meta.BEN19_CLASSES) == 19
    assert meta.to_ben19(["Peatbogs", "Inland marshes", "Airports", "Sea and ocean"]) == [
        "Inland wetlands", "Marine waters"
    ]  # fmt: skip
    with pytest.raises(ValueError, match="Lava fields"):
        meta.to_ben19(["Lava fields"], where="patch X")


# ------------------------------------------------------------------------------------------ real pairs


def test_examples_all_subset_rows(all_examples, example_dirs):
    builder, ds = all_examples
    assert {k: v.num_rows for k, v in ds.items()} == {"train": 4, "test": 1, "unassigned": 1}
    report = builder.conversion_report(ds)
    assert report.skipped == {} and report.missing == 590_326 - 6
    rows = {r["id"]: r for split in ds.values() for r in split}
    assert set(rows) == set(EXAMPLES)
    for s2_name, (s1_name, country, split) in EXAMPLES.items():
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

    s1_dir, s2_dir = example_dirs
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
        np.testing.assert_array_equal(r["s1"][0], _native(s1_dir / s1_name / f"{s1_name}_VV.tif"))
        np.testing.assert_array_equal(r["s1"][1], _native(s1_dir / s1_name / f"{s1_name}_VH.tif"))


def test_s2_band_order_and_nearest_upsampling(all_examples, example_dirs):
    _, ds = all_examples
    name = "S2A_MSIL2A_20170613T101031_87_48"
    s2 = np.asarray(ds["test"][0]["s2"])
    folder = example_dirs[1] / name
    for c, band in enumerate(("B01", "B02", "B03", "B04", "B05", "B06", "B07", "B08", "B8A", "B09", "B11", "B12")):
        native = _native(folder / f"{name}_{band}.tif")
        step = 120 // native.shape[0]
        np.testing.assert_array_equal(s2[c, ::step, ::step], native, err_msg=band)  # lossless: native values back
        np.testing.assert_array_equal(s2[c], np.kron(native, np.ones((step, step), native.dtype)), err_msg=band)


def test_labels_mapped_by_hand(all_examples):
    _, ds = all_examples
    rows = {r["id"]: r for split in ds.values() for r in split}
    # JSON: Coniferous forest, Mixed forest, Transitional woodland/shrub, Peatbogs, Water bodies
    finland = rows["S2B_MSIL2A_20170924T93020_69_24"]
    assert finland["labels"] == [9, 10, 13, 15, 17]  # Coniferous, Mixed, Transitional, Inland wetlands, Inland waters
    assert finland["labels_43"][3] == "Peatbogs"
    # JSON: Non-irrigated arable land, Land principally occupied by agriculture, ...
    austria = rows["S2A_MSIL2A_20170613T101031_87_48"]
    assert austria["labels"] == [2, 6]  # Arable land, Land principally occupied by agriculture...
    assert (austria["tile"], austria["s2_date"]) == ("33UUP", "2017-06-13")


def test_examples_are_not_in_ben14k(example_dirs, tmp_path):
    assert not {s2 for s2, _, _ in meta.ben14k_pairs()} & set(EXAMPLES)
    with pytest.raises(FileNotFoundError, match="none of its 14,832 pairs"):
        BigEarthNetMM(s1_dir=example_dirs[0], s2_dir=example_dirs[1], subset="ben14k", cache_dir=str(tmp_path)).plan()


def test_recommended_subset_multiprocess(example_dirs, tmp_path):
    builder, ds = _build(*example_dirs, "recommended", tmp_path, num_proc=2)
    ids = {r for split in ds.values() for r in split["id"]}
    assert ids == set(EXAMPLES) - {SNOWY}  # the snowy pair is on the official exclusion list
    report = builder.conversion_report(ds)
    assert report.missing == 519_284 - 5 and report.converted == {"train": 4, "test": 1}
    assert "converted 5 pairs" in report.summary() and "missing 519,279 of the 519,284" in report.summary()


# ------------------------------------------------------------------------------------------ bad input


def _corrupt(s1: Path, s2: Path) -> dict[str, str]:
    """Break five of the six pairs in five ways; return S2/S1 name -> expected skip reason."""
    names = sorted(EXAMPLES)
    (s2 / names[0] / f"{names[0]}_B05.tif").unlink()  # missing band
    b02 = s2 / names[1] / f"{names[1]}_B02.tif"
    b02.write_bytes(b02.read_bytes()[:3000])  # truncated GeoTIFF
    write_band_tif(s2 / names[2] / f"{names[2]}_B8A.tif", np.ones((50, 50), np.uint16))  # wrong size
    shutil.rmtree(s2 / names[3])  # S2 partner gone
    s1_name = EXAMPLES[names[4]][0]
    vv = _native(s1 / s1_name / f"{s1_name}_VV.tif").copy()
    vv[5, 7] = np.nan
    write_band_tif(s1 / s1_name / f"{s1_name}_VV.tif", vv)  # NaN in SAR
    return {
        names[0]: "missing band file",
        names[1]: "corrupt GeoTIFF",
        names[2]: "wrong band size",
        names[3]: "S2 partner missing",
        names[4]: "NaN/inf in SAR",
    }


def test_bad_inputs_are_skipped_and_counted(example_dirs, tmp_path):
    s1, s2 = _copy(example_dirs, tmp_path / "data")
    expected = _corrupt(s1, s2)
    builder, ds = _build(s1, s2, "all", tmp_path / "cache")
    assert [r for split in ds.values() for r in split["id"]] == [SNOWY]  # only the intact pair is written
    report = builder.conversion_report(ds)
    assert {k: e.reason for k, e in report.skipped.items()} == expected
    msgs = {k: str(e) for k, e in report.skipped.items()}
    names = sorted(EXAMPLES)
    assert names[0] in msgs[names[0]] and f"{names[0]}_B05.tif" in msgs[names[0]]
    assert f"{names[1]}_B02.tif" in msgs[names[1]]
    assert f"{names[2]}_B8A.tif" in msgs[names[2]] and "(1, 50, 50)" in msgs[names[2]] and "(1, 60, 60)" in msgs[names[2]]
    assert EXAMPLES[names[3]][0] in msgs[names[3]] and names[3] in msgs[names[3]]
    assert "_VV.tif" in msgs[names[4]] and "1 NaN/inf" in msgs[names[4]]
    summary = report.summary()
    assert "converted 1 pairs" in summary and "skipped 5" in summary and "wrong band size: 1" in summary


def test_read_band_names_file_and_shapes(tmp_path):
    path = tmp_path / "P_B05.tif"
    write_band_tif(path, np.ones((61, 60), np.uint16))
    with pytest.raises(BigEarthNetError, match=r"patch P: P_B05.tif .* \(1, 61, 60\), expected \(1, 60, 60\)"):
        read_band(path, "P", 60, "uint16")
    write_band_tif(path, np.ones((60, 60), np.float32))
    with pytest.raises(BigEarthNetError, match="dtype float32, expected uint16"):
        read_band(path, "P", 60, "uint16")


def test_strict_failure_mid_build_leaves_no_dataset(example_dirs, tmp_path):
    s1, s2 = _copy(example_dirs, tmp_path / "data")
    s1_name = EXAMPLES[SNOWY][0]  # the `unassigned` split is generated last: train/test are written before it
    vv = _native(s1 / s1_name / f"{s1_name}_VV.tif").copy()
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
    _, ds = _build(s1, s2, "all", tmp_path / "cache2")
    assert sum(d.num_rows for d in ds.values()) == 5


# ------------------------------------------------------------------------------------------ reBEN


def test_reben_layout(example_dirs, tmp_path):
    import pyarrow as pa
    import pyarrow.parquet as pq

    v1_s2, v1_s1 = "S2A_MSIL2A_20170613T101031_87_48", EXAMPLES["S2A_MSIL2A_20170613T101031_87_48"][0]
    tile_dir = "S2A_MSIL2A_20170613T101031_N9999_R022_T33UUP"
    patch = f"{tile_dir}_87_48"
    s2_root, s1_root = tmp_path / "BigEarthNet-S2", tmp_path / "BigEarthNet-S1"
    (s2_root / tile_dir / patch).mkdir(parents=True)
    for tif in (example_dirs[1] / v1_s2).glob("*.tif"):
        shutil.copy(tif, s2_root / tile_dir / patch / tif.name.replace(v1_s2, patch))
    shutil.copytree(example_dirs[0] / v1_s1, s1_root / "S1A_IW_GRDH_1SDV_20170613T165043" / v1_s1)
    table = pa.table({
        "patch_id": [patch, "S2B_MSIL2A_20180525T094029_N9999_R036_T34TDQ_10_10"],
        "labels": [["Arable land", "Land principally occupied by agriculture, with significant areas of natural vegetation"],
                   ["Broad-leaved forest"]],
        "split": ["validation", "train"],
        "country": ["Austria", "Serbia"],
        "s1_name": [v1_s1, "S1B_IW_GRDH_1SDV_20180525T163000_34TDQ_10_10"],
    })  # fmt: skip
    pq.write_table(table, tmp_path / "metadata.parquet")
    builder, ds = _build(s1_root, s2_root, "reben", tmp_path / "cache", reben_metadata=tmp_path / "metadata.parquet")
    assert list(ds) == ["validation"]
    row = ds["validation"][0]
    assert (row["id"], row["s1_name"], row["split"], row["country"]) == (patch, v1_s1, "validation", "Austria")
    assert row["labels"] == [2, 6] and row["labels_43"] is None and row["tile"] == "33UUP"
    np.testing.assert_array_equal(np.asarray(row["s2"])[1], _native(example_dirs[1] / v1_s2 / f"{v1_s2}_B02.tif"))
    report = builder.conversion_report(ds)
    assert report.missing == 1 and report.subset_size == 2


# ------------------------------------------------------------------------------------------ CLI


def _run(argv: list[str]) -> int:
    parser = argparse.ArgumentParser()
    add_cli(parser.add_subparsers(dest="command"))
    args = parser.parse_args(argv)
    return args.func(args)


def test_cli_list_only(tmp_path, capsys):
    out = tmp_path / "ben14k.csv"
    assert _run(["bigearthnet", "--subset", "ben14k", "--list-only", "--list-out", str(out)]) == 0
    printed = capsys.readouterr().out
    assert "14,832 pairs (train 7,761, val 3,508, test 3,563)" in printed
    assert "0fcce0ed1b79a7432f9e9ea5f9888b90" in printed
    assert hashlib.md5(out.read_bytes()).hexdigest() == "0fcce0ed1b79a7432f9e9ea5f9888b90"


def test_cli_convert_exports_parquet_and_prints_summary(example_dirs, tmp_path, capsys):
    import pyarrow.parquet as pq

    out = tmp_path / "out"
    argv = ["bigearthnet", "--s1-dir", str(example_dirs[0]), "--s2-dir", str(example_dirs[1]),
            "--output-dir", str(out), "--subset", "recommended", "--num-proc", "1"]  # fmt: skip
    assert _run(argv) == 0
    assert "bigearthnet recommended: converted 5 pairs (train 4, test 1), missing 519,279" in capsys.readouterr().out
    table = pq.read_table(sorted((out / "data").glob("train-*.parquet")))
    assert table.num_rows == 4 and set(table["id"].to_pylist()) < set(EXAMPLES)
    assert "BigEarthNet-MM (recommended)" in (out / "README.md").read_text()


# ------------------------------------------------------------------------------------------ issue 12: real layouts
def _cli_main(argv: list[str], capsys) -> tuple[int, str, str]:
    from datasets_scripts.__main__ import main

    code = main(argv)
    captured = capsys.readouterr()
    return code, captured.out, captured.err


def test_reben_folders_under_a_v1_subset_say_which_layout_and_subset(reben_dirs, tmp_path, capsys):
    code, _, err = _cli_main(["bigearthnet", "--s1-dir", str(reben_dirs["s1"]), "--s2-dir", str(reben_dirs["s2"]),
                              "--output-dir", str(tmp_path / "out")], capsys)
    assert code == 2 and not (tmp_path / "out").exists()
    lines = err.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("error: ") and "Traceback" not in err
    assert "BigEarthNet v2 / reBEN" in err and "--subset reben" in err
    assert str(reben_dirs["metadata"]) in err  # found beside the S2 folder: nothing to guess


def test_v1_pairs_outside_ben14k_say_which_subset_fits(ben_v1_dirs, tmp_path, capsys):
    code, _, err = _cli_main(["bigearthnet", "--s1-dir", str(ben_v1_dirs[0]), "--s2-dir", str(ben_v1_dirs[1]),
                              "--output-dir", str(tmp_path / "out")], capsys)
    assert code == 2 and "Traceback" not in err
    assert "BigEarthNet v1" in err and "None of its 6 S2 patches is in ben14k" in err
    assert "recommended: 5" in err and "--subset all" in err


def test_missing_partner_is_named_for_a_sample(reben_dirs, tmp_path, capsys):
    s1 = tmp_path / "S1"
    s1.mkdir()  # the S1 download is missing: every pair is half
    code, _, err = _cli_main(["bigearthnet", "--s1-dir", str(s1), "--s2-dir", str(reben_dirs["s2"]), "--subset",
                              "reben", "--output-dir", str(tmp_path / "out")], capsys)
    first = sorted(reben_pairs(reben_dirs), key=lambda r: r["patch_id"])
    assert code == 2 and "18 half pairs" in err and "its S1 partner" in err and "is missing under" in err
    assert any(r["patch_id"] in err and r["s1_name"] in err for r in first)


def test_every_pair_skipped_leaves_no_export(ben_v1_dirs, tmp_path, capsys):
    s1, s2 = _copy(ben_v1_dirs, tmp_path / "data")
    for folder in s2.iterdir():
        b02 = folder / f"{folder.name}_B02.tif"
        b02.write_bytes(b02.read_bytes()[:3000])  # truncated GeoTIFF in every pair
    out = tmp_path / "out"
    code, stdout, err = _cli_main(["bigearthnet", "--s1-dir", str(s1), "--s2-dir", str(s2), "--subset", "all",
                                   "--output-dir", str(out), "--num-proc", "1"], capsys)
    assert code == 1 and "converted 0 pairs" in stdout and "corrupt GeoTIFF: 6" in stdout
    assert not out.exists() and "error: every pair was skipped" in err and "Traceback" not in err


def test_bands_are_mapped_by_name_and_a_folder_with_other_bands_is_refused(ben_v1_dirs, tmp_path):
    s1, s2 = _copy(ben_v1_dirs, tmp_path / "data")
    names = sorted(EXAMPLES)
    extra = s2 / names[0] / f"{names[0]}_B10.tif"  # a band BigEarthNet does not have: not silently dropped
    write_band_tif(extra, np.ones((20, 20), np.uint16))
    relabelled = s2 / names[1] / f"{names[1]}_B02.tif"  # the file says B02, its GeoTIFF band says B8A
    with rasterio.open(relabelled, "r+") as dst:
        dst.set_band_description(1, "B8A")
    builder, ds = _build(s1, s2, "all", tmp_path / "cache")
    written = {r for split in ds.values() for r in split["id"]}
    assert names[0] not in written and names[1] not in written and len(written) == 4
    report = builder.conversion_report(ds)
    assert report.skipped[names[0]].reason == "band mismatch" and "B10" in str(report.skipped[names[0]])
    assert report.skipped[names[1]].reason == "band mismatch"
    assert "named band B02" in str(report.skipped[names[1]]) and "says B8A" in str(report.skipped[names[1]])


def test_s2_only_v1_folder_exports_without_s1(ben_v1_dirs, tmp_path, capsys):
    out = tmp_path / "s2only"
    code, stdout, err = _cli_main(["bigearthnet", "--s2-dir", str(ben_v1_dirs[1]), "--subset", "all",
                                   "--output-dir", str(out), "--num-proc", "1"], capsys)
    assert code == 0, err
    from crjepa.data.loading import load_paired_dataset

    ds = load_paired_dataset(out)
    assert "s1" not in ds.column_names and sorted(ds["id"]) == sorted(EXAMPLES)
    assert "BigEarthNet-S2 (all)" in (out / "README.md").read_text()
    # S2 patches alone are counted as patches (not "pairs ... single-sensor rows"), and subset `all` (every
    # patch found on disk) reports nothing missing (it has no list: not "missing 590,320")
    summary = stdout.strip().splitlines()[-1]
    assert summary.startswith("bigearthnet all: converted 6 S2 patches (train 4, test 1, unassigned 1), every S2 "
                              "patch found on disk, skipped 0"), summary
    assert "pairs" not in summary and "single-sensor" not in summary and "missing" not in summary


def test_s2_only_reben_export_counts_patches_and_v1_all_reports_nothing_missing(reben_dirs, ben_v1_dirs, tmp_path,
                                                                                 capsys):
    code, stdout, err = _cli_main(["bigearthnet", "--s2-dir", str(reben_dirs["s2"]), "--subset", "reben",
                                   "--output-dir", str(tmp_path / "s2"), "--num-proc", "1"], capsys)
    assert code == 0, err
    assert ("converted 18 S2 patches (train 6, validation 6, test 6), missing 0 of the 18 S2 patches of the subset"
            in stdout), stdout
    plans = [line for line in err.splitlines() if "to convert" in line]  # the plan, as the user sees it
    code, stdout, err = _cli_main(["bigearthnet", "--s1-dir", str(ben_v1_dirs[0]), "--s2-dir", str(ben_v1_dirs[1]),
                                   "--subset", "all", "--output-dir", str(tmp_path / "v1"), "--num-proc", "1"], capsys)
    assert code == 0, err
    assert "converted 6 pairs (train 4, test 1, unassigned 1), every pair found on disk, skipped 0" in stdout
    assert "missing" not in stdout.strip().splitlines()[-1]
    plans += [line for line in err.splitlines() if "to convert" in line]
    assert plans == ["BigEarthNet reben: 18 S2 patches to convert, 0 missing, 0 skipped before reading",
                     "BigEarthNet all: 6 pairs to convert, 0 skipped before reading"], plans


def test_v1_folders_under_subset_reben_name_the_layout_not_a_metadata_file(ben_v1_dirs, tmp_path, capsys):
    code, _, err = _cli_main(["bigearthnet", "--s1-dir", str(ben_v1_dirs[0]), "--s2-dir", str(ben_v1_dirs[1]),
                              "--subset", "reben", "--output-dir", str(tmp_path / "out")], capsys)
    assert code == 2 and not (tmp_path / "out").exists()
    lines = err.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("error: ") and "Traceback" not in err
    assert "Found the BigEarthNet v1" in err and "use --subset all" in err
    assert "metadata.parquet" not in err and "--reben-metadata" not in err


def test_split_by_tile_with_fewer_tiles_than_splits_warns(reben_dirs, tmp_path, capsys):
    """The reBEN sample lies in one tile: --split-by tile can fill only one split, and says so (it used to put
    every row in train silently; training then stopped on an empty test split)."""
    code, stdout, err = _cli_main(["bigearthnet", "--s1-dir", str(reben_dirs["s1"]), "--s2-dir",
                                   str(reben_dirs["s2"]), "--subset", "reben", "--keep-unpaired", "--split-by",
                                   "tile", "--output-dir", str(tmp_path / "out"), "--num-proc", "1"], capsys)
    assert code == 0, err
    assert "converted 18 pairs (train 18)" in stdout
    warnings = [line for line in err.splitlines() if "spatial split" in line]
    assert len(warnings) == 1 and warnings[0].startswith("warning: spatial split: "), err
    assert "18 rows lie in 1 group(s)" in warnings[0] and "'validation' and 'test' got no rows" in warnings[0]
    assert "--split-by block" in warnings[0]


def test_missing_extra_names_the_install_command(ben_v1_dirs, tmp_path, capsys, monkeypatch):
    monkeypatch.setitem(sys.modules, "rasterio", None)  # as if the bigearthnet extra were not installed
    code, _, err = _cli_main(["bigearthnet", "--s1-dir", str(ben_v1_dirs[0]), "--s2-dir", str(ben_v1_dirs[1]),
                              "--subset", "all", "--output-dir", str(tmp_path / "out")], capsys)
    assert code == 2 and 'pip install "crjepa[bigearthnet]"' in err and len(err.strip().splitlines()) == 1


def test_bad_folder_is_one_error_line_without_traceback(tmp_path):
    run = run_python(["-m", "datasets_scripts", "bigearthnet", "--s1-dir", tmp_path / "nope", "--s2-dir",
                      tmp_path, "--output-dir", tmp_path / "out"])
    assert run.returncode == 2 and "Traceback" not in run.stderr
    assert run.stderr.strip().splitlines()[-1] == f"error: BigEarthNet: s1_dir {tmp_path / 'nope'} is not a folder"
# ------------------------------------------------------------------------------------------ partially paired, splits


def test_cli_keep_unpaired_keeps_half_pairs_as_single_sensor_rows(example_dirs, all_examples, tmp_path, capsys):
    from crjepa.data.loading import load_paired_dataset, make_dataloader, pairing_summary

    s1, s2 = _copy(example_dirs, tmp_path / "data")
    names = sorted(EXAMPLES)
    s1_only, s2_only = names[0], names[4]  # Austria keeps only S1, Finland (train) only S2
    shutil.rmtree(s2 / s1_only)
    shutil.rmtree(s1 / EXAMPLES[s2_only][0])
    argv = ["bigearthnet", "--s1-dir", str(s1), "--s2-dir", str(s2), "--subset", "all", "--num-proc", "1"]
    assert _run([*argv, "--output-dir", str(tmp_path / "paired-only")]) == 0
    assert "converted 4 pairs" in capsys.readouterr().out  # without the flag the two half pairs are skipped
    out = tmp_path / "out"  # the README's command
    assert _run([*argv, "--output-dir", str(out), "--keep-unpaired", "--split-by", "tile"]) == 0
    assert re.search(r"converted 6 pairs \(.*unassigned 1, 2 of them single-sensor rows\)", capsys.readouterr().out)
    ds = load_paired_dataset(out, cache_dir=str(tmp_path / "hf"))
    assert pairing_summary(ds) == {"s1+s2": 4, "s1": 1, "s2": 1}
    full = {r["id"]: r for split in all_examples[1].values() for r in split}
    rows = {r["id"]: r for r in ds}
    for name in EXAMPLES:  # the same labels and metadata as when both patches are there
        for key in ("labels", "country", "tile", "s2_date"):
            assert rows[name][key] == full[name][key], (name, key)
    tiles: dict[str, set[str]] = {}
    for r in rows.values():
        if r["split"] != "unassigned":
            tiles.setdefault(r["tile"], set()).add(r["split"])
    assert len(tiles) == 4 and all(len(v) == 1 for v in tiles.values()) and rows[SNOWY]["split"] == "unassigned"
    assert rows[s1_only]["s2"] is None and rows[s2_only]["s1"] is None and rows[s2_only]["s1_name"] is None
    batch = next(iter(make_dataloader(ds, ["s1", "s2"], 6, shuffle=False)))
    for j, name in enumerate(batch["id"]):
        assert bool(batch["present"]["s2"][j]) == (name != s1_only)
        assert bool(batch["present"]["s1"][j]) == (name != s2_only)
        for sensor in ("s1", "s2"):
            expected = np.asarray(full[name][sensor])
            if not batch["present"][sensor][j]:
                expected = np.zeros_like(expected)
            np.testing.assert_array_equal(batch[sensor][j].numpy(), expected)


def test_split_by_tile_and_block_never_split_a_tile_or_block(example_dirs, tmp_path):
    import copy

    from datasets_scripts.bigearthnet import ConversionPlan, resplit, spatial_group

    builder = BigEarthNetMM(s1_dir=example_dirs[0], s2_dir=example_dirs[1], subset="all",
                            cache_dir=str(tmp_path / "c"), split_by="tile", split_fractions=(0.5, 0.25, 0.25))
    official = BigEarthNetMM(s1_dir=example_dirs[0], s2_dir=example_dirs[1], subset="all",
                             cache_dir=str(tmp_path / "c")).plan()
    assert {t["s2_name"]: t["split"] for t in official.tasks} == {k: v[2] for k, v in EXAMPLES.items()}
    for split_by, block_km in (("tile", 50.0), ("block", 10.0)):
        splits = {}
        for seed in range(4):
            tasks = (builder.plan() if (split_by, seed) == ("tile", 0) else
                     resplit(ConversionPlan("all", 6, copy.deepcopy(official.tasks)), split_by, block_km, seed,
                             (0.5, 0.25, 0.25))).tasks
            by_group: dict[str, set[str]] = {}
            for t in tasks:
                if t["split"] != "unassigned":  # rows without an official split are not re-split
                    by_group.setdefault(spatial_group(t, split_by, block_km), set()).add(t["split"])
            assert len(by_group) == (4 if split_by == "tile" else 5) and all(len(s) == 1 for s in by_group.values())
            assert {t["split"] for t in tasks if t["s2_name"] == SNOWY} == {"unassigned"}  # stays out
            splits[seed] = tuple(t["split"] for t in tasks)
        assert len(set(splits.values())) > 1
    ireland = [{"s2_name": n, "s1_name": EXAMPLES[n][0], "s2_folder": None} for n in sorted(EXAMPLES)
               if EXAMPLES[n][1] == "Ireland"]  # 29UPU patches 36_85 and 4_55: ~38 km apart
    assert {spatial_group(t, "tile") for t in ireland} == {"29UPU"}
    assert len({spatial_group(t, "block", 10.0) for t in ireland}) == 2
    assert len({spatial_group(t, "block", 120.0) for t in ireland}) == 1


# ------------------------------------------------------------------------------------------ the ConfigILM LMDB
def _rows(folder: Path) -> tuple[dict, dict]:
    from crjepa.data.loading import load_paired_dataset

    ds = load_paired_dataset(folder)
    return {r["id"]: r for r in ds}, ds.features


def test_configilm_lmdb_converts_bit_for_bit_like_the_geotiff_folders(reben_lmdb, reben_dirs, tmp_path, capsys):
    """The LMDB of safetensors patches (configilm's wheel) and the GeoTIFF folders built from the same patches give
    the same export: every row, every pixel, every metadata field, the same features; two worker processes."""
    code, stdout, err = _cli_main(["bigearthnet", "--lmdb", str(reben_lmdb), "--output-dir", str(tmp_path / "lmdb"),
                                   "--num-proc", "2"], capsys)  # subset reben and metadata.parquet found beside it
    assert code == 0, err
    assert "converted 18 pairs (train 6, validation 6, test 6), missing 0 of the 18 pairs" in stdout
    code, _, err = _cli_main(["bigearthnet", "--s1-dir", str(reben_dirs["s1"]), "--s2-dir", str(reben_dirs["s2"]),
                              "--subset", "reben", "--output-dir", str(tmp_path / "tif"), "--num-proc", "1"], capsys)
    assert code == 0, err
    lmdb_rows, lmdb_features = _rows(tmp_path / "lmdb")
    tif_rows, tif_features = _rows(tmp_path / "tif")
    assert lmdb_features == tif_features and sorted(lmdb_rows) == sorted(tif_rows) and len(lmdb_rows) == 18
    for name, row in lmdb_rows.items():
        for column, value in row.items():
            if column in ("s1", "s2"):
                a, b = np.asarray(value), np.asarray(tif_rows[name][column])
                assert a.dtype == b.dtype and a.tobytes() == b.tobytes(), (name, column)
            else:
                assert value == tif_rows[name][column], (name, column)
    assert "ConfigILM LMDB" in (tmp_path / "lmdb" / "README.md").read_text()


def test_lmdb_resampling_matches_rasterio_on_the_geotiffs(reben_lmdb, reben_dirs):
    from datasets_scripts.bigearthnet import read_s1, read_s1_lmdb, read_s2, read_s2_lmdb

    row = reben_pairs(reben_dirs)[0]
    s2_folder = next(reben_dirs["s2"].glob(f"*/{row['patch_id']}"))
    s1_folder = next(reben_dirs["s1"].glob(f"*/{row['s1_name']}"))
    for resampling in ("nearest", "bilinear"):
        np.testing.assert_array_equal(read_s2_lmdb(str(reben_lmdb), row["patch_id"], resampling),
                                      read_s2(s2_folder, row["patch_id"], resampling))
    np.testing.assert_array_equal(read_s1_lmdb(str(reben_lmdb), row["s1_name"]), read_s1(s1_folder, row["s1_name"]))


def _tampered_lmdb(reben_lmdb: Path, dst: Path, change) -> Path:
    """A copy of the LMDB (with metadata.parquet beside it) whose entries ``change(name, bands)`` rewrites: a dict
    of bands, raw bytes, or None to drop the entry."""
    import lmdb
    from safetensors.numpy import load, save

    out = dst / "BigEarthNet-V2-LMDB"
    shutil.copy(reben_lmdb.parent / "metadata.parquet", dst / "metadata.parquet")
    source = lmdb.open(str(reben_lmdb), readonly=True, lock=False)
    target = lmdb.open(str(out), map_size=1 << 28)
    with source.begin() as read, target.begin(write=True) as write:
        for key, value in read.cursor():
            new = change(key.decode(), load(bytes(value)))
            if new is not None:
                write.put(key, new if isinstance(new, bytes) else save(new))
    source.close()
    target.close()
    return out


def test_bad_lmdb_entries_are_skipped_and_counted_and_bad_arguments_are_one_line(reben_lmdb, reben_dirs, tmp_path,
                                                                                  capsys):
    rows = sorted(reben_pairs(reben_dirs), key=lambda r: r["patch_id"])[:3]
    extra_band, truncated, no_s1 = rows[0]["patch_id"], rows[1]["patch_id"], rows[2]["s1_name"]

    def change(name, bands):
        if name == extra_band:
            return {**bands, "B10": bands["B01"]}
        if name == truncated:
            from safetensors.numpy import save

            return save(bands)[:100]
        return None if name == no_s1 else bands

    lmdb_dir = _tampered_lmdb(reben_lmdb, tmp_path, change)
    code, stdout, err = _cli_main(["bigearthnet", "--lmdb", str(lmdb_dir), "--output-dir", str(tmp_path / "out"),
                                   "--num-proc", "1"], capsys)
    assert code == 0, err
    assert "converted 15 pairs" in stdout and "skipped 3" in stdout
    assert "band mismatch: 1" in stdout and "corrupt safetensors: 1" in stdout and "S1 partner missing: 1" in stdout
    code, stdout, _ = _cli_main(["bigearthnet", "--lmdb", str(lmdb_dir), "--keep-unpaired", "--output-dir",
                                 str(tmp_path / "kept"), "--num-proc", "1"], capsys)
    assert code == 0 and "converted 16 pairs" in stdout and "1 of them single-sensor rows" in stdout
    for argv, expected in (
        (["--lmdb", str(tmp_path)], "is not an LMDB folder (no data.mdb)"),
        (["--lmdb", str(lmdb_dir), "--subset", "all"], "use --subset reben"),
        (["--lmdb", str(lmdb_dir), "--s2-dir", str(reben_dirs["s2"])], "not both"),
    ):
        code, _, err = _cli_main(["bigearthnet", *argv, "--output-dir", str(tmp_path / "never")], capsys)
        lines = err.strip().splitlines()
        assert code == 2 and len(lines) == 1 and lines[0].startswith("error: ") and expected in err, err
        assert not (tmp_path / "never").exists()
