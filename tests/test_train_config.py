"""crjepa/train/config.py: the run configuration (presets, YAML + dotted overrides, key checks, value ranges,
packaged configs, --help generated from the schema)."""

from __future__ import annotations

import math
from pathlib import Path

import pytest

from crjepa.train.config import (
    ConfigError,
    build_model_config,
    load_run_config,
    parse_cli,
    resolve_key,
)
from modeling_crjepa import CRJepaConfig

CONFIGS = Path(__file__).resolve().parent.parent / "configs"


@pytest.mark.parametrize("name", ["cpu_default", "paper_ben14k", "dsrsid", "cbrsir_vs"])
def test_every_preset_loads_and_builds_its_model_config(name):
    config = load_run_config(CONFIGS / f"{name}.yaml")
    model_config = build_model_config(config)
    assert isinstance(model_config, CRJepaConfig)
    assert config["training"]["max_grad_norm"] == 1.0 and config["training"]["weight_decay"] == 0.04


def test_paper_preset_has_the_papers_hyper_parameters():
    config = load_run_config(CONFIGS / "paper_ben14k.yaml")
    training = config["training"]
    assert config["data"]["batch_size"] == 512 and training["epochs"] == 400
    assert (training["lr_start"], training["lr"], training["lr_end"], training["warmup_epochs"]) == (
        1e-4,
        1e-3,
        1e-6,
        15,
    )
    assert training["mixed_precision"] is None  # bf16 comes from `accelerate config` / launch flags (the launcher wins)
    assert build_model_config(config).hidden_size == 512


def test_cli_overrides_parse_yaml_scalars_and_dotted_keys(tmp_path):
    path, pairs = parse_cli(
        [
            "--config",
            "x.yaml",
            "--model.mask_ratio",
            "0.25",
            "--lr=1e-3",
            "--push_to_hub",
            "--data.options.num_train",
            "64",
            "--routes",
            "[aa, ab]",
        ]
    )
    assert path == "x.yaml"
    assert pairs == [
        ("model.mask_ratio", 0.25),
        ("lr", 1e-3),
        ("push_to_hub", True),
        ("data.options.num_train", 64),
        ("routes", ["aa", "ab"]),
    ]
    config = load_run_config(
        CONFIGS / "cpu_default.yaml", [("model.mask_ratio", 0.25), ("epochs", 2), ("data.options.num_train", 64)]
    )
    assert config["model"]["mask_ratio"] == 0.25 and config["training"]["epochs"] == 2
    assert config["data"]["options"]["num_train"] == 64 and config["data"]["options"]["num_test"] == 500
    assert build_model_config(config).mask_ratio == 0.25


def test_unknown_key_names_the_key_and_the_valid_keys(tmp_path):
    with pytest.raises(
        ConfigError, match=r"^Unknown config key 'training.epoch'\. Did you mean .*training\.epochs.*--help[^\n]*$"
    ):
        load_run_config(None, [("training.epoch", 3)])
    bad = tmp_path / "bad.yaml"
    bad.write_text("training:\n  lerning_rate: 0.1\n")
    with pytest.raises(ConfigError, match=r"bad.yaml.*'training.lerning_rate'"):
        load_run_config(bad)
    with pytest.raises(ConfigError, match="ambiguous"):
        resolve_key("batch_size")
    with pytest.raises(ConfigError, match="must be a number"):
        load_run_config(None, [("epochs", "many")])
    with pytest.raises(ConfigError, match="hub_model_id"):
        load_run_config(None, [("push_to_hub", True)])
    with pytest.raises(ConfigError, match="Invalid model settings"):
        build_model_config(load_run_config(None, [("model.mask_ratio", 1.5)]))


def test_mixed_precision_no_is_the_string_no_on_the_command_line_and_in_yaml(tmp_path):
    _, overrides = parse_cli(["--training.mixed_precision", "no"])
    assert load_run_config(None, overrides)["training"]["mixed_precision"] == "no"
    (tmp_path / "run.yaml").write_text(
        "extends: " + str(CONFIGS / "paper_ben14k.yaml") + "\ntraining:\n  mixed_precision: no\n"
    )
    assert load_run_config(tmp_path / "run.yaml")["training"]["mixed_precision"] == "no"


@pytest.mark.slow
def test_the_launchers_mixed_precision_wins_unless_the_user_sets_it(tmp_path):
    """`accelerate launch` passes its choice (a saved `accelerate config`, or --mixed_precision) in
    ACCELERATE_MIXED_PRECISION; the shipped YAMLs leave training.mixed_precision null so that choice holds, and
    --training.mixed_precision overrides both."""
    import os
    import subprocess
    import sys

    code = (
        "import sys, json\nfrom accelerate.state import AcceleratorState\nfrom crjepa.train.loop import setup\n"
        "for argv in json.loads(sys.argv[1]):\n"
        "    AcceleratorState._reset_state(True)\n"
        "    print('precision', setup(argv).accelerator.mixed_precision)\n"
    )
    small = [
        "--model.preset",
        "tiny",
        "--data.source",
        "synthetic",
        "--data.options",
        "{num_train: 8, num_validation: 0, num_test: 8, image_size: 32}",
        "--data.batch_size",
        "4",
        "--data.num_workers",
        "0",
        "--training.compile",
        "none",
        "--logging.report_to",
        "none",
    ]
    runs = [
        ["--config", config, *small, "--output_dir", str(tmp_path / f"{config}{len(extra)}"), *extra]
        for config in ("cpu_default.yaml", "paper_ben14k.yaml")
        for extra in ([], ["--training.mixed_precision", "no"])
    ]
    env = {**os.environ, "HF_HUB_OFFLINE": "1", "ACCELERATE_MIXED_PRECISION": "bf16", "PYTHONPATH": str(CONFIGS.parent)}
    import json

    run = subprocess.run(
        [sys.executable, "-c", code, json.dumps(runs)],
        capture_output=True,
        text=True,
        env=env,
        timeout=300,
        cwd=tmp_path,
    )
    assert run.returncode == 0, run.stderr[-2000:]
    assert [line for line in run.stdout.splitlines() if line.startswith("precision")] == [
        "precision bf16",
        "precision no",
        "precision bf16",
        "precision no",
    ]


def test_config_names_resolve_to_the_packaged_copies(tmp_path, monkeypatch):
    from crjepa.train.config import resolve_config_path

    monkeypatch.chdir(tmp_path)  # no configs/ here: the copies that travel with crjepa are used
    for given in (
        "paper_ben14k.yaml",
        "configs/paper_ben14k.yaml",
        "ablations/head_single.yaml",
        "configs/baselines/contrastive.yaml",
    ):
        path = resolve_config_path(given)
        assert path.is_file() and path.name == Path(given).name
        assert load_run_config(given)["config_file"] == str(path)
    (tmp_path / "configs").mkdir()
    (tmp_path / "configs" / "paper_ben14k.yaml").write_text("seed: 7\n")  # a local file of that name wins
    assert load_run_config("configs/paper_ben14k.yaml")["seed"] == 7
    with pytest.raises(ConfigError, match="not found .*packaged configs: .*paper_ben14k.yaml"):
        load_run_config("nope.yaml")


@pytest.mark.slow
def test_train_accelerate_help_lists_every_key_with_default_and_a_line():
    import subprocess
    import sys

    from crjepa.train.config import DEFAULTS, key_docs, valid_keys

    root = CONFIGS.parent
    run = subprocess.run(
        [sys.executable, str(root / "train_accelerate.py"), "--help"],
        capture_output=True,
        text=True,
        timeout=300,
        env={"PYTHONPATH": str(root), "HF_HUB_OFFLINE": "1", "PATH": "/usr/bin:/bin"},
    )
    assert run.returncode == 0 and run.stdout.startswith("usage: accelerate launch -m train_accelerate"), run.stderr
    lines = {line.split()[0]: line for line in run.stdout.splitlines() if line.startswith("  --")}
    docs = key_docs()
    for key in [k for k in valid_keys() if not k.startswith("model.") or k in DEFAULTS["model"]]:
        assert f"--{key}" in lines, key
        assert docs[key] and docs[key] in lines[f"--{key}"], key  # one line each, from the schema
    assert lines["--training.mixed_precision"].split()[1] == "null" and lines["--data.batch_size"].split()[1] == "64"
    assert "mask_ratio" in run.stdout  # the model fields too
    from crjepa.train.config import packaged_configs
    from modeling_crjepa.configuration_crjepa import PRESETS

    configs = run.stdout.split("--config FILE: ", 1)[1].split("config keys")[0]
    assert "..." not in configs  # every packaged config, none cut off
    for name in packaged_configs():
        assert name.split("/")[-1] in configs, name
    assert "paper_ben14k.yaml" in run.stdout and all(p in lines["--model.preset"] for p in PRESETS)
    from crjepa.train.config import config_help

    paper = config_help("paper_ben14k.yaml")
    assert "  --data.batch_size 512" in paper  # with --config: that file's defaults


BAD_VALUES = [
    ("logging.every_steps", 0, "logging.every_steps must be an integer >= 1"),  # modulo by zero after step 1
    ("eval.k", 0, "eval.k must be an integer in [1, 1048576]"),  # failed after a whole epoch
    ("eval.batch_size", 0, "eval.batch_size must be an integer in [1, 1048576]"),
    ("data.batch_size", 32.5, "data.batch_size must be an integer in [1, 1048576], found 32.5"),
    ("data.num_workers", -1, "data.num_workers must be an integer in [0, 1024]"),
    ("training.gradient_accumulation_steps", 1.5, "training.gradient_accumulation_steps must be an integer"),
    ("training.betas", [2, 5], "training.betas must be two numbers in [0, 1)"),
    ("training.max_grad_norm", 0, "training.max_grad_norm must be a number >= 1e-12"),
    ("training.lr", float("nan"), "training.lr must be a number >= 0"),
    ("training.max_steps", 0, "training.max_steps must be an integer >= 1 or null"),
    ("checkpoint.keep_last", 0, "checkpoint.keep_last must be an integer in [1, 1048576]"),
    ("seed", -1, "seed must be an integer in [0, 4294967295]"),
    ("data.options", {"bogus": 3}, "data.options: unknown option(s) ['bogus']"),
    ("data.options", {"image_size": 100_000}, "data.options: image_size must be an integer in [8, 512]"),
    ("eval.every_steps", -1, "eval.every_steps must be an integer >= 0 or null"),
    ("embeddings.index", "flat", "embeddings.index must be one of"),
    ("hub.hub_model_id", "me/x\nimport os", "hub.hub_model_id must be a Hub repo id"),
    ("output_dir", "", "output_dir must be a non-empty string"),
]


@pytest.mark.parametrize("key, value, message", BAD_VALUES, ids=[f"{k}={v!r}" for k, v, _ in BAD_VALUES])
def test_every_value_is_type_and_range_checked_before_anything_runs(key, value, message, tmp_path, capsys):
    """Values that passed the key check used to fail later with a traceback: after step 1 (leaving an empty output
    folder), after a whole epoch, or deep in torch or accelerate. Each is now named in the configuration error,
    before the output folder exists."""
    import train_accelerate

    with pytest.raises(ConfigError) as raised:
        load_run_config(None, [(key, value)])
    assert message in str(raised.value)
    out = tmp_path / "out"
    assert train_accelerate.main(["--output_dir", str(out), f"--{key}", _yaml(value)]) == 2
    err = capsys.readouterr().err
    assert err.count("error: ") == 1 and "Traceback" not in err and message in err
    assert not out.exists()


def _yaml(value) -> str:
    import yaml

    return (
        "nan"
        if isinstance(value, float) and math.isnan(value)
        else (yaml.safe_dump(value, default_flow_style=True).strip().removesuffix("...").strip() or "''")
    )


def test_every_numeric_key_of_the_schema_has_a_range():
    """A numeric key added to DEFAULTS without a range would pass the check whatever its value."""
    from crjepa.train.config import DEFAULTS, RANGES, _flatten

    numeric = [k for k, v in _flatten(DEFAULTS) if isinstance(v, (int, float)) and not isinstance(v, bool)]
    assert sorted(set(numeric) - set(RANGES)) == []
