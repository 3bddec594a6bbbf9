"""Paper ablations and baselines: every YAML under configs/ablations and configs/baselines trains through the
training script's code path; the X-JEPA-style and contrastive baselines keep CR-JEPA's interface."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch
from transformers import AutoModel, AutoModelForPreTraining

from crjepa.baselines.models import (
    ARCHITECTURES,
    ContrastiveModel,
    XJepaConfig,
    XJepaModel,
    after_optimizer_step,
    build_model,
)
from modeling_crjepa.configuration_crjepa import normalize_route

from helpers import assert_close_at_scale

ROOT = Path(__file__).resolve().parent.parent
ABLATION_FILES = sorted((ROOT / "configs" / "ablations").glob("*.yaml"))
BASELINE_FILES = sorted((ROOT / "configs" / "baselines").glob("*.yaml"))


def pair_batch(config, n: int = 8, seed: int = 0) -> tuple[torch.Tensor, torch.Tensor]:
    gen = torch.Generator().manual_seed(seed)
    (_, ca), (_, cb) = config.sensors.items()
    size = config.image_size
    return torch.randn(n, ca, size, size, generator=gen), torch.randn(n, cb, size, size, generator=gen)


def tiny(architecture: str, **overrides):
    torch.manual_seed(0)
    return build_model(architecture, "tiny", **overrides)


@pytest.fixture(scope="module", autouse=True)
def one_thread():
    """The tiny runs are latency bound: one thread avoids oversubscription on a shared 2-core machine."""
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)


# ---------------------------------------------------------------------------------------------- baselines
@pytest.mark.parametrize("architecture", ["xjepa", "contrastive"])
def test_baseline_forward_backward_and_embeddings(architecture):
    model = tiny(architecture)
    a, b = pair_batch(model.config)
    out = model({"s1": a, "s2": b}, sigreg_step=3, check_finite=False)
    terms = out.loss_terms()
    assert "loss" in terms and all(torch.isfinite(v) for v in terms.values())
    out.loss.backward()
    trained = [n for n, p in model.named_parameters() if p.requires_grad]
    missing = [n for n, p in model.named_parameters() if p.requires_grad and p.grad is None]
    assert trained and not missing, missing
    for sensor, x in zip(model.config.sensor_names, (a, b)):
        unified = model.get_embeddings(x, sensor=sensor, space="unified")
        cross = model.get_embeddings(x, sensor=sensor, space="cross", normalize=False, check_finite=False)
        assert unified.shape == cross.shape == (8, model.config.retrieval_dim)
        assert torch.allclose(unified.norm(dim=-1), torch.ones(8), atol=1e-5)
        # one retrieval space: both spaces are the same embedding
        assert_close_at_scale(unified, torch.nn.functional.normalize(cross, dim=-1), scale=1.0)  # unit vectors
    with pytest.raises(ValueError, match="space"):
        model.get_embeddings(a, sensor="s1", space="other")
    with pytest.raises(ValueError, match=r"pixel_values as \{sensor"):  # one spelling: {sensor: images}
        model(a)


def test_xjepa_terms_sum_to_the_loss():
    model = tiny("xjepa")
    cfg = model.config
    out = model(dict(zip(cfg.sensor_names, pair_batch(cfg))))
    terms = out.losses
    assert cfg.routes == ["s1->s2", "s2->s1"] and "pred/s1->s1" not in terms and terms["pred/s1->s2"] > 0
    expected = (
        terms["pred"]
        + cfg.lambda_mahalanobis * terms["mahalanobis"]
        + cfg.lambda_vicreg
        * (cfg.vicreg_variance_weight * terms["variance"] + cfg.vicreg_covariance_weight * terms["covariance"])
    )
    assert torch.allclose(out.loss, expected)


def test_xjepa_ema_target_moves_only_through_the_hook():
    model = tiny("xjepa", ema_momentum=0.5)
    online, target = model.trunk.blocks[0].mlp.fc1.weight, model.target_trunk.blocks[0].mlp.fc1.weight
    assert torch.equal(online, target) and not target.requires_grad
    optimizer = torch.optim.SGD([p for p in model.parameters() if p.requires_grad], lr=0.5)
    model(dict(zip(model.config.sensor_names, pair_batch(model.config)))).loss.backward()
    assert all(p.grad is None for p in list(model.target_trunk.parameters()) + list(model.target_stems.parameters()))
    before = target.detach().clone()
    optimizer.step()
    assert torch.equal(target, before) and not torch.equal(online, before)  # the optimizer leaves the target alone
    after_optimizer_step(model, step=1)
    assert torch.allclose(target, 0.5 * before + 0.5 * online.detach())
    # cosine schedule: momentum rises from ema_momentum to ema_momentum_end
    assert model.ema_momentum_at(0, 100) == pytest.approx(0.5)
    assert model.ema_momentum_at(100, 100) == pytest.approx(1.0)
    # CR-JEPA has no hook: the helper is a no-op for it
    after_optimizer_step(tiny("crjepa"), step=1)


def test_contrastive_is_a_dual_encoder_with_full_views_by_default():
    model = tiny("contrastive")
    assert set(model.trunks) == set(model.config.sensor_names) and not hasattr(model, "predictors")
    a, b = pair_batch(model.config)
    masks = {s: (torch.arange(4).expand(8, 4), torch.arange(4, 16).expand(8, 12)) for s in model.config.sensor_names}
    torch.manual_seed(1)
    full = model({"s1": a, "s2": b}).loss
    assert torch.allclose(model({"s1": a, "s2": b}, masks=masks).loss, full)  # masks ignored unless mask_views
    model.config.mask_views = True
    assert not torch.allclose(model({"s1": a, "s2": b}, masks=masks).loss, full)


@pytest.mark.parametrize("architecture", ["xjepa", "contrastive"])
def test_baseline_save_and_load_round_trip(architecture, tmp_path):
    model = tiny(architecture).eval()
    model.save_pretrained(tmp_path)
    loaded = AutoModel.from_pretrained(tmp_path).eval()
    assert type(loaded) is ARCHITECTURES[architecture][1]
    strip = lambda c: {k: v for k, v in c.to_dict().items() if k != "_name_or_path"}  # noqa: E731
    assert strip(loaded.config) == strip(model.config)
    a, _ = pair_batch(model.config)
    assert torch.allclose(loaded.get_embeddings(a, "s1"), model.get_embeddings(a, "s1"), atol=1e-6)
    for (name, p), (_, q) in zip(model.state_dict().items(), loaded.state_dict().items()):
        assert torch.equal(p, q), name  # the EMA target travels too


def test_baseline_configs_check_their_knobs():
    with pytest.raises(ValueError, match="ema_momentum"):
        XJepaConfig.from_preset("tiny", ema_momentum=1.5)
    with pytest.raises(ValueError, match="head_mode"):
        XJepaConfig.from_preset("tiny", head_mode="single")
    with pytest.raises(ValueError, match="architecture"):
        build_model("nope", "tiny")
    assert isinstance(tiny("xjepa"), XJepaModel) and isinstance(tiny("contrastive"), ContrastiveModel)


# ---------------------------------------------------------------------------------------------- YAML files
TINY_RUN = {
    "model.preset": "tiny",
    "data.source": "synthetic",
    "data.path": "null",
    "data.num_workers": "0",
    "data.options.num_train": "16",
    "data.options.num_validation": "0",
    "data.options.num_test": "8",
    "data.options.image_size": "32",
    "data.batch_size": "8",
    "training.epochs": "1",
    "training.max_steps": "2",
    "training.mixed_precision": '"no"',
    "eval.before_training": "false",
    "eval.every_epochs": "null",
    "eval.batch_size": "8",
    "embeddings.write": "false",
    "checkpoint.every_steps": "0",
    "logging.report_to": "none",
    "logging.progress_bar": "false",
    "logging.every_steps": "1",
}
"""Overrides that shrink any run to the tiny model, 16 synthetic pairs and two optimizer steps."""


def yaml_model_section(path: Path) -> dict:
    import yaml

    return yaml.safe_load(path.read_text()).get("model") or {}


def test_every_paper_ablation_has_a_yaml():
    names = {p.stem for p in ABLATION_FILES}
    expected = {
        "loss_pred_uni",
        "loss_pred_cross",
        "loss_pred_sigreg",
        "loss_no_sigreg",
        "loss_all",
        "routes_same_modal",
        "routes_cross_modal",
        "predictor_independent",
        "predictor_shared",
        "head_single",
        "trunk_separate",
        "mask_ratio_025",
        "mask_ratio_050",
        "mask_ratio_075",
        *(f"predictor_depth_{d:02d}" for d in (2, 4, 6, 8, 10, 12)),
    }
    assert expected <= names, sorted(expected - names)
    assert {p.stem for p in BASELINE_FILES} == {"xjepa", "contrastive"}


@pytest.mark.parametrize("path", ABLATION_FILES + BASELINE_FILES, ids=lambda p: f"{p.parent.name}/{p.stem}")
def test_yaml_unchanged_is_the_paper_run_with_its_overrides(path):
    """Loaded as is, each file is the paper's BEN-14K run (its base) with only its model overrides."""
    from crjepa.train.config import build_model_config, load_run_config

    config = load_run_config(path)
    paper = load_run_config(ROOT / "configs" / "paper_ben14k.yaml")
    assert config["model"]["preset"] == "ben14k" and config["data"] == paper["data"]
    assert config["training"] == paper["training"]
    model_config = build_model_config(config)
    architecture = yaml_model_section(path).get("architecture", "crjepa")
    assert isinstance(model_config, ARCHITECTURES[architecture][0])
    for key, value in yaml_model_section(path).items():
        if key != "architecture":
            expected = [normalize_route(r, model_config.sensors) for r in value] if key == "routes" else value
            assert getattr(model_config, key) == expected, key  # the paper's route codes read as "s1->s2" routes


@pytest.mark.slow
@pytest.mark.parametrize("path", ABLATION_FILES + BASELINE_FILES, ids=lambda p: f"{p.parent.name}/{p.stem}")
def test_yaml_trains_two_steps_through_the_training_script(path, tmp_path):
    import json

    import train_accelerate

    argv = ["--config", str(path), "--output_dir", str(tmp_path)]
    extra = (
        {"model.ema_momentum": "0.0", "model.ema_momentum_end": "0.0"}
        if yaml_model_section(path).get("architecture") == "xjepa"
        else {}
    )
    for key, value in {**TINY_RUN, **extra}.items():
        argv += [f"--{key}", value]
    summary = train_accelerate.train(argv)
    assert summary["steps"] == 2
    logged = [json.loads(line) for line in (tmp_path / train_accelerate.TRAIN_LOG_FILE).read_text().splitlines()]
    assert logged and all(torch.isfinite(torch.tensor(v)) for v in logged[-1].values())
    architecture = yaml_model_section(path).get("architecture", "crjepa")
    model = (AutoModelForPreTraining if architecture == "crjepa" else AutoModel).from_pretrained(summary["model_dir"])
    assert type(model) is ARCHITECTURES[architecture][1]
    for key, value in yaml_model_section(path).items():
        if key != "architecture":
            expected = [normalize_route(r, model.config.sensors) for r in value] if key == "routes" else value
            assert getattr(model.config, key) == expected, key
    if architecture == "xjepa":  # momentum 0: after the loop's hook the target IS the online encoder
        for online, target in zip(model.trunk.parameters(), model.target_trunk.parameters()):
            assert torch.equal(online, target)
