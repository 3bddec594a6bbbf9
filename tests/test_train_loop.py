"""End-to-end tests of train_accelerate.py: the main command, two processes vs one, exact resume, bad input.

Everything runs on the CPU, offline, on tiny settings of the built-in synthetic data (overrides below).
"""

from __future__ import annotations

import json
import os
import re
import subprocess
import sys
from pathlib import Path

import pytest
import torch
from safetensors.torch import load_file

from helpers import free_port, offline_env, small_run_args

ROOT = Path(__file__).resolve().parent.parent
SCRIPT = str(ROOT / "train_accelerate.py")
SMALL = small_run_args(256, 128, 32)


def env() -> dict[str, str]:
    return offline_env(HF_DATASETS_OFFLINE="1", TRANSFORMERS_OFFLINE="1", OMP_NUM_THREADS="1")


def run(
    args: list[str], launcher: list[str] | None = None, extra_env: dict[str, str] | None = None, timeout: int = 300
) -> subprocess.CompletedProcess:
    command = [sys.executable, *(launcher if launcher is not None else []), SCRIPT, *args]
    result = subprocess.run(
        command, cwd=ROOT, env={**env(), **(extra_env or {})}, capture_output=True, text=True, timeout=timeout
    )
    return result


def check(result: subprocess.CompletedProcess) -> str:
    assert result.returncode == 0, f"exit {result.returncode}\n{result.stdout[-3000:]}\n{result.stderr[-5000:]}"
    return result.stdout


def losses(output_dir: Path) -> list[dict[str, float]]:
    return [json.loads(line) for line in (output_dir / "train_log.jsonl").read_text().splitlines()]


# ---------------------------------------------------------------------------------------------- main command
@pytest.mark.slow
def test_main_command_trains_evaluates_saves_and_beats_random_init(tmp_path):
    out = tmp_path / "run"
    stdout = check(
        run(
            SMALL + ["--output_dir", str(out)],
            launcher=["-m", "accelerate.commands.launch", "--cpu", "--num_processes", "1"],
        )
    )
    table = dict(
        (d, (float(a), float(b)))
        for d, a, b in re.findall(r"^\| (S\d->S\d) \| ([\d.]+) \| ([\d.]+) \|$", stdout, flags=re.M)
    )
    assert set(table) == {"S1->S1", "S2->S2", "S1->S2", "S2->S1"}, stdout
    for direction in ("S1->S2", "S2->S1"):  # cross-modal: the trained model must clearly beat random init
        random_init, trained = table[direction]
        assert trained > random_init + 3, table
    assert str(out / "model") in stdout and str(out / "embeddings") in stdout

    from huggingface_hub import ModelCard
    from transformers import AutoModel

    model = AutoModel.from_pretrained(out / "model", trust_remote_code=True)
    assert type(model).__name__ == "CRJepaModel"
    assert (out / "model" / "model.safetensors").is_file() and (out / "model" / "preprocessor_config.json").is_file()
    assert (out / "model" / "modeling_crjepa.py").is_file()  # remote code travels with the weights
    card = ModelCard.load(out / "model" / "README.md")
    results = {(r.metric_name, r.metric_config): r.metric_value for r in card.data.eval_results}
    assert results[("F1@5 S1->S2", "s1->s2")] == pytest.approx(table["S1->S2"][1], abs=0.01)
    assert {cfg for _, cfg in results} == {"s1->s1", "s2->s2", "s1->s2", "s2->s1"}
    assert "random init" in card.text and "synthetic" in card.text
    assert list((out / "embeddings" / "data").glob("*.parquet"))
    assert {p.name for p in (out / "embeddings" / "faiss").iterdir()} == {
        "s1_unified",
        "s1_cross",
        "s2_unified",
        "s2_cross",
    }
    logged = losses(out)
    assert len(logged) == 16 and {
        "train/sigreg",
        "train/pred/s1->s2",
        "train/cross/s1-s2",
        "train/lr",
        "train/pairs_per_s",
    } <= set(logged[0])
    summary = json.loads((out / "results.json").read_text())
    assert summary["trained"]["metrics"]["F1@5"]["s1->s2"] * 100 == pytest.approx(table["S1->S2"][1], abs=0.01)


# ---------------------------------------------------------------------------------------------- distributed
@pytest.mark.slow
def test_two_processes_reach_the_loss_of_one_process_with_the_same_global_batch(tmp_path):
    """DDP on 2 CPU processes (gloo), per-process batch 8, vs 1 process with batch 16: same pairs per step (the
    seedable sampler), same mask per pair (keyed by pair id), SIGReg on the global batch (all-reduced), the
    prediction loss a per-pair mean (DDP averages the gradients). InfoNCE's negatives are the LOCAL batch, so
    the two runs differ by design when lambda_cross / lambda_uni > 0: they are set to 0 here."""
    common = SMALL + [
        "--data.options",
        "{num_train: 64, num_validation: 0, num_test: 32, seed: 0}",
        "--max_steps",
        "3",
        "--model.lambda_cross",
        "0",
        "--model.lambda_uni",
        "0",
        "--eval.before_training",
        "false",
        "--embeddings.write",
        "false",
    ]
    one, two = tmp_path / "one", tmp_path / "two"
    check(
        run(
            common + ["--data.batch_size", "16", "--output_dir", str(one)],
            launcher=["-m", "accelerate.commands.launch", "--cpu", "--num_processes", "1"],
        )
    )
    check(
        run(
            common + ["--data.batch_size", "8", "--output_dir", str(two)],
            launcher=[
                "-m",
                "accelerate.commands.launch",
                "--multi_gpu",
                "--num_processes",
                "2",
                "--main_process_port",
                str(free_port()),
            ],
            extra_env={"ACCELERATE_USE_CPU": "yes"},
        )
    )
    single, double = losses(one), losses(two)
    assert [r["step"] for r in single] == [r["step"] for r in double] == [1, 2, 3]
    for a, b in zip(single, double):
        for term in ("train/loss", "train/pred", "train/pred/s1->s2", "train/sigreg"):
            assert b[term] == pytest.approx(a[term], rel=1e-4, abs=1e-5), (a["step"], term)
    assert single[0]["train/loss"] != pytest.approx(single[2]["train/loss"], rel=1e-3)  # it did train


# ---------------------------------------------------------------------------------------------- compile
@pytest.mark.slow
def test_compiled_training_follows_the_eager_run(tmp_path):
    """training.compile=blocks (regional torch.compile of stems and blocks, Inductor's real CPU kernels) trains
    the same losses as eager: speed never changes the model."""
    common = SMALL + [
        "--data.options",
        "{num_train: 64, num_validation: 0, num_test: 32, seed: 0}",
        "--data.batch_size",
        "16",
        "--max_steps",
        "3",
        "--eval.before_training",
        "false",
        "--embeddings.write",
        "false",
    ]
    eager, compiled = tmp_path / "eager", tmp_path / "compiled"
    assert "compile: none, 0 compiled modules" in check(run(common + ["--output_dir", str(eager)]))  # auto: eager
    stdout = check(run(common + ["--output_dir", str(compiled), "--training.compile", "blocks"]))
    # tiny: 2 stems + 2 trunk blocks + 3 predictors x 1 block
    assert "compile: blocks, 7 compiled modules" in stdout, stdout[-2000:]
    plain, fast = losses(eager), losses(compiled)
    assert [r["step"] for r in plain] == [r["step"] for r in fast] == [1, 2, 3]
    for a, b in zip(plain, fast):
        for term in ("train/loss", "train/pred", "train/cross", "train/uni", "train/sigreg"):
            assert b[term] == pytest.approx(a[term], rel=1e-4, abs=1e-5), (a["step"], term)
    assert plain[0]["train/loss"] != pytest.approx(plain[2]["train/loss"], rel=1e-3)  # it did train
    # compiling leaves the saved weights as they are: same names, same values to training's tolerance
    weights, reference = (load_file(d / "model" / "model.safetensors") for d in (compiled, eager))
    assert weights.keys() == reference.keys()
    assert all(torch.allclose(weights[k], reference[k], rtol=1e-3, atol=1e-5) for k in weights)


# ---------------------------------------------------------------------------------------------- resume
@pytest.mark.slow
def test_resume_continues_exactly_like_the_uninterrupted_run(tmp_path):
    """8 steps over 2 epochs; the interrupted run stops after step 5 (mid-epoch 2: exercises the data order of
    a later epoch and the skipped batches), the resumed run finishes; the final weights must be identical."""
    common = SMALL + [
        "--data.options",
        "{num_train: 64, num_validation: 0, num_test: 32, seed: 0}",
        "--data.batch_size",
        "16",
        "--eval.before_training",
        "false",
        "--embeddings.write",
        "false",
    ]
    full, parts = tmp_path / "full", tmp_path / "parts"
    check(run(common + ["--output_dir", str(full)]))
    check(run(common + ["--output_dir", str(parts), "--max_steps", "5"]))
    assert [p.name for p in (parts / "checkpoints").iterdir()] == ["step_00000005"]
    stdout = check(run(common + ["--output_dir", str(parts), "--resume"]))
    assert "Resuming from" in stdout and "step 5 of 8" in stdout
    reference, resumed = (
        load_file(full / "model" / "model.safetensors"),
        load_file(parts / "model" / "model.safetensors"),
    )
    assert reference.keys() == resumed.keys()
    for name in reference:
        torch.testing.assert_close(resumed[name], reference[name], rtol=0, atol=0, msg=name)
    assert [r["train/loss"] for r in losses(parts)] == [r["train/loss"] for r in losses(full)]


# ---------------------------------------------------------------------------------------------- bad input
def _no_training(output_dir: Path) -> None:
    assert not (output_dir / "checkpoints").exists() and not (output_dir / "train_log.jsonl").exists()


@pytest.mark.slow
def test_bad_input_fails_before_training_with_a_clear_message(tmp_path, capsys, monkeypatch):
    import train_accelerate

    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    out = tmp_path / "out"
    cases = {
        "unknown key": (["--training.epoch", "3"], r"Unknown config key 'training\.epoch'\. Did you mean .*--help"),
        "missing sensors": (
            ["--model.preset", "dsrsid"],
            r"missing sensor column\(s\) \['pan', 'ms'\].*"
            r"sensor column\(s\) \['s1', 's2'\] not in the model's config",
        ),
        "wrong channels": (
            [
                "--model.sensors",
                "{s1: 2, s2: 4}",
                "--model.band_names",
                "{s1: [VV, VH], s2: [a, b, c, d]}",
                "--model.band_mean",
                "{s1: [0, 0], s2: [0, 0, 0, 0]}",
                "--model.band_std",
                "{s1: [1, 1], s2: [1, 1, 1, 1]}",
            ],
            r"'s2' has 12 channels, the model expects 4",
        ),
        "baseline on unpaired rows": (
            [
                "--data.options",
                "{num_train: 256, num_validation: 0, num_test: 128, image_size: 32, pairing_rate: 0.5}",
                "--model.architecture",
                "xjepa",
            ],
            r"xjepa baseline needs every sensor in every training row, but of the 256 "
            r"training rows of synthetic\S*, 64 lack 's1', 64 lack 's2'",
        ),
        "push offline": (["--push_to_hub", "--hub_model_id", "user/model"], r"HF_HUB_OFFLINE"),
    }
    for name, (args, message) in cases.items():
        status = train_accelerate.main(SMALL + ["--output_dir", str(out)] + args)
        err = capsys.readouterr().err
        assert status == 2 and re.search(message, err, flags=re.S), (name, err)
        _no_training(out)

    blocker = tmp_path / "a-file"
    blocker.write_text("in the way")
    readonly = tmp_path / "readonly"
    readonly.mkdir(mode=0o555)
    if os.access(readonly, os.W_OK):  # root ignores permissions: use a file system that refuses everyone
        readonly = Path("/sys/crjepa-test")
    for target in (blocker / "out", readonly / "out"):
        assert train_accelerate.main(SMALL + ["--output_dir", str(target)]) == 2
        assert "Cannot write to the output directory" in capsys.readouterr().err

    # the real exit status through accelerate launch
    result = run(["--no_such_key", "1"], launcher=["-m", "accelerate.commands.launch", "--cpu", "--num_processes", "1"])
    assert result.returncode != 0 and "Unknown config key 'no_such_key'" in result.stderr


# ---------------------------------------------------------------------------------------------- partial pairing
@pytest.mark.slow
def test_partially_paired_and_unpaired_training_rows(tmp_path, capsys):
    """pairing_rate 0.25: every row trains (the log counts each term's rows per batch, the cross terms on the
    paired quarter), evaluation scores all four directions, the card says how the rows were paired. pairing_rate
    0: no pair at all -> the same-sensor routes train, cross terms stay 0, a warning and the card say the cross
    head is untrained."""
    from huggingface_hub import ModelCard

    import train_accelerate

    def options(rate):
        return [
            "--data.options",
            f"{{num_train: 256, num_validation: 0, num_test: 128, image_size: 32, seed: 0, pairing_rate: {rate}}}",
        ]

    out = tmp_path / "quarter"
    summary = train_accelerate.train([*SMALL, *options(0.25), "--output_dir", str(out), "--epochs", "1"])
    log = losses(out)
    assert len(log) == summary["steps"] == 8  # 256 rows / 32: every row is used, not only the 64 pairs
    rows = [r["train/rows/cross/s1-s2"] for r in log]
    assert all(0 < n < 32 for n in rows) and sum(rows) == pytest.approx(64, abs=1e-6)  # the 64 pairs, once each
    assert sum(r["train/rows/pred/s1->s1"] for r in log) == pytest.approx(64 + 96)  # pairs + S1-only rows
    assert all(r["train/loss"] == r["train/loss"] for r in log)  # no NaN
    assert set(summary["trained"]["metrics"]["F1@5"]) == {"s1->s1", "s2->s2", "s1->s2", "s2->s1"}
    card = ModelCard.load(out / "model" / "README.md").text
    assert "partially paired: 64 with s1 + s2, 96 with s1, 96 with s2" in card and "heads untrained" not in card
    capsys.readouterr()

    out = tmp_path / "none"
    summary = train_accelerate.train([*SMALL, *options(0.0), "--output_dir", str(out), "--epochs", "1"])
    printed = capsys.readouterr().out
    assert "warning: no training row has both 's1' and 's2'" in printed and "cross head is untrained" in printed
    log = losses(out)
    assert all(r["train/cross/s1-s2"] == 0 == r["train/rows/cross/s1-s2"] == r["train/pred/s1->s2"] for r in log)
    assert all(r["train/pred/s1->s1"] > 0 and r["train/sigreg"] > 0 for r in log)
    card = ModelCard.load(out / "model" / "README.md").text
    assert "cross-modal heads untrained for s1->s2, s2->s1" in card
    assert summary["trained"]["metrics"]["F1@5"]["s1->s1"] is not None


# ---------------------------------------------------------------------------------------------- N sensors
@pytest.mark.slow
def test_three_sensors_train_and_evaluate_every_direction(tmp_path):
    """A synthetic 3-sensor set (s1, s2 and an rgb view of s2's B04/B03/B02) trains 2 steps through
    train_accelerate.py; evaluation, the embeddings archive and the card cover all 9 directions."""
    import datasets
    import numpy as np
    import yaml
    from huggingface_hub import ModelCard

    import train_accelerate
    from crjepa.data.loading import load_paired_dataset

    data = tmp_path / "three" / "data"
    data.mkdir(parents=True)
    for split in ("train", "test"):
        ds = load_paired_dataset(
            "synthetic",
            split,
            num_train=64 if split == "train" else 0,
            num_validation=0,
            num_test=32 if split == "test" else 0,
            image_size=32,
            seed=0,
        )
        s2 = np.asarray(ds.with_format("numpy")["s2"])
        rgb = (s2[:, [3, 2, 1]] // 20).clip(0, 255).astype(np.uint8)
        features = ds.features.copy()
        features["rgb"] = datasets.Array3D(shape=rgb.shape[1:], dtype="uint8")
        ds = ds.add_column("rgb", rgb.tolist(), feature=features["rgb"])
        ds.to_parquet(str(data / f"{split}-00000-of-00001.parquet"))
    tiny = yaml.safe_load((ROOT / "configs" / "cpu_default.yaml").read_text())
    from modeling_crjepa.configuration_crjepa import PRESETS

    preset = PRESETS["tiny"]
    model_overrides = {
        "sensors": {**preset["sensors"], "rgb": 3},
        "band_names": {**preset["band_names"], "rgb": ["R", "G", "B"]},
        "band_mean": {**preset["band_mean"], "rgb": [100.0] * 3},
        "band_std": {**preset["band_std"], "rgb": [50.0] * 3},
    }
    tiny["data"].update(source=str(tmp_path / "three"), name="synthetic-3", options={}, batch_size=16)
    config_file = tmp_path / "three.yaml"
    config_file.write_text(yaml.safe_dump(tiny))
    out = tmp_path / "run"
    summary = train_accelerate.train(
        [
            "--config",
            str(config_file),
            "--output_dir",
            str(out),
            "--max_steps",
            "2",
            "--logging.report_to",
            "none",
            "--logging.progress_bar",
            "false",
            "--eval.before_training",
            "false",
            "--model.sigreg_num_directions",
            "32",
            *[
                a
                for k, v in model_overrides.items()
                for a in (f"--model.{k}", yaml.safe_dump(v, default_flow_style=True, sort_keys=False).strip())
            ],
        ]
    )
    assert summary["steps"] == 2
    directions = {f"{a}->{b}" for a in ("s1", "s2", "rgb") for b in ("s1", "s2", "rgb")}
    results = json.loads((out / "results.json").read_text())["trained"]["metrics"]
    assert all(set(by_direction) == directions for by_direction in results.values())
    logged = set().union(*losses(out))
    assert {"train/pred/rgb->s1", "train/pred/s2->rgb", "train/cross/s1-rgb", "train/uni/s2-rgb"} <= set(logged)
    assert {p.name for p in (out / "embeddings" / "faiss").iterdir()} == {
        f"{s}_{space}" for s in ("s1", "s2", "rgb") for space in ("unified", "cross")
    }
    card = ModelCard.load(out / "model" / "README.md")
    assert {r.metric_config for r in card.data.eval_results} == directions
    assert "s1 <-> s2 <-> rgb" in card.text


def test_gradient_checkpointing_is_a_run_config_switch(tmp_path):
    """training.gradient_checkpointing turns on the model's gradient checkpointing in set-up (off by default)."""
    from crjepa.train.loop import setup

    for switch in ("false", "true"):
        run = setup(
            [
                *SMALL,
                "--output_dir",
                str(tmp_path / switch),
                "--training.gradient_checkpointing",
                switch,
                "--data.options",
                "{num_train: 64, num_validation: 0, num_test: 32, image_size: 32, seed: 0}",
            ]
        )
        blocks = [m for m in run.core.modules() if hasattr(m, "gradient_checkpointing")]
        assert blocks and all(m.gradient_checkpointing == (switch == "true") for m in blocks)
        assert getattr(run.core, "is_activation_checkpointing", None) in (None, switch == "true")


@pytest.mark.slow
def test_extra_single_sensor_sources_add_training_rows_in_the_mix(tmp_path):
    """data.extra_sources + data.mix: a paired export and an S2-only export train together in the asked shares
    (each epoch half paired, half S2-only rows); evaluation keeps the paired export's splits."""
    import train_accelerate
    from crjepa.data.loading import load_paired_dataset
    from datasets_scripts.__main__ import main as export

    paired, s2_only = tmp_path / "paired", tmp_path / "s2-only"
    assert (
        export(
            [
                "synthetic",
                "--num-train",
                "64",
                "--num-validation",
                "0",
                "--num-test",
                "32",
                "--image-size",
                "32",
                "--output-dir",
                str(paired),
                "--num-proc",
                "1",
            ]
        )
        == 0
    )
    extra = load_paired_dataset(
        "synthetic", "train", num_train=128, num_validation=0, num_test=0, image_size=32, seed=5
    ).remove_columns(["s1"])
    extra = extra.map(lambda row: {"id": "s2only-" + row["id"]})
    (s2_only / "data").mkdir(parents=True)
    extra.to_parquet(str(s2_only / "data" / "train-00000-of-00001.parquet"))
    out = tmp_path / "run"
    summary = train_accelerate.train(
        [
            *SMALL,
            "--data.path",
            str(paired),
            "--output_dir",
            str(out),
            "--epochs",
            "1",
            "--data.extra_sources",
            f"{{s2_only: {s2_only}}}",
            "--data.mix",
            "{paired: 0.5, s2_only: 0.5}",
        ]
    )
    log = losses(out)
    assert summary["steps"] == len(log) == 8  # an epoch of 2 x 128 rows: the 64 pairs twice, the 128 S2 rows once
    assert sum(r["train/rows/pred/s1->s1"] for r in log) == pytest.approx(128)
    assert sum(r["train/rows/pred/s2->s2"] for r in log) == pytest.approx(256)
    assert summary["trained"]["num_queries"] == 32  # the paired export's test split only
    with pytest.raises(Exception, match="data.mix must be"):
        train_accelerate.train([*SMALL, "--output_dir", str(tmp_path / "bad"), "--data.mix", "{paired: 1}"])


@pytest.mark.slow
def test_pair_share_draws_the_pairs_as_that_share_of_each_epoch(tmp_path):
    """data.pair_share 0.5 on a 25 %-paired split: each epoch holds every single-sensor row once and the pairs
    repeated to the same number (the log's row counts show it), and a bad value stops before training."""
    import train_accelerate

    out = tmp_path / "share"
    options = "{num_train: 256, num_validation: 0, num_test: 128, image_size: 32, seed: 0, pairing_rate: 0.25}"
    summary = train_accelerate.train(
        [*SMALL, "--data.options", options, "--output_dir", str(out), "--epochs", "1", "--data.pair_share", "0.5"]
    )
    log = losses(out)
    assert summary["steps"] == len(log) == 12  # max(64 / 0.5, 192 / 0.5) = 384 rows = 12 batches of 32
    assert sum(r["train/rows/cross/s1-s2"] for r in log) == pytest.approx(192)  # the 64 pairs, 3 times each
    assert sum(r["train/rows/pred/s1->s1"] for r in log) == pytest.approx(192 + 96)  # + the 96 S1-only rows once
    card = (out / "model" / "README.md").read_text()  # distinct rows, not the repeated draws (64 pairs, not 192)
    assert "partially paired: 64 with s1 + s2, 96 with s1, 96 with s2 distinct rows" in card
    assert "each epoch drew 192 with s1 + s2, 96 with s1, 96 with s2 (data.pair_share / data.mix)" in card
    assert train_accelerate.main([*SMALL, "--output_dir", str(tmp_path / "bad"), "--data.pair_share", "1.5"]) == 2
    _no_training(tmp_path / "bad")
