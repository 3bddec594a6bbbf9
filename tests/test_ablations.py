"""Paper ablations and baselines: every YAML under configs/ablations and configs/baselines trains through the
training script's code path; the X-JEPA-style and contrastive baselines keep CR-JEPA's interface."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch
from transformers import AutoModel

from modeling_crjepa.baselines import (
    ARCHITECTURES,
    ContrastiveModel,
    XJepaConfig,
    XJepaModel,
    after_optimizer_step,
    build_model,
)

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


# ---------------------------------------------------------------------------------------------- baselines
@pytest.mark.parametrize("architecture", ["xjepa", "contrastive"])
def test_baseline_forward_backward_and_embeddings(architecture):
    model = tiny(architecture)
    a, b = pair_batch(model.config)
    out = model(a, b, sigreg_step=3, check_finite=False)
    terms = out.loss_terms()
    assert "loss" in terms and all(torch.isfinite(v) for v in terms.values())
    out.loss.backward()
    trained = [n for n, p in model.named_parameters() if p.requires_grad]
    missing = [n for n, p in model.named_parameters() if p.requires_grad and p.grad is None]
    assert trained and not missing, missing
    for sensor, x in zip(model.config.sensor_names, (a, b)):
        unified = model.get_embeddings(x, sensor=sensor, space="unified")
        cross = model.get_embeddings(x, sensor=sensor, space="cross", normalize=False)
        assert unified.shape == cross.shape == (8, model.config.retrieval_dim)
        assert torch.allclose(unified.norm(dim=-1), torch.ones(8), atol=1e-5)
        # one retrieval space: both spaces are the same embedding
        assert torch.allclose(unified, torch.nn.functional.normalize(cross, dim=-1), atol=1e-6)
    with pytest.raises(ValueError, match="space"):
        model.get_embeddings(a, sensor="s1", space="other")


def test_xjepa_terms_sum_to_the_loss():
    model = tiny("xjepa")
    cfg = model.config
    out = model(*pair_batch(cfg))
    assert cfg.routes == ["ab", "ba"] and out.loss_pred_aa == 0 and out.loss_pred_ab > 0
    expected = (out.loss_pred + cfg.lambda_mahalanobis * out.loss_mahalanobis + cfg.lambda_vicreg
                * (cfg.vicreg_variance_weight * out.loss_variance + cfg.vicreg_covariance_weight * out.loss_covariance))
    assert torch.allclose(out.loss, expected)


def test_xjepa_ema_target_moves_only_through_the_hook():
    model = tiny("xjepa", ema_momentum=0.5)
    online, target = model.trunk.blocks[0].mlp.fc1.weight, model.target_trunk.blocks[0].mlp.fc1.weight
    assert torch.equal(online, target) and not target.requires_grad
    optimizer = torch.optim.SGD([p for p in model.parameters() if p.requires_grad], lr=0.5)
    model(*pair_batch(model.config)).loss.backward()
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
    full = model(a, b).loss
    assert torch.allclose(model(a, b, masks=masks).loss, full)  # masks ignored unless mask_views
    model.config.mask_views = True
    assert not torch.allclose(model(a, b, masks=masks).loss, full)


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
