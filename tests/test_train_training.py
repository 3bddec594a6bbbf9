"""Unit tests of crjepa.train.training: run configuration, optimiser groups, schedule, masks, checkpoints."""

from __future__ import annotations

import math
from pathlib import Path

import pytest
import torch

from modeling_crjepa import CRJepaConfig, CRJepaForPreTraining
from crjepa.train.training import (
    ConfigError,
    build_model_config,
    check_output_dir,
    draw_masks,
    latest_checkpoint,
    learning_rate,
    list_checkpoints,
    load_run_config,
    no_decay_names,
    param_groups,
    parse_cli,
    prepare_output_dir,
    read_state,
    resolve_key,
    save_checkpoint,
)

CONFIGS = Path(__file__).resolve().parent.parent / "configs"


# ---------------------------------------------------------------------------------------------- configuration
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
    assert (training["lr_start"], training["lr"], training["lr_end"], training["warmup_epochs"]) == (1e-4, 1e-3, 1e-6, 15)
    assert training["mixed_precision"] is None  # bf16 comes from `accelerate config` / launch flags (the launcher wins)
    assert build_model_config(config).hidden_size == 512


def test_cli_overrides_parse_yaml_scalars_and_dotted_keys(tmp_path):
    path, pairs = parse_cli(["--config", "x.yaml", "--model.mask_ratio", "0.25", "--lr=1e-3", "--push_to_hub",
                             "--data.options.num_train", "64", "--routes", "[aa, ab]"])
    assert path == "x.yaml"
    assert pairs == [("model.mask_ratio", 0.25), ("lr", 1e-3), ("push_to_hub", True),
                     ("data.options.num_train", 64), ("routes", ["aa", "ab"])]
    config = load_run_config(CONFIGS / "cpu_default.yaml", [("model.mask_ratio", 0.25), ("epochs", 2),
                                                             ("data.options.num_train", 64)])
    assert config["model"]["mask_ratio"] == 0.25 and config["training"]["epochs"] == 2
    assert config["data"]["options"]["num_train"] == 64 and config["data"]["options"]["num_test"] == 500
    assert build_model_config(config).mask_ratio == 0.25


def test_unknown_key_names_the_key_and_the_valid_keys(tmp_path):
    with pytest.raises(ConfigError, match=r"^Unknown config key 'training.epoch'\. Did you mean .*training\.epochs.*--help[^\n]*$"):
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


def test_output_dir_checks(tmp_path):
    assert check_output_dir(tmp_path / "a" / "b").is_dir()
    blocker = tmp_path / "file"
    blocker.write_text("x")
    with pytest.raises(ConfigError, match="is a file, not a folder"):
        check_output_dir(blocker / "out")
    (tmp_path / "run" / "checkpoints" / "step_00000003").mkdir(parents=True)
    (tmp_path / "run" / "checkpoints" / "step_00000003" / "trainer_state.json").write_text("{}")
    with pytest.raises(ConfigError, match="--resume"):
        prepare_output_dir(tmp_path / "run", resume=False, overwrite=False)
    assert prepare_output_dir(tmp_path / "run", resume=True, overwrite=False)
    prepare_output_dir(tmp_path / "run", resume=False, overwrite=True)
    assert not list_checkpoints(tmp_path / "run")


# ---------------------------------------------------------------------------------------------- optimisation
def test_no_weight_decay_on_norms_biases_positions_mask_tokens_and_sensor_embeddings():
    model = CRJepaForPreTraining(CRJepaConfig.from_preset("tiny"))
    decay, no_decay = param_groups(model, 0.04)
    assert decay["weight_decay"] == 0.04 and no_decay["weight_decay"] == 0.0
    names = set(no_decay_names(model))
    assert names == model.no_weight_decay()  # the model declares them; the optimiser reads the declaration
    assert {"crjepa.stems.s1.pos_embed", "crjepa.stems.s2.pos_embed", "predictors.cross.mask_token",
            "predictors.cross.pos_embed", "predictors.cross.target_sensor_embed"} <= names
    assert "crjepa.trunk.norm.weight" in names and "crjepa.trunk.blocks.0.attn.q.bias" in names
    assert "crjepa.trunk.blocks.0.attn.q.weight" not in names and "crjepa.stems.s1.patch_embed.weight" not in names
    assert len(decay["params"]) + len(no_decay["params"]) == len(list(model.parameters()))
    assert len(no_decay["params"]) == len(names)


def test_schedule_warm_up_then_cosine():
    kw = dict(total_steps=100, warmup_steps=15, lr_start=1e-4, lr_peak=1e-3, lr_end=1e-6)
    lrs = [learning_rate(s, **kw) for s in range(101)]
    assert lrs[0] == pytest.approx(1e-4) and lrs[15] == pytest.approx(1e-3) and lrs[100] == pytest.approx(1e-6)
    assert lrs[8] == pytest.approx(1e-4 + 0.9e-3 * 8 / 15)
    assert all(a < b for a, b in zip(lrs[:15], lrs[1:16])) and all(a >= b for a, b in zip(lrs[15:], lrs[16:]))
    middle = 15 + 85 / 2
    assert learning_rate(int(middle), **kw) == pytest.approx(1e-6 + (1e-3 - 1e-6) * 0.5 * (1 + math.cos(math.pi * (int(middle) - 15) / 85)))
    assert learning_rate(0, total_steps=10, warmup_steps=50, lr_start=1e-4, lr_peak=1e-3, lr_end=1e-6) == 1e-4


# ---------------------------------------------------------------------------------------------- masks
def test_masks_depend_only_on_seed_step_and_sample():
    config = CRJepaConfig.from_preset("tiny")
    ids = [f"pair-{i}" for i in range(8)]
    masks = draw_masks(config, ids, step=3, seed=0, device="cpu")
    for sensor in ("s1", "s2"):
        visible, masked = masks[sensor]
        assert masked.shape == (8, round(config.num_patches * config.mask_ratio))
        assert visible.shape[1] + masked.shape[1] == config.num_patches
        full = torch.cat([visible, masked], 1).sort(1).values
        assert torch.equal(full, torch.arange(config.num_patches).expand(8, -1))
    # the same pair gets the same mask whatever its row, its batch-mates or the process that draws it
    shard = draw_masks(config, ids[4:][::-1], step=3, seed=0, device="cpu")
    assert torch.equal(shard["s1"][1], masks["s1"][1][4:].flip(0))
    # and a different one per step, per seed, per sensor and per sample
    assert not torch.equal(draw_masks(config, ids, 4, 0, "cpu")["s1"][1], masks["s1"][1])
    assert not torch.equal(draw_masks(config, ids, 3, 1, "cpu")["s1"][1], masks["s1"][1])
    assert not torch.equal(masks["s2"][1], masks["s1"][1])
    assert not torch.equal(masks["s1"][1][0], masks["s1"][1][1])


# ---------------------------------------------------------------------------------------------- checkpoints
class FakeAccelerator:
    """save_state writes one file; `fail` makes it crash half-way (after writing part of the folder)."""

    is_main_process = True
    fail = False

    def wait_for_everyone(self) -> None:
        pass

    def save_state(self, output_dir: str) -> None:
        Path(output_dir).mkdir(parents=True, exist_ok=True)
        (Path(output_dir) / "model.safetensors").write_text("weights")
        if self.fail:
            raise RuntimeError("disk full")


def test_checkpoints_are_atomic_and_pruned(tmp_path):
    accelerator = FakeAccelerator()
    for step in (2, 4, 6):
        save_checkpoint(accelerator, tmp_path, step, {"micro_step": step}, keep_last=2)
    assert [p.name for p in list_checkpoints(tmp_path)] == ["step_00000004", "step_00000006"]
    accelerator.fail = True
    with pytest.raises(RuntimeError, match="disk full"):
        save_checkpoint(accelerator, tmp_path, 8, {"micro_step": 8}, keep_last=2)
    latest = latest_checkpoint(tmp_path)  # the crash left the previous checkpoint as the one to resume from
    assert latest.name == "step_00000006"
    assert read_state(latest) == {"micro_step": 6, "step": 6, "files": {"model.safetensors": 7}}  # + its manifest
    assert not (tmp_path / "checkpoints" / ".tmp-step_00000008").exists()  # a failed save removes its folder
    (tmp_path / "checkpoints" / ".tmp-step_00000010").mkdir()  # a killed one leaves it: ignored ...
    assert latest_checkpoint(tmp_path).name == "step_00000006"
    accelerator.fail = False
    save_checkpoint(accelerator, tmp_path, 8, {"micro_step": 8}, keep_last=2)
    assert not list((tmp_path / "checkpoints").glob(".tmp-*"))  # ... and cleaned by the next save
    assert latest_checkpoint(tmp_path).name == "step_00000008"


def test_optimiser_reads_the_models_no_weight_decay_declaration():
    """The optimiser's groups follow what the model declares (no name matching in the trainer)."""
    model = CRJepaForPreTraining(CRJepaConfig.from_preset("tiny"))
    matrix = "crjepa.trunk.blocks.0.attn.q.weight"
    model.no_weight_decay = lambda: {matrix}
    decay, no_decay = param_groups(model, 0.04)
    assert len(no_decay["params"]) == 1 and no_decay["params"][0] is model.get_parameter(matrix)
    assert len(decay["params"]) == len(list(model.parameters())) - 1
# ---------------------------------------------------------------------------------------------- issue 12
def test_mixed_precision_no_is_the_string_no_on_the_command_line_and_in_yaml(tmp_path):
    _, overrides = parse_cli(["--training.mixed_precision", "no"])
    assert load_run_config(None, overrides)["training"]["mixed_precision"] == "no"
    (tmp_path / "run.yaml").write_text("extends: " + str(CONFIGS / "paper_ben14k.yaml") + "\n"
                                       "training:\n  mixed_precision: no\n")
    assert load_run_config(tmp_path / "run.yaml")["training"]["mixed_precision"] == "no"


@pytest.mark.slow
def test_the_launchers_mixed_precision_wins_unless_the_user_sets_it(tmp_path):
    """`accelerate launch` passes its choice (a saved `accelerate config`, or --mixed_precision) in
    ACCELERATE_MIXED_PRECISION; the shipped YAMLs leave training.mixed_precision null so that choice holds, and
    --training.mixed_precision overrides both."""
    import os
    import subprocess
    import sys

    code = ("import sys, json\nfrom accelerate.state import AcceleratorState\nfrom crjepa.train.loop import setup\n"
            "for argv in json.loads(sys.argv[1]):\n"
            "    AcceleratorState._reset_state(True)\n"
            "    print('precision', setup(argv).accelerator.mixed_precision)\n")
    small = ["--model.preset", "tiny", "--data.source", "synthetic", "--data.options",
             "{num_train: 8, num_validation: 0, num_test: 8, image_size: 32}", "--data.batch_size", "4",
             "--data.num_workers", "0", "--training.compile", "none", "--logging.report_to", "none"]
    runs = [["--config", config, *small, "--output_dir", str(tmp_path / f"{config}{len(extra)}"), *extra]
            for config in ("cpu_default.yaml", "paper_ben14k.yaml")
            for extra in ([], ["--training.mixed_precision", "no"])]
    env = {**os.environ, "HF_HUB_OFFLINE": "1", "ACCELERATE_MIXED_PRECISION": "bf16",
           "PYTHONPATH": str(CONFIGS.parent)}
    import json

    run = subprocess.run([sys.executable, "-c", code, json.dumps(runs)], capture_output=True, text=True, env=env,
                         timeout=300, cwd=tmp_path)
    assert run.returncode == 0, run.stderr[-2000:]
    assert [line for line in run.stdout.splitlines() if line.startswith("precision")] == [
        "precision bf16", "precision no", "precision bf16", "precision no"]


def test_config_names_resolve_to_the_packaged_copies(tmp_path, monkeypatch):
    from crjepa.train.training import resolve_config_path

    monkeypatch.chdir(tmp_path)  # no configs/ here: the copies that travel with crjepa are used
    for given in ("paper_ben14k.yaml", "configs/paper_ben14k.yaml", "ablations/head_single.yaml",
                  "configs/baselines/contrastive.yaml"):
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

    from crjepa.train.training import DEFAULTS, key_docs, valid_keys

    root = CONFIGS.parent
    run = subprocess.run([sys.executable, str(root / "train_accelerate.py"), "--help"], capture_output=True,
                         text=True, timeout=300, env={"PYTHONPATH": str(root), "HF_HUB_OFFLINE": "1", "PATH": "/usr/bin:/bin"})
    assert run.returncode == 0 and run.stdout.startswith("usage: accelerate launch -m train_accelerate"), run.stderr
    lines = {line.split()[0]: line for line in run.stdout.splitlines() if line.startswith("  --")}
    docs = key_docs()
    for key in [k for k in valid_keys() if not k.startswith("model.") or k in DEFAULTS["model"]]:
        assert f"--{key}" in lines, key
        assert docs[key] and docs[key] in lines[f"--{key}"], key  # one line each, from the schema
    assert lines["--training.mixed_precision"].split()[1] == "null" and lines["--data.batch_size"].split()[1] == "64"
    assert "mask_ratio" in run.stdout  # the model fields too
    from crjepa.train.training import packaged_configs
    from modeling_crjepa.configuration_crjepa import PRESETS

    configs = run.stdout.split("--config FILE: ", 1)[1].split("config keys")[0]
    assert "..." not in configs  # every packaged config, none cut off
    for name in packaged_configs():
        assert name.split("/")[-1] in configs, name
    assert "paper_ben14k.yaml" in run.stdout and all(p in lines["--model.preset"] for p in PRESETS)
    from crjepa.train.training import config_help

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

    return "nan" if isinstance(value, float) and math.isnan(value) else (
        yaml.safe_dump(value, default_flow_style=True).strip().removesuffix("...").strip() or "''")


def test_every_numeric_key_of_the_schema_has_a_range():
    """A numeric key added to DEFAULTS without a range would pass the check whatever its value."""
    from crjepa.train.training import DEFAULTS, RANGES, _flatten

    numeric = [k for k, v in _flatten(DEFAULTS) if isinstance(v, (int, float)) and not isinstance(v, bool)]
    assert sorted(set(numeric) - set(RANGES)) == []
