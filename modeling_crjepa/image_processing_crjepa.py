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

    Images are channel-first (C, H, W) arrays or tensors of the sensor's native dtype (uint16 reflectance,
    float32 dB, uint8), one or a list (a batch).
    """

    model_input_names = ["pixel_values"]

    def __init__(
        self,
        sensors: dict[str, int] | None = None,
        band_mean: dict[str, list[float]] | None = None,
        band_std: dict[str, list[float]] | None = None,
        image_size: int = 224,
        nan_policy: str = "fill",
        **kwargs,
    ) -> None:
        super().__init__(**kwargs)
        self.sensors = dict(sensors or {})
        self.band_mean = {k: [float(v) for v in vals] for k, vals in (band_mean or {}).items()}
        self.band_std = {k: [float(v) for v in vals] for k, vals in (band_std or {}).items()}
        self.image_size = int(image_size)
        self.nan_policy = nan_policy

    @classmethod
    def from_config(cls, config: Any) -> "CRJepaImageProcessor":
        """The processor that matches a CRJepaConfig."""
        return cls(sensors=config.sensors, band_mean=config.band_mean, band_std=config.band_std,
                   image_size=config.image_size, nan_policy=config.nan_policy)

    def preprocess(self, images, sensor: str | None = None, return_tensors: str | None = "pt", **kwargs) -> BatchFeature:
        if sensor is None:
            raise ValueError(f"Name the sensor of the images: sensor= one of {list(self.sensors)}")
        if sensor not in self.sensors:
            raise ValueError(f"Unknown sensor {sensor!r}; this processor knows {list(self.sensors)}")
        if isinstance(images, (list, tuple)):
            shapes = {tuple(np.shape(im)) for im in images}
            if len(shapes) != 1:
                raise ValueError(f"Sensor {sensor!r}: all images of a batch need one shape, found {sorted(shapes)}")
            batch = torch.stack([torch.as_tensor(np.asarray(im)) for im in images])
        else:
            batch = torch.as_tensor(np.asarray(images))
        if batch.dtype == torch.uint16:
            batch = batch.to(torch.int32)
        pixel_values = normalize_and_resize(batch, sensor, self.band_mean[sensor], self.band_std[sensor],
                                            self.image_size, self.nan_policy)
        if return_tensors in ("np", "numpy"):
            return BatchFeature({"pixel_values": pixel_values.numpy()})
        return BatchFeature({"pixel_values": pixel_values}, tensor_type=None)


__all__ = ["CRJepaImageProcessor", "normalize_and_resize", "preprocess_batch"]
