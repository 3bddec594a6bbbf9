"""benchmarks/gpu_step.py runs its whole code path (baseline and fast path) on the CPU and ends with its JSON."""

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent

pytestmark = pytest.mark.slow  # runs the benchmark script in a process of its own


def test_gpu_step_benchmark_runs_on_cpu_and_prints_json(tmp_path):
    profile = tmp_path / "profile.txt"
    cmd = [
        sys.executable,
        str(ROOT / "benchmarks" / "gpu_step.py"),
        "--device",
        "cpu",
        "--preset",
        "tiny",
        "--batch",
        "4",
        "--steps",
        "1",
        "--embed-batch",
        "4",
        "--native-size",
        "40",
        "--warmup",
        "1",
        "--profile",
        str(profile),
        "--profile-steps",
        "1",
    ]
    env = {**os.environ, "PYTHONPATH": str(ROOT), "OMP_NUM_THREADS": "1"}
    result = subprocess.run(cmd, cwd=ROOT, env=env, capture_output=True, text=True, timeout=240)
    assert result.returncode == 0, result.stderr[-3000:]
    out = json.loads(result.stdout.strip().splitlines()[-1])
    for key in (
        "train_pairs_per_s",
        "baseline_train_pairs_per_s",
        "embed_images_per_s",
        "baseline_embed_images_per_s",
        "mfu",
        "peak_memory_gb",
        "gflop_per_pair",
        "embed_gflop_per_image",
    ):
        assert isinstance(out[key], (int, float)) and out[key] > 0, key
    assert out["device"].startswith("cpu") and out["preset"] == "tiny" and out["batch"] == 4
    # the tiny model's counted FLOPs: a training pair costs far more than embedding one image
    assert out["gflop_per_pair"] > 2 * out["embed_gflop_per_image"]
    # the profile: operator tables for both phases, and the step's time split by kind, matmuls among them
    text = profile.read_text()
    assert "## fast path: training step" in text and "## fast path: embedding batch" in text
    split = out["profile_train"]["split_s_per_step"]
    assert split["matmul"] > 0 and sum(split.values()) <= 1.5 * out["profile_train"]["wall_s_per_step"]
