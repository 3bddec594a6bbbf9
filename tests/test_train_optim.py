"""crjepa/train/optim.py: AdamW's groups follow the model's no_weight_decay() declaration."""

from __future__ import annotations

from crjepa.train.optim import no_decay_names, param_groups
from modeling_crjepa import CRJepaConfig, CRJepaForPreTraining


def test_no_weight_decay_on_norms_biases_positions_mask_tokens_and_sensor_embeddings():
    model = CRJepaForPreTraining(CRJepaConfig.from_preset("tiny"))
    decay, no_decay = param_groups(model, 0.04)
    assert decay["weight_decay"] == 0.04 and no_decay["weight_decay"] == 0.0
    names = set(no_decay_names(model))
    assert names == model.no_weight_decay()  # the model declares them; the optimiser reads the declaration
    assert {
        "crjepa.stems.s1.pos_embed",
        "crjepa.stems.s2.pos_embed",
        "predictors.cross.mask_token",
        "predictors.cross.pos_embed",
        "predictors.cross.target_sensor_embed",
    } <= names
    assert "crjepa.trunk.norm.weight" in names and "crjepa.trunk.blocks.0.attn.q.bias" in names
    assert "crjepa.trunk.blocks.0.attn.q.weight" not in names and "crjepa.stems.s1.patch_embed.weight" not in names
    assert len(decay["params"]) + len(no_decay["params"]) == len(list(model.parameters()))
    assert len(no_decay["params"]) == len(names)


def test_optimiser_reads_the_models_no_weight_decay_declaration():
    """The optimiser's groups follow what the model declares (no name matching in the trainer)."""
    model = CRJepaForPreTraining(CRJepaConfig.from_preset("tiny"))
    matrix = "crjepa.trunk.blocks.0.attn.q.weight"
    model.no_weight_decay = lambda: {matrix}
    decay, no_decay = param_groups(model, 0.04)
    assert len(no_decay["params"]) == 1 and no_decay["params"][0] is model.get_parameter(matrix)
    assert len(decay["params"]) == len(list(model.parameters())) - 1
