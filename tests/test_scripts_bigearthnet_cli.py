"""datasets_scripts/bigearthnet/cli.py: `python -m datasets_scripts bigearthnet` lists BEN-14K from metadata, exports
v1 / reBEN folders and the ConfigILM LMDB (bit for bit alike), S2-only archives and half pairs, prints its summary,
and says every error a person can fix in one line (a bug keeps its traceback)."""

from __future__ import annotations

import argparse
import hashlib
import re
import shutil
import sys
from pathlib import Path

import numpy as np
import pytest

from datasets_scripts.bigearthnet import add_cli, cli

from helpers import (
    BEN_V1_EXAMPLES,
    BEN_V1_SNOWY,
    copy_ben_v1,
    reben_pairs,
    run_datasets_scripts,
    run_python,
)


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


def test_cli_convert_exports_parquet_and_prints_summary(ben_v1_dirs, tmp_path, capsys):
    import pyarrow.parquet as pq

    out = tmp_path / "out"
    argv = ["bigearthnet", "--s1-dir", str(ben_v1_dirs[0]), "--s2-dir", str(ben_v1_dirs[1]),
            "--output-dir", str(out), "--subset", "recommended", "--num-proc", "1"]  # fmt: skip
    assert _run(argv) == 0
    assert "bigearthnet recommended: converted 5 pairs (train 4, test 1), missing 519,279" in capsys.readouterr().out
    table = pq.read_table(sorted((out / "data").glob("train-*.parquet")))
    assert table.num_rows == 4 and set(table["id"].to_pylist()) < set(BEN_V1_EXAMPLES)
    assert "BigEarthNet-MM (recommended)" in (out / "README.md").read_text()


def test_every_pair_skipped_leaves_no_export(ben_v1_dirs, tmp_path, capsys):
    s1, s2 = copy_ben_v1(ben_v1_dirs, tmp_path / "data")
    for folder in s2.iterdir():
        b02 = folder / f"{folder.name}_B02.tif"
        b02.write_bytes(b02.read_bytes()[:3000])  # truncated GeoTIFF in every pair
    out = tmp_path / "out"
    code, stdout, err = run_datasets_scripts(
        [
            "bigearthnet",
            "--s1-dir",
            str(s1),
            "--s2-dir",
            str(s2),
            "--subset",
            "all",
            "--output-dir",
            str(out),
            "--num-proc",
            "1",
        ],
        capsys,
    )
    assert code == 1 and "converted 0 pairs" in stdout and "corrupt GeoTIFF: 6" in stdout
    assert not out.exists() and "error: every pair was skipped" in err and "Traceback" not in err
    # the reasons, as warnings: each pair once while converting, the first three again above the error line
    skipped = re.findall(r"warning: skipped: patch (\S+): cannot read \S+_B02\.tif \(truncated or corrupt", err)
    assert len(skipped) == 9 and set(skipped) == set(BEN_V1_EXAMPLES), err
    assert err.strip().splitlines()[-1].startswith("error: every pair was skipped")


def test_s2_only_v1_folder_exports_without_s1(ben_v1_dirs, tmp_path, capsys):
    out = tmp_path / "s2only"
    code, stdout, err = run_datasets_scripts(
        [
            "bigearthnet",
            "--s2-dir",
            str(ben_v1_dirs[1]),
            "--subset",
            "all",
            "--output-dir",
            str(out),
            "--num-proc",
            "1",
        ],
        capsys,
    )
    assert code == 0, err
    from crjepa.data.loading import load_paired_dataset

    ds = load_paired_dataset(out)
    assert "s1" not in ds.column_names and sorted(ds["id"]) == sorted(BEN_V1_EXAMPLES)
    assert "BigEarthNet-S2 (all)" in (out / "README.md").read_text()
    # S2 patches alone are counted as patches (not "pairs ... single-sensor rows"), and subset `all` (every
    # patch found on disk) reports nothing missing (it has no list: not "missing 590,320")
    summary = stdout.strip().splitlines()[-1]
    assert summary.startswith(
        "bigearthnet all: converted 6 S2 patches (train 4, test 1, unassigned 1), every S2 "
        "patch found on disk, skipped 0"
    ), summary
    assert "pairs" not in summary and "single-sensor" not in summary and "missing" not in summary


def test_s2_only_reben_export_counts_patches_and_v1_all_reports_nothing_missing(
    reben_dirs, ben_v1_dirs, tmp_path, capsys
):
    code, stdout, err = run_datasets_scripts(
        [
            "bigearthnet",
            "--s2-dir",
            str(reben_dirs["s2"]),
            "--subset",
            "reben",
            "--output-dir",
            str(tmp_path / "s2"),
            "--num-proc",
            "1",
        ],
        capsys,
    )
    assert code == 0, err
    assert (
        "converted 18 S2 patches (train 6, validation 6, test 6), missing 0 of the 18 S2 patches of the subset"
        in stdout
    ), stdout
    plans = [line for line in err.splitlines() if "to convert" in line]  # the plan, as the user sees it
    code, stdout, err = run_datasets_scripts(
        [
            "bigearthnet",
            "--s1-dir",
            str(ben_v1_dirs[0]),
            "--s2-dir",
            str(ben_v1_dirs[1]),
            "--subset",
            "all",
            "--output-dir",
            str(tmp_path / "v1"),
            "--num-proc",
            "1",
        ],
        capsys,
    )
    assert code == 0, err
    assert "converted 6 pairs (train 4, test 1, unassigned 1), every pair found on disk, skipped 0" in stdout
    assert "missing" not in stdout.strip().splitlines()[-1]
    plans += [line for line in err.splitlines() if "to convert" in line]
    assert plans == [
        "BigEarthNet reben: 18 S2 patches to convert, 0 missing, 0 skipped before reading",
        "BigEarthNet all: 6 pairs to convert, 0 skipped before reading",
    ], plans


def test_missing_extra_names_the_install_command(ben_v1_dirs, tmp_path, capsys, monkeypatch):
    monkeypatch.setitem(sys.modules, "rasterio", None)  # as if the bigearthnet extra were not installed
    code, _, err = run_datasets_scripts(
        [
            "bigearthnet",
            "--s1-dir",
            str(ben_v1_dirs[0]),
            "--s2-dir",
            str(ben_v1_dirs[1]),
            "--subset",
            "all",
            "--output-dir",
            str(tmp_path / "out"),
        ],
        capsys,
    )
    assert code == 2 and 'pip install "crjepa[bigearthnet]"' in err and len(err.strip().splitlines()) == 1


def test_bad_folder_is_one_error_line_without_traceback(tmp_path):
    run = run_python(
        [
            "-m",
            "datasets_scripts",
            "bigearthnet",
            "--s1-dir",
            tmp_path / "nope",
            "--s2-dir",
            tmp_path,
            "--output-dir",
            tmp_path / "out",
        ]
    )
    assert run.returncode == 2 and "Traceback" not in run.stderr
    assert run.stderr.strip().splitlines()[-1] == f"error: BigEarthNet: s1_dir {tmp_path / 'nope'} is not a folder"


def test_cli_keep_unpaired_keeps_half_pairs_as_single_sensor_rows(ben_v1_dirs, ben_v1_all, tmp_path, capsys):
    from crjepa.data.loading import (
        load_paired_dataset,
        make_dataloader,
        pairing_summary,
    )

    s1, s2 = copy_ben_v1(ben_v1_dirs, tmp_path / "data")
    names = sorted(BEN_V1_EXAMPLES)
    s1_only, s2_only = names[0], names[4]  # Austria keeps only S1, Finland (train) only S2
    shutil.rmtree(s2 / s1_only)
    shutil.rmtree(s1 / BEN_V1_EXAMPLES[s2_only][0])
    argv = ["bigearthnet", "--s1-dir", str(s1), "--s2-dir", str(s2), "--subset", "all", "--num-proc", "1"]
    assert _run([*argv, "--output-dir", str(tmp_path / "paired-only")]) == 0
    assert "converted 4 pairs" in capsys.readouterr().out  # without the flag the two half pairs are skipped
    out = tmp_path / "out"  # the README's command
    assert _run([*argv, "--output-dir", str(out), "--keep-unpaired", "--split-by", "tile"]) == 0
    assert re.search(r"converted 6 pairs \(.*unassigned 1, 2 of them single-sensor rows\)", capsys.readouterr().out)
    ds = load_paired_dataset(out, cache_dir=str(tmp_path / "hf"))
    assert pairing_summary(ds) == {"s1+s2": 4, "s1": 1, "s2": 1}
    full = {r["id"]: r for split in ben_v1_all[1].values() for r in split}
    rows = {r["id"]: r for r in ds}
    for name in BEN_V1_EXAMPLES:  # the same labels and metadata as when both patches are there
        for key in ("labels", "country", "tile", "s2_date"):
            assert rows[name][key] == full[name][key], (name, key)
    tiles: dict[str, set[str]] = {}
    for r in rows.values():
        if r["split"] != "unassigned":
            tiles.setdefault(r["tile"], set()).add(r["split"])
    assert len(tiles) == 4 and all(len(v) == 1 for v in tiles.values()) and rows[BEN_V1_SNOWY]["split"] == "unassigned"
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


def _rows(folder: Path) -> tuple[dict, dict]:
    from crjepa.data.loading import load_paired_dataset

    ds = load_paired_dataset(folder)
    return {r["id"]: r for r in ds}, ds.features


def test_configilm_lmdb_converts_bit_for_bit_like_the_geotiff_folders(reben_lmdb, reben_dirs, tmp_path, capsys):
    """The LMDB of safetensors patches (configilm's wheel) and the GeoTIFF folders built from the same patches give
    the same export: every row, every pixel, every metadata field, the same features; two worker processes."""
    code, stdout, err = run_datasets_scripts(
        ["bigearthnet", "--lmdb", str(reben_lmdb), "--output-dir", str(tmp_path / "lmdb"), "--num-proc", "2"], capsys
    )  # subset reben and metadata.parquet found beside it
    assert code == 0, err
    assert "converted 18 pairs (train 6, validation 6, test 6), missing 0 of the 18 pairs" in stdout
    code, _, err = run_datasets_scripts(
        [
            "bigearthnet",
            "--s1-dir",
            str(reben_dirs["s1"]),
            "--s2-dir",
            str(reben_dirs["s2"]),
            "--subset",
            "reben",
            "--output-dir",
            str(tmp_path / "tif"),
            "--num-proc",
            "1",
        ],
        capsys,
    )
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


def test_bad_lmdb_entries_are_skipped_and_counted_and_bad_arguments_are_one_line(
    reben_lmdb, reben_dirs, tmp_path, capsys
):
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
    code, stdout, err = run_datasets_scripts(
        ["bigearthnet", "--lmdb", str(lmdb_dir), "--output-dir", str(tmp_path / "out"), "--num-proc", "1"], capsys
    )
    assert code == 0, err
    assert "converted 15 pairs" in stdout and "skipped 3" in stdout
    assert "band mismatch: 1" in stdout and "corrupt safetensors: 1" in stdout and "S1 partner missing: 1" in stdout
    code, stdout, _ = run_datasets_scripts(
        [
            "bigearthnet",
            "--lmdb",
            str(lmdb_dir),
            "--keep-unpaired",
            "--output-dir",
            str(tmp_path / "kept"),
            "--num-proc",
            "1",
        ],
        capsys,
    )
    assert code == 0 and "converted 16 pairs" in stdout and "1 of them single-sensor rows" in stdout
    for argv, expected in (
        (["--lmdb", str(tmp_path)], "is not an LMDB folder (no data.mdb)"),
        (["--lmdb", str(lmdb_dir), "--subset", "all"], "use --subset reben"),
        (["--lmdb", str(lmdb_dir), "--s2-dir", str(reben_dirs["s2"])], "not both"),
    ):
        code, _, err = run_datasets_scripts(["bigearthnet", *argv, "--output-dir", str(tmp_path / "never")], capsys)
        lines = err.strip().splitlines()
        assert code == 2 and len(lines) == 1 and lines[0].startswith("error: ") and expected in err, err
        assert not (tmp_path / "never").exists()


def test_a_bug_in_the_converter_keeps_its_traceback(ben_v1_dirs, tmp_path, monkeypatch, capsys):
    """Only errors a person can fix (CRJepaError) are one line; the CLI used to print any ValueError, OSError or
    ImportError as one, so a bug lost its traceback."""

    def bug(args):
        raise ValueError("a bug in the converter")

    monkeypatch.setattr(cli, "_run_cli", bug)
    with pytest.raises(ValueError, match="a bug in the converter"):
        run_datasets_scripts(
            ["bigearthnet", "--s2-dir", str(ben_v1_dirs[1]), "--output-dir", str(tmp_path / "out")], capsys
        )
