"""Sharded, streamed, resumable embedding (`crjepa.hub.embedding` through `crjepa embed`): two processes give
exactly the archive of one, a run killed after its first shard resumes to the same archive, and a folder of
another run is refused."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest
import torch

from modeling_crjepa import CRJepaConfig, CRJepaModel
from crjepa.cli import main
from crjepa.hub.archive import load_embeddings

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
    """Same ids, labels, metadata and vectors (bit for bit), compared after sorting by id."""
    x, y = load_embeddings(a, load_indices=False), load_embeddings(b, load_indices=False)
    ox, oy = np.argsort(x.ids), np.argsort(y.ids)
    assert [x.ids[i] for i in ox] == [y.ids[i] for i in oy] and len(x) == 40
    np.testing.assert_array_equal(x.labels[ox], y.labels[oy])
    assert x.columns == y.columns == ["s1_unified", "s1_cross", "s2_unified", "s2_cross"]
    for column in x.columns:
        np.testing.assert_array_equal(x.vectors[column][ox], y.vectors[column][oy])
    assert x.metadata == y.metadata and x.info == y.info


def test_one_process_equals_the_in_memory_embedding(root: Path) -> None:
    """The streamed shards hold what `compute_embeddings` computes on the whole data set at once."""
    from crjepa.cli import _load_data
    from crjepa.eval.retrieval import compute_embeddings

    archive = load_embeddings(root / "one", load_indices=False)
    assert sorted(p.name for p in (root / "one" / "data").iterdir()) == [f"train-{i:05d}.parquet" for i in range(5)]
    dataset = _load_data({"dataset": "synthetic", "seed": 0, "num_pairs": 40}, "test")
    model = CRJepaModel.from_pretrained(root / "model").eval()
    reference = compute_embeddings(model, dataset, batch_size=4)
    assert archive.ids == reference.ids
    np.testing.assert_array_equal(archive.labels, reference.labels)
    for column in archive.columns:
        np.testing.assert_allclose(archive.vectors[column], reference.vectors[column], atol=1e-6)


def test_two_processes_give_exactly_the_embeddings_of_one(root: Path) -> None:
    proc = subprocess.run([sys.executable, "-m", "crjepa.cli", "embed", "model", *DATA, "-o", "two", "--device",
                           "cpu", "--num-processes", "2"], cwd=root, env=_env(), capture_output=True, text=True,
                          timeout=600)
    assert proc.returncode == 0, proc.stderr[-3000:]
    assert "process 1/2: 3 shards written" in proc.stdout and "process 2/2: 2 shards written" in proc.stdout
    _same_archive(root / "one", root / "two")


def test_a_killed_run_resumes_to_the_same_result(root: Path) -> None:
    data = [a if a != "8" else "4" for a in DATA]  # 10 one-batch shards: the kill lands mid-way
    command = [sys.executable, "-m", "crjepa.cli", "embed", "model", *data, "-o", "killed", "--device", "cpu"]
    first = root / "killed" / "data" / "train-00000.parquet"
    proc = subprocess.Popen(command, cwd=root, env=_env(), stdout=subprocess.PIPE, stderr=subprocess.PIPE)
    deadline = time.monotonic() + 300
    while not first.exists() and proc.poll() is None and time.monotonic() < deadline:
        time.sleep(0.02)
    proc.send_signal(signal.SIGKILL)
    proc.wait()
    done = sorted((root / "killed" / "data").glob("train-*.parquet"))
    assert first in done and len(done) < 10, "the run finished before it could be killed"
    assert not (root / "killed" / "embeddings_info.json").exists()
    stamps = {p: p.stat().st_mtime_ns for p in done}
    resumed = subprocess.run(command, cwd=root, env=_env(), capture_output=True, text=True, timeout=600)
    assert resumed.returncode == 0, resumed.stderr[-3000:]
    assert f"{10 - len(done)} shards written, {len(done)} already done (of 10, 40 rows)" in resumed.stdout
    assert {p: p.stat().st_mtime_ns for p in done} == stamps  # finished shards are skipped, not rewritten
    assert not [p for p in (root / "killed" / "data").iterdir() if p.name.startswith(".")]  # no temp files left
    _same_archive(root / "one", root / "killed")


def test_a_folder_of_another_run_is_refused(root: Path, capsys) -> None:
    other = [a if a != "8" else "12" for a in DATA]  # another shard size: shards would not line up
    assert main(["embed", str(root / "model"), *other, "-o", str(root / "one"), "--device", "cpu"]) == 2
    assert "holds shards of another embedding run (different shard_rows)" in capsys.readouterr().err
