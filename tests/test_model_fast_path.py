"""Speed never changes the model: the packed path (pack_sensors=True, fused qkv, stacked SIGReg) computes the
same losses, gradients and FLOPs as the plain path, one call per sensor and route."""

import pytest
import torch
from torch.utils.flop_counter import FlopCounterMode

from modeling_crjepa import CRJepaConfig, CRJepaForPreTraining
from modeling_crjepa.losses import sigreg, sigreg_directions
from modeling_crjepa.modeling_crjepa import random_masks, run_packed

from helpers import assert_close_at_scale

TERMS = ("loss", "pred", "pred/s1->s1", "pred/s2->s2", "pred/s1->s2", "pred/s2->s1", "cross", "uni", "sigreg")


def setup(n: int = 6, **overrides):
    torch.manual_seed(0)
    model = CRJepaForPreTraining(CRJepaConfig.from_preset("tiny", **overrides))
    gen = torch.Generator().manual_seed(1)
    (_, ca), (_, cb) = model.config.sensors.items()
    size = model.config.image_size
    a, b = torch.randn(n, ca, size, size, generator=gen), torch.randn(n, cb, size, size, generator=gen)
    masks = {
        s: random_masks(n, model.config.num_patches, model.config.mask_ratio, "cpu", gen) for s in model.sensor_names
    }
    return model, a, b, masks


def losses_and_grads(model: CRJepaForPreTraining, pack: bool, a, b, masks) -> tuple[dict, dict]:
    model.config.pack_sensors = pack
    model.zero_grad(set_to_none=True)
    out = model({"s1": a, "s2": b}, sigreg_step=5, masks=masks)
    out.loss.backward()
    grads = {n: p.grad.clone() for n, p in model.named_parameters() if p.grad is not None}
    terms = out.loss_terms()
    return {t: terms[t].detach() for t in TERMS if t in terms}, grads


@pytest.mark.parametrize(
    "overrides",
    [
        {},  # the paper: P_aa, P_bb, one P_cross (ab and ba packed into one call)
        {"predictor_sharing": "independent"},
        {"predictor_sharing": "shared"},  # all four routes in one call
        {"trunk_mode": "separate"},  # nothing to pack in the trunk
        {"stop_gradient_targets": False, "head_mode": "single", "routes": ["aa", "ab", "ba"]},
    ],
    ids=["paper", "independent", "shared", "separate_trunks", "no_stopgrad_single_head"],
)
def test_packed_path_matches_plain_path(overrides):
    model, a, b, masks = setup(**overrides)
    packed_losses, packed_grads = losses_and_grads(model, True, a, b, masks)
    plain_losses, plain_grads = losses_and_grads(model, False, a, b, masks)
    assert packed_losses.keys() == plain_losses.keys() and "loss" in packed_losses
    for term in plain_losses:
        assert torch.allclose(packed_losses[term], plain_losses[term], rtol=1e-5, atol=1e-6), term
    assert packed_grads.keys() == plain_grads.keys() and len(plain_grads) == len(list(model.parameters()))
    for name, grad in plain_grads.items():  # per tensor, relative to its norm: fp32 rounding is ~1e-6
        assert (packed_grads[name] - grad).norm() <= 1e-5 * grad.norm() + 1e-8, name


def test_packed_path_counts_the_same_flops():
    model, a, b, masks = setup()
    counts = {}
    for pack in (True, False):
        model.config.pack_sensors = pack
        with FlopCounterMode(display=False) as counter:
            model({"s1": a, "s2": b}, sigreg_step=0, masks=masks).loss.backward()
        counts[pack] = counter.get_total_flops()
    assert counts[True] == counts[False] > 0


def test_stacked_sigreg_equals_each_projection():
    gen = torch.Generator().manual_seed(0)
    stack = torch.randn(4, 32, 16, generator=gen) * torch.tensor([0.5, 1.0, 2.0, 1.0]).view(4, 1, 1)
    directions = sigreg_directions(16, 64, step=3)
    each = torch.stack([sigreg(r, directions=directions) for r in stack])
    assert_close_at_scale(sigreg(stack, directions=directions), each)
    assert_close_at_scale(sigreg(stack, step=3, num_directions=64).mean(), each.mean())


def test_run_packed_groups_by_module_and_shape():
    calls_seen = []

    class Count(torch.nn.Module):
        def forward(self, x):
            calls_seen.append(x.shape[0])
            return x * 2, x + 1

    first, second = Count(), Count()
    x3, x5, odd = torch.randn(3, 4), torch.randn(5, 4), torch.randn(2, 7)
    out = run_packed([(first, (x3,)), (second, (x3,)), (first, (x5,)), (first, (odd,))])
    assert sorted(calls_seen) == [2, 3, 8]  # first: 3 + 5 packed; second alone; odd shape alone
    for x, (doubled, plus_one) in zip([x3, x3, x5, odd], out):
        assert torch.equal(doubled, x * 2) and torch.equal(plus_one, x + 1)


def test_embed_serves_every_space_from_one_trunk_pass():
    model, a, _, _ = setup()
    model.eval()
    both = model.crjepa.embed(a, "s1")
    for space in ("unified", "cross"):
        assert_close_at_scale(both[space], model.crjepa.get_embeddings(a, "s1", space), scale=1.0)  # unit vectors
    assert torch.equal(model.crjepa.get_embeddings(a, "s1", "cross", check_finite=False), both["cross"])
    raw = model.crjepa.embed(a, "s1", ("cross",), normalize=False)["cross"]
    assert torch.allclose(raw, model.crjepa.get_embeddings(a, "s1", "cross", normalize=False))


@pytest.mark.slow
def test_compiled_blocks_compute_the_same_loss():
    """compile_blocks is opt-in; the eager backend checks the wiring on the CPU in a few seconds."""
    model, a, b, masks = setup()
    reference, _ = losses_and_grads(model, True, a, b, masks)
    model.compile_blocks(backend="eager")
    compiled, _ = losses_and_grads(model, True, a, b, masks)
    assert all(torch.allclose(compiled[t], reference[t], rtol=1e-5, atol=1e-6) for t in TERMS)


def test_patch_embedding_is_the_strided_conv_it_replaces():
    """SensorStem computes its Conv2d (kernel = stride = patch) as one matmul over flattened patches: the same
    tokens and the same weight gradient as the convolution, from the same parameters (checkpoints unchanged)."""
    model, a, b, _ = setup(n=3)
    for sensor, x in zip(model.sensor_names, (a, b)):
        stem = model.crjepa.stems[sensor]
        conv = stem.patch_embed
        reference = torch.nn.functional.conv2d(x, conv.weight, conv.bias, stride=conv.stride)
        reference = reference.flatten(2).transpose(1, 2) + stem.pos_embed
        tokens = stem(x)
        assert tokens.shape == reference.shape
        assert torch.allclose(tokens, reference, rtol=1e-5, atol=1e-5)
        (grad,) = torch.autograd.grad((tokens * reference.detach()).sum(), conv.weight)
        (grad_ref,) = torch.autograd.grad((reference * reference.detach()).sum(), conv.weight)
        assert torch.allclose(grad, grad_ref, rtol=1e-4, atol=1e-4)


@pytest.mark.slow
def test_presence_changes_never_recompile_the_training_forward():
    """Partially paired batches keep static shapes (absent rows are computed and weighted 0): the whole
    training forward compiled once (dynamic=False) serves batches with any presence pattern, including one
    without pairs, with the eager forward's values."""
    import torch._dynamo

    model, a, b, masks = setup(n=8)
    patterns = [
        (torch.arange(8) < 6, torch.arange(8) >= 2),
        (torch.arange(8) % 2 == 0, torch.ones(8, dtype=torch.bool)),
        (torch.arange(8) < 4, torch.arange(8) >= 4),
    ]
    torch._dynamo.reset()
    torch._dynamo.utils.counters.clear()
    compiled = torch.compile(model, backend="eager", dynamic=False)
    graphs = []
    for has_a, has_b in patterns:
        present = {"s1": has_a, "s2": has_b}
        out = compiled({"s1": a, "s2": b}, sigreg_step=5, masks=masks, present=present)
        graphs.append(torch._dynamo.utils.counters["stats"]["unique_graphs"])
        eager = model({"s1": a, "s2": b}, sigreg_step=5, masks=masks, present=present)
        for term, value in eager.losses.items():
            assert torch.allclose(out.losses[term], value, rtol=1e-5, atol=1e-6), term
    assert graphs[0] > 0 and graphs == [graphs[0]] * len(patterns)  # no new graph for a new pattern
    _, a6, b6, masks6 = setup(n=6)  # the counter does see a real shape change
    compiled({"s1": a6, "s2": b6}, sigreg_step=5, masks=masks6, present={"s1": torch.ones(6, dtype=torch.bool)})
    assert torch._dynamo.utils.counters["stats"]["unique_graphs"] > graphs[0]
