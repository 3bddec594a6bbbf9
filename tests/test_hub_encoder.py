"""crjepa/hub/encoder.py: the retrieval-only copy of a pretraining folder, pushed without the predictors."""

from __future__ import annotations

import json

import pytest
import torch

from crjepa.hub.access import push_folder
from modeling_crjepa import CRJepaConfig, CRJepaModel

from helpers import FakeHubApi


def test_export_encoder_pushes_the_retrieval_model_without_predictors(tmp_path):
    """A pretraining folder -> export_encoder -> push_folder (injected client): the pushed folder holds a
    CRJepaModel (no predictor weights) that embeds exactly as the pretraining model does, with card and processor."""
    from safetensors import safe_open

    from crjepa.hub.encoder import export_encoder
    from modeling_crjepa import CRJepaForPreTraining, CRJepaImageProcessor

    torch.manual_seed(0)
    full = CRJepaForPreTraining(CRJepaConfig.from_preset("tiny")).eval()
    full.save_pretrained(tmp_path / "model")
    CRJepaImageProcessor.from_config(full.config).save_pretrained(tmp_path / "model")
    encoder_dir = export_encoder(tmp_path / "model", tmp_path / "model_encoder")
    with safe_open(str(encoder_dir / "model.safetensors"), "pt") as f:
        keys = list(f.keys())
    assert keys and not any("predictors" in k for k in keys)
    assert json.loads((encoder_dir / "config.json").read_text())["architectures"] == ["CRJepaModel"]
    assert {"README.md", "preprocessor_config.json", "image_processing_crjepa.py", "modeling_crjepa.py"} <= {
        p.name for p in encoder_dir.iterdir()
    }
    x = torch.randn(2, 12, 32, 32)
    assert torch.equal(
        CRJepaModel.from_pretrained(encoder_dir).eval().get_embeddings(x, "s2", "cross"),
        full.crjepa.get_embeddings(x, "s2", "cross"),
    )
    api = FakeHubApi()
    push_folder(encoder_dir, "someone/crjepa-encoder", repo_type="model", api=api)
    assert api.calls[2][1]["folder_path"] == str(encoder_dir)
    with pytest.raises(FileNotFoundError, match="config.json"):
        export_encoder(tmp_path / "nothing", tmp_path / "out")
    assert not (tmp_path / "out").exists()
