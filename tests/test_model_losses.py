"""SIGReg, InfoNCE and the uni loss against independent float64 references."""

import math
import subprocess
import sys
import textwrap

import numpy as np
import pytest
import torch

from modeling_crjepa.losses import epps_pulley_knots, info_nce, prediction_loss, sigreg, sigreg_directions, uni_loss

from helpers import assert_close_at_scale, free_port, offline_env, roundoff


def sigreg_reference(r: np.ndarray, u: np.ndarray, num_knots: int = 17, t_max: float = 3.0) -> float:
    """docs/PAPER.md's formula written out with loops in float64."""
    batch, num_dirs = r.shape[0], u.shape[1]
    t = np.linspace(0.0, t_max, num_knots)
    dt = t_max / (num_knots - 1)
    total = 0.0
    s = r.astype(np.float64) @ u.astype(np.float64)
    for j in range(num_dirs):
        for k in range(num_knots):
            trap = dt / 2 if k in (0, num_knots - 1) else dt
            w = trap * math.exp(-(t[k] ** 2) / 2)
            c = np.mean(np.cos(t[k] * s[:, j])) - math.exp(-(t[k] ** 2) / 2)
            sn = np.mean(np.sin(t[k] * s[:, j]))
            total += w * (c * c + sn * sn)
    return batch / num_dirs * total


@pytest.mark.parametrize("seed", [0, 1, 2])
def test_sigreg_matches_float64_reference(seed):
    gen = torch.Generator().manual_seed(seed)
    r = torch.randn(64, 16, generator=gen) * 1.3 + 0.2
    u = sigreg_directions(16, 32, step=seed)
    ours = sigreg(r, directions=u, num_knots=17, t_max=3.0).item()
    ref = sigreg_reference(r.numpy(), u.numpy())
    assert abs(ours - ref) / ref < 1e-5


def test_sigreg_small_for_gaussian_large_for_collapse_and_shift():
    gen = torch.Generator().manual_seed(0)
    gaussian = torch.randn(1024, 32, generator=gen)
    collapsed = torch.zeros(1024, 32) + 0.01 * torch.randn(1024, 32, generator=gen)
    shifted = gaussian + 3.0
    low_rank = torch.randn(1024, 1, generator=gen) @ torch.randn(1, 32, generator=gen)
    values = {
        name: sigreg(x, step=5, num_directions=256).item()
        for name, x in {"gaussian": gaussian, "collapsed": collapsed, "shifted": shifted, "low_rank": low_rank}.items()
    }
    assert values["gaussian"] < 1.0
    for name in ("collapsed", "shifted", "low_rank"):
        assert values[name] > 20 * values["gaussian"], values


def test_sigreg_directions_depend_on_step_only():
    a = sigreg_directions(8, 4, step=3)
    assert torch.equal(a, sigreg_directions(8, 4, step=3))
    assert not torch.equal(a, sigreg_directions(8, 4, step=4))
    assert torch.allclose(a.norm(dim=0), torch.ones(4))


def test_knot_weights_are_trapezoid_times_gaussian():
    t, w = epps_pulley_knots(17, 3.0)
    assert t[0] == 0 and t[-1] == 3.0 and len(t) == 17
    dt = 3.0 / 16
    assert math.isclose(w[0].item(), dt / 2, rel_tol=1e-6)
    assert math.isclose(w[8].item(), dt * math.exp(-(t[8].item() ** 2) / 2), rel_tol=1e-6)


def test_info_nce_and_uni_loss_reference():
    gen = torch.Generator().manual_seed(0)
    a = torch.nn.functional.normalize(torch.randn(8, 5, generator=gen), dim=-1)
    b = torch.nn.functional.normalize(torch.randn(8, 5, generator=gen), dim=-1)
    logits = (a.double() @ b.double().T / 0.1).numpy()

    def ce(scores):
        return np.mean([-(scores[i, i] - np.log(np.exp(scores[i]).sum())) for i in range(len(scores))])

    ref = (ce(logits) + ce(logits.T)) / 2
    assert abs(info_nce(a, b, 0.1).item() - ref) < 1e-5
    cos = (a * b).sum(-1).double().numpy()
    assert abs(uni_loss(a, b, 0.1).item() - (ref + np.mean(1 - cos))) < 1e-5
    assert info_nce(a, a, 0.1) < info_nce(a, b, 0.1)


@pytest.mark.slow
def test_sigreg_two_processes_agree(tmp_path):
    """Two gloo processes, each with half of a batch: same directions, same value as one process on all of it;
    the all-reduce emits no warning (FutureWarnings are errors in the workers)."""
    script = tmp_path / "worker.py"
    script.write_text(
        textwrap.dedent(f"""
        import os, sys, torch, torch.distributed as dist
        from modeling_crjepa.losses import sigreg, sigreg_directions
        rank = int(sys.argv[1])
        dist.init_process_group("gloo", init_method="tcp://127.0.0.1:{free_port()}", rank=rank, world_size=2)
        full = torch.randn(64, 16, generator=torch.Generator().manual_seed(0))
        mine = full[rank * 32:(rank + 1) * 32].clone().requires_grad_(True)
        value = sigreg(mine, step=7, num_directions=64)
        value.backward()
        dirs = sigreg_directions(16, 64, step=7)
        keep = torch.arange(32) < (10 if rank == 0 else 32)  # unequal local counts: 10 + 32 rows
        weighted = sigreg(full[rank * 32:(rank + 1) * 32], step=7, num_directions=64, weight=keep)
        torch.save({{"value": value.item(), "dirs": dirs, "grad": mine.grad, "weighted": weighted.item()}},
                   r"{tmp_path}/out%d.pt" % rank)
        dist.destroy_process_group()
    """)
    )
    env = offline_env()
    procs = [
        subprocess.Popen([sys.executable, "-W", "error::FutureWarning", str(script), str(r)], env=env) for r in range(2)
    ]
    assert [p.wait() for p in procs] == [0, 0]  # a hang is caught by pytest-timeout
    out = [torch.load(tmp_path / f"out{r}.pt") for r in range(2)]
    assert torch.equal(out[0]["dirs"], out[1]["dirs"])
    assert out[0]["value"] == pytest.approx(out[1]["value"], rel=1e-6)
    full = torch.randn(64, 16, generator=torch.Generator().manual_seed(0))
    full.requires_grad_(True)
    single = sigreg(full, step=7, num_directions=64)
    single.backward()
    assert out[0]["value"] == pytest.approx(single.item(), rel=1e-5)
    rows = torch.cat([full[:10], full[32:]]).detach()  # the weighted statistic = SIGReg of the 42 kept rows
    for r in range(2):
        assert out[r]["weighted"] == pytest.approx(sigreg(rows, step=7, num_directions=64).item(), rel=1e-5)
    # DDP averages parameter gradients over processes, so each process holds world_size x its share of the
    # gradient of the global statistic: after DDP's average the update equals the single-process one.
    for r in range(2):
        assert_close_at_scale(out[r]["grad"] / 2, full.grad[r * 32 : (r + 1) * 32])


# ---------------------------------------------------------------------------------------------- partial batches
def test_weighted_terms_equal_the_terms_on_the_valid_rows_alone():
    """Each loss with a per-row validity equals the same loss on the valid rows only (static shapes, no
    indexing inside), for several patterns; the rows outside get exactly zero gradient."""
    g = torch.Generator().manual_seed(3)
    for valid in ([1, 0, 1, 1, 0, 1, 1, 0], [0, 0, 0, 0, 0, 0, 1, 1], [1] * 8):
        valid = torch.tensor(valid, dtype=torch.bool)
        a = torch.nn.functional.normalize(torch.randn(8, 16, generator=g), dim=-1).requires_grad_(True)
        b = torch.nn.functional.normalize(torch.randn(8, 16, generator=g), dim=-1)
        r = torch.randn(8, 16, generator=g).requires_grad_(True)
        pred, target = torch.randn(8, 5, 16, generator=g).requires_grad_(True), torch.randn(8, 5, 16, generator=g)
        pairs = [
            (info_nce(a, b, 0.1, valid), info_nce(a[valid], b[valid], 0.1)),
            (uni_loss(a, b, 0.1, valid), uni_loss(a[valid], b[valid], 0.1)),
            (sigreg(r, step=3, num_directions=32, weight=valid), sigreg(r[valid], step=3, num_directions=32)),
            (prediction_loss(pred, target, valid), prediction_loss(pred[valid], target[valid])),
        ]
        for weighted, subset in pairs:
            assert weighted.item() == pytest.approx(subset.item(), rel=1e-5, abs=1e-6)
        sum(w for w, _ in pairs).backward()
        for x in (a, r, pred):
            assert torch.all(x.grad[~valid] == 0) and torch.isfinite(x.grad).all()
    # a stack (P, B, D) with its own rows per projection = each projection's SIGReg on its rows
    stack, weights = torch.randn(3, 8, 16, generator=g), torch.rand(3, 8, generator=g) > 0.4
    each = sigreg(stack, step=1, num_directions=32, weight=weights)
    for p in range(3):
        assert each[p].item() == pytest.approx(sigreg(stack[p][weights[p]], step=1, num_directions=32).item(), rel=1e-5)


def info_nce_reference(e_a, e_b, temperature, valid, has_a, has_b) -> float:
    """Partially paired InfoNCE written out: each row with both sensors is a query; the candidates of an a->b
    query are itself and every row with b (and the reverse), float64 loops."""
    a, b = e_a.double().numpy(), e_b.double().numpy()
    losses = []
    for i in np.flatnonzero(valid.numpy()):
        parts = []
        for x, y, has in ((a, b, has_b), (b, a, has_a)):
            cand = sorted(set(np.flatnonzero(has.numpy())) | {i})
            logits = np.array([x[i] @ y[j] / temperature for j in cand])
            parts.append(np.log(np.exp(logits - logits.max()).sum()) + logits.max() - logits[cand.index(i)])
        losses.append(sum(parts) / 2)
    return float(np.mean(losses)) if losses else 0.0


def test_single_sensor_rows_are_negatives_of_the_contrastive_terms():
    """L_cross / L_uni on a partial batch: the paired rows are the queries, every row with the target sensor a
    candidate (a single-sensor row is a true negative), against the loop reference."""
    g = torch.Generator().manual_seed(5)
    a = torch.nn.functional.normalize(torch.randn(10, 16, generator=g), dim=-1)
    b = torch.nn.functional.normalize(torch.randn(10, 16, generator=g), dim=-1)
    has_a = torch.tensor([1, 1, 1, 0, 0, 1, 1, 0, 1, 1], dtype=torch.bool)
    has_b = torch.tensor([1, 0, 1, 1, 1, 1, 0, 0, 1, 1], dtype=torch.bool)
    valid = has_a & has_b
    value = info_nce(a, b, 0.2, valid, has_a, has_b)
    assert value.item() == pytest.approx(info_nce_reference(a, b, 0.2, valid, has_a, has_b), rel=1e-5)
    assert value.item() != pytest.approx(info_nce(a, b, 0.2, valid).item(), rel=1e-3)  # the negatives count
    cosine = torch.nn.functional.cosine_similarity(a, b)[valid]
    assert uni_loss(a, b, 0.2, valid, has_a, has_b).item() == pytest.approx(
        value.item() + (1 - cosine).mean().item(), rel=1e-5
    )


def test_terms_without_valid_rows_are_zero_not_nan():
    a = torch.nn.functional.normalize(torch.randn(6, 8), dim=-1).requires_grad_(True)
    none = torch.zeros(6, dtype=torch.bool)
    values = [
        info_nce(a, a.detach().flip(0), 0.1, none),
        uni_loss(a, a.detach(), 0.1, none),
        sigreg(a, num_directions=16, weight=none),
        prediction_loss(a[:, None], a.detach()[:, None] + 1, none),
    ]
    assert [v.item() for v in values] == [0.0, 0.0, 0.0, 0.0]
    sum(values).backward()
    assert torch.equal(a.grad, torch.zeros_like(a))


# ---------------------------------------------------------------------------------------------- two-sensor reference
def _reference():
    import importlib.util
    import json
    from pathlib import Path

    data = Path(__file__).parent / "data"
    spec = importlib.util.spec_from_file_location("make_two_sensor_reference", data / "make_two_sensor_reference.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module, json.loads((data / "two_sensor_reference.json").read_text())


LEGACY_TERMS = {
    "loss": "loss",
    "loss_pred": "pred",
    "loss_cross": "cross/s1-s2",
    "loss_uni": "uni/s1-s2",
    "loss_sigreg": "sigreg",
    "loss_pred_aa": "pred/s1->s1",
    "loss_pred_bb": "pred/s2->s2",
    "loss_pred_ab": "pred/s1->s2",
    "loss_pred_ba": "pred/s2->s1",
}
"""The legacy output's field (recorded in the reference) -> the term of CRJepaForPreTraining's losses (a = s1,
b = s2)."""


@pytest.mark.parametrize(
    "variant",
    [
        "paper",
        "paper_plain",
        "independent",
        "shared",
        "separate_trunks",
        "no_stopgrad_single_head",
        "cross_routes_weighted",
    ],
)
def test_two_sensor_objective_matches_the_reference(variant):
    """With two sensors the N-sensor objective computes exactly the two-sensor reference's numbers: every loss term
    and the gradient of every parameter (norm, sum, sampled values), on fixed weights, inputs and masks, fp32
    (tests/data/make_two_sensor_reference.py recorded them with the legacy, pre-N-sensor CRJepaModel)."""
    from modeling_crjepa import CRJepaConfig, CRJepaForPreTraining

    maker, reference = _reference()
    expected = reference["variants"][variant]
    model = CRJepaForPreTraining(CRJepaConfig.from_preset("tiny", **expected["overrides"])).train()
    legacy_name = lambda name: name.removeprefix("crjepa.")  # noqa: E731  (the encoder moved under .crjepa)
    maker.reference_weights(model.named_parameters(), legacy_name)
    a, b, masks = maker.reference_inputs(model.config)
    out = model({"s1": a, "s2": b}, sigreg_step=reference["sigreg_step"], masks=masks)
    out.loss.backward()
    terms = out.loss_terms()
    for old, value in expected["losses"].items():
        new = LEGACY_TERMS[old]
        if new not in terms:  # an inactive route: the legacy model logged 0
            assert value == 0.0 and new.startswith("pred/"), old
            continue
        assert terms[new].item() == pytest.approx(value, abs=roundoff(abs(value))), old  # positive terms
    grads = {legacy_name(n): p.grad for n, p in model.named_parameters() if p.grad is not None}
    assert grads.keys() == expected["grads"].keys()
    for name, summary in expected["grads"].items():
        flat = grads[name].reshape(-1).double()
        scale = summary["norm"]  # an element's roundoff scales with the tensor's norm; a sum's with norm x sqrt(n)
        assert flat.norm().item() == pytest.approx(scale, abs=roundoff(scale)), name
        assert flat.sum().item() == pytest.approx(summary["sum"], abs=roundoff(scale * flat.numel() ** 0.5)), name
        assert_close_at_scale([flat[i].item() for i in summary["index"]], summary["values"], scale=scale)
