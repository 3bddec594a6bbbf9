"""datasets_scripts/bigearthnet/plans.py: the pairs of a subset present, missing or unusable before reading, on the
real v1 pairs and on a reBEN layout with its metadata.parquet."""

from __future__ import annotations

import shutil

import numpy as np
import pytest

from datasets_scripts import ben_metadata as meta
from datasets_scripts.bigearthnet import BigEarthNetMM

from helpers import (
    BEN_V1_EXAMPLES,
    build_bigearthnet,
    read_native_band,
    reben_pairs,
    run_datasets_scripts,
)


def test_examples_are_not_in_ben14k(ben_v1_dirs, tmp_path):
    assert not {s2 for s2, _, _ in meta.ben14k_pairs()} & set(BEN_V1_EXAMPLES)
    with pytest.raises(FileNotFoundError, match="none of its 14,832 pairs"):
        BigEarthNetMM(s1_dir=ben_v1_dirs[0], s2_dir=ben_v1_dirs[1], subset="ben14k", cache_dir=str(tmp_path)).plan()


def test_reben_layout(ben_v1_dirs, tmp_path):
    import pyarrow as pa
    import pyarrow.parquet as pq

    v1_s2, v1_s1 = "S2A_MSIL2A_20170613T101031_87_48", BEN_V1_EXAMPLES["S2A_MSIL2A_20170613T101031_87_48"][0]
    tile_dir = "S2A_MSIL2A_20170613T101031_N9999_R022_T33UUP"
    patch = f"{tile_dir}_87_48"
    s2_root, s1_root = tmp_path / "BigEarthNet-S2", tmp_path / "BigEarthNet-S1"
    (s2_root / tile_dir / patch).mkdir(parents=True)
    for tif in (ben_v1_dirs[1] / v1_s2).glob("*.tif"):
        shutil.copy(tif, s2_root / tile_dir / patch / tif.name.replace(v1_s2, patch))
    shutil.copytree(ben_v1_dirs[0] / v1_s1, s1_root / "S1A_IW_GRDH_1SDV_20170613T165043" / v1_s1)
    table = pa.table({
        "patch_id": [patch, "S2B_MSIL2A_20180525T094029_N9999_R036_T34TDQ_10_10"],
        "labels": [["Arable land",
                    "Land principally occupied by agriculture, with significant areas of natural vegetation"],
                   ["Broad-leaved forest"]],
        "split": ["validation", "train"],
        "country": ["Austria", "Serbia"],
        "s1_name": [v1_s1, "S1B_IW_GRDH_1SDV_20180525T163000_34TDQ_10_10"],
    })  # fmt: skip
    pq.write_table(table, tmp_path / "metadata.parquet")
    builder, ds = build_bigearthnet(
        s1_root, s2_root, "reben", tmp_path / "cache", reben_metadata=tmp_path / "metadata.parquet"
    )
    assert list(ds) == ["validation"]
    row = ds["validation"][0]
    assert (row["id"], row["s1_name"], row["split"], row["country"]) == (patch, v1_s1, "validation", "Austria")
    assert row["labels"] == [2, 6] and row["labels_43"] is None and row["tile"] == "33UUP"
    b02 = read_native_band(ben_v1_dirs[1] / v1_s2 / f"{v1_s2}_B02.tif")
    np.testing.assert_array_equal(np.asarray(row["s2"])[1], b02)
    report = builder.conversion_report(ds)
    assert report.missing == 1 and report.subset_size == 2


def test_missing_partner_is_named_for_a_sample(reben_dirs, tmp_path, capsys):
    s1 = tmp_path / "S1"
    s1.mkdir()  # the S1 download is missing: every pair is half
    code, _, err = run_datasets_scripts(
        [
            "bigearthnet",
            "--s1-dir",
            str(s1),
            "--s2-dir",
            str(reben_dirs["s2"]),
            "--subset",
            "reben",
            "--output-dir",
            str(tmp_path / "out"),
        ],
        capsys,
    )
    first = sorted(reben_pairs(reben_dirs), key=lambda r: r["patch_id"])
    assert code == 2 and "18 half pairs" in err and "its S1 partner" in err and "is missing under" in err
    assert any(r["patch_id"] in err and r["s1_name"] in err for r in first)
