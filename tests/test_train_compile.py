"""crjepa/train/compile.py: training.compile's scopes (compiling is lazy: nothing is compiled before a forward)."""

from __future__ import annotations

import pytest

from crjepa.train.compile import compile_for_training, compiled_modules
from crjepa.train.config import ConfigError
from modeling_crjepa import CRJepaConfig, CRJepaForPreTraining


def test_auto_is_eager_on_the_cpu_blocks_compile_the_blocks_and_model_the_whole_forward_too():
    # tiny: 2 stems + 2 trunk blocks + 3 predictors x 1 block; model adds the pretraining model itself
    for scope, applied, modules in (
        ("auto", "none", 0),
        ("none", "none", 0),
        ("blocks", "blocks", 7),
        ("model", "model", 8),
    ):
        model = CRJepaForPreTraining(CRJepaConfig.from_preset("tiny"))
        assert compile_for_training(model, scope, "cpu") == applied
        assert compiled_modules(model) == modules, scope
    with pytest.raises(ConfigError, match=r"training.compile must be one of \['auto', 'none', 'blocks', 'model'\]"):
        compile_for_training(model, "everything", "cpu")
