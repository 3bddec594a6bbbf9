"""crjepa/train/masks.py: masks as a pure function of (seed, step, sample id, sensor), counted as the model counts."""

from __future__ import annotations

import pytest
import torch

from crjepa.train.masks import draw_masks
from modeling_crjepa import CRJepaConfig
from modeling_crjepa.modeling_crjepa import num_masked, random_masks


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


@pytest.mark.parametrize("ratio", [0.01, 0.25, 0.5, 0.75, 0.99])
def test_training_masks_hide_as_many_tokens_as_the_models_own_masks(ratio):
    """One formula for the counts (`num_masked`, in the model): the loop's hashed masks and the model's random
    ones hide the same number of tokens, never all of them and never none."""
    config = CRJepaConfig.from_preset("tiny", mask_ratio=ratio)
    tokens = config.num_patches
    expected = num_masked(tokens, ratio)
    assert expected == min(max(round(tokens * ratio), 1), tokens - 1)
    visible, masked = draw_masks(config, ["a", "b"], step=0, seed=0, device="cpu")["s2"]
    model_visible, model_masked = random_masks(2, tokens, ratio, "cpu")
    assert masked.shape == model_masked.shape == (2, expected)
    assert visible.shape == model_visible.shape == (2, tokens - expected)
