"""Every documented journey on real BigEarthNet patches: v2/reBEN and v1 folders -> export -> training
with the paper's config -> card -> fresh-process AutoModel -> crjepa embed / index / search / evaluate; S2-only
archives; every YAML of configs/ on an export. Real data: tests/conftest.py (wheels of bigearthnet-common and
configilm). Tiny model and a few steps: seconds each."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pyarrow.parquet as pq
import pytest
import rasterio  # the dev extra: a missing reader fails these tests, never skips them

from helpers import REPO, reben_pairs, run_python

pytestmark = pytest.mark.slow  # real-data journeys through the real commands


def _rows(export: Path) -> dict[str, dict]:
    from crjepa.data.loading import load_paired_dataset

    ds = load_paired_dataset(export)
    assert ds.features["s2"].dtype == "uint16" and ds.features["s2"].shape == (12, 120, 120)
    return {r["id"]: r for r in ds}


def test_reben_export_has_real_pairs_bands_by_name_and_splits(reben_dirs, reben_export):
    rows = _rows(reben_export)
    meta = {r["patch_id"]: r for r in reben_pairs(reben_dirs)}
    assert set(rows) == set(meta) and len(rows) == 18
    assert {r["split"] for r in rows.values()} == {"train", "validation", "test"}
    patch = sorted(rows)[0]
    folder = next(reben_dirs["s2"].glob(f"*/{patch}"))
    s2 = np.asarray(rows[patch]["s2"])
    assert s2.shape == (12, 120, 120)
    with rasterio.open(folder / f"{patch}_B8A.tif") as src:  # B8A is the 9th band, 20 m -> every 2nd pixel
        np.testing.assert_array_equal(s2[8, ::2, ::2], src.read(1))
    with rasterio.open(folder / f"{patch}_B09.tif") as src:
        np.testing.assert_array_equal(s2[9, ::6, ::6], src.read(1))
    assert rows[patch]["s1_name"] == meta[patch]["s1_name"] and rows[patch]["country"] == meta[patch]["country"]
    assert "BigEarthNet-MM (reben)" in (reben_export / "README.md").read_text()


# ------------------------------------------------------------------------------------ v2: the paper's run
TINY = [
    "--model.preset",
    "tiny",
    "--data.batch_size",
    "4",
    "--data.num_workers",
    "0",
    "--training.max_steps",
    "2",
    "--training.compile",
    "none",
    "--eval.batch_size",
    "8",
    "--logging.report_to",
    "none",
    "--logging.progress_bar",
    "false",
    "--checkpoint.every_steps",
    "1",
]
"""Overrides that shrink the paper's run to seconds (tiny model, 2 steps); everything else is the paper's YAML."""


@pytest.fixture(scope="module")
def paper_run(reben_export: Path, tmp_path_factory: pytest.TempPathFactory) -> Path:
    """`accelerate launch train_accelerate.py --config configs/paper_ben14k.yaml --data.path EXPORT` on the
    real reBEN export (tiny overrides), as the README documents it: its output_dir."""
    out = tmp_path_factory.mktemp("paper_run") / "run"
    run = run_python(
        [
            "-m",
            "accelerate.commands.launch",
            "--num_processes",
            "1",
            "--num_machines",
            "1",
            "--mixed_precision",
            "no",
            "--dynamo_backend",
            "no",
            str(REPO / "train_accelerate.py"),
            "--config",
            "configs/paper_ben14k.yaml",
            "--data.path",
            reben_export,
            "--output_dir",
            out,
            *TINY,
        ],
        timeout=600,
    )
    assert run.returncode == 0, run.stdout[-2000:] + run.stderr[-3000:]
    assert "Traceback" not in run.stderr
    return out


def test_paper_config_trains_on_the_reben_export_and_the_card_names_it(paper_run, reben_export):
    card = (paper_run / "model" / "README.md").read_text()
    head = card.split("---", 2)[1]  # the model-index metadata that the Hub reads
    assert "synthetic" not in card.lower()
    assert "name: BigEarthNet-MM (reben)" in head and "split: test" in head
    assert "- data set: **BigEarthNet-MM (reben)**" in card and "- training split: `train` (6 pairs)" in card
    results = json.loads((paper_run / "results.json").read_text())
    assert results["trained"]["dataset_name"] == "BigEarthNet-MM (reben)" and results["steps"] == 2
    assert results["trained"]["query_split"] == "test" and results["trained"]["num_queries"] == 6
    f1 = results["trained"]["metrics"]["F1@5"]
    assert set(f1) == {"s1->s1", "s2->s2", "s1->s2", "s2->s1"} and all(0 < v <= 1 for v in f1.values())
    for direction, value in f1.items():  # the card's table shows the same scores
        assert f"{value * 100:.2f}" in card, direction


def test_fresh_process_automodel_and_crjepa_commands_on_the_reben_export(paper_run, reben_export, tmp_path):
    model_dir = paper_run / "model"
    code = (
        "import sys, numpy as np, torch\nfrom transformers import AutoModel, AutoImageProcessor\n"
        "m = AutoModel.from_pretrained(sys.argv[1], trust_remote_code=True)\n"
        "p = AutoImageProcessor.from_pretrained(sys.argv[1], trust_remote_code=True)\n"
        "x = p(np.full((12, 120, 120), 900, np.uint16), sensor='s2')['pixel_values']\n"
        "print(tuple(m.get_embeddings(x, sensor='s2', space='unified').shape), "
        "'modeling_crjepa' in sys.modules, 'crjepa' in sys.modules)\n"
    )
    fresh = subprocess.run(
        [sys.executable, "-c", code, str(model_dir)],
        cwd=tmp_path,
        capture_output=True,
        text=True,
        env={"PATH": os.environ["PATH"], "HF_HUB_OFFLINE": "1", "HF_HOME": str(tmp_path / "hf")},
        timeout=300,
    )
    assert fresh.returncode == 0, fresh.stderr[-3000:]
    assert fresh.stdout.split("\n")[-2] == "(1, 32) False False"  # tiny: 32-d heads; remote code only, not this package

    from crjepa.cli import main

    emb = tmp_path / "emb"
    assert main(["embed", str(model_dir), str(reben_export), "-o", str(emb), "--device", "cpu"]) == 0
    assert main(["index", str(emb), "--kind", "exact"]) == 0
    ids = sorted(_rows(reben_export))
    assert main(["search", str(emb), "--id", ids[0], "-k", "3", "--json"]) == 0
    assert main(["search", str(emb), "--id", ids[0], "--direction", "s1->s2", "-k", "2"]) == 0
    out = tmp_path / "eval"
    assert (
        main(
            [
                "evaluate",
                str(model_dir),
                str(reben_export),
                "--query-split",
                "test",
                "--device",
                "cpu",
                "--output-dir",
                str(out),
            ]
        )
        == 0
    )
    scores = json.loads((out / "retrieval_results.json").read_text())
    trained = json.loads((paper_run / "results.json").read_text())["trained"]
    assert scores["metrics"]["F1@5"] == pytest.approx(trained["metrics"]["F1@5"], abs=1e-6)  # same model, same split


def test_export_checkpoint_gives_a_from_pretrained_folder_with_the_runs_scores(paper_run, tmp_path):
    from crjepa.cli import main

    assert sorted(p.name for p in (paper_run / "checkpoints").iterdir()) == ["step_00000001", "step_00000002"]
    folder = tmp_path / "step1"
    assert main(["export-checkpoint", str(paper_run), "--step", "1", "-o", str(folder), "--device", "cpu"]) == 0
    latest = tmp_path / "latest"
    assert main(["export-checkpoint", str(paper_run), "-o", str(latest), "--device", "cpu"]) == 0
    from safetensors.torch import load_file
    from transformers import AutoModel

    model = AutoModel.from_pretrained(latest, trust_remote_code=True)
    final = load_file(str(paper_run / "model" / "model.safetensors"))
    exported = load_file(str(latest / "model.safetensors"))
    assert final.keys() == exported.keys() and all((final[k] == exported[k]).all() for k in final)
    assert any(not (load_file(str(folder / "model.safetensors"))[k] == final[k]).all() for k in final)  # step 1 != 2
    assert model.config.image_size == 32
    card = (latest / "README.md").read_text()
    trained = json.loads((paper_run / "results.json").read_text())["trained"]["metrics"]["F1@5"]
    assert "BigEarthNet-MM (reben)" in card and all(f"{v * 100:.2f}" in card for v in trained.values())
    assert main(["export-checkpoint", str(paper_run), "--step", "7", "-o", str(tmp_path / "x")]) == 2
    assert not (tmp_path / "x").exists()


@pytest.mark.slow
def test_training_archive_answers_s1_names_patch_folders_and_its_recorded_source(
    paper_run, reben_dirs, reben_export, tmp_path, monkeypatch, capsys
):
    """The run's own archive, searched from another folder: `--png --data recorded` finds the export again (the
    archive recorded only its name); an S1 patch name is a query (from s1, hits in s1 named by their S1 patch);
    BigEarthNet patch folders of either sensor are image queries whose sensor is found from their bands, read
    bit for bit as the export stores them (the patch itself comes back first, at cosine 1)."""
    from crjepa.cli import main
    from crjepa.data.images import read_image
    from crjepa.hub.archive import load_embeddings

    emb, model_dir = paper_run / "embeddings", paper_run / "model"
    archive = load_embeddings(emb)
    row = archive.ids[0]
    s1_name = archive.metadata["s1_name"][0]
    assert s1_name == _rows(reben_export)[row]["s1_name"] and s1_name != row
    monkeypatch.chdir(tmp_path)
    capsys.readouterr()
    assert main(["search", str(emb), "--id", s1_name, "-k", "2", "--png", "grid.png", "--data", "recorded"]) == 0, (
        capsys.readouterr().err
    )
    assert (tmp_path / "grid.png").is_file()
    capsys.readouterr()
    assert main(["search", str(emb), "--id", s1_name, "-k", "3", "--json"]) == 0
    hits = json.loads(capsys.readouterr().out)
    assert list(hits) == ["s1->s1", "s1->s2"]
    for hit in hits["s1->s1"]:  # S1 hits by their S1 patch name, with their item (S2) id beside
        assert hit["name"] == archive.metadata["s1_name"][archive.position(hit["id"])] != hit["id"]
    assert all(hit["name"] == hit["id"] for hit in hits["s1->s2"])
    assert main(["search", str(emb), "--id", s1_name, "--direction", "s2->s1"]) == 2
    assert "is the s1 patch of item" in capsys.readouterr().err

    rows = _rows(reben_export)
    bands = archive.info["config"]["band_names"]
    folders = {"s2": next(reben_dirs["s2"].glob(f"*/{row}")), "s1": next(reben_dirs["s1"].glob(f"*/{s1_name}"))}
    for sensor, folder in folders.items():
        np.testing.assert_array_equal(read_image(folder, bands=bands[sensor]), np.asarray(rows[row][sensor]))
        capsys.readouterr()
        assert (
            main(
                [
                    "search",
                    str(emb),
                    "--image",
                    str(folder),
                    "--model",
                    str(model_dir),
                    "-k",
                    "1",
                    "--json",
                    "--device",
                    "cpu",
                ]
            )
            == 0
        )  # no --sensor: the folder's bands say which
        found = json.loads(capsys.readouterr().out)
        assert sorted(found) == sorted(f"{sensor}->{t}" for t in ("s1", "s2"))
        same = found[f"{sensor}->{sensor}"][0]
        assert same["id"] == row and same["score"] == pytest.approx(1.0, abs=1e-4)


# ------------------------------------------------------------------------------------ S2-only archives
def test_s2_only_archive_convert_embed_index_search_evaluate(paper_run, reben_s2_export, tmp_path, capsys):
    from crjepa.cli import main
    from crjepa.data.loading import load_paired_dataset

    ds = load_paired_dataset(reben_s2_export)
    assert "s1" not in ds.column_names and len(ds) == 18 and ds.features["s2"].shape == (12, 120, 120)
    assert "BigEarthNet-S2 (reben)" in (reben_s2_export / "README.md").read_text()
    model_dir, emb = paper_run / "model", tmp_path / "emb"
    assert main(["embed", str(model_dir), str(reben_s2_export), "-o", str(emb), "--device", "cpu"]) == 0
    assert main(["index", str(emb)]) == 0
    query = sorted(ds["id"])[0]
    capsys.readouterr()
    assert main(["search", str(emb), "--id", query, "-k", "3", "--json"]) == 0  # no --direction: s2->s2
    hits = json.loads(capsys.readouterr().out)
    assert list(hits) == ["s2->s2"] and len(hits["s2->s2"]) == 3 and query not in [h["id"] for h in hits["s2->s2"]]
    assert main(["search", str(emb), "--id", query, "--direction", "s1->s2"]) == 2
    assert "known sensors: ['s2']" in capsys.readouterr().err
    out = tmp_path / "eval"
    assert main(["evaluate", str(model_dir), str(reben_s2_export), "--device", "cpu", "--output-dir", str(out)]) == 0
    scores = json.loads((out / "retrieval_results.json").read_text())
    assert scores["sensors"] == ["s2"] and list(scores["metrics"]["F1@5"]) == ["s2->s2"]


# ------------------------------------------------------------------------------------ v1: --subset all
def test_v1_pairs_subset_all_export_embed_evaluate(ben_v1_dirs, paper_run, tmp_path):
    """v1 with --subset all: the export, then the trained model's embed / evaluate on it (the paper config's
    training on this export runs in tests/test_readme.py, the README's BEN-14K recipe)."""
    from crjepa.cli import main
    from crjepa.data.loading import load_paired_dataset

    export = tmp_path / "v1"
    run = run_python(
        [
            "-m",
            "datasets_scripts",
            "bigearthnet",
            "--s1-dir",
            ben_v1_dirs[0],
            "--s2-dir",
            ben_v1_dirs[1],
            "--subset",
            "all",
            "--output-dir",
            export,
            "--num-proc",
            "1",
        ]
    )
    assert run.returncode == 0, run.stderr[-3000:]
    assert "converted 6 pairs (train 4, test 1, unassigned 1)" in run.stdout
    ds = load_paired_dataset(export)
    assert ds.features["s1"].shape == (2, 120, 120) and ds.features["s2"].shape == (12, 120, 120)
    model_dir = paper_run / "model"
    assert main(["embed", str(model_dir), str(export), "-o", str(tmp_path / "emb"), "--device", "cpu"]) == 0
    out = tmp_path / "eval"
    assert (
        main(
            [
                "evaluate",
                str(model_dir),
                str(export),
                "--query-split",
                "train",
                "--device",
                "cpu",
                "-k",
                "3",
                "--output-dir",
                str(out),
            ]
        )
        == 0
    )
    scores = json.loads((out / "retrieval_results.json").read_text())
    assert scores["num_queries"] == 4 and set(scores["metrics"]["F1@3"]) == {"s1->s1", "s2->s2", "s1->s2", "s2->s1"}


# ------------------------------------------------------------------------------------ every YAML of configs/
def test_every_yaml_in_configs_accepts_data_path_of_an_export(reben_export):
    """Defects 1-2: each config (paper, ablations, baselines, CPU default, the other data sets' YAMLs with the
    sensors overridden) resolves with --data.path of an export and loads that export, named after it."""
    from crjepa.train.config import build_model_config, load_run_config, packaged_configs
    from crjepa.train.data import load_data

    names = packaged_configs()
    assert len(names) >= 25 and "baselines/contrastive.yaml" in names and "paper_ben14k.yaml" in names
    for name in names:
        config = load_run_config(f"configs/{name}", [("data.path", str(reben_export)), ("model.preset", "tiny")])
        if set(build_model_config(config).sensor_names) != {"s1", "s2"}:  # dsrsid / cbrsir_vs: other sensors
            continue
        dataset = load_data(config, build_model_config(config))
        assert len(dataset) == 18, name
        assert config["data"]["name"] == "BigEarthNet-MM (reben)", name


def test_partially_paired_real_patches_convert_train_embed_evaluate(reben_dirs, tmp_path):
    """Real reBEN patches with some S1 acquisitions missing: `--keep-unpaired` keeps their S2 as S2-only rows,
    the paper's config trains on every row through `accelerate launch` (the log counts the pairs each step used),
    the card says how the rows were paired, and `crjepa embed` / `evaluate` use each sensor's rows."""

    from crjepa.cli import main

    meta = reben_pairs(reben_dirs)
    dropped = {r["s1_name"] for r in meta if r["split"] == "train"}
    dropped = set(sorted(dropped)[:3])  # three training places lose their S1 patch
    s1 = tmp_path / "BigEarthNet-S1"
    for patch in reben_dirs["s1"].glob("*/*"):
        if patch.name not in dropped:
            (s1 / patch.parent.name).mkdir(parents=True, exist_ok=True)
            (s1 / patch.parent.name / patch.name).symlink_to(patch)
    export = tmp_path / "partial"
    run = run_python(
        [
            "-m",
            "datasets_scripts",
            "bigearthnet",
            "--s1-dir",
            s1,
            "--s2-dir",
            reben_dirs["s2"],
            "--reben-metadata",
            reben_dirs["metadata"],
            "--subset",
            "reben",
            "--keep-unpaired",
            "--output-dir",
            export,
            "--num-proc",
            "1",
        ]
    )
    assert run.returncode == 0, run.stderr[-3000:]
    table = pq.read_table(next((export / "data").glob("train-*.parquet")))
    assert table["s1"].null_count == 3 and table["s2"].null_count == 0

    out = tmp_path / "run"
    run = run_python(
        [
            "-m",
            "accelerate.commands.launch",
            "--num_processes",
            "1",
            "--num_machines",
            "1",
            "--mixed_precision",
            "no",
            "--dynamo_backend",
            "no",
            str(REPO / "train_accelerate.py"),
            "--config",
            "configs/paper_ben14k.yaml",
            "--data.path",
            export,
            "--output_dir",
            out,
            *TINY,
            "--logging.every_steps",
            "1",
            "--training.max_steps",
            "3",
        ],
        timeout=600,
    )
    assert run.returncode == 0, run.stdout[-2000:] + run.stderr[-3000:]
    assert "Training rows by sensors present: {'s1+s2': 3, 's2': 3}" in run.stdout
    log = [json.loads(line) for line in (out / "train_log.jsonl").read_text().splitlines()]
    assert sum(r["train/rows/cross/s1-s2"] for r in log) <= 3 * 4 and all("train/rows/pred/s2->s2" in r for r in log)
    assert sum(r["train/rows/pred/s2->s2"] for r in log) == 3 * 4  # 3 steps of 4 rows, every row has S2
    card = (out / "model" / "README.md").read_text()
    assert "partially paired: 3 with s1 + s2, 3 with s2" in card

    emb = tmp_path / "emb"
    assert (
        main(
            [
                "embed",
                str(out / "model"),
                str(export),
                "--split",
                "train",
                "-o",
                str(emb),
                "--device",
                "cpu",
                "--index",
                "exact",
            ]
        )
        == 0
    )
    shard = pq.read_table(next((emb / "data").glob("*.parquet")))
    assert shard["s1_cross"].null_count == 3 and shard["s2_cross"].null_count == 0
    assert (
        main(
            [
                "evaluate",
                str(out / "model"),
                str(export),
                "--query-split",
                "train",
                "--device",
                "cpu",
                "--output-dir",
                str(tmp_path / "eval"),
            ]
        )
        == 0
    )
    scores = json.loads((tmp_path / "eval" / "retrieval_results.json").read_text())
    assert scores["direction_counts"] == {"s1->s1": [3, 3], "s2->s2": [6, 6], "s1->s2": [3, 6], "s2->s1": [6, 3]}


@pytest.mark.slow
def test_a_one_row_test_split_stops_with_one_error_and_no_traceback(ben_v1_dirs, tmp_path):
    """The v1 sample exported with --subset all has a 1-row test split: the paper config (which scores the test
    split) stops before training with one error that says what to do, printed once, and no launcher traceback
    when launched as README.md documents it (`accelerate launch -q -m train_accelerate`, from any folder)."""
    export = tmp_path / "v1"
    run = run_python(
        [
            "-m",
            "datasets_scripts",
            "bigearthnet",
            "--s1-dir",
            ben_v1_dirs[0],
            "--s2-dir",
            ben_v1_dirs[1],
            "--subset",
            "all",
            "--output-dir",
            export,
            "--num-proc",
            "1",
        ]
    )
    assert run.returncode == 0, run.stderr[-3000:]
    run = run_python(
        [
            "-m",
            "accelerate.commands.launch",
            "-q",
            "--num_processes",
            "1",
            "--num_machines",
            "1",
            "--mixed_precision",
            "no",
            "--dynamo_backend",
            "no",
            "-m",
            "train_accelerate",
            "--config",
            "paper_ben14k.yaml",
            "--data.path",
            export,
            "--output_dir",
            tmp_path / "run",
            *TINY,
        ],
        cwd=tmp_path,
        timeout=600,
    )
    assert run.returncode != 0 and "Traceback" not in run.stderr, run.stderr[-3000:]
    assert run.stderr.count("error: The data cannot be evaluated") == 1, run.stderr[-3000:]
    assert "has 1 item: nothing to rank" in run.stderr and "--eval.query_split train, 4 rows" in run.stderr
    assert not (tmp_path / "run").exists()
