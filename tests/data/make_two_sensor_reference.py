"""Regression fixture, the two-sensor reference: the two-sensor objective's numbers as the legacy (pre-N-sensor)
model computed them.

    PYTHONPATH=. python tests/data/make_two_sensor_reference.py   # writes tests/data/two_sensor_reference.json

Run ONCE on the code before the N-sensor rewrite (commit 7554b37, where CRJepaModel held the predictors and computed
the objective: `CRJepaModel.forward(pixel_values_a, pixel_values_b)`; `main` uses that API and does not run on the
current code); tests/test_model_losses.py::test_two_sensor_objective_matches_the_reference recomputes every
number with the current code and compares. Nothing here depends on the order in which a model draws its initial
weights: every parameter is set from its legacy name by `reference_weights`, the inputs and masks come from a
seeded generator (`reference_inputs`), and SIGReg's directions from a fixed step. The file holds, per variant,
every loss term and, per parameter, the gradient's norm, sum and 8 sampled values (fp32, CPU); plus a legacy
checkpoint's config.json and state-dict names and shapes (`legacy_config`, `legacy_shapes`), from which tests
rebuild a legacy checkpoint (weights from `reference_weights`).
"""

from __future__ import annotations

import json
import tempfile
import zlib
from pathlib import Path

import torch

VARIANTS: dict[str, dict] = {
    "paper": {},
    "paper_plain": {"pack_sensors": False},
    "independent": {"predictor_sharing": "independent"},
    "shared": {"predictor_sharing": "shared"},
    "separate_trunks": {"trunk_mode": "separate"},
    "no_stopgrad_single_head": {"stop_gradient_targets": False, "head_mode": "single", "routes": ["aa", "ab", "ba"]},
    "cross_routes_weighted": {"routes": ["ab", "ba"], "route_weights": {"ab": 2.0}},
}
"""Tiny-preset overrides -> one reference each (the paper's route codes: a = s1, b = s2)."""

BATCH, SIGREG_STEP, SAMPLES = 6, 5, 8
OUT = Path(__file__).with_name("two_sensor_reference.json")


def reference_weights(named_parameters, rename=lambda name: name) -> None:
    """Set every parameter from a generator seeded by the crc32 of its legacy name (`rename` maps a current
    name to it): norms' weights ~ 1 + 0.1 N, vectors ~ 0.02 N, position / mask / sensor embeddings ~ 0.02 N,
    matrices ~ N / sqrt(fan_in)."""
    with torch.no_grad():
        for name, param in named_parameters:
            old = rename(name)
            gen = torch.Generator().manual_seed(zlib.crc32(old.encode()))
            noise = torch.randn(param.shape, generator=gen, dtype=torch.float32)
            last = old.rsplit(".", 1)[-1]
            if param.ndim == 1 and "norm" in old and last == "weight":
                value = 1 + 0.1 * noise
            elif param.ndim == 1 or last in ("pos_embed", "mask_token", "target_sensor_embed"):
                value = 0.02 * noise
            else:
                value = noise / (param[0].numel() ** 0.5)
            param.copy_(value)


def reference_inputs(config) -> tuple[torch.Tensor, torch.Tensor, dict]:
    """(pixel_values_a, pixel_values_b, masks) for the tiny preset, from a generator seeded with 1."""
    from modeling_crjepa.modeling_crjepa import random_masks

    gen = torch.Generator().manual_seed(1)
    (_, ca), (_, cb) = list(config.sensors.items())[:2]
    size = config.image_size
    a = torch.randn(BATCH, ca, size, size, generator=gen)
    b = torch.randn(BATCH, cb, size, size, generator=gen)
    masks = {s: random_masks(BATCH, config.num_patches, config.mask_ratio, "cpu", gen) for s in config.sensors}
    return a, b, masks


def sample_index(numel: int) -> list[int]:
    """SAMPLES evenly spaced flat indices into a tensor of `numel` elements."""
    return sorted({int(i * (numel - 1) / max(SAMPLES - 1, 1)) for i in range(SAMPLES)})


def summarize(grads: dict[str, torch.Tensor]) -> dict[str, dict]:
    out = {}
    for name, grad in grads.items():
        flat = grad.detach().reshape(-1).double()
        index = sample_index(flat.numel())
        out[name] = {
            "norm": flat.norm().item(),
            "sum": flat.sum().item(),
            "index": index,
            "values": [flat[i].item() for i in index],
        }
    return out


def main() -> None:
    from modeling_crjepa import CRJepaConfig, CRJepaModel  # the legacy API: forward(pixel_values_a, pixel_values_b)

    reference = {"batch": BATCH, "sigreg_step": SIGREG_STEP, "preset": "tiny", "variants": {}}
    for variant, overrides in VARIANTS.items():
        model = CRJepaModel(CRJepaConfig.from_preset("tiny", **overrides)).train()
        reference_weights(model.named_parameters())
        a, b, masks = reference_inputs(model.config)
        out = model(a, b, sigreg_step=SIGREG_STEP, masks=masks)
        out.loss.backward()
        grads = {n: p.grad for n, p in model.named_parameters() if p.grad is not None}
        reference["variants"][variant] = {
            "overrides": overrides,
            "losses": {k: v.item() for k, v in out.loss_terms().items()},
            "grads": summarize(grads),
        }
    # a legacy checkpoint's config.json and state-dict layout (the paper variant), so tests can rebuild one
    model = CRJepaModel(CRJepaConfig.from_preset("tiny")).eval()
    with tempfile.TemporaryDirectory() as tmp:
        model.save_pretrained(tmp)
        reference["legacy_config"] = json.loads((Path(tmp) / "config.json").read_text())
    reference["legacy_shapes"] = {n: list(t.shape) for n, t in model.state_dict().items()}
    OUT.write_text(json.dumps(reference, sort_keys=True, separators=(",", ":")) + "\n")
    print(f"wrote {OUT} ({OUT.stat().st_size} bytes)")


if __name__ == "__main__":
    main()
