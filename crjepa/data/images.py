"""The image readers of crjepa, defined once: GeoTIFF (rasterio), PNG/JPEG (Pillow) and .npy (numpy, no pickles).

`read_image` gives a (C, H, W) array of the file's native dtype; `probe_image` its shape and dtype from the header
only. The builders of datasets_scripts read every file through them, and so does ``crjepa search --image``, which
also takes a patch folder of per-band files (`read_band_folder`: a BigEarthNet patch as downloaded). Band files
(BigEarthNet's ``<patch>_<BAND>.tif``) are read by `read_band_file` and brought onto the finest band's grid by
`repeat_to` / `stack_bands`, the same code for the BigEarthNet converter, the app's patch uploads and
``crjepa search --image``.
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
                raise DataError(
                    f"{path}: .npy holds Python objects (pickles), which are never loaded; save a numeric array"
                )
            shape = (1, *found) if len(found) == 2 else tuple(found)
            if len(shape) != 3:
                raise DataError(f"{path}: .npy images must be (C, H, W) or (H, W), found shape {tuple(found)}")
            return SensorSpec(shape, dtype.name)
    except DataError:
        raise
    except Exception as exc:  # rasterio/PIL/numpy raise many types for a corrupt file
        raise DataError(_unreadable(path, exc)) from None
    raise DataError(f"Unsupported image format {suffix!r} for {path}; use one of {', '.join(IMAGE_SUFFIXES)}")


def band_files(folder: str | os.PathLike, bands: list[str] | tuple[str, ...]) -> dict[str, Path]:
    """{band: file} of a patch folder holding one single-band image per band, named ``<anything>_<BAND>.tif``
    (BigEarthNet: ``<patch>_B8A.tif``, ``<patch>_VV.tif``); bands without exactly one such file are absent."""
    found: dict[str, list[Path]] = {band: [] for band in bands}
    for file in Path(folder).iterdir():
        if file.suffix.lower() in TIFF_SUFFIXES + NPY_SUFFIXES + PNG_SUFFIXES:
            band = file.stem.rsplit("_", 1)[-1]
            if band in found:
                found[band].append(file)
    return {band: files[0] for band, files in found.items() if len(files) == 1}


def band_folder_sensor(folder: str | os.PathLike, bands_by_sensor: dict[str, list[str]]) -> str:
    """The sensor whose bands a patch folder holds (each band once), e.g. 's1' for ``<patch>_VV.tif`` +
    ``<patch>_VH.tif``; a DataError naming the folder when none or several fit."""
    fits = [s for s, bands in bands_by_sensor.items() if bands and len(band_files(folder, bands)) == len(bands)]
    if len(fits) != 1:
        wanted = "; ".join(f"{s}: {', '.join(b)}" for s, b in bands_by_sensor.items())
        why = f"several fit: {fits}" if fits else "no sensor has all its bands here"
        raise DataError(
            f"{folder}: cannot tell the sensor of this patch folder ({why}); expected one file "
            f"<patch>_<BAND>.tif per band of a sensor ({wanted}), or pass --sensor"
        )
    return fits[0]


def read_band_folder(folder: str | os.PathLike, bands: list[str] | tuple[str, ...]) -> np.ndarray:
    """A patch folder of single-band files (`band_files`) as a (C, H, W) array in ``bands`` order. Bands of a
    coarser grid (BigEarthNet's 20 m / 60 m bands: 60x60, 20x20) are brought to the finest band's grid by
    nearest neighbour, each pixel repeated (`stack_bands`: what `python -m datasets_scripts bigearthnet` stores,
    bit for bit)."""
    folder = Path(folder)
    files = band_files(folder, bands)
    absent = [band for band in bands if band not in files]
    if absent:
        raise DataError(f"{folder}: no single file <patch>_<BAND>.tif for band(s) {absent} of {list(bands)}")
    arrays = {}
    for band in bands:
        array = read_image(files[band])
        if array.shape[0] != 1 or array.shape[1] != array.shape[2]:
            raise DataError(
                f"{files[band]}: expected one square band, found shape (bands, height, width) = {array.shape}"
            )
        arrays[band] = array[0]
    dtypes = {a.dtype for a in arrays.values()}
    if len(dtypes) != 1:
        raise DataError(f"{folder}: the bands have different dtypes {sorted(d.name for d in dtypes)}")
    return stack_bands(arrays, list(bands), str(folder))


def band_name(file_name: str) -> str | None:
    """The band a band file names after its last ``_`` (BigEarthNet: ``S2A_..._57_84/S2A_..._57_84_B8A.tif`` ->
    ``B8A``, as written); None for files that are not band GeoTIFFs (another suffix, no ``_``, hidden files)."""
    base = file_name.rsplit("/", 1)[-1]
    stem, dot, suffix = base.rpartition(".")
    if not dot or f".{suffix.lower()}" not in TIFF_SUFFIXES or "_" not in stem or base.startswith("."):
        return None
    return stem.rsplit("_", 1)[1]


def read_band_file(path: str | os.PathLike) -> tuple[np.ndarray, str]:
    """One band file of a patch folder (BigEarthNet: ``<patch>_<BAND>.tif``, one band at its native grid) as its
    (C, H, W) array of the file's dtype, and the band name its GeoTIFF band description states ("" when it states
    none, holds several bands or rasterio is not installed: Pillow then reads plain TIFFs). The one reader of band
    files: the BigEarthNet converter and the app's patch uploads both read through it. A DataError naming the file
    when it is missing or not readable (a truncated or corrupt GeoTIFF)."""
    path, suffix = _existing(path)
    try:
        import rasterio
    except ImportError:  # rasterio is an extra (crjepa[bigearthnet])
        return read_image(path), ""
    if suffix not in TIFF_SUFFIXES:
        return read_image(path), ""
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")  # a band file need not be georeferenced
            with rasterio.open(path) as src:
                described = (src.descriptions[0] or "").strip() if src.count == 1 else ""
                return src.read(), described
    except Exception as err:  # rasterio raises many types for a truncated or corrupt file: one line for a person
        raise DataError(f"cannot read {path} (truncated or corrupt GeoTIFF): {err}") from err


def repeat_to(band: np.ndarray, side: int) -> np.ndarray:
    """A square (n, n) band on the (side, side) grid by nearest neighbour: each pixel repeated (side / n)^2 times,
    which keeps every value a real measurement and is lossless (``out[::f, ::f]`` gives the band back); ``side``
    is a multiple of n (the callers check, naming the file)."""
    factor = side // band.shape[0]
    return band if factor == 1 else np.repeat(np.repeat(band, factor, axis=0), factor, axis=1)


def stack_bands(bands: dict[str, np.ndarray], names: list[str], where: str) -> np.ndarray:
    """Bands in the order ``names`` as (C, H, W) at the finest band's size (coarser ones repeated pixel-wise,
    `repeat_to`), in the dtype that holds them all; a DataError naming ``where`` for a band that is absent or not
    a square whose side divides the finest band's."""
    missing = [b for b in names if b not in bands]
    if missing:
        raise DataError(f"{where}: lacks the band(s) {missing} (it holds {sorted(bands)})")
    side = max(max(bands[b].shape) for b in names)
    out = []
    for band in names:
        h, w = bands[band].shape
        if h != w or side % h:
            raise DataError(
                f"{where}: band {band} is {h}x{w}, not a square whose side divides {side} (the finest band's side)"
            )
        out.append(repeat_to(bands[band], side))
    return np.stack(out).astype(np.result_type(*{a.dtype for a in out}), copy=False)


def read_image(path: str | os.PathLike, bands: list[str] | tuple[str, ...] | None = None) -> np.ndarray:
    """Read an image file as a (C, H, W) array of its native dtype: GeoTIFF (rasterio), PNG/JPEG (pillow,
    HWC converted to CHW; RGBA PNG gives 4 channels) or .npy (numpy, no pickles). A folder of per-band files is
    read with `read_band_folder` when ``bands`` (the sensor's band order) is given."""
    if Path(path).is_dir():
        if bands is None:
            raise DataError(
                f"{path} is a folder: a patch folder of per-band files is read in a sensor's band order "
                "(give the sensor), or pass one image file"
            )
        return read_band_folder(path, bands)
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
        raise DataError(
            f"{path}: its header declares a {shape} {dtype} array ({declared:,} bytes) but the file holds "
            f"{left:,} bytes of data; the file is truncated or not a .npy image"
        )


def _unreadable(path: Path, exc: BaseException) -> str:
    first = str(exc).strip().splitlines()[0] if str(exc).strip() else "corrupt"
    return (
        f"Cannot read image file {path}: it is not a readable image ({type(exc).__name__}: {first}); "
        "pass a valid .png/.jpg, .tif or .npy file"
    )


def _read_with_pillow(path: Path) -> np.ndarray:
    """Pillow's (H, W[, C]) -> (C, H, W)."""
    from PIL import Image

    with Image.open(path) as img:
        arr = np.asarray(img)
    return arr[None] if arr.ndim == 2 else np.ascontiguousarray(arr.transpose(2, 0, 1))


__all__ = [
    "IMAGE_SUFFIXES",
    "NPY_SUFFIXES",
    "PNG_SUFFIXES",
    "TIFF_SUFFIXES",
    "band_files",
    "band_folder_sensor",
    "band_name",
    "probe_image",
    "read_band_file",
    "read_band_folder",
    "read_image",
    "repeat_to",
    "stack_bands",
]
