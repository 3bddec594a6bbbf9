"""crjepa/hub/archive/provenance.py: the model fingerprint is stable across save and load and changes with the
weights."""

from __future__ import annotations

import torch

from crjepa.hub.archive import model_fingerprint
from modeling_crjepa import CRJepaModel


def test_fingerprint_is_stable_across_save_and_load_and_tracks_weights(model, tmp_path):
    fresh = CRJepaModel(model.config.__class__.from_dict(model.config.to_dict()))
    fresh.load_state_dict(model.state_dict())
    before = model_fingerprint(fresh)  # never saved: saving adds fields (custom_pipelines) that change no vector
    fresh.save_pretrained(tmp_path / "m")
    reloaded = CRJepaModel.from_pretrained(tmp_path / "m")
    assert model_fingerprint(reloaded) == model_fingerprint(fresh) == before
    model = fresh
    with torch.no_grad():
        next(reloaded.parameters()).view(-1)[0] += 1e-3
    assert model_fingerprint(reloaded) != model_fingerprint(model)
