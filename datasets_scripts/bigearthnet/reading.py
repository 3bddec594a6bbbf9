"""Reading BigEarthNet patches: band GeoTIFFs by name, the ConfigILM LMDB's safetensors entries, a planned pair
into a dataset row. Every check names the patch and the file; a bad pair raises `BigEarthNetError` with a short
`reason` that the conversion report counts."""

from __future__ import annotations

import importlib
import json
import os
import re
from pathlib import Path
from typing import TYPE_CHECKING, Any, NotRequired, TypedDict

import numpy as np

from crjepa.data.images import read_band_file, repeat_to
from crjepa.data.schema import S1_BANDS, S2_BANDS, DataError  # the band orders' one home
from crjepa.errors import CRJepaError
from datasets_scripts.ben_metadata import BEN19_CLASSES, s2_date, to_ben19

if TYPE_CHECKING:
    import lmdb

PATCH_SIZE = 120  # pixels of a 10 m band: 1.2 km x 1.2 km patches
# Native side length (pixels) of each band in a BigEarthNet patch: 10 m -> 120, 20 m -> 60, 60 m -> 20.
S2_NATIVE_SIZE: dict[str, int] = {
    "B01": 20, "B02": 120, "B03": 120, "B04": 120, "B05": 60, "B06": 60,
    "B07": 60, "B08": 120, "B8A": 60, "B09": 20, "B11": 60, "B12": 60,
}  # fmt: skip
ALL_BAND_NAMES = frozenset((*S2_BANDS, *S1_BANDS, "B10"))
S2_RESAMPLINGS: tuple[str, ...] = ("nearest", "bilinear", "bicubic")

_TILE_RE = re.compile(r"_T(\d{2}[A-Z]{3})(?:_|$)")


class MissingExtraError(CRJepaError, ImportError):
    """A reader of the ``bigearthnet`` extra (rasterio, lmdb) is not installed; the message names the install.
    Its ``name`` is the missing module, as an ImportError's."""


def require_extra(module: str = "rasterio") -> None:
    """rasterio (band GeoTIFFs) and lmdb (the ConfigILM LMDB) are in the bigearthnet extra: the builder and the
    command line call this before any work starts, so a missing one is one sentence naming the install."""
    try:
        importlib.import_module(module)
    except ImportError as err:
        raise MissingExtraError(
            f"{module} is not installed ({err}): this data needs the bigearthnet extra: "
            'pip install "crjepa[bigearthnet]"',
            name=module,
        ) from None


class BigEarthNetError(CRJepaError, ValueError):
    """A pair that cannot be converted. `reason` is a short category for the summary; the message says the rest."""

    def __init__(self, reason: str, message: str) -> None:
        super().__init__(message)
        self.reason = reason


class BigEarthNetNotFoundError(CRJepaError, FileNotFoundError):
    """A folder, metadata file or LMDB that is not where the arguments say, or a subset none of whose pairs is
    there; the message says what was found instead and which arguments fit."""


class PairTask(TypedDict):
    """One planned row: the patch names and folders of both sensors (a folder None when that sensor is absent:
    an S2-only archive or a half pair kept with `keep_unpaired`), its split, country, 19-class labels (reBEN's
    metadata; None for v1, whose labels come from the patch JSON), the layout and, for the ConfigILM
    distribution, the LMDB folder holding both sensors' patches."""

    s2_name: str
    s1_name: str | None
    s2_folder: str | None
    s1_folder: str | None
    split: str
    country: str | None
    labels: list[str] | None
    layout: str
    lmdb: NotRequired[str]


def read_json(path: Path, patch: str) -> dict[str, Any]:
    """A patch's metadata JSON, with errors that name the patch and the file."""
    if not path.is_file():
        raise BigEarthNetError("missing file", f"patch {patch}: metadata file missing: {path}")
    try:
        return json.loads(path.read_text(encoding="utf-8"))
    except (OSError, UnicodeDecodeError, json.JSONDecodeError) as err:
        raise BigEarthNetError("corrupt JSON", f"patch {patch}: cannot parse {path}: {err}") from err


def read_band(
    path: Path, patch: str, native_size: int, dtype: str, resampling: str = "nearest", band: str | None = None
) -> np.ndarray:
    """One single-band GeoTIFF as a (120, 120) array of `dtype`, checked and upsampled from `native_size`.

    `band` (e.g. "B8A"): the band the file name promises; a GeoTIFF whose own band description names another
    band is refused (bands are mapped by name, never by position). Read by `crjepa.data.images.read_band_file`,
    the reader the app's patch uploads use too.
    Raises BigEarthNetError (missing file, corrupt GeoTIFF, wrong shape/band count/dtype/band) naming patch and file.
    """
    if not path.is_file():
        raise BigEarthNetError("missing band file", f"patch {patch}: band file missing: {path}")
    try:
        image, described = read_band_file(path)
    except DataError as err:
        raise BigEarthNetError("corrupt GeoTIFF", f"patch {patch}: {err}") from err
    described = described.upper()
    if band and described in ALL_BAND_NAMES and described != band.upper():
        raise BigEarthNetError(
            "band mismatch",
            f"patch {patch}: {path.name} is named band {band} but its GeoTIFF band description says {described}",
        )
    if image.shape != (1, native_size, native_size):
        raise BigEarthNetError(
            "wrong band size",
            f"patch {patch}: {path.name} has shape (bands, height, width) = {image.shape}, "
            f"expected {(1, native_size, native_size)}",
        )
    ok = image.dtype.kind == "f" if dtype == "float32" else image.dtype.kind in "ui"
    if not ok:
        raise BigEarthNetError("wrong dtype", f"patch {patch}: {path.name} has dtype {image.dtype}, expected {dtype}")
    array = upsample_band(image[0], resampling)
    if dtype == "uint16" and (array.min(initial=0) < 0 or array.max(initial=0) > 65535):
        raise BigEarthNetError("wrong dtype", f"patch {patch}: {path.name} has values outside uint16")
    return array.astype(dtype, copy=False)


def check_band_files(folder: Path, name: str, bands: tuple[str, ...]) -> None:
    """Refuse a patch folder holding band files other than `bands` (e.g. a B10, or a band named `_b8a`): the
    bands are read by their names, so a folder whose names do not match the expected set is not guessed at."""
    if not folder.is_dir():
        return
    prefix = f"{name}_"
    found = {
        f.name[len(prefix) : -len(f.suffix)]
        for f in folder.iterdir()
        if f.name.startswith(prefix) and f.suffix.lower() in (".tif", ".tiff")
    }
    unexpected = sorted(found - set(bands))
    if unexpected:
        raise BigEarthNetError(
            "band mismatch",
            f"patch {name}: {folder} holds band files {unexpected} that are not among the expected "
            f"bands {list(bands)} (bands are matched by file name, never by position)",
        )


def read_s2(folder: Path, name: str, resampling: str = "nearest") -> np.ndarray:
    """S2 patch as (12, 120, 120) uint16 in S2_BANDS order, each band read from the file that names it."""
    check_band_files(folder, name, S2_BANDS)
    return np.stack(
        [read_band(folder / f"{name}_{b}.tif", name, S2_NATIVE_SIZE[b], "uint16", resampling, band=b) for b in S2_BANDS]
    )


def read_s1(folder: Path, name: str) -> np.ndarray:
    """S1 patch as (2, 120, 120) float32 dB in VV, VH order; NaN/inf is an error (it would poison training)."""
    check_band_files(folder, name, S1_BANDS)
    bands = []
    for band in S1_BANDS:
        path = folder / f"{name}_{band}.tif"
        array = read_band(path, name, PATCH_SIZE, "float32", band=band)
        bad = int(np.count_nonzero(~np.isfinite(array)))
        if bad:
            raise BigEarthNetError(
                "NaN/inf in SAR", f"patch {name}: {path.name} holds {bad} NaN/inf pixels of {array.size}"
            )
        bands.append(array)
    return np.stack(bands)


def _lmdb_env(path: str) -> lmdb.Environment:
    """The read-only LMDB environment at ``path``, to be closed by the caller (`with`). Opened per use: LMDB
    refuses an environment opened before a fork in the forked worker, and opening one only maps the file."""
    import lmdb

    try:
        return lmdb.open(path, readonly=True, lock=False, readahead=False, subdir=True)
    except lmdb.Error as err:
        raise DataError(f"BigEarthNet: {path} is not a readable LMDB folder ({err})") from None


def lmdb_keys(path: str | os.PathLike) -> set[str]:
    """Every key (patch name) of a BigEarthNet LMDB, without reading a value."""
    with _lmdb_env(str(path)) as env, env.begin() as txn:
        return {bytes(key).decode() for key in txn.cursor().iternext(keys=True, values=False)}


def _read_lmdb_bands(path: str, name: str, bands: tuple[str, ...]) -> dict[str, np.ndarray]:
    """{band: native array} of one patch of a BigEarthNet LMDB (a safetensors file per key; never a pickle)."""
    from safetensors import SafetensorError
    from safetensors.numpy import load as load_safetensors

    with _lmdb_env(path) as env, env.begin() as txn:
        value = txn.get(name.encode())
        if value is None:
            raise BigEarthNetError("missing band file", f"patch {name}: no entry in the LMDB {path}")
        try:
            arrays = load_safetensors(bytes(value))
        except (SafetensorError, ValueError) as err:
            raise BigEarthNetError(
                "corrupt safetensors",
                f"patch {name}: its LMDB entry in {path} is not a readable safetensors file ({err})",
            ) from None
    unexpected, absent = sorted(set(arrays) - set(bands)), [b for b in bands if b not in arrays]
    if unexpected:
        raise BigEarthNetError(
            "band mismatch",
            f"patch {name}: its LMDB entry in {path} holds bands {unexpected} that "
            f"are not among the expected bands {list(bands)}",
        )
    if absent:
        raise BigEarthNetError("missing band file", f"patch {name}: its LMDB entry in {path} lacks bands {absent}")
    return arrays


def _checked_band(array: np.ndarray, name: str, band: str, native_size: int, dtype: str, where: str) -> np.ndarray:
    """A band read from the LMDB, checked as `read_band` checks a GeoTIFF (shape, dtype kind, uint16 range)."""
    if array.shape != (native_size, native_size):
        raise BigEarthNetError(
            "wrong band size",
            f"patch {name}: band {band} in {where} has shape {array.shape}, expected {(native_size, native_size)}",
        )
    ok = array.dtype.kind == "f" if dtype == "float32" else array.dtype.kind in "ui"
    if not ok:
        raise BigEarthNetError(
            "wrong dtype", f"patch {name}: band {band} in {where} has dtype {array.dtype}, expected {dtype}"
        )
    if dtype == "uint16" and array.size and (array.min() < 0 or array.max() > 65535):
        raise BigEarthNetError("wrong dtype", f"patch {name}: band {band} in {where} has values outside uint16")
    return array


def upsample_band(array: np.ndarray, resampling: str = "nearest") -> np.ndarray:
    """A native (n, n) band on the 120x120 grid: nearest repeats each pixel (120 / n)^2 times
    (`crjepa.data.images.repeat_to`); bilinear / bicubic go through rasterio on an in-memory GeoTIFF (GDAL's
    resampling, on the pixel grid)."""
    if array.shape[0] == PATCH_SIZE or resampling == "nearest":
        return repeat_to(array, PATCH_SIZE)
    import warnings

    from rasterio.enums import Resampling
    from rasterio.io import MemoryFile

    with warnings.catch_warnings(), MemoryFile() as memory:
        warnings.simplefilter("ignore")  # not georeferenced: resampling works in pixel space
        with memory.open(
            driver="GTiff", height=array.shape[0], width=array.shape[1], count=1, dtype=array.dtype
        ) as dst:
            dst.write(array, 1)
        with memory.open() as src:
            kernel = Resampling.cubic if resampling == "bicubic" else Resampling[resampling]  # GDAL calls it cubic
            return src.read(1, out_shape=(PATCH_SIZE, PATCH_SIZE), resampling=kernel)


def read_s2_lmdb(path: str, name: str, resampling: str = "nearest") -> np.ndarray:
    """S2 patch from a BigEarthNet LMDB as (12, 120, 120) uint16 in S2_BANDS order (as `read_s2`)."""
    arrays = _read_lmdb_bands(path, name, S2_BANDS)
    return np.stack(
        [
            upsample_band(_checked_band(arrays[b], name, b, S2_NATIVE_SIZE[b], "uint16", path), resampling).astype(
                "uint16", copy=False
            )
            for b in S2_BANDS
        ]
    )


def read_s1_lmdb(path: str, name: str) -> np.ndarray:
    """S1 patch from a BigEarthNet LMDB as (2, 120, 120) float32 dB in VV, VH order (as `read_s1`)."""
    arrays = _read_lmdb_bands(path, name, S1_BANDS)
    bands = []
    for band in S1_BANDS:
        array = _checked_band(arrays[band], name, band, PATCH_SIZE, "float32", path).astype("float32", copy=False)
        bad = int(np.count_nonzero(~np.isfinite(array)))
        if bad:
            raise BigEarthNetError(
                "NaN/inf in SAR", f"patch {name}: band {band} in {path} holds {bad} NaN/inf pixels of {array.size}"
            )
        bands.append(array)
    return np.stack(bands)


def tile_of(*candidates: str | None) -> str | None:
    """Sentinel-2 MGRS tile (e.g. 33UUP) from the first name that carries `_T<tile>`."""
    for text in candidates:
        match = _TILE_RE.search(text or "")
        if match:
            return match.group(1)
    return None


def read_pair(task: PairTask, resampling: str = "nearest") -> dict[str, Any]:
    """Read one planned pair into a dataset row. Raises BigEarthNetError naming patch and file on bad input.

    A task whose `s1_folder` or `s2_folder` is None (kept with `keep_unpaired`) gives a row with that sensor None.
    """
    s2_name, s1_name = task["s2_name"], task["s1_name"]
    s2_folder = Path(task["s2_folder"]) if task["s2_folder"] else None
    s1_folder = Path(task["s1_folder"]) if task["s1_folder"] and s1_name else None
    s1_patch = s1_name or ""  # named whenever its folder is there
    tile = None
    labels_43: list[str] | None = None
    if task["layout"] == "v1":
        if s1_folder is not None:
            s1_meta = read_json(s1_folder / f"{s1_patch}_labels_metadata.json", s1_patch)
            partner = s1_meta.get("corresponding_s2_patch")
            if partner != s2_name:
                raise BigEarthNetError(
                    "pairing mismatch",
                    f"patch {s1_name}: its JSON names S2 partner {partner!r}, the metadata pairs it with {s2_name!r}",
                )
        if s2_folder is not None:
            label_patch, meta = s2_name, read_json(s2_folder / f"{s2_name}_labels_metadata.json", s2_name)
            tile = tile_of(meta.get("tile_source"))
        else:  # S1-only row: the S1 JSON carries the same CLC labels
            label_patch, meta = s1_patch, s1_meta
        labels_43 = meta.get("labels")
        if not isinstance(labels_43, list):
            raise BigEarthNetError("corrupt JSON", f"patch {label_patch}: no 'labels' list in its JSON")
        try:
            labels = to_ben19(labels_43, where=f"patch {label_patch}")
        except DataError as err:
            raise BigEarthNetError("unknown label", str(err)) from err
    else:
        labels = task["labels"] or []  # reBEN's metadata gives every pair its labels
    lmdb_path = task.get("lmdb")
    if lmdb_path:  # the ConfigILM distribution: both sensors' patches are entries of one LMDB
        s1 = read_s1_lmdb(lmdb_path, s1_patch) if s1_folder is not None else None
        s2 = read_s2_lmdb(lmdb_path, s2_name, resampling) if s2_folder is not None else None
    else:
        s1 = read_s1(s1_folder, s1_patch) if s1_folder is not None else None
        s2 = read_s2(s2_folder, s2_name, resampling) if s2_folder is not None else None
    row = {
        "id": s2_name,
        "s1": s1,
        "s2": s2,
        "labels": [BEN19_CLASSES.index(name) for name in labels],
        "split": task["split"],
        "s1_name": s1_name,
        "s2_name": s2_name,
        "country": task["country"],
        "s2_date": s2_date(s2_name).isoformat(),
        "tile": tile or tile_of(s2_name) or (s1_tile(s1_name) if s1_name else None),
        "labels_43": labels_43,
    }
    if s1_folder is None:
        del row["s1"]
    return row


def s1_tile(s1_name: str) -> str | None:
    """Tile field of a v1 S1 name (S1A_IW_GRDH_1SDV_<time>_<tile>_<x>_<y>)."""
    parts = s1_name.split("_")
    return parts[5] if len(parts) == 8 else None
