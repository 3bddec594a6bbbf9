"""datasets_scripts/paired.py: your own pairs from a CSV (.npy, PNG, GeoTIFF; sensor names from the header), clear
errors that leave no output folder behind, half pairs kept as single-sensor rows and tile / block splits."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

from datasets_scripts.common import DataError, export_builder
from datasets_scripts.paired import PairedFolder

from helpers import random_image, rows_by_id, write_png, write_tif


@pytest.fixture
def paired_csv(tmp_path) -> tuple[Path, dict]:
    root, truth = tmp_path / "own", {}
    root.mkdir()
    lines = ["id,radar,optical,labels,split,region"]
    for i, (fmt, labels, split) in enumerate(
        [("npy", "crop;town", "train"), ("tif", "water", "test"), ("png", "crop", "train")]
    ):
        radar = random_image((2, 8, 8), np.float32)
        np.save(root / f"r{i}.npy", radar)
        optical = random_image((3, 16, 16))
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
    np.save(csv_path.parent / "r1.npy", random_image((2, 9, 8), np.float32))
    out = tmp_path / "export"
    builder = PairedFolder(cache_dir=str(tmp_path / "c"), csv_path=str(csv_path))
    with pytest.raises(DataError) as err:
        export_builder(builder, out, num_proc=1)
    msg = str(err.value)
    assert "r1.npy" in msg and "'radar'" in msg and "(2, 8, 8)" in msg and "(2, 9, 8)" in msg
    assert not out.exists() and not list(tmp_path.glob(".export*"))


@pytest.mark.parametrize(
    "damaged, message",
    [
        ("o2.png", r"Missing image file: .*o2\.png"),  # removed
        ("o1.tif", r"Cannot read image file .*o1\.tif"),  # not a GeoTIFF
    ],
)
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
        PairedFolder(
            cache_dir=str(tmp_path / "c"), csv_path=str(csv_path), class_names=("crop", "town")
        ).download_and_prepare()


@pytest.fixture
def unpaired_csv(tmp_path) -> tuple[Path, dict]:
    """12 rows over 4 tiles (3 rows each, 2 of them neighbours inside a 50 km block): 8 pairs, 2 radar-only and
    2 optical-only rows (an empty cell), coordinates in degrees."""
    root, truth = tmp_path / "mixed", {}
    root.mkdir()
    lines = ["id,radar,optical,labels,tile,lat,lon"]
    for i in range(12):
        tile, k = f"T{i // 3}", i % 3
        radar, optical = random_image((2, 8, 8), np.float32), random_image((3, 8, 8))
        has = {"radar": i not in (4, 9), "optical": i not in (2, 7)}
        if has["radar"]:
            np.save(root / f"r{i}.npy", radar)
        if has["optical"]:
            np.save(root / f"o{i}.npy", optical)
        lat, lon = 45.0 + 2.0 * (i // 3) + 0.05 * k, 10.0 + 0.05 * k
        lines.append(
            f"p{i},{f'r{i}.npy' if has['radar'] else ''},{f'o{i}.npy' if has['optical'] else ''},"
            f"{i % 2},{tile},{lat},{lon}"
        )
        truth[f"p{i}"] = {
            "radar": radar if has["radar"] else None,
            "optical": optical if has["optical"] else None,
            "tile": tile,
        }
    (root / "pairs.csv").write_text("\n".join(lines) + "\n")
    return root / "pairs.csv", truth


def test_paired_cli_keep_unpaired_and_split_by_tile(unpaired_csv, tmp_path, capsys):
    from crjepa.data.loading import load_paired_dataset, make_dataloader, pairing_summary
    from datasets_scripts.__main__ import main

    csv_path, truth = unpaired_csv
    out = tmp_path / "export"
    assert main(["paired", str(csv_path), "--output-dir", str(out), "--num-proc", "1"]) == 2
    assert "line 4: empty path for sensor 'optical' (pass --keep-unpaired" in capsys.readouterr().err
    assert not out.exists()
    args = [
        "paired",
        str(csv_path),
        "--output-dir",
        str(out),
        "--num-proc",
        "1",
        "--keep-unpaired",
        "--split-by",
        "tile",
        "--split-fractions",
        "0.5",
        "0.25",
        "0.25",
    ]
    assert main(args) == 0
    ds = load_paired_dataset(out, cache_dir=str(tmp_path / "hf"))
    assert len(ds) == 12 and pairing_summary(ds) == {"radar+optical": 8, "optical": 2, "radar": 2}
    # numeric metadata columns are typed (floats, not strings), text stays text; the card says which is which
    assert (ds.features["lat"].dtype, ds.features["lon"].dtype, ds.features["tile"].dtype) == (
        "float64",
        "float64",
        "string",
    )
    assert sorted(ds["lat"])[0] == 45.0 and "- `lat` (float64): metadata." in (out / "README.md").read_text()
    splits_of_tile: dict[str, set[str]] = {}
    for tile, split in zip(ds["tile"], ds["split"], strict=True):
        splits_of_tile.setdefault(tile, set()).add(split)
    assert all(len(s) == 1 for s in splits_of_tile.values())  # no tile in two splits
    assert sorted(next(iter(s)) for s in splits_of_tile.values()) == ["test", "train", "train", "validation"]
    batch = next(iter(make_dataloader(ds, ["radar", "optical"], 12, shuffle=False)))
    for j, row_id in enumerate(batch["id"]):
        for sensor in ("radar", "optical"):
            expected = truth[row_id][sensor]
            assert bool(batch["present"][sensor][j]) == (expected is not None)
            np.testing.assert_array_equal(
                batch[sensor][j].numpy(), expected if expected is not None else np.zeros_like(batch[sensor][j])
            )
    again = tmp_path / "again"
    assert main([*args[:3], str(again), *args[4:]]) == 0  # deterministic
    assert load_paired_dataset(again, cache_dir=str(tmp_path / "hf"))["split"] == ds["split"]


def test_paired_split_by_block_keeps_each_block_in_one_split(unpaired_csv, tmp_path):
    csv_path, truth = unpaired_csv
    from datasets_scripts.common import block_key

    by_seed = {}
    for seed in (0, 1, 2):
        builder = PairedFolder(
            cache_dir=str(tmp_path / f"c{seed}"),
            csv_path=str(csv_path),
            keep_unpaired=True,
            split_by="block",
            block_km=50.0,
            split_seed=seed,
            split_fractions=(0.5, 0.25, 0.25),
        )
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
        PairedFolder(
            cache_dir=str(tmp_path / "cx"), csv_path=str(csv_path), keep_unpaired=True, split_by="block"
        ).download_and_prepare()
