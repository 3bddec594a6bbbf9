"""DSRSID (PNG folders and HDF5 .mat), CBRSIR_VS and the generic paired-CSV builder on tiny fixtures written
here, plus clear errors (wrong shape, missing file, unreadable file) that leave no output folder behind."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

from datasets_scripts.cbrsir_vs import CBRSIRVS
from datasets_scripts.common import DataError, export_builder
from datasets_scripts.dsrsid import DSRSID
from datasets_scripts.paired import PairedFolder
from helpers import write_png, write_tif

RNG = np.random.default_rng(0)


def rand(shape, dtype=np.uint8) -> np.ndarray:
    if np.dtype(dtype).kind == "f":
        return RNG.normal(-12, 4, shape).astype(dtype)
    return RNG.integers(0, 255, shape).astype(dtype)


def rows_by_id(builder) -> dict[str, dict]:
    builder.download_and_prepare()
    dd = builder.as_dataset()
    return {r["id"]: {**r, "_split": name} for name in dd for r in dd[name].with_format("numpy")}


# ---------------------------------------------------------------------------------------------------- DSRSID
@pytest.fixture
def dsrsid_png(tmp_path) -> tuple[Path, dict]:
    root, truth = tmp_path / "dsrsid", {}
    for cls in ("forest", "water"):
        for i in (1, 2, 10):  # natural order: 2 before 10
            pan = write_png(root / "Pandata" / cls / f"{i}.png", rand((1, 32, 32)))
            ms = write_png(root / "Muldata" / cls / f"{i}.png", rand((4, 8, 8)))
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
    pan, ms = rand((6, 1, 16, 16)), rand((6, 4, 4, 4))
    types = np.array([[1, 2, 1, 2, 1, 2]], dtype=np.float64)  # MATLAB stores doubles
    path = tmp_path / "DSRSID.mat"
    flip = (lambda a: a.transpose(3, 2, 1, 0)) if matlab_order else (lambda a: a)
    with h5py.File(path, "w") as h5:
        h5["PAN_IMAGES"], h5["MUL_IMAGES"], h5["LAND_COVER_TYPES"] = flip(pan), flip(ms), types
    rows = rows_by_id(DSRSID(cache_dir=str(tmp_path / "c"), data_dir=str(path), test_per_class=1,
                             class_names=("a", "b")))
    assert len(rows) == 6
    for i in range(6):
        cls = "ab"[int(types[0, i]) - 1]
        row = rows[f"{cls}/{i:06d}"]
        np.testing.assert_array_equal(row["pan"], pan[i])
        np.testing.assert_array_equal(row["ms"], ms[i])
        assert list(row["labels"]) == [int(types[0, i]) - 1]
    assert {k for k, r in rows.items() if r["split"] == "test"} == {"a/000004", "b/000005"}


# ---------------------------------------------------------------------------------------------------- CBRSIR_VS
@pytest.fixture
def cbrsir(tmp_path) -> tuple[Path, dict]:
    root, truth = tmp_path / "cbrsir", {}
    for cls in ("farmland", "harbour"):
        for stem in ("x1", "x2", "x3"):
            rgb = write_png(root / "optical" / cls / f"{stem}.png", rand((3, 16, 16)))
            sar = write_tif(root / "sar" / cls / f"{stem}.tif", rand((1, 8, 8), np.float32))
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


# ---------------------------------------------------------------------------------------------------- paired CSV
@pytest.fixture
def paired_csv(tmp_path) -> tuple[Path, dict]:
    root, truth = tmp_path / "own", {}
    root.mkdir()
    lines = ["id,radar,optical,labels,split,region"]
    for i, (fmt, labels, split) in enumerate([("npy", "crop;town", "train"), ("tif", "water", "test"),
                                              ("png", "crop", "train")]):
        radar = rand((2, 8, 8), np.float32)
        np.save(root / f"r{i}.npy", radar)
        optical = rand((3, 16, 16))
        {"npy": lambda p, a: np.save(p, a), "tif": write_tif, "png": write_png}[fmt](root / f"o{i}.{fmt}", optical)
        lines.append(f"p{i},r{i}.npy,o{i}.{fmt},{labels},{split},north")
        truth[f"p{i}"] = (radar, optical, labels.split(";"), split)
    (root / "pairs.csv").write_text("\n".join(lines) + "\n")
    return root / "pairs.csv", truth


def test_paired_csv_reads_npy_png_tif_sensor_names_from_header(paired_csv, tmp_path):
    csv_path, truth = paired_csv
    builder = PairedFolder(cache_dir=str(tmp_path / "c"), csv_path=str(csv_path))
    rows = rows_by_id(builder)
    names = builder.info.features["labels"].feature.names
    assert names == ["crop", "town", "water"]
    assert list(builder.info.features)[:3] == ["id", "radar", "optical"]
    assert builder.info.features["optical"].shape == (3, 16, 16)
    for key, (radar, optical, labels, split) in truth.items():
        np.testing.assert_array_equal(rows[key]["radar"], radar)
        np.testing.assert_array_equal(rows[key]["optical"], optical)
        assert [names[i] for i in rows[key]["labels"]] == labels
        assert rows[key]["split"] == split and rows[key]["region"] == "north"


def test_paired_wrong_shape_names_file_sensor_and_shapes_and_leaves_no_output(paired_csv, tmp_path):
    csv_path, _ = paired_csv
    np.save(csv_path.parent / "r1.npy", rand((2, 9, 8), np.float32))
    out = tmp_path / "export"
    builder = PairedFolder(cache_dir=str(tmp_path / "c"), csv_path=str(csv_path))
    with pytest.raises(DataError) as err:
        export_builder(builder, out, num_proc=1)
    msg = str(err.value)
    assert "r1.npy" in msg and "'radar'" in msg and "(2, 8, 8)" in msg and "(2, 9, 8)" in msg
    assert not out.exists() and not list(tmp_path.glob(".export*"))


@pytest.mark.parametrize("damaged, message", [
    ("o2.png", r"Missing image file: .*o2\.png"),  # removed
    ("o1.tif", r"Cannot read image file .*o1\.tif"),  # not a GeoTIFF
])
def test_paired_missing_or_unreadable_file_is_named(paired_csv, tmp_path, damaged, message):
    csv_path, _ = paired_csv
    if damaged.endswith(".png"):
        (csv_path.parent / damaged).unlink()
    else:
        (csv_path.parent / damaged).write_bytes(b"this is not a GeoTIFF")
    out = tmp_path / "export"
    with pytest.raises(DataError, match=message):
        export_builder(PairedFolder(cache_dir=str(tmp_path / "c"), csv_path=str(csv_path)), out, num_proc=1)
    assert not out.exists() and not list(tmp_path.glob(".export*"))


def test_paired_unknown_label_is_an_error(paired_csv, tmp_path):
    csv_path, _ = paired_csv
    with pytest.raises(DataError, match="unknown label 'water'"):
        PairedFolder(cache_dir=str(tmp_path / "c"), csv_path=str(csv_path),
                     class_names=("crop", "town")).download_and_prepare()


# ---------------------------------------------------------------------- partially paired CSV, spatial splits
@pytest.fixture
def unpaired_csv(tmp_path) -> tuple[Path, dict]:
    """12 rows over 4 tiles (3 rows each, 2 of them neighbours inside a 50 km block): 8 pairs, 2 radar-only and
    2 optical-only rows (an empty cell), coordinates in degrees."""
    root, truth = tmp_path / "mixed", {}
    root.mkdir()
    lines = ["id,radar,optical,labels,tile,lat,lon"]
    for i in range(12):
        tile, k = f"T{i // 3}", i % 3
        radar, optical = rand((2, 8, 8), np.float32), rand((3, 8, 8))
        has = {"radar": i not in (4, 9), "optical": i not in (2, 7)}
        if has["radar"]:
            np.save(root / f"r{i}.npy", radar)
        if has["optical"]:
            np.save(root / f"o{i}.npy", optical)
        lat, lon = 45.0 + 2.0 * (i // 3) + 0.05 * k, 10.0 + 0.05 * k
        lines.append(f"p{i},{f'r{i}.npy' if has['radar'] else ''},{f'o{i}.npy' if has['optical'] else ''},"
                     f"{i % 2},{tile},{lat},{lon}")
        truth[f"p{i}"] = {"radar": radar if has["radar"] else None, "optical": optical if has["optical"] else None,
                          "tile": tile}
    (root / "pairs.csv").write_text("\n".join(lines) + "\n")
    return root / "pairs.csv", truth


def test_paired_cli_keep_unpaired_and_split_by_tile(unpaired_csv, tmp_path, capsys):
    from datasets_scripts.__main__ import main

    from crjepa.data.loading import load_paired_dataset, make_dataloader, pairing_summary

    csv_path, truth = unpaired_csv
    out = tmp_path / "export"
    assert main(["paired", str(csv_path), "--output-dir", str(out), "--num-proc", "1"]) == 2
    assert "line 4: empty path for sensor 'optical' (pass --keep-unpaired" in capsys.readouterr().err
    assert not out.exists()
    args = ["paired", str(csv_path), "--output-dir", str(out), "--num-proc", "1", "--keep-unpaired",
            "--split-by", "tile", "--split-fractions", "0.5", "0.25", "0.25"]
    assert main(args) == 0
    ds = load_paired_dataset(out, cache_dir=str(tmp_path / "hf"))
    assert len(ds) == 12 and pairing_summary(ds) == {"radar+optical": 8, "optical": 2, "radar": 2}
    splits_of_tile: dict[str, set[str]] = {}
    for row_id, tile, split in zip(ds["id"], ds["tile"], ds["split"]):
        splits_of_tile.setdefault(tile, set()).add(split)
    assert all(len(s) == 1 for s in splits_of_tile.values())  # no tile in two splits
    assert sorted(next(iter(s)) for s in splits_of_tile.values()) == ["test", "train", "train", "validation"]
    batch = next(iter(make_dataloader(ds, ["radar", "optical"], 12, shuffle=False)))
    for j, row_id in enumerate(batch["id"]):
        for sensor in ("radar", "optical"):
            expected = truth[row_id][sensor]
            assert bool(batch["present"][sensor][j]) == (expected is not None)
            np.testing.assert_array_equal(batch[sensor][j].numpy(),
                                          expected if expected is not None else np.zeros_like(batch[sensor][j]))
    again = tmp_path / "again"
    assert main([*args[:3], str(again), *args[4:]]) == 0  # deterministic
    assert load_paired_dataset(again, cache_dir=str(tmp_path / "hf"))["split"] == ds["split"]


def test_paired_split_by_block_keeps_each_block_in_one_split(unpaired_csv, tmp_path):
    csv_path, truth = unpaired_csv
    from datasets_scripts.common import block_key

    by_seed = {}
    for seed in (0, 1, 2):
        builder = PairedFolder(cache_dir=str(tmp_path / f"c{seed}"), csv_path=str(csv_path), keep_unpaired=True,
                               split_by="block", block_km=50.0, split_seed=seed, split_fractions=(0.5, 0.25, 0.25))
        rows = rows_by_id(builder)
        blocks: dict[str, set[str]] = {}
        for row in rows.values():
            blocks.setdefault(block_key(float(row["lat"]), float(row["lon"]), 50.0), set()).add(row["split"])
        assert len(blocks) == 4 and all(len(s) == 1 for s in blocks.values())  # rows 0.05 deg apart share a block
        by_seed[seed] = {k: r["split"] for k, r in rows.items()}
    assert len({tuple(sorted(v.items())) for v in by_seed.values()}) > 1  # the seed moves blocks between splits
    with pytest.raises(DataError, match=r"line 2: --split-by block needs numeric 'lat' and 'lon'"):
        bad = csv_path.read_text().replace(",45.0,", ",north,", 1)
        csv_path.write_text(bad)
        PairedFolder(cache_dir=str(tmp_path / "cx"), csv_path=str(csv_path), keep_unpaired=True,
                     split_by="block").download_and_prepare()


def test_split_by_group_is_whole_groups_near_the_fractions_and_seeded():
    from datasets_scripts.common import split_by_group

    groups = {f"r{i}": f"g{i // 10}" for i in range(1000)}  # 100 groups of 10 rows
    split = split_by_group(groups, (0.8, 0.1, 0.1), seed=3)
    assert split == split_by_group(dict(reversed(list(groups.items()))), (0.8, 0.1, 0.1), seed=3)
    assert split != split_by_group(groups, (0.8, 0.1, 0.1), seed=4)
    per_group: dict[str, set[str]] = {}
    for row, g in groups.items():
        per_group.setdefault(g, set()).add(split[row])
    assert all(len(s) == 1 for s in per_group.values())
    counts = {s: list(split.values()).count(s) for s in ("train", "validation", "test")}
    assert counts == {"train": 800, "validation": 100, "test": 100}
    with pytest.raises(DataError, match="split fractions"):
        split_by_group(groups, {"train": 1, "holdout": 1})
