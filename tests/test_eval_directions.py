"""crjepa/eval/directions.py: the application's embedding spaces are the model's."""

from __future__ import annotations


def test_directions_module_names_the_models_spaces():
    from crjepa.eval.directions import SPACES
    from modeling_crjepa.modeling_crjepa import SPACES as MODEL_SPACES

    assert SPACES == MODEL_SPACES
