"""CRJepaForPreTraining and CRJepaModel: paper size, training objective, gradients, bf16, inference API and clear
errors."""

from collections import Counter

import pytest
import torch

from modeling_crjepa import CRJepaConfig, CRJepaForPreTraining, CRJepaModel
from modeling_crjepa.modeling_crjepa import CRJepaPreTrainingOutput, random_masks

from helpers import assert_close_at_scale


def tiny(**overrides) -> CRJepaForPreTraining:
    torch.manual_seed(0)
    return CRJepaForPreTraining(CRJepaConfig.from_preset("tiny", **overrides))


def batch(model: CRJepaForPreTraining, n: int = 8, seed: int = 0):
    gen = torch.Generator().manual_seed(seed)
    (a, ca), (b, cb) = model.config.sensors.items()
    size = model.config.image_size
    return torch.randn(n, ca, size, size, generator=gen), torch.randn(n, cb, size, size, generator=gen)


def test_ben14k_preset_has_the_papers_parameter_count():
    with torch.device("meta"):  # shapes only: no 118M weights drawn
        model = CRJepaForPreTraining(CRJepaConfig.from_preset("ben14k"))
    by_component = Counter()
    for name, p in model.named_parameters():
        by_component[".".join(name.removeprefix("crjepa.").split(".")[:2])] += p.numel()
    total = sum(by_component.values())
    print(
        "\nben14k parameters by component (M):",
        {k: round(v / 1e6, 3) for k, v in by_component.items()},
        "total",
        round(total / 1e6, 3),
    )
    assert abs(total - 117.93e6) / 117.93e6 < 0.02
    assert set(model.predictors) == {"aa", "bb", "cross"}
    assert set(model.crjepa.heads) == {"unified", "cross"}
    encoder = CRJepaModel(model.config)  # the retrieval checkpoint: no predictors (40.7M of the 117.9M)
    assert sum(p.numel() for p in encoder.parameters()) == total - sum(
        v for k, v in by_component.items() if k.startswith("predictors")
    )


@pytest.mark.parametrize(
    "preset,sensors",
    [("ben14k", {"s1": 2, "s2": 12}), ("dsrsid", {"pan": 1, "ms": 4}), ("cbrsir_vs", {"rgb": 3, "sar": 1})],
)
def test_presets_name_their_sensors(preset, sensors):
    config = CRJepaConfig.from_preset(preset)
    assert config.sensors == sensors and config.hidden_size == 512 and config.num_hidden_layers == 12
    config.check()


def test_forward_returns_every_term_and_each_has_a_gradient():
    model = tiny()
    a, b = batch(model)
    out = model({"s1": a, "s2": b}, sigreg_step=0)
    assert isinstance(out, CRJepaPreTrainingOutput)
    terms = out.loss_terms()
    for name in ("loss", "pred", "pred/s1->s1", "pred/s2->s2", "pred/s1->s2", "pred/s2->s1", "cross", "uni", "sigreg"):
        assert torch.isfinite(terms[name]) and terms[name].item() > 0, name
    cfg = model.config
    expected = (
        terms["pred"]
        + cfg.lambda_cross * terms["cross"]
        + cfg.lambda_uni * terms["uni"]
        + cfg.lambda_sigreg * terms["sigreg"]
    )
    assert torch.allclose(terms["loss"], expected)
    # each term alone reaches the parameters it should
    reach = {
        "pred/s1->s1": "predictors.aa",
        "pred/s2->s2": "predictors.bb",
        "pred/s1->s2": "predictors.cross",
        "cross": "crjepa.heads.cross",
        "uni": "crjepa.heads.unified",
        "sigreg": "crjepa.heads.cross",
    }
    for term, prefix in reach.items():
        model.zero_grad()
        model({"s1": a, "s2": b}, sigreg_step=0).loss_terms()[term].backward()
        grads = [p.grad for n, p in model.named_parameters() if n.startswith(prefix)]
        assert grads and all(g is not None for g in grads) and sum(g.abs().sum() for g in grads) > 0, term
        trunk = [p.grad for n, p in model.named_parameters() if n.startswith("crjepa.trunk.")]
        assert any(g is not None and g.abs().sum() > 0 for g in trunk), term
    with pytest.raises(ValueError, match=r"pixel_values as \{sensor"):  # one spelling: {sensor: images}
        model(a)


# ---------------------------------------------------------------------------------------------- objective terms
def test_each_objective_term_is_its_loss_on_its_inputs_and_objective_composes_them():
    """latents, prediction_terms, projections, cross_terms, unified_terms and sigreg_term, each called alone, equal
    the paper's formula written out with the model's modules and the loss functions; objective() is their weighted
    sum."""
    from modeling_crjepa.losses import info_nce, prediction_loss, sigreg, uni_loss

    model = tiny(pack_sensors=False, routes=["aa", "ab", "ba"], route_weights={"ab": 2.0}).train()
    cfg, encoder = model.config, model.crjepa
    a, b = batch(model, n=6)
    inputs = {"s1": a, "s2": b}
    masks = _masks(cfg, 6, seed=3)

    visible, targets = model.latents(inputs, masks)
    for sensor, x in inputs.items():  # z_V and z_M: the trunk on the visible / masked tokens alone
        assert_close_at_scale(visible[sensor], encoder.encode(x, sensor, masks[sensor][0]))
        assert_close_at_scale(targets[sensor], encoder.encode(x, sensor, masks[sensor][1]))
        assert visible[sensor].requires_grad and not targets[sensor].requires_grad  # stop-gradient on z_M

    routes = model.prediction_terms(visible, targets, masks)
    assert list(routes) == ["s1->s1", "s1->s2", "s2->s1"]  # the active routes, canonical order
    for route, value in routes.items():
        source, target = route.split("->")
        predictor = model.predictors[model.route_to_predictor[route]]
        predicted = predictor(visible[source], masks[target][1], model.sensor_names.index(target))
        assert_close_at_scale(value, prediction_loss(predicted, targets[target]))
    assert len({v.item() for v in routes.values()}) == 3  # each route its own term

    projected = model.projections(visible)
    assert list(projected) == [(s, h) for s in ("s1", "s2") for h in ("unified", "cross")]
    for (sensor, head), (raw, unit) in projected.items():
        expected_raw, expected_unit = encoder.heads[head](visible[sensor].mean(dim=1))
        assert_close_at_scale(raw, expected_raw)
        assert_close_at_scale(unit, expected_unit, scale=1.0)

    gen = torch.Generator().manual_seed(4)  # unrelated unit vectors per sensor and space: the terms pick their own
    e = {
        f"{s}_{space}": torch.nn.functional.normalize(torch.randn(6, cfg.retrieval_dim, generator=gen), dim=-1)
        for s in ("s1", "s2")
        for space in ("unified", "cross")
    }
    cross, unified = model.cross_terms(e), model.unified_terms(e)
    assert list(cross) == ["cross/s1-s2"] and list(unified) == ["uni/s1-s2"]
    assert_close_at_scale(cross["cross/s1-s2"], info_nce(e["s1_cross"], e["s2_cross"], cfg.temperature))
    assert_close_at_scale(unified["uni/s1-s2"], uni_loss(e["s1_unified"], e["s2_unified"], cfg.temperature))

    kwargs = dict(num_directions=cfg.sigreg_num_directions, num_knots=cfg.sigreg_num_knots, t_max=cfg.sigreg_t_max)
    each = [sigreg(raw, step=7, **kwargs) for raw, _ in projected.values()]
    assert_close_at_scale(model.sigreg_term(projected, 7), torch.stack(each).mean())
    assert not torch.allclose(model.sigreg_term(projected, 8), model.sigreg_term(projected, 7))  # the step's slices

    out = model(inputs, sigreg_step=7, masks=masks)
    terms = out.loss_terms()
    for route, value in routes.items():
        assert_close_at_scale(terms[f"pred/{route}"], value)
    own = {f"{s}_{space}": projected[(s, space)][1] for s in ("s1", "s2") for space in ("unified", "cross")}
    assert_close_at_scale(terms["cross"], model.cross_terms(own)["cross/s1-s2"])
    assert_close_at_scale(terms["uni"], model.unified_terms(own)["uni/s1-s2"])
    assert_close_at_scale(terms["sigreg"], model.sigreg_term(projected, 7))
    pred = routes["s1->s1"] + 2.0 * routes["s1->s2"] + routes["s2->s1"]
    assert_close_at_scale(terms["pred"], pred)
    expected = (
        pred + cfg.lambda_cross * terms["cross"] + cfg.lambda_uni * terms["uni"] + cfg.lambda_sigreg * terms["sigreg"]
    )
    assert_close_at_scale(terms["loss"], expected)


def test_sigreg_is_active_from_the_start():
    """The raw projections start near SIGReg's N(0, I) scale and a few steps on SIGReg alone lower it.

    With head_init="small" (std 0.02 heads, no LayerNorm) r starts ~0.003: r = 0 is a stationary point of the
    Epps-Pulley statistic, so the loss sits at its r = 0 value and its gradient all but vanishes -- what the
    first quality runs measured (loss_sigreg flat at ~12.8)."""
    from modeling_crjepa.losses import epps_pulley_knots

    t, w = epps_pulley_knots(17, 3.0)
    stationary = {}
    for head_init in ("unit", "small"):
        model = tiny(head_init=head_init)
        a, b = batch(model, n=32)
        out = model({"s1": a, "s2": b}, sigreg_step=0)
        out.losses["sigreg"].backward()
        grad = sum(p.grad.square().sum() for n, p in model.named_parameters() if n.startswith("crjepa.heads.")) ** 0.5
        raw = model.crjepa.heads["cross"](model.crjepa.trunk(model.crjepa.stems["s1"](a)).mean(dim=1))[0]
        stationary[head_init] = (raw.std().item(), out.losses["sigreg"].item(), grad.item())
    r_zero = 32 * float(((1 - torch.exp(-t.square() / 2)).square() * w).sum())  # SIGReg of r = 0
    unit_std, unit_loss, unit_grad = stationary["unit"]
    small_std, small_loss, small_grad = stationary["small"]
    assert 0.3 < unit_std < 3.0 and small_std < 0.05, stationary
    assert abs(small_loss - r_zero) / r_zero < 0.01 and unit_loss < 0.7 * r_zero, (stationary, r_zero)
    assert unit_grad > 100 * small_grad, stationary
    # and it trains: 20 Adam steps on SIGReg alone lower it (heads only)
    model = tiny()
    a, b = batch(model, n=32)
    heads = [p for n, p in model.named_parameters() if n.startswith("crjepa.heads.")]
    optimizer = torch.optim.Adam(heads, lr=3e-3)
    losses = []
    for step in range(20):
        optimizer.zero_grad()
        loss = model({"s1": a, "s2": b}, sigreg_step=step).losses["sigreg"]
        loss.backward()
        optimizer.step()
        losses.append(loss.item())
    assert sum(losses[-5:]) / 5 < 0.8 * sum(losses[:5]) / 5, losses


def test_stop_gradient_targets():
    """With stop-gradient on, the prediction loss reaches the trunk only through the visible context."""
    for stop in (True, False):
        model = tiny(stop_gradient_targets=stop, routes=["aa"])
        a, b = batch(model)
        masks = {
            s: random_masks(8, model.config.num_patches, 0.5, "cpu", torch.Generator().manual_seed(1))
            for s in model.sensor_names
        }
        out = model({"s1": a, "s2": b}, masks=masks)
        stem = model.crjepa.stems["s1"].patch_embed.weight
        target_grad = torch.autograd.grad(out.losses["pred"], stem, retain_graph=True)[0]
        # compare with a run where the targets are certainly detached
        model.config.stop_gradient_targets = True
        detached = torch.autograd.grad(model({"s1": a, "s2": b}, masks=masks).losses["pred"], stem)[0]
        assert torch.allclose(target_grad, detached) == stop


def test_tiny_overfits_a_fixed_batch():
    model = tiny()
    a, b = batch(model, n=16)
    opt = torch.optim.AdamW(model.parameters(), lr=3e-3)
    losses = []
    for _ in range(60):
        gen = torch.Generator().manual_seed(123)  # fixed masks: a truly fixed problem
        masks = {s: random_masks(16, model.config.num_patches, 0.5, "cpu", gen) for s in model.sensor_names}
        out = model({"s1": a, "s2": b}, sigreg_step=0, masks=masks)
        opt.zero_grad()
        out.loss.backward()
        opt.step()
        losses.append(out.loss.item())
    assert losses[-1] < 0.5 * losses[0], losses[::10]


def test_bf16_autocast_has_no_nan():
    model = tiny()
    a, b = batch(model)
    with torch.autocast("cpu", dtype=torch.bfloat16):
        out = model({"s1": a, "s2": b}, sigreg_step=3)
        emb = model.crjepa.get_embeddings(a, sensor="s1", space="cross")
    out.loss.backward()
    assert torch.isfinite(out.loss)
    assert all(torch.isfinite(p.grad).all() for p in model.parameters() if p.grad is not None)
    assert torch.isfinite(emb).all() and emb.dtype == torch.float32


def test_get_embeddings_spaces_and_normalisation():
    model = tiny().eval()
    a, b = batch(model)
    uni = model.crjepa.get_embeddings(a, sensor="s1", space="unified")
    cross = model.crjepa.get_embeddings(a, sensor="s1", space="cross")
    raw = model.crjepa.get_embeddings(b, sensor="s2", space="cross", normalize=False)
    assert uni.shape == cross.shape == raw.shape == (8, model.config.retrieval_dim)
    assert torch.allclose(uni.norm(dim=-1), torch.ones(8), atol=1e-5)
    assert not torch.allclose(uni, cross)  # decoupled heads: two spaces
    assert not torch.allclose(raw.norm(dim=-1), torch.ones(8))
    # no masking at inference: deterministic, and batch-independent
    assert torch.allclose(model.crjepa.get_embeddings(a[:3], sensor="s1"), uni[:3], atol=1e-5)
    single = tiny(head_mode="single").eval()
    single = single.crjepa
    assert torch.allclose(single.get_embeddings(a, "s1", "unified"), single.get_embeddings(a, "s1", "cross"))


@pytest.mark.parametrize(
    "sharing,names",
    [("paper", {"aa", "bb", "cross"}), ("independent", {"aa", "bb", "ab", "ba"}), ("shared", {"shared"})],
)
def test_predictor_sharing_modes(sharing, names):
    model = tiny(predictor_sharing=sharing)
    assert set(model.predictors) == names
    a, b = batch(model)
    assert torch.isfinite(model({"s1": a, "s2": b}).loss)


def test_routes_switch_off_and_weights_apply():
    model = tiny(routes=["ab", "ba"], route_weights={"ab": 2.0})
    a, b = batch(model)
    out = model({"s1": a, "s2": b})
    assert "pred/s1->s1" not in out.losses and "pred/s2->s2" not in out.losses  # inactive routes are not terms
    assert torch.allclose(out.losses["pred"], 2.0 * out.losses["pred/s1->s2"] + out.losses["pred/s2->s1"])
    assert set(model.predictors) == {"cross"}


def test_separate_trunks_ablation():
    model = tiny(trunk_mode="separate")
    assert set(model.crjepa.trunks) == {"s1", "s2"} and not hasattr(model.crjepa, "trunk")
    a, b = batch(model)
    assert torch.isfinite(model({"s1": a, "s2": b}).loss)


def test_gradient_checkpointing_gives_the_same_gradients():
    model = tiny()
    a, b = batch(model)
    masks = {
        s: random_masks(8, model.config.num_patches, 0.5, "cpu", torch.Generator().manual_seed(2))
        for s in model.sensor_names
    }
    model.train()
    model({"s1": a, "s2": b}, masks=masks).loss.backward()
    plain = [p.grad.clone() for p in model.parameters()]
    model.zero_grad()
    model.activation_checkpointing_enable()
    model({"s1": a, "s2": b}, masks=masks).loss.backward()
    assert all(torch.allclose(g, p.grad, atol=1e-6) for g, p in zip(plain, model.parameters()))


@pytest.mark.parametrize(
    "bad,message",
    [
        ("channels", "expected pixel_values of shape ('B', 2, 32, 32), found (8, 3, 32, 32)"),
        ("size", "expected pixel_values of shape ('B', 2, 32, 32), found (8, 2, 40, 40)"),
        ("nan", "Sensor 's1': pixel_values contain NaN"),
    ],
)
def test_bad_input_names_sensor_and_shapes(bad, message):
    model = tiny()
    a, b = batch(model)
    if bad == "channels":
        a = torch.randn(8, 3, 32, 32)
    elif bad == "size":
        a = torch.randn(8, 2, 40, 40)
    else:
        a[0, 0, 0, 0] = float("nan")
    with pytest.raises(ValueError) as err:
        model({"s1": a, "s2": b})
    assert message in str(err.value)
    with pytest.raises(ValueError) as err:
        model.crjepa.get_embeddings(a, sensor="s1")
    assert message in str(err.value)


def test_unknown_sensor_and_space():
    model = tiny()
    a, _ = batch(model)
    with pytest.raises(ValueError, match="Unknown sensor 'sar'.*\\['s1', 's2'\\]"):
        model.crjepa.get_embeddings(a, sensor="sar")
    with pytest.raises(ValueError, match="Unknown embedding space 'joint'"):
        model.crjepa.get_embeddings(a, sensor="s1", space="joint")


def test_invalid_config_is_rejected_with_reasons():
    with pytest.raises(ValueError, match="band_mean\\['s2'\\] must have 12 entries"):
        CRJepaConfig.from_preset("tiny", band_mean={"s1": [0, 0], "s2": [0] * 11})
    with pytest.raises(ValueError, match="image_size 30 must be a multiple of patch_size 8"):
        CRJepaConfig.from_preset("tiny", image_size=30)
    with pytest.raises(ValueError, match="routes \\['ac'\\] unknown"):
        CRJepaConfig.from_preset("tiny", routes=["ac"])
    config = CRJepaConfig.from_preset("tiny")
    config.mask_ratio = 1.5  # edited after construction: the model checks again
    with pytest.raises(ValueError, match="mask_ratio must be in"):
        CRJepaModel(config)
    with pytest.raises(ValueError, match="Unknown CR-JEPA preset 'ben15k'"):
        CRJepaConfig.from_preset("ben15k")


# ---------------------------------------------------------------------------------------------- N sensors
def three_sensor_config(**overrides) -> CRJepaConfig:
    return CRJepaConfig.from_preset(
        "tiny", sensors={"s1": 2, "s2": 12, "rgb": 3}, band_names=None, band_mean=None, band_std=None, **overrides
    )


def test_routes_are_readable_sensor_pairs_and_the_papers_codes_map_to_them():
    config = CRJepaConfig.from_preset("tiny", routes=["ab", "s2 -> s2"], route_weights={"ab": 2.0})
    assert config.routes == ["s1->s2", "s2->s2"] and config.route_pairs == [("s1", "s2"), ("s2", "s2")]
    assert config.route_weights == {"s1->s1": 1.0, "s2->s2": 1.0, "s1->s2": 2.0, "s2->s1": 1.0}
    assert CRJepaConfig.from_preset("tiny").routes == ["s1->s1", "s2->s2", "s1->s2", "s2->s1"]
    with pytest.raises(ValueError, match="routes \\['s1->rgb'\\] unknown"):
        CRJepaConfig.from_preset("tiny", routes=["s1->rgb"])


@pytest.mark.parametrize(
    "sharing,predictors",
    [
        ("paper", {"aa", "bb", "cc", "cross"}),
        ("shared", {"shared"}),
        ("independent", {"aa", "bb", "cc", "ab", "ba", "ac", "ca", "bc", "cb"}),
    ],
)
def test_three_sensors_every_route_and_pair_is_a_term(sharing, predictors):
    config = three_sensor_config(predictor_sharing=sharing)
    assert len(config.routes) == 9 and "rgb->s1" in config.routes
    torch.manual_seed(0)
    model = CRJepaForPreTraining(config)
    assert set(model.predictors) == predictors
    pixels = {s: torch.randn(4, c, 32, 32) for s, c in config.sensors.items()}
    out = model(pixels, sigreg_step=1)
    terms = out.loss_terms()
    assert {f"pred/{r}" for r in config.routes} <= set(terms)
    assert {"cross/s1-s2", "cross/s1-rgb", "cross/s2-rgb", "uni/s1-s2", "uni/s1-rgb", "uni/s2-rgb"} <= set(terms)
    assert torch.allclose(terms["cross"], torch.stack([terms[k] for k in terms if k.startswith("cross/")]).mean())
    assert torch.allclose(terms["pred"], sum(terms[f"pred/{r}"] for r in config.routes))
    out.loss.backward()
    assert model.crjepa.stems["rgb"].patch_embed.weight.grad.abs().sum() > 0
    with pytest.raises(ValueError, match="missing \\['rgb'\\]"):
        model({"s1": pixels["s1"], "s2": pixels["s2"]})


def test_one_sensor_model_embeds_but_pretraining_needs_two():
    config = CRJepaConfig.from_preset(
        "tiny", sensors={"s2": 12}, band_names=None, band_mean=None, band_std=None, sar_sensors=[]
    )
    assert config.routes == ["s2->s2"]
    encoder = CRJepaModel(config).eval()
    assert encoder(torch.randn(2, 12, 32, 32)).image_embeds.shape == (2, config.retrieval_dim)
    with pytest.raises(ValueError, match="two or more sensors"):
        CRJepaForPreTraining(config)


# ---------------------------------------------------------------------------------------------- partial pairing
def _masks(config, n, seed=0):
    g = torch.Generator().manual_seed(seed)
    return {s: random_masks(n, config.num_patches, config.mask_ratio, "cpu", generator=g) for s in config.sensors}


def _subset(masks, rows):
    return {s: (v[rows], m[rows]) for s, (v, m) in masks.items()}


@pytest.mark.parametrize("three", [False, True])
def test_partial_batch_terms_use_exactly_the_rows_that_have_their_sensors(three):
    """present={sensor: (B,) bool}: the images of absent rows change nothing (loss identical when they are
    replaced by noise, their pixel gradients exactly 0), and each term equals that term computed on its rows
    alone; the log's rows/<term> counts them."""
    config = three_sensor_config() if three else CRJepaConfig.from_preset("tiny")
    torch.manual_seed(0)
    model = CRJepaForPreTraining(config).eval()
    n, g = 8, torch.Generator().manual_seed(1)
    pixels = {s: torch.randn(n, c, 32, 32, generator=g) for s, c in config.sensors.items()}
    names = list(config.sensors)
    patterns = {names[0]: [1, 1, 1, 0, 0, 1, 1, 0], names[1]: [1, 0, 1, 1, 1, 1, 0, 0]}
    if three:
        patterns[names[2]] = [0, 1, 1, 1, 0, 1, 1, 1]
    present = {s: torch.tensor(v, dtype=torch.bool) for s, v in patterns.items()}
    masks = _masks(config, n)

    def run(images):
        images = {s: x.clone().requires_grad_(True) for s, x in images.items()}
        return images, model(images, sigreg_step=2, masks=masks, present=present)

    images, out = run(pixels)
    out.loss.backward()
    for s in names:
        assert torch.all(images[s].grad[~present[s]] == 0) and images[s].grad[present[s]].abs().sum() > 0
    noisy = {s: torch.where(present[s][:, None, None, None], x, torch.randn_like(x) * 50) for s, x in pixels.items()}
    _, again = run(noisy)
    for term, value in out.losses.items():
        assert again.losses[term].item() == pytest.approx(value.item(), rel=1e-5, abs=1e-6), term

    a, b = names[0], names[1]
    both = present[a] & present[b]
    on_pairs = model(_subset_pixels(pixels, both), sigreg_step=2, masks=_subset(masks, both))
    for term in (f"pred/{a}->{b}", f"pred/{b}->{a}"):
        assert out.losses[term].item() == pytest.approx(on_pairs.losses[term].item(), rel=1e-5), term
    # contrastive terms: paired rows are the queries, every row with the target sensor a candidate
    from test_model_losses import info_nce_reference

    e = out.embeddings
    cross = info_nce_reference(e[f"{a}_cross"], e[f"{b}_cross"], config.temperature, both, present[a], present[b])
    assert out.losses[f"cross/{a}-{b}"].item() == pytest.approx(cross, rel=1e-5)
    cosine = torch.nn.functional.cosine_similarity(e[f"{a}_unified"], e[f"{b}_unified"])[both]
    uni = info_nce_reference(e[f"{a}_unified"], e[f"{b}_unified"], config.temperature, both, present[a], present[b])
    assert out.losses[f"uni/{a}-{b}"].item() == pytest.approx(uni + (1 - cosine).mean().item(), rel=1e-5)
    on_a = model(_subset_pixels(pixels, present[a]), sigreg_step=2, masks=_subset(masks, present[a]))
    assert out.losses[f"pred/{a}->{a}"].item() == pytest.approx(on_a.losses[f"pred/{a}->{a}"].item(), rel=1e-5)
    rows = out.loss_terms()
    assert rows[f"rows/cross/{a}-{b}"].item() == both.sum().item() == 3
    assert rows[f"rows/pred/{a}->{a}"].item() == present[a].sum().item()
    assert rows["rows/sigreg"].item() == 2 * sum(int(m.sum()) for m in present.values())  # 2 heads per sensor


def _subset_pixels(pixels, rows):
    return {s: x[rows] for s, x in pixels.items()}


def test_batch_without_pairs_trains_same_sensor_routes_and_zeroes_the_cross_terms():
    model = tiny().train()
    a, b = batch(model)
    half = torch.arange(8) < 4
    out = model({"s1": a, "s2": b}, sigreg_step=0, present={"s1": half, "s2": ~half})
    terms = out.loss_terms()
    for term in (
        "pred/s1->s2",
        "pred/s2->s1",
        "cross/s1-s2",
        "uni/s1-s2",
        "cross",
        "uni",
        "rows/cross/s1-s2",
        "rows/pred/s1->s2",
    ):
        assert terms[term].item() == 0.0, term
    assert terms["pred/s1->s1"] > 0 and terms["sigreg"] > 0 and terms["rows/pred/s2->s2"].item() == 4
    out.loss.backward()
    grads = {n: p.grad for n, p in model.named_parameters() if p.grad is not None}
    assert all(torch.isfinite(g).all() for g in grads.values())
    assert any("heads.unified" in n and g.abs().sum() > 0 for n, g in grads.items())  # SIGReg still shapes heads
    # every row present = the paper's objective (the mask is then a no-op up to float rounding)
    full = model({"s1": a, "s2": b}, sigreg_step=0, masks=_masks(model.config, 8))
    same = model(
        {"s1": a, "s2": b},
        sigreg_step=0,
        masks=_masks(model.config, 8),
        present={"s1": torch.ones(8, dtype=torch.bool), "s2": torch.ones(8, dtype=torch.bool)},
    )
    for term, value in full.losses.items():
        assert same.losses[term].item() == pytest.approx(value.item(), rel=1e-5), term
    with pytest.raises(ValueError, match=r"present\['s1'\] must have shape \(8,\)"):
        model({"s1": a, "s2": b}, present={"s1": torch.ones(3, dtype=torch.bool)})
    with pytest.raises(ValueError, match="sensor\\(s\\) \\['dem'\\]"):
        model({"s1": a, "s2": b}, present={"dem": torch.ones(8, dtype=torch.bool)})


def test_output_attentions_are_returned_and_match_the_eager_softmax_and_other_kwargs_are_refused():
    """output_attentions is honoured (one (B, heads, N, N) map per trunk block, rows summing to 1, the same tokens as
    without it), never silently ignored; unknown keyword arguments are a TypeError, on both models."""
    model = tiny().eval()
    encoder = model.crjepa
    config = model.config
    pixels = batch(model, n=3)[1]
    plain = encoder(pixels, sensor="s2")
    out = encoder(pixels, sensor="s2", output_attentions=True)
    assert plain.attentions is None and len(out.attentions) == config.num_hidden_layers
    tokens = config.num_patches
    for weights in out.attentions:
        assert weights.shape == (3, config.num_attention_heads, tokens, tokens)
        assert torch.allclose(weights.sum(-1), torch.ones(()), atol=1e-5)
    scale = plain.last_hidden_state.abs().max().item()
    assert torch.allclose(out.last_hidden_state, plain.last_hidden_state, atol=1e-5 * scale)
    # the first block's map is softmax(q k^T / sqrt(d)) of its normalised input
    block = encoder.trunk.blocks[0]
    x = block.norm1(encoder.stems["s2"](pixels))
    q, k, _ = (
        torch.nn.functional.linear(
            x,
            torch.cat([block.attn.q.weight, block.attn.kv.weight]),
            torch.cat([block.attn.q.bias, block.attn.kv.bias]),
        )
        .view(3, tokens, 3, config.num_attention_heads, -1)
        .permute(2, 0, 3, 1, 4)
    )
    expected = torch.softmax(q @ k.transpose(-1, -2) * block.attn.scaling, dim=-1)
    assert torch.allclose(out.attentions[0], expected, atol=1e-5)
    assert encoder(pixels, sensor="s2", output_attentions=True, return_dict=False)[-1][0].shape == expected.shape
    with pytest.raises(TypeError, match="interpolate_pos_encoding"):
        encoder(pixels, sensor="s2", interpolate_pos_encoding=True)
    a, b = batch(model, n=3)
    with pytest.raises(TypeError, match=r"output_attentions.*model\.crjepa"):
        model({"s1": a, "s2": b}, output_attentions=True)


def test_input_embeddings_are_the_sensor_stems_and_require_grads_reaches_every_sensor():
    model = tiny()
    stems = model.get_input_embeddings()
    assert stems is model.crjepa.stems and list(stems) == ["s1", "s2"] and model.crjepa.get_input_embeddings() is stems
    model.requires_grad_(False)
    model.enable_input_require_grads()
    a, b = batch(model, n=2)
    for sensor, pixels in (("s1", a), ("s2", b)):
        assert model.crjepa(pixels, sensor=sensor).last_hidden_state.requires_grad, sensor
    model.disable_input_require_grads()
    assert not model.crjepa(a, sensor="s1").last_hidden_state.requires_grad
    replacement = torch.nn.ModuleDict({name: stem for name, stem in stems.items()})
    model.set_input_embeddings(replacement)
    assert model.get_input_embeddings() is replacement
    with pytest.raises(ValueError, match=r"one stem per sensor \['s1', 's2'\]"):
        model.set_input_embeddings(torch.nn.ModuleDict({"s1": stems["s1"]}))
