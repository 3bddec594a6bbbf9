"""CRJepaImageProcessor and the on-device batch function: same numbers, band statistics, NaN handling."""

import numpy as np
import pytest
import torch

from modeling_crjepa import CRJepaConfig, CRJepaImageProcessor, preprocess_batch


@pytest.fixture
def config():
    return CRJepaConfig.from_preset("tiny")


def native_pair(n=3, size=40, seed=0):
    rng = np.random.default_rng(seed)
    s1 = rng.normal(-15, 4, size=(n, 2, size, size)).astype(np.float32)
    s2 = rng.integers(0, 6000, size=(n, 12, size, size)).astype(np.uint16)
    return s1, s2


def test_normalises_per_band_and_resizes(config):
    proc = CRJepaImageProcessor.from_config(config)
    s1, s2 = native_pair(size=config.image_size)  # same size: no resize, pure normalisation
    out = proc(list(s2), sensor="s2")["pixel_values"]
    assert out.shape == (3, 12, 32, 32) and out.dtype == torch.float32
    mean, std = np.array(config.band_mean["s2"]), np.array(config.band_std["s2"])
    expected = (s2.astype(np.float64) - mean[None, :, None, None]) / std[None, :, None, None]
    assert np.allclose(out.numpy(), expected, atol=1e-4)
    big = proc(list(native_pair(size=120)[0]), sensor="s1")["pixel_values"]
    assert big.shape == (3, 2, 32, 32)


def test_batched_device_function_gives_the_processors_numbers(config):
    proc = CRJepaImageProcessor.from_config(config)
    s1, s2 = native_pair(size=120)
    for sensor, arr in (("s1", s1), ("s2", s2)):
        expected = proc(list(arr), sensor=sensor)["pixel_values"]
        loader_tensor = torch.from_numpy(arr.astype(np.int32) if arr.dtype == np.uint16 else arr)
        got = preprocess_batch(loader_tensor, sensor, config)
        assert torch.allclose(got, expected, atol=1e-5)
    # uint16 tensors as the data loader produces them
    got = preprocess_batch(torch.from_numpy(s2), "s2", config)
    assert torch.allclose(got, proc(list(s2), sensor="s2")["pixel_values"], atol=1e-5)


def test_sar_nan_and_inf_are_filled_with_the_band_mean(config):
    proc = CRJepaImageProcessor.from_config(config)
    s1, _ = native_pair(n=1, size=32)
    s1[0, 0, 5, 5] = np.nan
    s1[0, 1, 7, 7] = -np.inf
    out = proc(s1[0], sensor="s1")["pixel_values"]
    assert torch.isfinite(out).all()
    assert out[0, 0, 5, 5] == 0 and out[0, 1, 7, 7] == 0


def test_nan_policy_raise_names_sensor_and_band(config):
    config.nan_policy = "raise"
    s1, _ = native_pair(n=1, size=32)
    s1[0, 1, 3, 3] = np.nan
    with pytest.raises(ValueError, match=r"Sensor 's1': non-finite values \(NaN/inf\) in band\(s\) \[1\]"):
        preprocess_batch(torch.from_numpy(s1), "s1", config)


def test_errors_name_sensor_and_shapes(config):
    proc = CRJepaImageProcessor.from_config(config)
    with pytest.raises(ValueError, match=r"Sensor 's2': expected 12 channels .* found shape \(3, 32, 32\)"):
        proc(np.zeros((3, 32, 32), np.uint16), sensor="s2")
    with pytest.raises(ValueError, match="Unknown sensor 'pan'"):
        proc(np.zeros((1, 32, 32)), sensor="pan")
    with pytest.raises(ValueError, match="one shape"):
        proc([np.zeros((2, 32, 32)), np.zeros((2, 30, 30))], sensor="s1")


def test_processor_round_trips_through_save_pretrained(config, tmp_path):
    proc = CRJepaImageProcessor.from_config(config)
    proc.save_pretrained(tmp_path)
    again = CRJepaImageProcessor.from_pretrained(tmp_path)
    s1, _ = native_pair(size=64)
    assert torch.equal(again(list(s1), sensor="s1")["pixel_values"], proc(list(s1), sensor="s1")["pixel_values"])
    assert again.band_std == proc.band_std and again.image_size == 32


def test_antialiasing_only_where_a_side_shrinks():
    """Upsampling (BigEarthNet 120 -> 224) skips the antialiasing kernel: the same result to float rounding;
    downsampling keeps it (a plain bilinear result would alias)."""
    import torch.nn.functional as F

    from modeling_crjepa.image_processing_crjepa import normalize_and_resize

    gen = torch.Generator().manual_seed(0)
    for native, size in ((120, 224), (300, 224)):
        x = torch.randn(2, 3, native, native, generator=gen)
        out = normalize_and_resize(x, "s", [0.0] * 3, [1.0] * 3, size)
        antialiased = F.interpolate(x, size=(size, size), mode="bilinear", align_corners=False, antialias=True)
        assert torch.allclose(out, antialiased, atol=1e-4), native
    plain = F.interpolate(x, size=(size, size), mode="bilinear", align_corners=False, antialias=False)
    assert (out - plain).abs().max() > 0.1


def test_channel_last_numpy_and_pil_inputs_and_the_usual_knobs():
    """input_data_format="channels_last" and PIL images give the channel-first result; do_resize, do_normalize
    and size do what transformers' processors do; sensor=None finds the sensor by its channel count."""
    from PIL import Image

    config = CRJepaConfig.from_preset("cbrsir_vs", image_size=32)
    proc = CRJepaImageProcessor.from_config(config)
    rgb = np.random.default_rng(0).integers(0, 256, size=(2, 3, 48, 40), dtype=np.uint8)
    first = proc(list(rgb), sensor="rgb")["pixel_values"]
    last = proc([im.transpose(1, 2, 0) for im in rgb], sensor="rgb", input_data_format="channels_last")["pixel_values"]
    pil = proc([Image.fromarray(im.transpose(1, 2, 0)) for im in rgb])["pixel_values"]  # sensor by channels: rgb
    assert first.shape == (2, 3, 32, 32) and torch.equal(first, last) and torch.equal(first, pil)
    raw = proc(list(rgb[:, :, :40]), sensor="rgb", do_normalize=False, do_resize=False)["pixel_values"]
    assert raw.shape == (2, 3, 40, 40) and torch.equal(raw, torch.as_tensor(rgb[:, :, :40]).float())
    assert proc(list(rgb), sensor="rgb", size={"height": 16, "width": 16})["pixel_values"].shape == (2, 3, 16, 16)
    sar = proc(np.zeros((20, 20), dtype=np.uint8))["pixel_values"]  # one band (H, W): the 1-channel sensor
    assert sar.shape == (1, 1, 32, 32)
    with pytest.raises(ValueError, match="channels"):
        proc(list(rgb), sensor="sar")


# ------------------------------------------------------------------ strict and helpful, as ViT's / SigLIP's processors
def test_unknown_keyword_arguments_are_refused_naming_them(config):
    proc = CRJepaImageProcessor.from_config(config)
    s1, _ = native_pair(n=1)
    with pytest.raises(
        TypeError, match=r"unexpected keyword argument\(s\) \['do_center_crop', 'sensr'\].*takes sensor"
    ):
        proc(s1[0], sensr="s1", do_center_crop=True)


def test_do_rescale_is_refused_because_the_statistics_are_in_native_units(config):
    proc = CRJepaImageProcessor.from_config(config)
    _, s2 = native_pair(n=1)
    assert proc.do_rescale is False
    with pytest.raises(ValueError, match="never rescales.*native units.*do_rescale=True"):
        proc(s2[0], sensor="s2", do_rescale=True)
    with pytest.raises(ValueError, match="rescale_factor=0.5"):
        proc(s2[0], sensor="s2", rescale_factor=0.5)
    with pytest.raises(ValueError, match="never rescales"):
        CRJepaImageProcessor(sensors={"s2": 12}, do_rescale=True)
    assert torch.equal(
        proc(s2[0], sensor="s2", do_rescale=False)["pixel_values"], proc(s2[0], sensor="s2")["pixel_values"]
    )


def test_return_tensors_pt_np_and_none_are_honoured(config):
    proc = CRJepaImageProcessor.from_config(config)
    _, s2 = native_pair(n=2)
    pt = proc(list(s2), sensor="s2")["pixel_values"]
    np_out = proc(list(s2), sensor="s2", return_tensors="np")["pixel_values"]
    listed = proc(list(s2), sensor="s2", return_tensors=None)["pixel_values"]
    assert isinstance(pt, torch.Tensor) and isinstance(np_out, np.ndarray) and np_out.shape == (2, 12, 32, 32)
    assert isinstance(listed, list) and len(listed) == 2 and all(isinstance(a, np.ndarray) for a in listed)
    assert np.array_equal(np_out, pt.numpy()) and np.array_equal(np.stack(listed), np_out)
    with pytest.raises(ValueError, match="return_tensors must be 'pt', 'np' or None"):
        proc(list(s2), sensor="s2", return_tensors="tf")


def test_channel_last_is_inferred_from_the_sensors_channel_count(config):
    proc = CRJepaImageProcessor.from_config(config)
    s1, s2 = native_pair(n=2, size=120)
    first = proc(list(s2), sensor="s2")["pixel_values"]
    assert torch.equal(proc([a.transpose(1, 2, 0) for a in s2], sensor="s2")["pixel_values"], first)
    assert torch.equal(proc(s2.transpose(0, 2, 3, 1), sensor="s2")["pixel_values"], first)  # a (B, H, W, C) batch
    # without a sensor: the only sensor with 2 bands, channel-last
    assert torch.equal(proc(s1[0].transpose(1, 2, 0))["pixel_values"], proc(s1[0], sensor="s1")["pixel_values"])
    with pytest.raises(ValueError, match=r"No sensor of this model has the images' channels.*\(120, 120, 3\)"):
        proc(np.zeros((120, 120, 3), np.uint8))
    with pytest.raises(
        ValueError,
        match=r"Sensor 's2': expected 12 channels .*\(H, W, C\) = \(H, W, 12\), found shape "
        r"\(120, 120, 12\)",
    ):
        proc(s2[0].transpose(1, 2, 0), sensor="s2", input_data_format="channels_first")


def test_paths_of_npy_and_png_files_are_read_and_others_refused_clearly(config, tmp_path):
    from PIL import Image

    proc = CRJepaImageProcessor.from_config(config)
    _, s2 = native_pair(n=1)
    np.save(tmp_path / "s2.npy", s2[0])
    expected = proc(s2[0], sensor="s2")["pixel_values"]
    assert torch.equal(proc(str(tmp_path / "s2.npy"), sensor="s2")["pixel_values"], expected)
    assert torch.equal(proc([tmp_path / "s2.npy"], sensor="s2")["pixel_values"], expected)  # pathlib paths too
    rgb_config = CRJepaConfig.from_preset("cbrsir_vs", image_size=32)
    rgb_proc = CRJepaImageProcessor.from_config(rgb_config)
    rgb = np.random.default_rng(1).integers(0, 256, size=(40, 40, 3), dtype=np.uint8)
    Image.fromarray(rgb).save(tmp_path / "rgb.png")
    assert torch.equal(
        rgb_proc(str(tmp_path / "rgb.png"))["pixel_values"],
        rgb_proc(rgb.transpose(2, 0, 1), sensor="rgb")["pixel_values"],
    )
    (tmp_path / "s2.tif").write_bytes(b"II*\x00")
    with pytest.raises(
        ValueError, match=r"s2\.tif: CRJepaImageProcessor reads \.npy.*rasterio\.open\(path\)\.read\(\)"
    ):
        proc(str(tmp_path / "s2.tif"), sensor="s2")
    with pytest.raises(ValueError, match="local files only.*URL"):
        proc("https://example.org/s2.npy", sensor="s2")
    with pytest.raises(FileNotFoundError, match=r"Image file not found: .*missing\.npy"):
        proc(str(tmp_path / "missing.npy"), sensor="s2")


def test_non_square_sizes_are_honoured_not_squared(config, tmp_path):
    proc = CRJepaImageProcessor.from_config(config)
    _, s2 = native_pair(n=2, size=60)
    out = proc(list(s2), sensor="s2", size={"height": 16, "width": 24})["pixel_values"]
    assert out.shape == (2, 12, 16, 24)
    reference = torch.nn.functional.interpolate(
        proc(list(s2), sensor="s2", do_resize=False)["pixel_values"],
        size=(16, 24),
        mode="bilinear",
        align_corners=False,
        antialias=True,
    )
    assert torch.allclose(out, reference, atol=1e-5)
    assert proc(list(s2), sensor="s2", size=(20, 8))["pixel_values"].shape == (2, 12, 20, 8)
    wide = CRJepaImageProcessor(
        sensors=config.sensors,
        band_mean=config.band_mean,
        band_std=config.band_std,
        image_size=32,
        size={"height": 16, "width": 40},
    )
    wide.save_pretrained(tmp_path)
    again = CRJepaImageProcessor.from_pretrained(tmp_path)
    assert again.size == {"height": 16, "width": 40}
    assert again(s2[0], sensor="s2")["pixel_values"].shape == (1, 12, 16, 40)
    assert proc.size == {"height": 32, "width": 32}
    with pytest.raises(ValueError, match="size must be an int, .*shortest_edge"):
        proc(list(s2), sensor="s2", size={"shortest_edge": 32})
