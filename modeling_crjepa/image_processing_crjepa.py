"""Preprocessing for CR-JEPA: per-band normalisation, SAR non-finite handling, resize to the model's size.

`preprocess_batch` is the one implementation: a batched torch function that runs on any device (the training
loop calls it on the GPU after the loader). `CRJepaImageProcessor` (a transformers image processor, loadable
with AutoImageProcessor and trust_remote_code) calls the same function on the CPU, so both give the same
numbers. This module travels as remote code: it imports only numpy, torch and transformers.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np
import torch
import torch.nn.functional as F
from transformers.image_processing_utils import BaseImageProcessor, BatchFeature

from .devices import host_to_device


def _stats(mean: list[float], std: list[float], device, channels: int) -> tuple[torch.Tensor, torch.Tensor]:
    """The band statistics as (1, C, 1, 1) tensors on `device`, copied without a host sync (pinned)."""
    stats = host_to_device(torch.tensor([mean, std], dtype=torch.float32), device)
    return stats[0].view(1, channels, 1, 1), stats[1].view(1, channels, 1, 1)


def normalize_and_resize(
    pixel_values: torch.Tensor,
    sensor: str,
    band_mean: list[float],
    band_std: list[float],
    image_size: int | tuple[int, int],
    nan_policy: str = "fill",
    check_finite: bool = True,
) -> torch.Tensor:
    """(B, C, H, W) of any dtype at native size -> float32 (B, C, image_size, image_size); image_size may be a
    (height, width) pair.

    Steps: cast to float32; normalise each band, (x - mean) / std; non-finite values (NaN/inf, common in SAR
    dB where the backscatter is zero) become 0 = the band mean ("fill") or raise ("raise"); bilinear resize
    with antialiasing. Normalising before resizing is equivalent (the resize is linear per band) and keeps
    NaN from spreading into neighbours.
    """
    if pixel_values.ndim == 3:
        pixel_values = pixel_values.unsqueeze(0)
    if pixel_values.ndim != 4:
        raise ValueError(
            f"Sensor {sensor!r}: expected images of shape (B, C, H, W) or (C, H, W), "
            f"found shape {tuple(pixel_values.shape)}"
        )
    channels = len(band_mean)
    if pixel_values.shape[1] != channels:
        raise ValueError(
            f"Sensor {sensor!r}: expected {channels} channels (C, H, W) = ({channels}, H, W), "
            f"found shape {tuple(pixel_values.shape[1:])}"
        )
    x = pixel_values.to(torch.float32)
    mean, std = _stats(band_mean, band_std, x.device, channels)
    x = (x - mean) / std
    if nan_policy == "raise" and check_finite:
        bad = ~torch.isfinite(x)
        if bad.any():
            bands = sorted(set(torch.nonzero(bad)[:, 1].tolist()))
            raise ValueError(
                f"Sensor {sensor!r}: non-finite values (NaN/inf) in band(s) {bands}; set "
                "nan_policy='fill' to replace them with the band mean"
            )
    x = torch.nan_to_num(x, nan=0.0, posinf=0.0, neginf=0.0)
    height, width = (image_size, image_size) if isinstance(image_size, int) else image_size
    if tuple(x.shape[-2:]) != (height, width):
        # antialiasing acts only where a side shrinks; for upsampling (BigEarthNet 120 -> 224) it computes the
        # plain bilinear result (to float rounding) through a slower kernel, so it is asked for only then
        shrinks = x.shape[-2] > height or x.shape[-1] > width
        x = F.interpolate(x, size=(height, width), mode="bilinear", align_corners=False, antialias=shrinks)
    return x


def preprocess_batch(pixel_values: torch.Tensor, sensor: str, config: Any, check_finite: bool = True) -> torch.Tensor:
    """`normalize_and_resize` with the statistics and size of a CRJepaConfig (or anything with its fields)."""
    if sensor not in config.sensors:
        raise ValueError(f"Unknown sensor {sensor!r}; this model knows {list(config.sensors)}")
    return normalize_and_resize(
        pixel_values,
        sensor,
        config.band_mean[sensor],
        config.band_std[sensor],
        config.image_size,
        config.nan_policy,
        check_finite,
    )


TENSOR_TYPES = {"pt": "pt", "torch": "pt", "np": "np", "numpy": "np"}
"""return_tensors values: "pt" (torch), "np" (numpy); None gives a list of numpy arrays, one per image."""
READABLE_SUFFIXES = (".npy", ".png", ".jpg", ".jpeg", ".bmp", ".gif", ".webp")
"""Files the processor reads itself: channel-first .npy arrays (no pickles) and what Pillow reads (channel-last)."""


def _tensor_type(return_tensors: Any) -> str | None:
    """ "pt" / "np" / None from a string or a transformers TensorType; other values are refused."""
    if return_tensors is None:
        return None
    key = str(getattr(return_tensors, "value", return_tensors)).lower()
    if key not in TENSOR_TYPES:
        raise ValueError(
            f"return_tensors must be 'pt', 'np' or None (a list of numpy arrays), found {return_tensors!r}"
        )
    return TENSOR_TYPES[key]


def _size_of(size: Any, default: tuple[int, int]) -> tuple[int, int]:
    """(height, width) from None (the default), an int (a square), a (height, width) pair or {"height", "width"}.
    {"shortest_edge": ...} (a size that depends on each image's aspect) is refused: the model takes a fixed size."""
    if size is None:
        return default
    if isinstance(size, bool):
        raise ValueError(f"size must be an int, (height, width) or {{'height': H, 'width': W}}, found {size!r}")
    if isinstance(size, int):
        return (size, size)
    if isinstance(size, (tuple, list)) and len(size) == 2:
        return (int(size[0]), int(size[1]))
    if isinstance(size, dict) and set(size) == {"height", "width"}:
        return (int(size["height"]), int(size["width"]))
    raise ValueError(
        f"size must be an int, (height, width) or {{'height': H, 'width': W}}, found {size!r} (this model "
        "takes images of one fixed size, so sizes that follow each image's aspect are not supported)"
    )


def read_image_file(path: str | Path) -> tuple[np.ndarray, bool]:
    """(array, channel_last) from a file the processor can read itself: a .npy array (channel-first, no pickles)
    or an image Pillow reads (PNG, JPEG, ...: channel-last). Anything else (a GeoTIFF, a URL) is refused, naming the
    file and how to read it; crjepa.data.images reads GeoTIFFs with rasterio in the crjepa package."""
    text = str(path)
    if text.startswith(("http://", "https://")):
        raise ValueError(
            f"CRJepaImageProcessor reads local files only, found the URL {text!r}: download it and pass "
            "the array (or the local path)"
        )
    path = Path(text).expanduser()
    suffix = path.suffix.lower()
    if suffix not in READABLE_SUFFIXES:
        raise ValueError(
            f"{path}: CRJepaImageProcessor reads {', '.join(READABLE_SUFFIXES)} files; pass other images "
            "as arrays at native size and dtype (a GeoTIFF: `rasterio.open(path).read()`, (C, H, W))"
        )
    if not path.is_file():
        raise FileNotFoundError(f"Image file not found: {path}")
    if suffix == ".npy":
        return np.load(path, allow_pickle=False), False
    from PIL import Image

    with Image.open(path) as image:
        return np.asarray(image), True


class CRJepaImageProcessor(BaseImageProcessor):
    """Turns native-band images of one sensor into the model's normalised, resized pixel_values.

    Images: numpy arrays, torch tensors, PIL images, or paths of .npy / PNG / JPEG files, at the sensor's native
    size and dtype (uint16 reflectance, float32 dB, uint8); one image, a list of them, or a batched (B, ...) array.
    Layout: channel-first (C, H, W) or channel-last (H, W, C), inferred from the sensor's channel count (channel-first
    when both fit; PIL images are channel-last); ``input_data_format`` forces one. sensor=None: the only sensor whose
    channel count fits, else ``default_sensor``.

    Knobs, as transformers' processors have them: ``do_normalize`` (False: cast only), ``do_resize`` (False: keep
    the size), ``size`` (int, (height, width) or {"height": H, "width": W}; non-square sizes are honoured; default:
    the model's image_size), ``return_tensors`` ("pt", the default: the model's input; "np"; None: a list of numpy
    arrays as ViT's processor gives). ``do_rescale`` is always off: the band statistics are in native units, so values
    are never rescaled (``do_rescale=True`` is refused). Unknown keyword arguments are a TypeError.
    """

    model_input_names = ["pixel_values"]
    do_rescale = False  # the statistics are in native units (reflectance, dB, 0-255): nothing to rescale
    # None: nothing is rescaled; BaseImageProcessor types the attribute as float though it is unset for us
    rescale_factor = None  # type: ignore[assignment]
    CALL_KWARGS = (
        "sensor",
        "return_tensors",
        "input_data_format",
        "data_format",
        "do_resize",
        "do_normalize",
        "size",
        "do_rescale",
        "rescale_factor",
    )

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
        size: Any = None,
        do_rescale: bool | None = None,
        rescale_factor: float | None = None,
        **kwargs,
    ) -> None:
        _refuse_rescale(do_rescale, rescale_factor)
        super().__init__(**kwargs)
        self.sensors = dict(sensors or {})
        self.band_mean = {k: [float(v) for v in vals] for k, vals in (band_mean or {}).items()}
        self.band_std = {k: [float(v) for v in vals] for k, vals in (band_std or {}).items()}
        self.image_size = int(image_size)
        height, width = _size_of(size, (self.image_size, self.image_size))
        self.size = {"height": height, "width": width}
        self.nan_policy = nan_policy
        self.default_sensor = default_sensor
        self.do_resize = do_resize
        self.do_normalize = do_normalize

    @classmethod
    def from_config(cls, config: Any) -> CRJepaImageProcessor:
        """The processor that matches a CRJepaConfig."""
        return cls(
            sensors=config.sensors,
            band_mean=config.band_mean,
            band_std=config.band_std,
            image_size=config.image_size,
            nan_policy=config.nan_policy,
            default_sensor=getattr(config, "default_sensor", None),
        )

    # ------------------------------------------------------------------ reading the inputs
    @staticmethod
    def _as_array(image: Any) -> tuple[np.ndarray, bool]:
        """(array, channel_last known) of one image: PIL images and readable files say their layout."""
        if isinstance(image, (str, Path)):
            return read_image_file(image)
        if torch.is_tensor(image):
            return image.detach().cpu().numpy(), False
        is_pil = type(image).__module__.startswith("PIL")
        array = np.asarray(image)
        if array.dtype == object or array.dtype.kind not in "biuf":
            raise ValueError(
                f"Cannot read an image of type {type(image).__name__} (dtype {array.dtype}); pass numpy "
                "arrays, torch tensors, PIL images or paths of .npy / PNG / JPEG files"
            )
        return array, is_pil

    def _arrays(self, images: Any) -> tuple[list[np.ndarray], list[bool]]:
        """The images as a list of 2-D / 3-D arrays and, per image, whether it is known to be channel-last."""
        if images is None or (isinstance(images, (list, tuple)) and not images):
            raise ValueError("No images given: pass one image, a list of images or a batched (B, ...) array")
        items = list(images) if isinstance(images, (list, tuple)) else [images]
        read = [self._as_array(im) for im in items]
        arrays, last = [a for a, _ in read], [known for _, known in read]
        if not isinstance(images, (list, tuple)) and arrays[0].ndim == 4:  # a batched array
            arrays, last = list(arrays[0]), [last[0]] * len(arrays[0])
        bad = sorted({a.shape for a in arrays if a.ndim not in (2, 3)})
        if bad:
            raise ValueError(
                f"expected images of shape (C, H, W), (H, W, C) or (H, W), or a batch (B, C, H, W); found shapes {bad}"
            )
        last = [known and a.ndim == 3 for a, known in zip(arrays, last)]  # a one-band PIL image is (H, W)
        return [a[None] if a.ndim == 2 else a for a in arrays], last

    def _sensor_and_layout(
        self, arrays: list[np.ndarray], known_last: list[bool], sensor: str | None, layout: str
    ) -> tuple[str, list[bool]]:
        """The sensor of the batch and, per image, whether it is channel-last (else channel-first)."""

        def channel_last(array: np.ndarray, known: bool, channels: int) -> bool | None:
            """Whether the image is channel-last for a sensor of `channels` bands; None when it fits neither way."""
            first_fits = array.shape[0] == channels and not known and layout != "channels_last"
            last_fits = array.shape[-1] == channels and (known or layout != "channels_first")
            return None if not (first_fits or last_fits) else not first_fits  # channel-first when both fit

        def layouts(channels: int) -> list[bool] | None:
            found = [channel_last(a, known, channels) for a, known in zip(arrays, known_last)]
            fits = [last for last in found if last is not None]
            return fits if len(fits) == len(found) else None

        if sensor is not None:
            if sensor not in self.sensors:
                raise ValueError(f"Unknown sensor {sensor!r}; this processor knows {list(self.sensors)}")
            channels = self.sensors[sensor]
            for array, known in zip(arrays, known_last):
                if channel_last(array, known, channels) is None:
                    raise ValueError(
                        f"Sensor {sensor!r}: expected {channels} channels (C, H, W) = ({channels}, H, W) "
                        f"or (H, W, C) = (H, W, {channels}), found shape {array.shape}"
                    )
            named = layouts(channels)
            assert named is not None  # every image was just checked to fit the sensor
            return sensor, named
        fitting = {name: found for name, channels in self.sensors.items() if (found := layouts(channels)) is not None}
        if len(fitting) == 1:
            return next(iter(fitting.items()))
        if self.default_sensor in fitting:
            return self.default_sensor, fitting[self.default_sensor]
        shapes = sorted({a.shape for a in arrays})
        if not fitting:
            raise ValueError(
                f"No sensor of this model has the images' channels: sensors {self.sensors}, found shapes "
                f"{shapes}; pass the sensor's bands at native size, channel-first or channel-last"
            )
        raise ValueError(f"Images of shapes {shapes} fit sensors {sorted(fitting)}: name one with sensor=")

    def read(self, images: Any, sensor: str | None = None, input_data_format: Any = None) -> tuple[torch.Tensor, str]:
        """The images as one native-valued channel-first batch (B, C, H, W) and the sensor they belong to (the named
        one, checked, or the one their channel count fits); what `preprocess` then normalises and resizes."""
        layout = str(getattr(input_data_format, "value", input_data_format) or "none").lower()
        if layout not in ("channels_first", "channels_last", "none"):
            raise ValueError(
                f"input_data_format must be 'channels_first', 'channels_last' or None (inferred), "
                f"found {input_data_format!r}"
            )
        arrays, known_last = self._arrays(images)
        sensor, last = self._sensor_and_layout(arrays, known_last, sensor, layout)
        arrays = [np.moveaxis(a, -1, 0) if is_last else a for a, is_last in zip(arrays, last)]
        shapes = {a.shape for a in arrays}
        if len(shapes) != 1:
            raise ValueError(f"Sensor {sensor!r}: all images of a batch need one shape, found {sorted(shapes)}")
        batch = torch.as_tensor(np.stack(arrays))
        return (batch.to(torch.int32) if batch.dtype == torch.uint16 else batch), sensor

    # ------------------------------------------------------------------ the call
    def preprocess(
        self,
        images: Any,
        sensor: str | None = None,
        return_tensors: Any = "pt",
        input_data_format: Any = None,
        data_format: Any = None,
        do_resize: bool | None = None,
        do_normalize: bool | None = None,
        size: Any = None,
        do_rescale: bool | None = None,
        rescale_factor: float | None = None,
        **kwargs: Any,
    ) -> BatchFeature:
        """Images of one sensor -> {"pixel_values": float32 (B, C, height, width)}; see the class docstring."""
        if kwargs:
            raise TypeError(
                f"CRJepaImageProcessor got unexpected keyword argument(s) {sorted(kwargs)}; it takes "
                f"{', '.join(self.CALL_KWARGS)}"
            )
        _refuse_rescale(do_rescale, rescale_factor)
        tensor_type = _tensor_type(return_tensors)
        out_layout = str(getattr(data_format, "value", data_format) or "channels_first").lower()
        if out_layout != "channels_first":
            raise ValueError(f"data_format must be 'channels_first' (the model's layout), found {data_format!r}")
        batch, sensor = self.read(images, sensor, input_data_format)
        do_resize = self.do_resize if do_resize is None else do_resize
        do_normalize = self.do_normalize if do_normalize is None else do_normalize
        target = (
            _size_of(size, (self.size["height"], self.size["width"]))
            if do_resize
            else (batch.shape[-2], batch.shape[-1])
        )
        channels = self.sensors[sensor]
        mean = self.band_mean[sensor] if do_normalize else [0.0] * channels
        std = self.band_std[sensor] if do_normalize else [1.0] * channels
        pixel_values = normalize_and_resize(batch, sensor, mean, std, target, self.nan_policy)
        if tensor_type == "pt":
            return BatchFeature({"pixel_values": pixel_values}, tensor_type=None)
        values = pixel_values.numpy()
        return BatchFeature({"pixel_values": values if tensor_type == "np" else list(values)}, tensor_type=None)


def _refuse_rescale(do_rescale: bool | None, rescale_factor: float | None) -> None:
    if do_rescale or rescale_factor is not None:
        raise ValueError(
            "CRJepaImageProcessor never rescales: each band is normalised with statistics in its native "
            "units (uint16 reflectance, dB, 0-255), so pass native values and leave do_rescale / "
            f"rescale_factor unset (found do_rescale={do_rescale!r}, rescale_factor={rescale_factor!r})"
        )


__all__ = ["CRJepaImageProcessor", "normalize_and_resize", "preprocess_batch", "read_image_file"]
