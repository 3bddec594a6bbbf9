"""Sharded, streamed, resumable embedding (`crjepa.hub.embedding` through `crjepa embed`): two processes give
the archive of one, a run killed after some shards resumes to the same archive, and a folder of another run is
refused."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import torch

from crjepa.cli import main
from crjepa.hub.archive import load_embeddings
from modeling_crjepa import CRJepaConfig, CRJepaModel

from helpers import assert_close_at_scale, free_port

REPO = Path(__file__).resolve().parents[1]
DATA = ["synthetic", "--num-pairs", "40", "--split", "test", "--batch-size", "4", "--shard-rows", "8"]  # 5 shards


def _env() -> dict[str, str]:
    return {**os.environ, "PYTHONPATH": str(REPO), "HF_HUB_OFFLINE": "1"}


@pytest.fixture(scope="module")
def root(tmp_path_factory) -> Path:
    """A tiny saved model and the archive one process embeds (in this process, through `main`)."""
    root = tmp_path_factory.mktemp("embed")
    torch.manual_seed(0)
    CRJepaModel(CRJepaConfig.from_preset("tiny")).save_pretrained(root / "model")
    cwd = os.getcwd()
    os.chdir(root)
    try:
        assert main(["embed", "model", *DATA, "-o", "one", "--device", "cpu"]) == 0
    finally:
        os.chdir(cwd)
    return root


def _same_archive(a: Path, b: Path) -> None:
    """Same ids, labels and metadata (exactly) and vectors (to float32 roundoff: another process may run other
    thread counts, so other GEMM blockings), compared after sorting by id."""
    x, y = load_embeddings(a, load_indices=False), load_embeddings(b, load_indices=False)
    ox, oy = np.argsort(x.ids), np.argsort(y.ids)
    assert [x.ids[i] for i in ox] == [y.ids[i] for i in oy] and len(x) == 40
    np.testing.assert_array_equal(x.labels[ox], y.labels[oy])
    assert x.columns == y.columns == ["s1_unified", "s1_cross", "s2_unified", "s2_cross"]
    for column in x.columns:
        assert_close_at_scale(x.vectors[column][ox], y.vectors[column][oy], scale=1.0)  # unit vectors
    assert x.metadata == y.metadata and x.info == y.info


@pytest.mark.slow
def test_one_process_equals_the_in_memory_embedding(root: Path) -> None:
    """The streamed shards hold what `compute_embeddings` computes on the whole data set at once."""
    from crjepa.cli.common import load_data
    from crjepa.eval.retrieval import compute_embeddings

    archive = load_embeddings(root / "one", load_indices=False)
    assert sorted(p.name for p in (root / "one" / "data").iterdir()) == [f"test-{i:05d}.parquet" for i in range(5)]
    dataset = load_data({"dataset": "synthetic", "seed": 0, "num_pairs": 40}, "test")
    model = CRJepaModel.from_pretrained(root / "model").eval()
    reference = compute_embeddings(model, dataset, batch_size=4)
    assert archive.ids == reference.ids
    np.testing.assert_array_equal(archive.labels, reference.labels)
    for column in archive.columns:
        assert_close_at_scale(archive.vectors[column], reference.vectors[column], scale=1.0)


@pytest.mark.slow
def test_two_processes_give_exactly_the_embeddings_of_one(root: Path) -> None:
    proc = subprocess.run(
        [
            sys.executable,
            "-m",
            "crjepa.cli",
            "embed",
            "model",
            *DATA,
            "-o",
            "two",
            "--device",
            "cpu",
            "--num-processes",
            "2",
        ],
        cwd=root,
        env=_env(),
        capture_output=True,
        text=True,
        timeout=600,
    )
    assert proc.returncode == 0, proc.stderr[-3000:]
    assert "process 1/2: 3 shards written" in proc.stdout and "process 2/2: 2 shards written" in proc.stdout
    _same_archive(root / "one", root / "two")


KILL_AFTER_SHARDS = """
import os, signal, sys
import crjepa.hub.embedding as embedding
real_embed_shards, kill_after = embedding.embed_shards, int(sys.argv.pop(1))

def embed_shards(*args, on_shard=None, **kwargs):  # the real writer, SIGKILLed once `kill_after` shards are in place
    def renamed(shard):
        if on_shard:
            on_shard(shard)
        if shard + 1 == kill_after:
            os.kill(os.getpid(), signal.SIGKILL)
    return real_embed_shards(*args, on_shard=renamed, **kwargs)

embedding.embed_shards = embed_shards
from crjepa.cli import main
sys.exit(main(sys.argv[1:]))
"""
"""`crjepa embed ARGS` killed (SIGKILL, no cleanup) right after its Nth shard is renamed into place: the kill lands
at the same point on any machine and under any load."""


@pytest.mark.slow
def test_a_killed_run_resumes_to_the_same_result(root: Path) -> None:
    data = [a if a != "8" else "4" for a in DATA]  # 10 one-batch shards: the kill lands mid-way
    args = ["embed", "model", *data, "-o", "killed", "--device", "cpu"]
    killed = subprocess.run(
        [sys.executable, "-c", KILL_AFTER_SHARDS, "3", *args], cwd=root, env=_env(), capture_output=True, text=True
    )
    assert killed.returncode == -signal.SIGKILL, killed.stderr[-3000:]
    done = sorted((root / "killed" / "data").glob("test-*.parquet"))
    assert [p.name for p in done] == [f"test-{i:05d}.parquet" for i in range(3)]
    assert not (root / "killed" / "embeddings_info.json").exists()
    stamps = {p: p.stat().st_mtime_ns for p in done}
    resumed = subprocess.run(
        [sys.executable, "-m", "crjepa.cli", *args], cwd=root, env=_env(), capture_output=True, text=True
    )
    assert resumed.returncode == 0, resumed.stderr[-3000:]
    assert "7 shards written, 3 already done (of 10, 40 rows)" in resumed.stdout
    assert {p: p.stat().st_mtime_ns for p in done} == stamps  # finished shards are skipped, not rewritten
    assert not [p for p in (root / "killed" / "data").iterdir() if p.name.startswith(".")]  # no temp files left
    _same_archive(root / "one", root / "killed")


@pytest.mark.slow
def test_the_progress_bar_knows_the_total(root: Path, tmp_path, capsys) -> None:
    """The embed bar has a total (hence an ETA): the source's length from the synthetic sizes or the Parquet
    footers, this process's share of the shards, shards finished by an earlier run counted as done."""
    from crjepa.hub.embedding import own_rows, source_rows

    assert source_rows({"dataset": "synthetic", "num_pairs": 40}, "test") == 40
    assert source_rows({"dataset": "synthetic"}, None) == 3000  # the generator's default sizes
    export = tmp_path / "export"
    from crjepa.cli.common import load_data

    load_data({"dataset": "synthetic", "num_pairs": 7}, None).to_parquet(str(export / "data" / "test-0.parquet"))
    assert source_rows({"dataset": str(export)}, "test") == 21 and source_rows({"dataset": str(export)}, "train") == 0
    assert own_rows(40, 16, 1, 2) == [(1, 16)] and own_rows(40, 16, 0, 2) == [(0, 16), (2, 8)]
    capsys.readouterr()
    assert main(["embed", str(root / "model"), *DATA, "-o", str(tmp_path / "emb"), "--device", "cpu"]) == 0
    bar = capsys.readouterr().err.split("\r")[-1]
    assert "100%" in bar and "80.0/80.0" in bar, bar  # 40 rows x 2 sensors, with a percentage and an ETA


@pytest.mark.slow
def test_a_folder_of_another_run_is_refused(root: Path, capsys) -> None:
    """An unfinished run's shards are not mixed with another run's (a finished archive is replaced whole: the new
    one is written beside it, see tests/test_cli_embed.py)."""
    import shutil

    unfinished = root / "unfinished"
    shutil.copytree(root / "one", unfinished)
    (unfinished / "embeddings_info.json").unlink()
    (unfinished / ".crjepa-output.json").unlink()
    other = [a if a != "8" else "12" for a in DATA]  # another shard size: shards would not line up
    assert main(["embed", str(root / "model"), *other, "-o", str(unfinished), "--device", "cpu"]) == 2
    assert "holds shards of another embedding run (different shard_rows)" in capsys.readouterr().err


@pytest.mark.slow
def test_a_partially_paired_export_embeds_indexes_and_evaluates(root: Path, capsys) -> None:
    """`crjepa embed` on an export with single-sensor rows (synthetic --pairing-rate 0.5): null vectors where a
    row lacks the sensor, equal to the in-memory embedding elsewhere; index, search and evaluate use each
    sensor's own rows."""
    from crjepa.data.loading import load_paired_dataset
    from crjepa.eval.retrieval import compute_embeddings
    from datasets_scripts.__main__ import main as export

    data = root / "partial-data"
    assert (
        export(
            [
                "synthetic",
                "--pairing-rate",
                "0.5",
                "--num-train",
                "24",
                "--num-validation",
                "0",
                "--num-test",
                "8",
                "--image-size",
                "32",
                "--output-dir",
                str(data),
                "--num-proc",
                "1",
            ]
        )
        == 0
    )
    cwd = os.getcwd()
    os.chdir(root)
    try:
        assert (
            main(
                [
                    "embed",
                    "model",
                    str(data),
                    "--split",
                    "train",
                    "-o",
                    "partial",
                    "--device",
                    "cpu",
                    "--batch-size",
                    "4",
                    "--shard-rows",
                    "8",
                    "--index",
                    "exact",
                ]
            )
            == 0
        )
        archive = load_embeddings(root / "partial")
        train = load_paired_dataset(data, split="train")
        reference = compute_embeddings(CRJepaModel.from_pretrained(root / "model").eval(), train, batch_size=4)
        assert archive.ids == reference.ids
        for sensor in ("s1", "s2"):
            assert np.array_equal(archive.present[sensor], reference.present[sensor])
            rows = reference.present[sensor]
            for column in (f"{sensor}_unified", f"{sensor}_cross"):
                assert_close_at_scale(archive.vectors[column][rows], reference.vectors[column][rows], scale=1.0)
                assert not archive.vectors[column][~rows].any() and len(archive.indices[column]) == rows.sum()
        s2_only = archive.ids[int(np.flatnonzero(~reference.present["s1"])[0])]
        capsys.readouterr()
        assert main(["search", "partial", "--id", s2_only, "--direction", "s2->s1", "-k", "3"]) == 0
        assert main(["search", "partial", "--id", s2_only, "--direction", "s1->s2"]) == 2
        assert f"Item '{s2_only}' has no 's1' image" in capsys.readouterr().err
        assert main(["evaluate", "model", str(data), "--query-split", "train", "--output-dir", "partial-eval"]) == 0
        scored = json.loads(next((root / "partial-eval").glob("*.json")).read_text())
        assert scored["direction_counts"]["s1->s2"] == [
            int(reference.present["s1"].sum()),
            int(reference.present["s2"].sum()),
        ]
    finally:
        os.chdir(cwd)


@pytest.mark.slow
def test_a_finished_archive_is_marked_and_published_without_its_run_folder(root: Path) -> None:
    """finish_archive marks the folder as an embeddings archive (so a later `embed -o` may replace it), and a
    push leaves out the local run bookkeeping (.embed/ names the local input path) and the marker."""
    from huggingface_hub.utils import filter_repo_objects

    from crjepa.hub.access import push_folder
    from crjepa.utils.atomic import read_marker

    from helpers import FakeHubApi

    folder = root / "one"
    assert read_marker(folder)["kind"] == "embeddings"
    api = FakeHubApi()
    push_folder(folder, "someone/emb", api=api)
    upload = api.calls[-1][1]
    files = [p.relative_to(folder).as_posix() for p in folder.rglob("*") if p.is_file()]
    published = list(filter_repo_objects(files, ignore_patterns=upload["ignore_patterns"]))
    assert ".embed/run.json" in files and not [f for f in published if f.startswith(".embed")]
    assert "embeddings_info.json" in published and "data/test-00000.parquet" in published
    assert ".crjepa-output.json" not in published


@pytest.mark.slow
def test_accelerate_launch_two_processes_give_the_embeddings_of_one(root: Path) -> None:
    """`accelerate launch -m crjepa.cli embed ...` (the GPU recipe of the README) on 2 CPU processes (gloo):
    each rank embeds its shards, rank 0 finishes the archive; the result is that of one process."""
    command = [
        sys.executable,
        "-m",
        "accelerate.commands.launch",
        "--multi_gpu",
        "--num_processes",
        "2",
        "--main_process_port",
        str(free_port()),
        "-m",
        "crjepa.cli",
        "embed",
        "model",
        *DATA,
        "-o",
        "launched",
    ]
    proc = subprocess.run(
        command,
        cwd=root,
        env={**_env(), "ACCELERATE_USE_CPU": "yes", "OMP_NUM_THREADS": "1"},
        capture_output=True,
        text=True,
        timeout=600,
    )
    assert proc.returncode == 0, proc.stdout[-2000:] + proc.stderr[-3000:]
    assert "process 1/2: 3 shards written" in proc.stdout and "process 2/2: 2 shards written" in proc.stdout
    _same_archive(root / "one", root / "launched")


def test_archive_of_the_test_split_is_published_as_test_with_license_and_source_in_words(root: Path, tmp_path) -> None:
    """`embed --split test`: shards data/test-*.parquet, the card's data_files name the split `test` (load_dataset
    gives split "test"), the license is the source data's, the source is a sentence (no raw JSON)."""
    import logging
    import warnings

    import datasets
    from huggingface_hub import DatasetCard

    from crjepa.hub.archive.provenance import source_license

    archive = root / "one"
    assert sorted(p.name.split("-")[0] for p in (archive / "data").glob("*.parquet")) == ["test"] * 5
    card = DatasetCard.load(archive / "README.md")
    assert card.data.license == "apache-2.0"  # the synthetic set's license
    assert card.data.configs == [
        {"config_name": "default", "data_files": [{"split": "test", "path": "data/test-*.parquet"}]}
    ]
    assert "Source data: the `test` split of the built-in synthetic" in card.text and '{"dataset"' not in card.text
    assert 'split="test"' in card.text
    records: list[logging.LogRecord] = []
    handler = logging.Handler(level=logging.WARNING)
    handler.emit = records.append
    logging.getLogger().addHandler(handler)
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("error")
            loaded = datasets.load_dataset(str(archive), cache_dir=str(tmp_path / "hf"))
    finally:
        logging.getLogger().removeHandler(handler)
    assert list(loaded) == ["test"] and len(loaded["test"]) == 40 and not records
    export = tmp_path / "export"
    export.mkdir()
    (export / "README.md").write_text("---\nlicense: cdla-permissive-1.0\npretty_name: x\n---\n# x\n")
    assert source_license({"dataset": str(export), "split": "test"}) == "cdla-permissive-1.0"
    assert source_license({"dataset": "user/remote"}) is None


def test_a_run_stopped_by_a_full_disk_resumes_and_leaves_no_temp_file(root: Path, small_disk, capsys) -> None:
    """On a real full disk the shard in flight used to stay as data/.train-NNNNN.parquet.tmp-PID after the resumed
    run finished (and `crjepa push` would upload it). Now the failing run removes it, says so in one line, and the
    rerun finishes an archive equal to the one of an undisturbed run."""
    from helpers import fill_disk

    disk = small_disk("8m")
    out = disk / "emb"
    filler = fill_disk(disk, leave=40 << 10)  # room for a few shards of 4 rows
    command = ["embed", str(root / "model"), *DATA, "-o", str(out), "--device", "cpu"]
    assert main(command) == 2
    err = capsys.readouterr().err
    assert "No space left on device" in err and "Traceback" not in err
    shards = sorted(p.name for p in (out / "data").iterdir())
    assert shards and all(not name.startswith(".") for name in shards), shards  # finished shards only
    filler.unlink()
    assert main(command) == 0
    assert "already done" in capsys.readouterr().out
    assert not [p for p in out.rglob("*") if ".tmp-" in p.name]
    _same_archive(root / "one", out)


def test_a_damaged_finished_shard_is_embedded_again(root: Path, capsys) -> None:
    """A finished shard truncated afterwards (a full disk, a bad copy) made every rerun fail with a Parquet error
    and no hint; the rerun now warns, embeds that shard again and finishes the same archive."""
    import shutil

    damaged = root / "damaged"
    shutil.copytree(root / "one", damaged)
    shard = damaged / "data" / "test-00002.parquet"
    shard.write_bytes(shard.read_bytes()[:300])
    assert main(["embed", str(root / "model"), *DATA, "-o", str(damaged), "--device", "cpu"]) == 0
    captured = capsys.readouterr()
    assert f"the finished shard {shard} does not read" in captured.err and "embedding it again" in captured.err
    assert "1 shards written, 4 already done" in captured.out
    _same_archive(root / "one", damaged)


def test_rows_without_an_id_are_refused(root: Path, tmp_path: Path, capsys) -> None:
    """A null id became the archive id "None" (and search by id "found" it); now the embedding stops naming it."""
    import pyarrow as pa
    import pyarrow.parquet as pq

    from crjepa.cli.common import load_data

    export = tmp_path / "export" / "data" / "test-00000-of-00001.parquet"
    load_data({"dataset": "synthetic", "num_pairs": 8}, "test").to_parquet(str(export))
    table = pq.read_table(export)
    ids = table["id"].to_pylist()
    ids[3] = None
    pq.write_table(table.set_column(0, table.schema.field("id"), pa.array(ids, pa.string())), export)
    assert (
        main(["embed", str(root / "model"), str(tmp_path / "export"), "-o", str(tmp_path / "emb"), "--device", "cpu"])
        == 2
    )
    assert "rows without an id (null or empty; rows [3]" in capsys.readouterr().err
