"""Preprocessing for CR-JEPA: per-band normalisation, SAR non-finite handling, resize to the model's size.

`preprocess_batch` is the one implementation: a batched torch function that runs on any device (the training
loop calls it on the GPU after the loader). `CRJepaImageProcessor` (a transformers image processor, loadable
with AutoImageProcessor and trust_remote_code) calls the same function on the CPU, so both give the same
numbers. This module travels as remote code: it imports only numpy, torch and transformers.
"""

from __future__ import annotations

from typing import Any

import numpy as np
import torch
import torch.nn.functional as F
from transformers.image_processing_utils import BaseImageProcessor, BatchFeature

from .losses import host_to_device


def _stats(mean: list[float], std: list[float], device, channels: int) -> tuple[torch.Tensor, torch.Tensor]:
    """The band statistics as (1, C, 1, 1) tensors on `device`, copied without a host sync (pinned)."""
    stats = host_to_device(torch.tensor([mean, std], dtype=torch.float32), device)
    return stats[0].view(1, channels, 1, 1), stats[1].view(1, channels, 1, 1)


def normalize_and_resize(
    pixel_values: torch.Tensor,
    sensor: str,
    band_mean: list[float],
    band_std: list[float],
    image_size: int,
    nan_policy: str = "fill",
    check_finite: bool = True,
) -> torch.Tensor:
    """(B, C, H, W) of any dtype at native size -> float32 (B, C, image_size, image_size).

    Steps: cast to float32; normalise each band, (x - mean) / std; non-finite values (NaN/inf, common in SAR
    dB where the backscatter is zero) become 0 = the band mean ("fill") or raise ("raise"); bilinear resize
    with antialiasing. Normalising before resizing is equivalent (the resize is linear per band) and keeps
    NaN from spreading into neighbours.
    """
    if pixel_values.ndim == 3:
        pixel_values = pixel_values.unsqueeze(0)
    if pixel_values.ndim != 4:
        raise ValueError(f"Sensor {sensor!r}: expected images of shape (B, C, H, W) or (C, H, W), "
                         f"found shape {tuple(pixel_values.shape)}")
    channels = len(band_mean)
    if pixel_values.shape[1] != channels:
        raise ValueError(f"Sensor {sensor!r}: expected {channels} channels (C, H, W) = ({channels}, H, W), "
                         f"found shape {tuple(pixel_values.shape[1:])}")
    x = pixel_values.to(torch.float32)
    mean, std = _stats(band_mean, band_std, x.device, channels)
    x = (x - mean) / std
    if nan_policy == "raise" and check_finite:
        bad = ~torch.isfinite(x)
        if bad.any():
            bands = sorted(set(torch.nonzero(bad)[:, 1].tolist()))
            raise ValueError(f"Sensor {sensor!r}: non-finite values (NaN/inf) in band(s) {bands}; set "
                             "nan_policy='fill' to replace them with the band mean")
    x = torch.nan_to_num(x, nan=0.0, posinf=0.0, neginf=0.0)
    if x.shape[-2:] != (image_size, image_size):
        # antialiasing acts only where a side shrinks; for upsampling (BigEarthNet 120 -> 224) it computes the
        # plain bilinear result (to float rounding) through a slower kernel, so it is asked for only then
        shrinks = max(x.shape[-2:]) > image_size
        x = F.interpolate(x, size=(image_size, image_size), mode="bilinear", align_corners=False, antialias=shrinks)
    return x


def preprocess_batch(pixel_values: torch.Tensor, sensor: str, config: Any, check_finite: bool = True) -> torch.Tensor:
    """`normalize_and_resize` with the statistics and size of a CRJepaConfig (or anything with its fields)."""
    if sensor not in config.sensors:
        raise ValueError(f"Unknown sensor {sensor!r}; this model knows {list(config.sensors)}")
    return normalize_and_resize(pixel_values, sensor, config.band_mean[sensor], config.band_std[sensor],
                                config.image_size, config.nan_policy, check_finite)


class CRJepaImageProcessor(BaseImageProcessor):
    """Turns native-resolution images of one sensor into the model's normalised, resized pixel_values.

    Images are arrays, tensors or PIL images of the sensor's native dtype (uint16 reflectance, float32 dB,
    uint8), one or a list (a batch), channel-first (C, H, W) by default or channel-last (H, W, C) with
    ``input_data_format="channels_last"`` (PIL images are always channel-last; "none": inferred from the
    sensor's channel count). sensor=None: the only sensor with the images' channel count, else
    ``default_sensor`` (or the first sensor). The usual knobs: ``do_normalize`` (False: cast only),
    ``do_resize`` (False: keep the size), ``size`` ({"height": S, "width": S}, an int, or None: image_size).
    """

    model_input_names = ["pixel_values"]

    def __init__(
        self,
        sensors: dict[str, int] | None = None,
        band_mean: dict[str, list[float]] | None = None,
        band_std: dict[str, list[float]] | None = None,
        image_size: int = 224,
        nan_policy: str = "fill",
        default_sensor: str | None = None,
        do_resize: bool = True,
        do_normalize: bool = True,
        **kwargs,
    ) -> None:
        kwargs.pop("size", None)
        super().__init__(**kwargs)
        self.sensors = dict(sensors or {})
        self.band_mean = {k: [float(v) for v in vals] for k, vals in (band_mean or {}).items()}
        self.band_std = {k: [float(v) for v in vals] for k, vals in (band_std or {}).items()}
        self.image_size = int(image_size)
        self.nan_policy = nan_policy
        self.default_sensor = default_sensor
        self.do_resize = do_resize
        self.do_normalize = do_normalize

    @property
    def size(self) -> dict[str, int]:
        return {"height": self.image_size, "width": self.image_size}

    @classmethod
    def from_config(cls, config: Any) -> "CRJepaImageProcessor":
        """The processor that matches a CRJepaConfig."""
        return cls(sensors=config.sensors, band_mean=config.band_mean, band_std=config.band_std,
                   image_size=config.image_size, nan_policy=config.nan_policy,
                   default_sensor=getattr(config, "default_sensor", None))

    def _sensor_for(self, channels: set[int], sensor: str | None) -> str:
        if sensor is not None:
            if sensor not in self.sensors:
                raise ValueError(f"Unknown sensor {sensor!r}; this processor knows {list(self.sensors)}")
            return sensor
        matching = [s for s, c in self.sensors.items() if c in channels]
        if len(matching) == 1:
            return matching[0]
        if self.default_sensor is not None or self.sensors:
            return self.default_sensor or next(iter(self.sensors))
        raise ValueError(f"Name the sensor of the images: sensor= one of {list(self.sensors)}")

    @staticmethod
    def _as_array(image: Any) -> np.ndarray:
        if torch.is_tensor(image):
            return image.detach().cpu().numpy()
        array = np.asarray(image)
        if array.dtype == object:
            raise ValueError(f"Cannot read an image of type {type(image).__name__}")
        return array

    def preprocess(self, images, sensor: str | None = None, return_tensors: str | None = "pt",
                   input_data_format: str | None = None, do_resize: bool | None = None,
                   do_normalize: bool | None = None, size: Any = None, **kwargs) -> BatchFeature:
        single = not isinstance(images, (list, tuple))
        is_pil = [type(im).__module__.startswith("PIL") for im in ([images] if single else images)]
        arrays = [self._as_array(im) for im in ([images] if single else images)]
        if single and arrays[0].ndim == 4:  # an already batched array
            arrays = list(arrays[0])
            is_pil = is_pil * len(arrays)
        layout = str(getattr(input_data_format, "value", input_data_format) or "channels_first").lower()
        if layout not in ("channels_first", "channels_last", "none"):
            raise ValueError(f"input_data_format must be 'channels_first' or 'channels_last', found {input_data_format!r}")
        is_pil = [pil and a.ndim == 3 for a, pil in zip(arrays, is_pil)]  # a one-band PIL image is (H, W)
        arrays = [a[None] if a.ndim == 2 else a for a in arrays]  # a one-band image (H, W) -> (1, H, W)
        if any(a.ndim != 3 for a in arrays):
            raise ValueError(f"expected images of shape (C, H, W) or (H, W, C), found shapes "
                             f"{sorted({a.shape for a in arrays})}")
        last = [pil or layout == "channels_last" or (layout == "none" and a.shape[-1] < a.shape[0])
                for a, pil in zip(arrays, is_pil)]
        arrays = [np.moveaxis(a, -1, 0) if is_last else a for a, is_last in zip(arrays, last)]
        sensor = self._sensor_for({a.shape[0] for a in arrays}, sensor)
        shapes = {a.shape for a in arrays}
        if len(shapes) != 1:
            raise ValueError(f"Sensor {sensor!r}: all images of a batch need one shape, found {sorted(shapes)}")
        batch = torch.as_tensor(np.stack(arrays))
        if batch.dtype == torch.uint16:
            batch = batch.to(torch.int32)
        do_resize = self.do_resize if do_resize is None else do_resize
        do_normalize = self.do_normalize if do_normalize is None else do_normalize
        if isinstance(size, dict):
            target = int(size.get("height", size.get("shortest_edge", self.image_size)))
        else:
            target = int(size) if size is not None else self.image_size
        if not do_resize:
            target = batch.shape[-1]
        channels = self.sensors[sensor]
        mean = self.band_mean[sensor] if do_normalize else [0.0] * channels
        std = self.band_std[sensor] if do_normalize else [1.0] * channels
        pixel_values = normalize_and_resize(batch, sensor, mean, std, target, self.nan_policy)
        if return_tensors in ("np", "numpy"):
            return BatchFeature({"pixel_values": pixel_values.numpy()})
        return BatchFeature({"pixel_values": pixel_values}, tensor_type=None)


__all__ = ["CRJepaImageProcessor", "normalize_and_resize", "preprocess_batch"]
