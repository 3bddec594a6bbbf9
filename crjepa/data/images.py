"""The image readers of crjepa, defined once: GeoTIFF (rasterio), PNG/JPEG (Pillow) and .npy (numpy, no pickles).

`read_image` gives a (C, H, W) array of the file's native dtype; `probe_image` its shape and dtype from the header
only. The builders of datasets_scripts read every file through them, and so does ``crjepa search --image``.
Imports no torch; rasterio and Pillow are imported on use.
"""

from __future__ import annotations

import os
import warnings
from pathlib import Path

import numpy as np

from crjepa.data.schema import DataError, SensorSpec

PNG_SUFFIXES = (".png", ".jpg", ".jpeg", ".bmp")
TIFF_SUFFIXES = (".tif", ".tiff")
NPY_SUFFIXES = (".npy",)
IMAGE_SUFFIXES = PNG_SUFFIXES + TIFF_SUFFIXES + NPY_SUFFIXES


def _existing(path: str | os.PathLike) -> tuple[Path, str]:
    """The path and its lower-case suffix, or a DataError naming a missing file."""
    path = Path(path)
    if not path.is_file():
        raise DataError(f"Missing image file: {path}")
    return path, path.suffix.lower()


def _pil_dtype(mode: str) -> str:
    if mode.startswith("I;16"):
        return "uint16"
    return {"I": "int32", "F": "float32", "1": "bool"}.get(mode, "uint8")


def probe_image(path: str | os.PathLike) -> SensorSpec:
    """Shape (C, H, W) and dtype of an image file, from its header only (cheap; used to validate a whole set
    before anything is written)."""
    path, suffix = _existing(path)
    try:
        if suffix in TIFF_SUFFIXES:
            import rasterio

            with warnings.catch_warnings():
                warnings.simplefilter("ignore")
                with rasterio.open(path) as src:
                    return SensorSpec((src.count, src.height, src.width), np.dtype(src.dtypes[0]).name)
        if suffix in PNG_SUFFIXES:
            from PIL import Image

            with Image.open(path) as img:
                return SensorSpec((len(img.getbands()), img.height, img.width), _pil_dtype(img.mode))
        if suffix in NPY_SUFFIXES:
            with open(path, "rb") as f:  # header only
                major, _ = np.lib.format.read_magic(f)
                fmt = np.lib.format
                read_header = fmt.read_array_header_1_0 if major == 1 else fmt.read_array_header_2_0
                found, _, dtype = read_header(f)
            if dtype.hasobject:
                raise DataError(f"{path}: .npy holds Python objects (pickles), which are never loaded; "
                                "save a numeric array")
            shape = (1, *found) if len(found) == 2 else tuple(found)
            if len(shape) != 3:
                raise DataError(f"{path}: .npy images must be (C, H, W) or (H, W), found shape {tuple(found)}")
            return SensorSpec(shape, dtype.name)
    except DataError:
        raise
    except Exception as exc:  # rasterio/PIL/numpy raise many types for a corrupt file
        raise DataError(_unreadable(path, exc)) from None
    raise DataError(f"Unsupported image format {suffix!r} for {path}; use one of {', '.join(IMAGE_SUFFIXES)}")


def read_image(path: str | os.PathLike) -> np.ndarray:
    """Read an image file as a (C, H, W) array of its native dtype: GeoTIFF (rasterio), PNG/JPEG (pillow,
    HWC converted to CHW; RGBA PNG gives 4 channels) or .npy (numpy, no pickles)."""
    path, suffix = _existing(path)
    try:
        if suffix in TIFF_SUFFIXES:
            try:
                import rasterio
            except ImportError:  # rasterio is an extra (crjepa[bigearthnet]); Pillow reads plain TIFFs
                return _read_with_pillow(path)
            with warnings.catch_warnings():
                warnings.simplefilter("ignore")
                with rasterio.open(path) as src:
                    return src.read()
        if suffix in PNG_SUFFIXES:
            return _read_with_pillow(path)
        if suffix in NPY_SUFFIXES:
            _check_npy_size(path)
            arr = np.load(path, allow_pickle=False)
            arr = arr[None] if arr.ndim == 2 else arr
            if arr.ndim != 3:
                raise DataError(f"{path}: .npy images must be (C, H, W) or (H, W), found shape {arr.shape}")
            return arr
    except DataError:
        raise
    except Exception as exc:  # rasterio/PIL/numpy raise many types for a corrupt file: one line for a person
        raise DataError(_unreadable(path, exc)) from None
    raise DataError(f"Unsupported image format {suffix!r} for {path}; use one of {', '.join(IMAGE_SUFFIXES)}")


def _check_npy_size(path: Path) -> None:
    """numpy allocates the array a .npy header declares before reading it: the declared bytes must be in the file."""
    with open(path, "rb") as f:
        major, _ = np.lib.format.read_magic(f)
        fmt = np.lib.format
        shape, _, dtype = (fmt.read_array_header_1_0 if major == 1 else fmt.read_array_header_2_0)(f)
        left = path.stat().st_size - f.tell()
    if dtype.hasobject:
        raise DataError(f"{path}: .npy holds Python objects (pickles), which are never loaded; save a numeric array")
    declared = int(np.prod(shape, dtype=object)) * dtype.itemsize
    if declared > left:
        raise DataError(f"{path}: its header declares a {shape} {dtype} array ({declared:,} bytes) but the file holds "
                        f"{left:,} bytes of data; the file is truncated or not a .npy image")


def _unreadable(path: Path, exc: BaseException) -> str:
    first = str(exc).strip().splitlines()[0] if str(exc).strip() else "corrupt"
    return (f"Cannot read image file {path}: it is not a readable image ({type(exc).__name__}: {first}); "
            "pass a valid .png/.jpg, .tif or .npy file")


def _read_with_pillow(path: Path) -> np.ndarray:
    """Pillow's (H, W[, C]) -> (C, H, W)."""
    from PIL import Image

    with Image.open(path) as img:
        arr = np.asarray(img)
    return arr[None] if arr.ndim == 2 else np.ascontiguousarray(arr.transpose(2, 0, 1))


__all__ = ["IMAGE_SUFFIXES", "NPY_SUFFIXES", "PNG_SUFFIXES", "TIFF_SUFFIXES", "probe_image", "read_image"]
