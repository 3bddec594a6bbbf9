"""Parquet + dataset-card export: round trip through `load_dataset("parquet")`, a card the Hub can read, a push
through an injected client, a clear failure without network, atomic output, and the CLI."""

from __future__ import annotations

import subprocess
from pathlib import Path

import datasets
import numpy as np
import pytest
from huggingface_hub import DatasetCard

from datasets_scripts import synthetic as S
from datasets_scripts.common import DataError, PublishError, export_builder

from helpers import run_python

SIZES = {"num_train": 6, "num_validation": 3, "num_test": 2, "image_size": 16, "seed": 7}


def tiny_builder(tmp_path: Path) -> S.SyntheticPairs:
    return S.SyntheticPairs(cache_dir=str(tmp_path / "cache"), **SIZES)


class FakeHub:
    """Records Hub calls; `upload_folder` also snapshots what was in the folder."""

    def __init__(self, out: Path) -> None:
        self.calls: list[tuple[str, tuple, dict]] = []
        self.out = out

    def whoami(self):
        self.calls.append(("whoami", (), {"output_exists": self.out.exists()}))
        return {"name": "someone"}

    def create_repo(self, *args, **kwargs):
        self.calls.append(("create_repo", args, kwargs))

    def upload_folder(self, **kwargs):
        folder = Path(kwargs["folder_path"])
        kwargs["files"] = sorted(str(p.relative_to(folder)) for p in folder.rglob("*"))
        self.calls.append(("upload_folder", (), kwargs))


@pytest.fixture(scope="module")
def exported(tmp_path_factory) -> tuple[Path, S.SyntheticPairs]:
    tmp = tmp_path_factory.mktemp("export")
    builder = tiny_builder(tmp)
    out = export_builder(builder, tmp / "out", num_proc=1)
    return out, builder


def test_parquet_shards_read_back_equal_the_builder_rows(exported, tmp_path):
    out, builder = exported
    assert sorted(p.name for p in (out / "data").iterdir()) == [
        "test-00000-of-00001.parquet",
        "train-00000-of-00001.parquet",
        "validation-00000-of-00001.parquet",
    ]
    assert sorted(p.name for p in out.iterdir()) == [".crjepa-output.json", "README.md", "data"]
    for split, n in (("train", 6), ("validation", 3), ("test", 2)):
        files = sorted(str(p) for p in (out / "data").glob(f"{split}-*.parquet"))
        back = datasets.load_dataset("parquet", data_files={split: files}, split=split, cache_dir=str(tmp_path))
        assert back.features == builder.info.features  # Array3D shapes/dtypes and class names survive
        ref = S.generate(n, seed=7, image_size=16, split=split)
        rows = back.with_format("numpy")[:]
        np.testing.assert_array_equal(rows["s1"], ref["s1"])
        np.testing.assert_array_equal(rows["s2"], ref["s2"].astype(rows["s2"].dtype))
        assert list(rows["id"]) == list(ref["id"])
        assert [list(x) for x in rows["labels"]] == [np.flatnonzero(r).tolist() for r in ref["labels"]]


def test_card_parses_and_declares_configs_features_license(exported):
    out, builder = exported
    card = DatasetCard.load(out / "README.md")
    data = card.data.to_dict()
    assert data["configs"] == [
        {
            "config_name": "default",
            "data_files": [
                {"split": "train", "path": "data/train-*.parquet"},
                {"split": "validation", "path": "data/validation-*.parquet"},
                {"split": "test", "path": "data/test-*.parquet"},
            ],
        }
    ]
    assert data["license"] == "apache-2.0" and "image-feature-extraction" in data["task_categories"]
    assert "remote-sensing" in data["tags"]
    assert datasets.Features._from_yaml_list(data["dataset_info"]["features"]) == builder.info.features
    assert {"name": "train", "num_examples": 6} in [
        {k: v for k, v in split.items() if k != "num_bytes"} for split in data["dataset_info"]["splits"]
    ]
    assert "| `s2` | 12 | 16x16 | uint16 |" in card.text and "Marine waters" in card.text


def test_push_through_injected_client_checks_first_then_uploads(tmp_path):
    out = tmp_path / "out"
    hub = FakeHub(out)
    export_builder(tiny_builder(tmp_path), out, push_to_hub="me/synthetic", api=hub, num_proc=1)
    names = [c[0] for c in hub.calls]
    assert names == ["whoami", "create_repo", "upload_folder"]
    assert hub.calls[0][2]["output_exists"] is False  # credentials checked before the conversion
    assert hub.calls[1][1] == ("me/synthetic",) and hub.calls[1][2]["repo_type"] == "dataset"
    upload = hub.calls[2][2]
    assert upload["repo_type"] == "dataset" and upload["repo_id"] == "me/synthetic"
    assert Path(upload["folder_path"]) == out.resolve()
    assert "README.md" in upload["files"] and "data/train-00000-of-00001.parquet" in upload["files"]


def test_push_without_network_fails_in_one_sentence_before_converting(tmp_path):
    from huggingface_hub import HfApi

    out = tmp_path / "out"
    offline = HfApi(endpoint="http://127.0.0.1:9", token="hf_not_a_token")  # nothing listens there
    with pytest.raises(PublishError) as err:
        export_builder(tiny_builder(tmp_path), out, push_to_hub="me/synthetic", api=offline, num_proc=1)
    msg = str(err.value)
    assert "me/synthetic" in msg and "\n" not in msg
    assert "could not be reached" in msg and "did not accept the token" not in msg  # no network is not a bad token
    assert err.value.__cause__ is None and err.value.__suppress_context__
    assert not out.exists() and not list(tmp_path.glob(".out*"))


def test_existing_output_is_kept_unless_overwrite(exported, tmp_path):
    out = tmp_path / "out"
    out.mkdir()
    (out / "keep.txt").write_text("mine")
    with pytest.raises(DataError, match="exists and is not empty"):
        export_builder(tiny_builder(tmp_path), out, num_proc=1)
    assert (out / "keep.txt").read_text() == "mine"
    export_builder(tiny_builder(tmp_path), out, num_proc=1, overwrite=True)
    assert not (out / "keep.txt").exists() and (out / "README.md").is_file()
    assert [p.name for p in tmp_path.iterdir() if p.name.startswith(".")] == []


def _cli(*args: str, cwd: Path) -> subprocess.CompletedProcess:
    return run_python(["-m", "datasets_scripts", *args], cwd=cwd)


@pytest.mark.slow
def test_cli_synthetic_exports_and_reports_errors_in_one_line(tmp_path):
    out = tmp_path / "syn"
    args = [
        "synthetic",
        "--num-train",
        "4",
        "--num-validation",
        "2",
        "--num-test",
        "0",
        "--image-size",
        "8",
        "--num-proc",
        "1",
        "--output-dir",
        str(out),
    ]
    result = _cli(*args, cwd=tmp_path)
    assert result.returncode == 0, result.stderr
    assert sorted(p.name for p in (out / "data").iterdir()) == [
        "train-00000-of-00001.parquet",
        "validation-00000-of-00001.parquet",
    ]
    again = _cli(*args, cwd=tmp_path)
    assert again.returncode == 2 and "error:" in again.stderr and "Traceback" not in again.stderr


def test_metadata_column_types_are_inferred_and_values_typed():
    from datasets_scripts.common import infer_column_type, typed_value

    assert infer_column_type(["45.1", "-3", ""]) == "float64" and infer_column_type(["3", "12", " "]) == "int64"
    assert infer_column_type(["007", "12"]) == "string"  # an id with a leading zero stays text
    assert infer_column_type(["T33UVP", "4"]) == "string" and infer_column_type(["", ""]) == "string"
    assert typed_value("45.5", "float64") == 45.5 and typed_value("", "float64") is None
    assert typed_value("12", "int64") == 12 and typed_value(None, "string") == ""


def test_export_loads_and_streams_without_a_warning_and_exports_without_num_proc_noise(tmp_path, caplog):
    """`load_dataset(EXPORT)` and streaming raise no warning and log none (the card's dataset_info is datasets' own,
    split sizes included); a num_proc export logs no "Setting num_proc back to 1" lines; the card's text is whole."""
    import logging
    import warnings

    caplog.set_level(logging.INFO)
    out = export_builder(tiny_builder(tmp_path), tmp_path / "out", num_proc=2)
    assert not [r for r in caplog.records if "num_proc" in r.getMessage()]
    caplog.clear()
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        ds = datasets.load_dataset(str(out), cache_dir=str(tmp_path / "hf"))
        streamed = datasets.load_dataset(str(out), streaming=True)
        first = next(iter(streamed["test"]))
    assert not [r for r in caplog.records if r.levelno >= logging.WARNING], [r.getMessage() for r in caplog.records]
    assert {s: len(d) for s, d in ds.items()} == {"train": 6, "validation": 3, "test": 2}
    assert first["id"] == ds["test"][0]["id"]
    card = DatasetCard.load(out / "README.md")
    splits = card.data.to_dict()["dataset_info"]["splits"]
    assert [(s["name"], s["num_examples"]) for s in splits] == [("train", 6), ("validation", 3), ("test", 2)]
    assert all(s["num_bytes"] > 0 for s in splits)
    assert S.SyntheticPairs.CARD["description"] in card.text and card.text.count("S1-like SAR (VV, VH") == 1
    assert "https://github.com/)" not in card.text and "arxiv.org/abs/2606.00706" in card.text


# ---------------------------------------------------------------------------------------------- a real full disk
@pytest.mark.slow
def test_an_export_to_a_full_disk_is_one_line_and_leaves_nothing(small_disk, tmp_path):
    """On a real full disk the export died with SIGABRT (pyarrow aborts when a Parquet write with content-defined
    chunking fails), leaving its temp folder and lock; it runs in a subprocess here because it aborted the process."""
    from helpers import fill_disk

    disk = small_disk("24m")
    filler = fill_disk(disk, leave=2 << 20)  # the default synthetic export is ~60 MB
    proc = run_python(
        ["-m", "datasets_scripts", "synthetic", "--output-dir", str(disk / "out"), "--num-proc", "1"], tmp_path
    )
    assert proc.returncode == 2, proc.stderr[-3000:]
    lines = [line for line in proc.stderr.splitlines() if "error" in line.lower()]
    assert len(lines) == 1 and "No space left on device" in lines[0] and "Traceback" not in proc.stderr, proc.stderr
    assert sorted(p.name for p in disk.iterdir()) == [".filler"]  # no temp folder, no lock, no output
    filler.unlink()


def test_an_export_to_a_read_only_disk_or_into_its_input_is_one_line(small_disk, tmp_path, capsys):
    """A read-only output folder ended in an OSError traceback; an output inside the export's input folder (with
    --overwrite: deleting it) was not refused."""
    from datasets_scripts.__main__ import main

    disk = small_disk("1m", readonly=True)
    assert main(["synthetic", "--output-dir", str(disk / "out"), "--num-proc", "1"]) == 2
    err = capsys.readouterr().err
    assert err.count("error: ") == 1 and "Read-only file system" in err and "Traceback" not in err, err
    pairs = tmp_path / "pairs"
    pairs.mkdir()
    (pairs / "pairs.csv").write_text("id,s1,s2,labels\n")
    assert main(["paired", str(pairs / "pairs.csv"), "--output-dir", str(pairs), "--overwrite", "--num-proc", "1"]) == 2
    assert "contains the input" in capsys.readouterr().err
    assert (pairs / "pairs.csv").is_file()


def test_export_arguments_out_of_range_are_one_line_before_any_work(tmp_path, capsys):
    """`--image-size 100000` or `--pairing-rate 7` failed deep in the generator (a DatasetGenerationError traceback),
    `--num-train -5` and `--num-proc 0` were accepted; the parser now checks each, one line, exit 2."""
    from datasets_scripts.__main__ import main

    out = tmp_path / "out"
    for argv, message in (
        (["--image-size", "100000"], "--image-size: must be an integer in [8, 512]"),
        (["--pairing-rate", "7"], "--pairing-rate: must be a number in [0, 1]"),
        (["--num-train", "-5"], "--num-train: must be an integer in [0, 1000000]"),
        (["--num-proc", "0"], "--num-proc: must be an integer in [1, 1024]"),
        (["--push-to-hub", "me/x y"], "--push-to-hub: must be a Hub repo id"),
    ):
        with pytest.raises(SystemExit) as exit_:
            main(["synthetic", "--output-dir", str(out), *argv])
        err = capsys.readouterr().err
        assert exit_.value.code == 2 and err.count("error:") == 1 and message in err and "usage" not in err, err
        assert not out.exists()


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
