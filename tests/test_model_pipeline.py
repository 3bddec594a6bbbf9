"""modeling_crjepa/pipeline_crjepa.py: the image-feature-extraction pipeline every checkpoint registers returns
the retrieval embeddings of native-band images of any sensor (its life as remote code: test_model_remote_code.py)."""

import numpy as np
import pytest
import torch

from modeling_crjepa import CRJepaConfig, CRJepaImageProcessor, CRJepaModel
from modeling_crjepa.pipeline_crjepa import CRJepaFeatureExtractionPipeline

SMALL = dict(
    image_size=32,
    patch_size=8,
    hidden_size=64,
    num_hidden_layers=1,
    num_attention_heads=4,
    predictor_depth=1,
    predictor_hidden_size=64,
    predictor_num_heads=4,
    retrieval_dim=16,
    head_hidden_size=32,
)


def pipe_for(preset: str, **overrides):
    torch.manual_seed(0)
    config = CRJepaConfig.from_preset(preset, **overrides)
    model = CRJepaModel(config).eval()
    return CRJepaFeatureExtractionPipeline(model=model), model, CRJepaImageProcessor.from_config(config)


def reference(model, proc, images, sensor, space="unified") -> torch.Tensor:
    """get_embeddings on the processor's output: what the pipeline must return."""
    return model.get_embeddings(proc(images, sensor=sensor)["pixel_values"], sensor=sensor, space=space)


def test_native_s1_and_s2_arrays_in_either_layout_give_get_embeddings_of_the_processor_output():
    pipe, model, proc = pipe_for("tiny")
    rng = np.random.default_rng(0)
    s2 = rng.integers(0, 9000, size=(3, 12, 120, 120), dtype=np.uint16)
    s1 = rng.normal(-14, 4, size=(3, 2, 120, 120)).astype(np.float32)
    s1[0, 1, :4, :4] = np.nan  # SAR no-data
    for space in ("unified", "cross"):
        expected = reference(model, proc, s2[0], "s2", space)[0]
        one = pipe(s2[0], sensor="s2", space=space)
        assert isinstance(one, list) and len(one) == 32  # lists of floats, as transformers' pipeline returns
        assert torch.allclose(torch.tensor(one), expected, atol=1e-6)
        last = pipe(s2[0].transpose(1, 2, 0), space=space, return_tensors=True)  # channel-last, sensor from the bands
        assert torch.allclose(last, expected, atol=1e-6)
    batch = pipe(s1, return_tensors=True)  # a (B, C, H, W) batch: one (B, R) result, sensor s1 from its 2 bands
    assert batch.shape == (3, 32) and torch.allclose(batch, reference(model, proc, list(s1), "s1"), atol=1e-6)
    listed = pipe([s1[0], s1[1].transpose(1, 2, 0)], sensor="s1", space="cross", return_tensors=True)
    assert len(listed) == 2 and torch.allclose(
        torch.stack(listed), reference(model, proc, list(s1[:2]), "s1", "cross"), atol=1e-6
    )
    assert torch.allclose(batch.norm(dim=-1), torch.ones(3), atol=1e-5)
    assert not torch.allclose(pipe(s2[0], return_tensors=True), pipe(s2[0], space="cross", return_tensors=True))


def test_rgb_sensor_takes_pil_images_and_uint8_arrays():
    from PIL import Image

    pipe, model, proc = pipe_for("cbrsir_vs", **SMALL)
    rgb = np.random.default_rng(1).integers(0, 256, size=(64, 64, 3), dtype=np.uint8)
    expected = reference(model, proc, rgb.transpose(2, 0, 1), "rgb", "cross")[0]
    assert torch.allclose(pipe(Image.fromarray(rgb), space="cross", return_tensors=True), expected, atol=1e-6)
    assert torch.allclose(pipe(rgb, space="cross", return_tensors=True), expected, atol=1e-6)
    sar = np.random.default_rng(2).integers(0, 256, size=(64, 64), dtype=np.uint8)  # one band (H, W): the sar stem
    assert torch.allclose(pipe(sar, return_tensors=True), reference(model, proc, sar, "sar")[0], atol=1e-6)


def test_unknown_arguments_and_images_no_sensor_fits_are_refused():
    from PIL import Image

    pipe, _, _ = pipe_for("tiny")
    s2 = np.zeros((12, 40, 40), dtype=np.uint16)
    with pytest.raises(TypeError, match=r"unexpected argument\(s\) \['pool'\]"):
        pipe(s2, pool=True)
    with pytest.raises(ValueError, match=r"No sensor of this model has the images' channels.*\(30, 30, 3\)"):
        pipe(Image.fromarray(np.zeros((30, 30, 3), np.uint8)))  # an RGB picture into an S1/S2 model
    with pytest.raises(ValueError, match="Unknown embedding space 'same'"):
        pipe(s2, space="same")


def test_a_list_of_images_runs_as_one_batch():
    """transformers' Pipeline runs a list item by item; this one embeds the whole list in one forward pass."""
    pipe, model, proc = pipe_for("tiny")
    calls = []
    embed = model.get_embeddings
    model.get_embeddings = lambda pixels, **kw: calls.append(pixels.shape[0]) or embed(pixels, **kw)
    s2 = np.random.default_rng(3).integers(0, 9000, size=(5, 12, 40, 40), dtype=np.uint16)
    out = pipe(list(s2), sensor="s2", return_tensors=True)
    assert calls == [5] and len(out) == 5
    assert torch.allclose(torch.stack(out), reference(model, proc, list(s2), "s2"), atol=1e-6)
