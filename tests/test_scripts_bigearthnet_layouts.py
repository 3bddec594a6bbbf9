"""datasets_scripts/bigearthnet/layouts.py: v1 and v2 (reBEN) folders told apart, and a subset that finds nothing
says in one line which layout it found and which `--subset` fits."""

from __future__ import annotations

from datasets_scripts.bigearthnet.layouts import V1, V2, detect_layout

from helpers import run_datasets_scripts


def test_the_real_v1_and_v2_folders_are_told_apart(ben_v1_dirs, reben_dirs, tmp_path):
    for folder in ben_v1_dirs:
        layout, names = detect_layout(folder)
        assert layout == V1 and names and all((folder / name).is_dir() for name in names)
    for folder in (reben_dirs["s1"], reben_dirs["s2"]):  # nested one level: <product>/<patch>/
        layout, names = detect_layout(folder)
        assert layout == V2 and names and all(len(list(folder.glob(f"*/{name}"))) == 1 for name in names)
    assert detect_layout(tmp_path) == (None, [])


def test_reben_folders_under_a_v1_subset_say_which_layout_and_subset(reben_dirs, tmp_path, capsys):
    code, _, err = run_datasets_scripts(
        [
            "bigearthnet",
            "--s1-dir",
            str(reben_dirs["s1"]),
            "--s2-dir",
            str(reben_dirs["s2"]),
            "--output-dir",
            str(tmp_path / "out"),
        ],
        capsys,
    )
    assert code == 2 and not (tmp_path / "out").exists()
    lines = err.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("error: ") and "Traceback" not in err
    assert "BigEarthNet v2 / reBEN" in err and "--subset reben" in err
    assert str(reben_dirs["metadata"]) in err  # found beside the S2 folder: nothing to guess


def test_v1_pairs_outside_ben14k_say_which_subset_fits(ben_v1_dirs, tmp_path, capsys):
    code, _, err = run_datasets_scripts(
        [
            "bigearthnet",
            "--s1-dir",
            str(ben_v1_dirs[0]),
            "--s2-dir",
            str(ben_v1_dirs[1]),
            "--output-dir",
            str(tmp_path / "out"),
        ],
        capsys,
    )
    assert code == 2 and "Traceback" not in err
    assert "BigEarthNet v1" in err and "None of its 6 S2 patches is in ben14k" in err
    assert "recommended: 5" in err and "--subset all" in err


def test_v1_folders_under_subset_reben_name_the_layout_not_a_metadata_file(ben_v1_dirs, tmp_path, capsys):
    code, _, err = run_datasets_scripts(
        [
            "bigearthnet",
            "--s1-dir",
            str(ben_v1_dirs[0]),
            "--s2-dir",
            str(ben_v1_dirs[1]),
            "--subset",
            "reben",
            "--output-dir",
            str(tmp_path / "out"),
        ],
        capsys,
    )
    assert code == 2 and not (tmp_path / "out").exists()
    lines = err.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("error: ") and "Traceback" not in err
    assert "Found the BigEarthNet v1" in err and "use --subset all" in err
    assert "metadata.parquet" not in err and "--reben-metadata" not in err
