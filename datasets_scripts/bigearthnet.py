"""BigEarthNet-MM (Sentinel-1/Sentinel-2 pairs) as a Hugging Face `datasets` builder, BEN-14K included.

Use: `BigEarthNetMM(s1_dir=..., s2_dir=..., subset="ben14k", cache_dir=...)`, then `.download_and_prepare(
num_proc=...)` and `.as_dataset()` (one `datasets` split per official split, plus a `split` column), or the CLI
`python -m datasets_scripts bigearthnet --s1-dir S1 --s2-dir S2 --output-dir OUT [--subset ...]`.

Layouts read
- BigEarthNet v1 (subsets `ben14k`, `recommended`, `all`): `S2_DIR/<s2>/<s2>_B01.tif ... _B12.tif, _B8A.tif`
  (uint16) with `<s2>_labels_metadata.json` (43-class CLC names in `labels`), `S1_DIR/<s1>/<s1>_VV.tif,
  _VH.tif` (float32 dB) with a JSON whose `corresponding_s2_patch` names the S2 partner. Pairing goes through
  that JSON: for `all` the S1 JSONs are scanned, for the metadata subsets the JSON must agree with the metadata.
- reBEN / BigEarthNet v2 (subset `reben`), assumed layout: patch folders nested one level deep, as reBEN does
  by tile/product (`S2_DIR/<any>/<patch_id>/<patch_id>_B01.tif ...`, `S1_DIR/<any>/<s1_name>/<s1_name>_VV.tif,
  _VH.tif`; a flat `S2_DIR/<patch_id>/` is accepted too), same band sizes and dtypes as v1, no
  per-patch JSON, and `metadata.parquet` with columns patch_id, labels (19-class names; CLC names are mapped),
  split (train/validation/test), country, s1_name, which is the pairing. Its B01/B09 are required as in v1.
  The metadata is found beside or inside the S2 folder when --reben-metadata is not given.
- BigEarthNet v2 as distributed for ConfigILM (subset `reben`, `lmdb=` / CLI `--lmdb`): one LMDB folder
  (`BigEarthNet-V2-LMDB/`: `data.mdb`, `lock.mdb`) whose keys are patch names (S2 `patch_id`s and S1 `s1_name`s)
  and whose values are safetensors files mapping band names to native arrays (the same sizes and dtypes as the
  GeoTIFFs), with reBEN's `metadata.parquet` beside it. Read with the `lmdb` package and `safetensors` directly
  (no configilm code, no pickles); the rows are bit for bit those of the GeoTIFF route.
- S2 patches alone (no `s1_dir`): an S2-only archive (no `s1` column) of every S2 patch of the subset present,
  for same-sensor retrieval (`crjepa embed / search / evaluate` use the one direction s2->s2).
- Layout detection: when a subset finds nothing, the error names the layout found under the folders (v1: patch
  folders directly; v2: nested by product), a sample pair whose partner is missing, and the `--subset` that fits.
- Bands are read by NAME (`<patch>_<band>.tif`), never by position; a patch folder holding other band files
  (e.g. B10), or a GeoTIFF whose band description names another band than its file name, is refused.

Rows follow docs/CONTRACTS.md: `id` (S2 patch name), `s1` Array3D (2,120,120) float32 dB in VV,VH order,
`s2` Array3D (12,120,120) uint16 in B01,B02,B03,B04,B05,B06,B07,B08,B8A,B09,B11,B12 order, `labels`
(BigEarthNet-19 class ids), `split`, and metadata `s1_name`, `s2_name`, `country`, `s2_date`, `tile`,
`labels_43` (original CLC names; None for reBEN).

Resampling: the 20 m bands (60x60 px) and 60 m bands (20x20 px) are brought to the 120x120 grid with NEAREST
neighbour by default (`s2_resampling`), i.e. each pixel is repeated 2x2 or 6x6. The factors are exact integers,
so this keeps every stored value a real measurement (no overshoot or clipping of uint16, no invented detail)
and is lossless: `s2[c, ::2, ::2]` (20 m) or `s2[c, ::6, ::6]` (60 m) gives back the native band bit for bit.
The model resizes to 224x224 on the device anyway, so smooth interpolation happens once, there.
"bilinear" and "bicubic" (rasterio resampling) are available for those who want smoothed stored bands.

Partially paired archives (`keep_unpaired=True`, CLI `--keep-unpaired`): an S1 patch whose S2 partner folder is
missing (or the reverse) is KEPT as a single-sensor row instead of skipped: the absent sensor's value is null
(the loader's presence mask says so), `id` stays the S2 patch name, labels come from the patch present (v1: its
JSON; reBEN: the metadata). Without the flag such half pairs are skipped as below.

Spatial splits (`split_by="tile"` / `"block"`, CLI `--split-by tile|block [--block-km 50]`): the official
splits put patches of the same tile, metres apart, on both sides of the train/test line. These protocols
re-split every row that has an official split (unassigned rows stay unassigned) so that a whole MGRS tile, or a
whole `block_km` square of the tile's 1.2 km patch grid (the `_<row>_<col>` of the patch names), lands in one
split, in `split_fractions` (default 0.8/0.1/0.1) shuffled by `split_seed`. Blocks do not span tiles (adjacent
tiles overlap by ~10 km; `tile` is the stricter protocol). Recommended for any claim about generalisation to
new places; report the official splits too when comparing with the paper.

Bad input (decided per case; `strict=True` raises on the first instead of skipping):
- missing band/JSON file, truncated or corrupt GeoTIFF, band of the wrong size or dtype, NaN/inf in SAR,
  S1 JSON naming another S2 patch than the metadata, an S1 patch whose S2 partner folder is missing (or the
  reverse): the pair is SKIPPED with a warning and counted by reason in the conversion report; each message
  names the patch, the file, and the expected vs found shape/value.
- pairs of the subset absent from both folders are MISSING (a partial download): counted, not an error.
- no pair of the subset present at all, a folder argument that is not a folder, bad metadata: raise (the CLI
  prints one `error:` line and exits 2; a run that converted nothing exits 1 and leaves no export behind).
Writing is atomic: `datasets` writes into `<cache>.incomplete` and renames on success, so a failure mid-build
(strict mode, Ctrl-C, crash) leaves no usable-looking dataset behind. Note that the `datasets` cache is keyed
by the arguments, not by file contents: after fixing input files, rebuild with
`download_mode="force_redownload"` (the CLI always builds in a fresh temporary cache).
"""

from __future__ import annotations

import argparse
import importlib
import json
import sys
import logging
import os
import re
import shutil
import tempfile
from collections import Counter
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Iterator

import datasets
import numpy as np

from crjepa.data.schema import S1_BANDS, S2_BANDS  # the band orders' one home
from crjepa.utils.arguments import int_in
from datasets_scripts.ben_metadata import (
    BEN19_CLASSES,
    LIST_SPLIT_NAMES,
    SPLITS,
    SUBSETS,
    UNASSIGNED,
    all_pairs,
    pair_list_bytes,
    pair_list_md5,
    s2_date,
    subset_pairs,
    to_ben19,
)
from crjepa.errors import CRJepaError

logger = logging.getLogger(__name__)

PATCH_SIZE = 120  # pixels of a 10 m band: 1.2 km x 1.2 km patches
# Native side length (pixels) of each band in a BigEarthNet patch: 10 m -> 120, 20 m -> 60, 60 m -> 20.
S2_NATIVE_SIZE: dict[str, int] = {
    "B01": 20, "B02": 120, "B03": 120, "B04": 120, "B05": 60, "B06": 60,
    "B07": 60, "B08": 120, "B8A": 60, "B09": 20, "B11": 60, "B12": 60,
}  # fmt: skip
ALL_BAND_NAMES = frozenset((*S2_BANDS, *S1_BANDS, "B10"))
S2_RESAMPLINGS: tuple[str, ...] = ("nearest", "bilinear", "bicubic")
REBEN = "reben"
ALL_SUBSETS: tuple[str, ...] = (*SUBSETS, REBEN)
_TILE_RE = re.compile(r"_T(\d{2}[A-Z]{3})(?:_|$)")


class BigEarthNetError(CRJepaError, ValueError):
    """A pair that cannot be converted. `reason` is a short category for the summary; the message says the rest."""

    def __init__(self, reason: str, message: str) -> None:
        super().__init__(message)
        self.reason = reason


# ----------------------------------------------------------------------------------------------- reading


def _read_json(path: Path, patch: str) -> dict[str, Any]:
    """A patch's metadata JSON, with errors that name the patch and the file."""
    if not path.is_file():
        raise BigEarthNetError("missing file", f"patch {patch}: metadata file missing: {path}")
    try:
        return json.loads(path.read_text(encoding="utf-8"))
    except (OSError, UnicodeDecodeError, json.JSONDecodeError) as err:
        raise BigEarthNetError("corrupt JSON", f"patch {patch}: cannot parse {path}: {err}") from err


def read_band(path: Path, patch: str, native_size: int, dtype: str, resampling: str = "nearest",
              band: str | None = None) -> np.ndarray:
    """One single-band GeoTIFF as a (120, 120) array of `dtype`, checked and upsampled from `native_size`.

    `band` (e.g. "B8A"): the band the file name promises; a GeoTIFF whose own band description names another
    band is refused (bands are mapped by name, never by position).
    Raises BigEarthNetError (missing file, corrupt GeoTIFF, wrong shape/band count/dtype/band) naming patch and file.
    """
    import rasterio
    from rasterio.enums import Resampling
    from rasterio.errors import RasterioError

    if not path.is_file():
        raise BigEarthNetError("missing band file", f"patch {patch}: band file missing: {path}")
    try:
        with rasterio.open(path) as src:
            described = (src.descriptions[0] or "").strip().upper() if src.count == 1 else ""
            if band and described in ALL_BAND_NAMES and described != band.upper():
                raise BigEarthNetError(
                    "band mismatch", f"patch {patch}: {path.name} is named band {band} but its GeoTIFF band "
                    f"description says {described}"
                )
            found = (src.count, src.height, src.width)
            if found != (1, native_size, native_size):
                raise BigEarthNetError(
                    "wrong band size",
                    f"patch {patch}: {path.name} has shape (bands, height, width) = {found}, "
                    f"expected {(1, native_size, native_size)}",
                )
            found_dtype = np.dtype(src.dtypes[0])
            ok = found_dtype.kind == "f" if dtype == "float32" else found_dtype.kind in "ui"
            if not ok:
                raise BigEarthNetError(
                    "wrong dtype", f"patch {patch}: {path.name} has dtype {found_dtype}, expected {dtype}"
                )
            array = src.read(1, out_shape=(PATCH_SIZE, PATCH_SIZE), resampling=Resampling[resampling])
    except RasterioError as err:
        raise BigEarthNetError("corrupt GeoTIFF", f"patch {patch}: cannot read {path} (truncated or corrupt GeoTIFF): {err}") from err
    if dtype == "uint16" and (array.min(initial=0) < 0 or array.max(initial=0) > 65535):
        raise BigEarthNetError("wrong dtype", f"patch {patch}: {path.name} has values outside uint16")
    return array.astype(dtype, copy=False)


def check_band_files(folder: Path, name: str, bands: tuple[str, ...]) -> None:
    """Refuse a patch folder holding band files other than `bands` (e.g. a B10, or a band named `_b8a`): the
    bands are read by their names, so a folder whose names do not match the expected set is not guessed at."""
    if not folder.is_dir():
        return
    prefix = f"{name}_"
    found = {f.name[len(prefix):-len(f.suffix)] for f in folder.iterdir()
             if f.name.startswith(prefix) and f.suffix.lower() in (".tif", ".tiff")}
    unexpected = sorted(found - set(bands))
    if unexpected:
        raise BigEarthNetError(
            "band mismatch", f"patch {name}: {folder} holds band files {unexpected} that are not among the expected "
            f"bands {list(bands)} (bands are matched by file name, never by position)"
        )


def read_s2(folder: Path, name: str, resampling: str = "nearest") -> np.ndarray:
    """S2 patch as (12, 120, 120) uint16 in S2_BANDS order, each band read from the file that names it."""
    check_band_files(folder, name, S2_BANDS)
    return np.stack(
        [read_band(folder / f"{name}_{b}.tif", name, S2_NATIVE_SIZE[b], "uint16", resampling, band=b)
         for b in S2_BANDS]
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


def _lmdb_env(path: str) -> Any:
    """The read-only LMDB environment at ``path``, to be closed by the caller (`with`). Opened per use: LMDB
    refuses an environment opened before a fork in the forked worker, and opening one only maps the file."""
    import lmdb

    try:
        return lmdb.open(path, readonly=True, lock=False, readahead=False, subdir=True)
    except lmdb.Error as err:
        raise ValueError(f"BigEarthNet: {path} is not a readable LMDB folder ({err})") from None


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
            raise BigEarthNetError("corrupt safetensors", f"patch {name}: its LMDB entry in {path} is not a readable "
                                   f"safetensors file ({err})") from None
    unexpected, absent = sorted(set(arrays) - set(bands)), [b for b in bands if b not in arrays]
    if unexpected:
        raise BigEarthNetError("band mismatch", f"patch {name}: its LMDB entry in {path} holds bands {unexpected} that "
                               f"are not among the expected bands {list(bands)}")
    if absent:
        raise BigEarthNetError("missing band file", f"patch {name}: its LMDB entry in {path} lacks bands {absent}")
    return arrays


def _checked_band(array: np.ndarray, name: str, band: str, native_size: int, dtype: str, where: str) -> np.ndarray:
    """A band read from the LMDB, checked as `read_band` checks a GeoTIFF (shape, dtype kind, uint16 range)."""
    if array.shape != (native_size, native_size):
        raise BigEarthNetError("wrong band size", f"patch {name}: band {band} in {where} has shape {array.shape}, "
                               f"expected {(native_size, native_size)}")
    ok = array.dtype.kind == "f" if dtype == "float32" else array.dtype.kind in "ui"
    if not ok:
        raise BigEarthNetError("wrong dtype", f"patch {name}: band {band} in {where} has dtype {array.dtype}, "
                               f"expected {dtype}")
    if dtype == "uint16" and array.size and (array.min() < 0 or array.max() > 65535):
        raise BigEarthNetError("wrong dtype", f"patch {name}: band {band} in {where} has values outside uint16")
    return array


def upsample_band(array: np.ndarray, resampling: str = "nearest") -> np.ndarray:
    """A native (n, n) band on the 120x120 grid, as `read_band` resamples a GeoTIFF: nearest repeats each pixel
    (120 / n)^2 times; bilinear / bicubic go through rasterio on an in-memory GeoTIFF (the same GDAL code)."""
    if array.shape[0] == PATCH_SIZE:
        return array
    if resampling == "nearest":
        factor = PATCH_SIZE // array.shape[0]
        return np.repeat(np.repeat(array, factor, axis=0), factor, axis=1)
    import rasterio
    from rasterio.enums import Resampling
    from rasterio.io import MemoryFile

    import warnings

    with warnings.catch_warnings(), MemoryFile() as memory:
        warnings.simplefilter("ignore")  # not georeferenced: resampling works in pixel space
        with memory.open(driver="GTiff", height=array.shape[0], width=array.shape[1], count=1,
                         dtype=array.dtype) as dst:
            dst.write(array, 1)
        with memory.open() as src:
            return src.read(1, out_shape=(PATCH_SIZE, PATCH_SIZE), resampling=Resampling[resampling])


def read_s2_lmdb(path: str, name: str, resampling: str = "nearest") -> np.ndarray:
    """S2 patch from a BigEarthNet LMDB as (12, 120, 120) uint16 in S2_BANDS order (as `read_s2`)."""
    arrays = _read_lmdb_bands(path, name, S2_BANDS)
    return np.stack([upsample_band(_checked_band(arrays[b], name, b, S2_NATIVE_SIZE[b], "uint16", path),
                                   resampling).astype("uint16", copy=False) for b in S2_BANDS])


def read_s1_lmdb(path: str, name: str) -> np.ndarray:
    """S1 patch from a BigEarthNet LMDB as (2, 120, 120) float32 dB in VV, VH order (as `read_s1`)."""
    arrays = _read_lmdb_bands(path, name, S1_BANDS)
    bands = []
    for band in S1_BANDS:
        array = _checked_band(arrays[band], name, band, PATCH_SIZE, "float32", path).astype("float32", copy=False)
        bad = int(np.count_nonzero(~np.isfinite(array)))
        if bad:
            raise BigEarthNetError("NaN/inf in SAR", f"patch {name}: band {band} in {path} holds {bad} NaN/inf "
                                   f"pixels of {array.size}")
        bands.append(array)
    return np.stack(bands)


def _tile(*candidates: str | None) -> str | None:
    """Sentinel-2 MGRS tile (e.g. 33UUP) from the first name that carries `_T<tile>`."""
    for text in candidates:
        match = _TILE_RE.search(text or "")
        if match:
            return match.group(1)
    return None


def read_pair(task: dict[str, Any], resampling: str = "nearest") -> dict[str, Any]:
    """Read one planned pair into a dataset row. Raises BigEarthNetError naming patch and file on bad input.

    A task whose `s1_folder` or `s2_folder` is None (kept with `keep_unpaired`) gives a row with that sensor None.
    """
    s2_name, s1_name = task["s2_name"], task["s1_name"]
    s2_folder = Path(task["s2_folder"]) if task["s2_folder"] else None
    s1_folder = Path(task["s1_folder"]) if task["s1_folder"] else None
    tile = None
    if task["layout"] == "v1":
        if s1_folder is not None:
            s1_meta = _read_json(s1_folder / f"{s1_name}_labels_metadata.json", s1_name)
            partner = s1_meta.get("corresponding_s2_patch")
            if partner != s2_name:
                raise BigEarthNetError(
                    "pairing mismatch",
                    f"patch {s1_name}: its JSON names S2 partner {partner!r}, the metadata pairs it with {s2_name!r}",
                )
        if s2_folder is not None:
            label_patch, meta = s2_name, _read_json(s2_folder / f"{s2_name}_labels_metadata.json", s2_name)
            tile = _tile(meta.get("tile_source"))
        else:  # S1-only row: the S1 JSON carries the same CLC labels
            label_patch, meta = s1_name, s1_meta
        labels_43 = meta.get("labels")
        if not isinstance(labels_43, list):
            raise BigEarthNetError("corrupt JSON", f"patch {label_patch}: no 'labels' list in its JSON")
        try:
            labels = to_ben19(labels_43, where=f"patch {label_patch}")
        except ValueError as err:
            raise BigEarthNetError("unknown label", str(err)) from err
    else:
        labels_43, labels = None, task["labels"]
    lmdb = task.get("lmdb")
    if lmdb:  # the ConfigILM distribution: both sensors' patches are entries of one LMDB
        s1 = read_s1_lmdb(lmdb, s1_name) if s1_folder is not None else None
        s2 = read_s2_lmdb(lmdb, s2_name, resampling) if s2_folder is not None else None
    else:
        s1 = read_s1(s1_folder, s1_name) if s1_folder is not None else None
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
        "tile": tile or _tile(s2_name) or (_s1_tile(s1_name) if s1_name else None),
        "labels_43": labels_43,
    }
    if s1_folder is None:
        del row["s1"]
    return row


def _s1_tile(s1_name: str) -> str | None:
    """Tile field of a v1 S1 name (S1A_IW_GRDH_1SDV_<time>_<tile>_<x>_<y>)."""
    parts = s1_name.split("_")
    return parts[5] if len(parts) == 8 else None


# ----------------------------------------------------------------------------------------------- spatial splits

SPLIT_PROTOCOLS: tuple[str, ...] = ("official", "tile", "block")
PATCH_KM = PATCH_SIZE * 10 / 1000  # a patch is 1.2 km on a side


def _task_tile(task: dict[str, Any]) -> str:
    """MGRS tile of a planned row, from its names (reBEN S2 and v1 S1 names carry it) or, for a v1 S2-only row,
    from its JSON's `tile_source`."""
    tile = _tile(task["s2_name"]) or (_s1_tile(task["s1_name"]) if task["s1_name"] else None)
    if tile is None and task["s2_folder"]:
        path = Path(task["s2_folder"]) / f"{task['s2_name']}_labels_metadata.json"
        try:
            tile = _tile(_read_json(path, task["s2_name"]).get("tile_source"))
        except BigEarthNetError:
            tile = None
    if tile is None:
        raise ValueError(f"patch {task['s2_name']}: cannot tell its tile (from its names or its JSON's tile_source) "
                         "for a spatial split; use --split-by official")
    return tile


def _patch_grid(name: str | None) -> tuple[int, int] | None:
    """(row, col) of a patch in its tile's 1.2 km grid: the last two `_` fields of BigEarthNet patch names."""
    parts = (name or "").rsplit("_", 2)
    if len(parts) == 3 and parts[1].isdigit() and parts[2].isdigit():
        return int(parts[1]), int(parts[2])
    return None


def spatial_group(task: dict[str, Any], split_by: str, block_km: float = 50.0) -> str:
    """Group key of a planned row for `split_by` "tile" (the MGRS tile) or "block" (tile + a `block_km` square
    of the tile's patch grid)."""
    tile = _task_tile(task)
    if split_by == "tile":
        return tile
    if not block_km > 0:
        raise ValueError(f"block_km must be > 0, got {block_km}")
    grid = _patch_grid(task["s2_name"]) or _patch_grid(task["s1_name"])
    if grid is None:
        raise ValueError(f"patch {task['s2_name']}: no _<row>_<col> patch grid position in its name for "
                         "--split-by block; use --split-by tile")
    per_block = block_km / PATCH_KM
    return f"{tile}/{int(grid[0] // per_block)}_{int(grid[1] // per_block)}"


def resplit(plan: ConversionPlan, split_by: str, block_km: float = 50.0, seed: int = 0,
            fractions: tuple[float, ...] = (0.8, 0.1, 0.1)) -> ConversionPlan:
    """Re-split the planned rows that have an official split so that each tile / block lies in one split
    (`datasets_scripts.common.split_by_group`); unassigned rows stay unassigned. In place; returns the plan."""
    if split_by == "official":
        return plan
    if split_by not in SPLIT_PROTOCOLS:
        raise ValueError(f"split_by must be one of {SPLIT_PROTOCOLS}, got {split_by!r}")
    from datasets_scripts.common import split_by_group

    eligible = [t for t in plan.tasks if t["split"] in SPLITS]
    groups = {t["s2_name"]: spatial_group(t, split_by, block_km) for t in eligible}
    new = split_by_group(groups, fractions, seed)
    for task in eligible:
        task["split"] = new[task["s2_name"]]
    return plan


# ----------------------------------------------------------------------------------------------- planning


@dataclass
class ConversionPlan:
    """What a build will read: pairs present on disk, pairs of the subset absent, pairs unusable before reading."""

    subset: str
    subset_size: int
    tasks: list[dict[str, Any]] = field(default_factory=list)
    missing: list[str] = field(default_factory=list)
    skipped: dict[str, BigEarthNetError] = field(default_factory=dict)


@dataclass
class ConversionReport:
    """Outcome of a build: converted rows per split, missing pairs of the subset, skipped pairs with reasons."""

    subset: str
    subset_size: int
    converted: dict[str, int]
    missing: int
    skipped: dict[str, BigEarthNetError]
    single_sensor: int = 0
    s2_only: bool = False

    def summary(self) -> str:
        """One line for people: converted N pairs (or S2 patches), missing M of the subset, skipped K (with
        reasons). An S2-only archive counts patches, not pairs; subset `all` (every pair found on disk) has no
        list to be missing from, so nothing is reported missing."""
        total = sum(self.converted.values())
        per_split = ", ".join(f"{s} {n:,}" for s, n in self.converted.items())
        reasons = Counter(err.reason for err in self.skipped.values())
        why = f" ({', '.join(f'{r}: {n}' for r, n in reasons.most_common())})" if reasons else ""
        kept = f", {self.single_sensor:,} of them single-sensor rows" if self.single_sensor and not self.s2_only else ""
        unit = "S2 patches" if self.s2_only else "pairs"
        found = f"converted {total:,} {unit} ({per_split}{kept}), "
        if self.subset == "all":
            found += f"every {'S2 patch' if self.s2_only else 'pair'} found on disk"
        else:
            found += f"missing {self.missing:,} of the {self.subset_size:,} {unit} of the subset"
        return f"bigearthnet {self.subset}: {found}, skipped {len(self.skipped):,}{why}"


def _index_patch_folders(root: Path, nested: bool) -> dict[str, Path]:
    """Patch name -> folder, from one directory listing (v1), or two levels for reBEN's tile/patch nesting.

    Listing once beats a stat per pair by far on 590k patches; for reBEN a flat `root/<patch>` is accepted too.
    """
    index: dict[str, Path] = {}
    with os.scandir(root) as top:
        for entry in top:
            if not entry.is_dir():
                continue
            index[entry.name] = Path(entry.path)
            if nested:
                with os.scandir(entry.path) as sub:
                    index.update((e.name, Path(e.path)) for e in sub if e.is_dir())
    return index


def _check_dir(path: str | None, what: str) -> Path:
    if not path:
        raise ValueError(f"BigEarthNet: {what} is required")
    root = Path(path)
    if not root.is_dir():
        raise NotADirectoryError(f"BigEarthNet: {what} {root} is not a folder")
    return root


def _plan_from_metadata(
    subset: str, pairs: list[tuple[str, str, str | None, str, list[str] | None]], s1_root: Path | None,
    s2_root: Path, keep_unpaired: bool = False, lmdb: Path | None = None,
) -> ConversionPlan:
    """Match metadata pairs (s2, s1, country, split, labels) against the folders on disk (or the keys of an
    `lmdb`, which then is both roots); without `s1_root` (an S2-only archive) every S2 patch present is a task;
    with `keep_unpaired` a half pair becomes a single-sensor task (the absent folder None) instead of being
    skipped."""
    layout = "reben" if subset == REBEN else "v1"
    if lmdb is not None:
        keys = {key: lmdb for key in lmdb_keys(lmdb)}
        s2_index, s1_index = keys, keys if s1_root is not None else {}
    else:
        s2_index = _index_patch_folders(s2_root, nested=layout == "reben")
        s1_index = _index_patch_folders(s1_root, nested=layout == "reben") if s1_root is not None else {}
    extra = {"lmdb": str(lmdb)} if lmdb is not None else {}
    plan = ConversionPlan(subset, len(pairs))
    for s2_name, s1_name, country, split, labels in pairs:
        s2_folder, s1_folder = s2_index.get(s2_name), s1_index.get(s1_name)
        if s1_root is None:
            if s2_folder is None:
                plan.missing.append(s2_name)
            else:
                plan.tasks.append(
                    {"s2_name": s2_name, "s1_name": None, "s2_folder": str(s2_folder), "s1_folder": None,
                     "split": split, "country": country, "labels": labels, "layout": layout, **extra}  # fmt: skip
                )
        elif s2_folder is None and s1_folder is None:
            plan.missing.append(s2_name)
        elif keep_unpaired or (s2_folder is not None and s1_folder is not None):
            plan.tasks.append(
                {"s2_name": s2_name, "s1_name": s1_name, "s2_folder": s2_folder and str(s2_folder),
                 "s1_folder": s1_folder and str(s1_folder), "split": split, "country": country, "labels": labels,
                 "layout": layout, **extra}  # fmt: skip
            )
        elif s2_folder is None:
            plan.skipped[s2_name] = BigEarthNetError(
                "S2 partner missing", f"patch {s1_name}: its S2 partner {s2_name} is missing under {s2_root}"
            )
        elif s1_folder is None:
            plan.skipped[s2_name] = BigEarthNetError(
                "S1 partner missing", f"patch {s2_name}: its S1 partner {s1_name} is missing under {s1_root}"
            )
    return plan


def _plan_all_v1(s1_root: Path | None, s2_root: Path, keep_unpaired: bool = False) -> ConversionPlan:
    """Every S1 folder paired through its JSON (or, S2-only, every S2 folder); official split and country where
    the metadata knows the pair."""
    from tqdm.auto import tqdm

    known = {p.s2_name: p for p in all_pairs()}
    s2_names = {e.name for e in os.scandir(s2_root) if e.is_dir()}
    plan = ConversionPlan("all", len(known))
    if s1_root is None:
        rows = [(s2, known[s2].s1_name if s2 in known else "", known[s2].country if s2 in known else None,
                 known[s2].split if s2 in known else UNASSIGNED, None) for s2 in sorted(s2_names)]
        sub = _plan_from_metadata("all", rows, None, s2_root)
        plan.tasks = sub.tasks
        plan.missing = [s2 for s2 in known if s2 not in s2_names]
        return plan
    s1_names = sorted(e.name for e in os.scandir(s1_root) if e.is_dir())
    found: list[tuple[str, str, str | None, str, None]] = []
    for s1_name in tqdm(s1_names, desc="pairing S1 patches via their JSON", unit="patch"):
        try:
            meta = _read_json(s1_root / s1_name / f"{s1_name}_labels_metadata.json", s1_name)
        except BigEarthNetError as err:
            plan.skipped[s1_name] = err
            continue
        s2_name = meta.get("corresponding_s2_patch")
        if not isinstance(s2_name, str) or not s2_name:
            plan.skipped[s1_name] = BigEarthNetError(
                "corrupt JSON", f"patch {s1_name}: no 'corresponding_s2_patch' in its JSON"
            )
            continue
        pair = known.get(s2_name)
        found.append((s2_name, s1_name, pair.country if pair else None, pair.split if pair else UNASSIGNED, None))
    named = {s2 for s2, *_ in found}
    sub = _plan_from_metadata("all", found, s1_root, s2_root, keep_unpaired)
    plan.tasks, plan.skipped = sub.tasks, {**plan.skipped, **sub.skipped}
    for s2_name in sorted(s2_names - named):
        if keep_unpaired:  # an S2 patch no S1 JSON names: an S2-only row
            pair = known.get(s2_name)
            plan.tasks.append(
                {"s2_name": s2_name, "s1_name": None, "s2_folder": str(s2_root / s2_name), "s1_folder": None,
                 "split": pair.split if pair else UNASSIGNED, "country": pair.country if pair else None,
                 "labels": None, "layout": "v1"}  # fmt: skip
            )
            continue
        plan.skipped[s2_name] = BigEarthNetError(
            "S1 partner missing", f"patch {s2_name}: no S1 patch under {s1_root} names it as its partner"
        )
    present = named | s2_names
    plan.missing = [s2 for s2 in known if s2 not in present]
    return plan


# ----------------------------------------------------------------------------------------------- layouts
V1, V2 = "v1", "v2"
LAYOUT_NAMES = {V1: "BigEarthNet v1 (patch folders directly under the folder, one JSON per patch)",
                V2: "BigEarthNet v2 / reBEN (patch folders nested one level, by product / tile)"}


def _has_band_files(folder: str | os.PathLike, name: str) -> bool:
    return any(os.path.exists(os.path.join(folder, f"{name}_{b}.tif")) for b in ("B02", "B04", "VV", "VH"))


def detect_layout(root: Path, sample: int = 50) -> tuple[str | None, list[str]]:
    """(V1, V2 or None, patch names seen) of a BigEarthNet S1 or S2 folder, from its first entries.

    v1: ``root/<patch>/<patch>_B02.tif``; v2 (reBEN): ``root/<product>/<patch>/<patch>_B02.tif``.
    """
    v1, v2 = [], []
    with os.scandir(root) as top:
        for count, entry in enumerate(e for e in top if e.is_dir()):
            if count >= sample:
                break
            if _has_band_files(entry.path, entry.name):
                v1.append(entry.name)
                continue
            with os.scandir(entry.path) as sub:
                v2.extend(e.name for e in sub if e.is_dir() and _has_band_files(e.path, e.name))
    if v1 or v2:
        return (V1, v1) if len(v1) >= len(v2) else (V2, v2)
    return None, []


def _subset_hint(subset: str, s1_root: Path | None, s2_root: Path, reben_metadata: str | None) -> str:
    """Why a subset found nothing, in words: the layout found and the --subset (and options) that fit it."""
    layout, _ = detect_layout(s2_root)
    where = f"s2_dir={s2_root}" + (f", s1_dir={s1_root}" if s1_root is not None else "")
    if layout is None:
        return (f"No BigEarthNet patch folder found under {where}: --s2-dir must be the folder holding the S2 "
                "patch folders (v1: BigEarthNet-v1.0/<patch>/<patch>_B02.tif; v2: BigEarthNet-S2/<product>/<patch>/"
                "<patch>_B02.tif), --s1-dir the same for S1.")
    found = f"Found the {LAYOUT_NAMES[layout]} layout under {where}."
    if layout == V2 and subset != REBEN:
        meta = find_reben_metadata(s2_root)
        return (f"{found} --subset {subset} lists BigEarthNet v1 patches; for v2 data use --subset reben"
                + (f" (its metadata {meta} is found automatically)." if meta else
                   " --reben-metadata <reBEN metadata.parquet>."))
    if layout == V1 and subset == REBEN:
        return f"{found} --subset reben is for v2 data; for v1 use --subset all (every pair found), recommended or ben14k."
    if layout == V1 and subset in SUBSETS and subset != "all":
        s2_names = {e.name for e in os.scandir(s2_root) if e.is_dir()}
        fits = {name: sum(p.s2_name in s2_names for p in subset_pairs(name)) for name in SUBSETS if name != "all"}
        counts = ", ".join(f"{name}: {n}" for name, n in fits.items())
        return (f"{found} None of its {len(s2_names):,} S2 patches is in {subset} (patches per subset: {counts}); "
                f"--subset all converts every pair found.")
    return found


def _reben_metadata_pairs(path: Path) -> list[tuple[str, str, str | None, str, list[str]]]:
    """(patch_id, s1_name, country, split, 19-class labels) from reBEN's metadata.parquet."""
    import pyarrow.parquet as pq

    if not path.is_file():
        raise FileNotFoundError(f"reBEN metadata file not found: {path} (pass reben_metadata=.../metadata.parquet)")
    table = pq.read_table(path)
    needed = {"patch_id", "s1_name", "labels", "split", "country"}
    if not needed <= set(table.column_names):
        raise ValueError(f"{path}: columns {sorted(needed - set(table.column_names))} missing; found {table.column_names}")
    aliases = {"val": "validation", "validation": "validation", "train": "train", "test": "test"}
    rows = []
    for r in table.select(sorted(needed)).to_pylist():
        labels = to_ben19(list(r["labels"] or []), where=f"{path.name}, patch {r['patch_id']}")
        rows.append((r["patch_id"], r["s1_name"], r["country"], aliases.get(r["split"], UNASSIGNED), labels))
    return rows


def find_reben_metadata(s2_dir: str | os.PathLike) -> Path | None:
    """reBEN's metadata.parquet when it lies beside or inside the S2 folder (as bigearth.net's download unpacks)."""
    root = Path(s2_dir)
    for candidate in (root / "metadata.parquet", root.parent / "metadata.parquet"):
        if candidate.is_file():
            return candidate
    return None


def plan_conversion(
    subset: str, s1_dir: str | None, s2_dir: str | None, reben_metadata: str | None = None,
    keep_unpaired: bool = False, lmdb: str | None = None,
) -> ConversionPlan:
    """Which pairs of `subset` are present, missing, or unusable before any GeoTIFF is read.

    ``s1_dir=None`` plans an S2-only archive (every S2 patch of the subset present under s2_dir); with
    `keep_unpaired`, half pairs are planned as single-sensor rows. ``lmdb``: the ConfigILM LMDB folder instead
    of the two folders (subset reben; its metadata.parquet is found beside it).
    """
    if subset not in ALL_SUBSETS:
        raise ValueError(f"unknown BigEarthNet subset {subset!r}; expected one of {', '.join(ALL_SUBSETS)}")
    if lmdb:
        return _plan_lmdb(subset, lmdb, reben_metadata, keep_unpaired)
    s2_root = _check_dir(s2_dir, "s2_dir")
    s1_root = _check_dir(s1_dir, "s1_dir") if s1_dir else None
    if subset == "all":
        plan = _plan_all_v1(s1_root, s2_root, keep_unpaired)
    else:
        if subset == REBEN:
            reben_metadata = reben_metadata or find_reben_metadata(s2_root)
            if not reben_metadata and detect_layout(s2_root)[0] == V1:  # the layout, not a missing file, is wrong
                raise FileNotFoundError(f"BigEarthNet reben: {_subset_hint(subset, s1_root, s2_root, None)}")
            if not reben_metadata:
                raise ValueError(
                    f"subset 'reben' needs reBEN's metadata.parquet: pass --reben-metadata PATH (none found beside "
                    f"or in {s2_root})"
                )
            pairs = _reben_metadata_pairs(Path(reben_metadata))
        else:
            pairs = [(p.s2_name, p.s1_name, p.country, p.split, None) for p in subset_pairs(subset)]
        plan = _plan_from_metadata(subset, pairs, s1_root, s2_root, keep_unpaired)
    if not plan.tasks:
        half = next(iter(plan.skipped.values()), None)
        example = f" For example: {half}." if half is not None else ""
        raise FileNotFoundError(
            f"BigEarthNet {subset}: none of its {plan.subset_size:,} pairs is present"
            + (" with both patches" if s1_root is not None else "")
            + f" ({len(plan.skipped)} half pairs).{example} "
            + _subset_hint(subset, s1_root, s2_root, reben_metadata)
        )
    return plan


def _plan_lmdb(subset: str, lmdb: str, reben_metadata: str | None, keep_unpaired: bool) -> ConversionPlan:
    """The pairs of reBEN's metadata whose patches are keys of the ConfigILM LMDB folder ``lmdb``."""
    if subset != REBEN:
        raise ValueError(f"--lmdb holds BigEarthNet v2 (reBEN) patches: use --subset reben, not {subset!r}")
    root = _check_dir(lmdb, "lmdb")
    if not (root / "data.mdb").is_file():
        raise FileNotFoundError(f"BigEarthNet: {root} is not an LMDB folder (no data.mdb); --lmdb takes the "
                                "BigEarthNet-V2-LMDB folder of the ConfigILM distribution")
    metadata = reben_metadata or find_reben_metadata(root)
    if not metadata:
        raise ValueError(f"subset 'reben' needs reBEN's metadata.parquet: pass --reben-metadata PATH (none found "
                         f"beside or in {root})")
    pairs = _reben_metadata_pairs(Path(metadata))
    plan = _plan_from_metadata(subset, pairs, root, root, keep_unpaired, lmdb=root)
    if not plan.tasks:
        keys = sorted(lmdb_keys(root))
        half = next(iter(plan.skipped.values()), None)
        raise FileNotFoundError(
            f"BigEarthNet reben: none of the {plan.subset_size:,} pairs of {metadata} is in the LMDB {root} with "
            f"both patches ({len(keys):,} entries, e.g. {keys[:2]}; {len(plan.skipped)} half pairs"
            + (f", for example: {half}" if half is not None else "") + ")")
    return plan


# ----------------------------------------------------------------------------------------------- builder


def features(s2_only: bool = False) -> datasets.Features:
    """Row schema of docs/CONTRACTS.md for BigEarthNet-MM (without the `s1` column for an S2-only archive)."""
    string = datasets.Value("string")
    feats = datasets.Features(
        {
            "id": string,
            "s1": datasets.Array3D(shape=(len(S1_BANDS), PATCH_SIZE, PATCH_SIZE), dtype="float32"),
            "s2": datasets.Array3D(shape=(len(S2_BANDS), PATCH_SIZE, PATCH_SIZE), dtype="uint16"),
            "labels": datasets.Sequence(datasets.ClassLabel(names=list(BEN19_CLASSES))),
            "split": string,
            "s1_name": string,
            "s2_name": string,
            "country": string,
            "s2_date": string,
            "tile": string,
            "labels_43": datasets.Sequence(string),
        }
    )
    if s2_only:
        del feats["s1"]
    return feats


@dataclass
class BigEarthNetConfig(datasets.BuilderConfig):
    """One subset of BigEarthNet-MM; the name is the subset (ben14k, recommended, all, reben)."""

    s1_dir: str | None = None
    s2_dir: str | None = None
    reben_metadata: str | None = None
    lmdb: str | None = None
    strict: bool = False
    s2_resampling: str = "nearest"
    keep_unpaired: bool = False
    split_by: str = "official"
    block_km: float = 50.0
    split_seed: int = 0
    split_fractions: tuple[float, ...] = (0.8, 0.1, 0.1)

    @property
    def s2_only(self) -> bool:
        """An S2-only archive: S2 folders without S1 ones (an LMDB always holds both sensors)."""
        return not (self.s1_dir or self.lmdb)


_DESCRIPTIONS = {
    "ben14k": "CR-JEPA's BEN-14K: Serbia, S2 date <= 2017-08-31, minus official exclusions (14,832 pairs).",
    "recommended": "The official 519,284 BigEarthNet v1 pairs (all minus snow, cloud/shadow, no 19-class label).",
    "all": "Every BigEarthNet v1 S1/S2 pair found on disk; official split where one exists, else unassigned.",
    "reben": "reBEN (BigEarthNet v2) pairs listed in its metadata.parquet, with its split.",
}


class BigEarthNetMM(datasets.GeneratorBasedBuilder):
    """BigEarthNet-MM S1/S2 pairs at native 10 m grid (120x120), 19-class multi-labels, official splits."""

    BUILDER_CONFIG_CLASS = BigEarthNetConfig
    BUILDER_CONFIGS = [BigEarthNetConfig(name=name, description=_DESCRIPTIONS[name]) for name in ALL_SUBSETS]
    DEFAULT_CONFIG_NAME = "ben14k"
    DEFAULT_WRITER_BATCH_SIZE = 100  # rows are ~460 kB: keep writer memory small
    CITATION = (
        "@article{sumbul2021bigearthnetmm, title={BigEarthNet-MM: A Large-Scale, Multimodal, Multilabel Benchmark "
        "Archive for Remote Sensing Image Classification and Retrieval}, author={Sumbul, Gencer and others}, "
        "journal={IEEE Geoscience and Remote Sensing Magazine}, year={2021}}"
    )

    def __init__(self, *args: Any, subset: str | None = None, **kwargs: Any) -> None:
        if subset is not None:
            if kwargs.get("config_name") not in (None, subset):
                raise ValueError(f"subset={subset!r} and config_name={kwargs['config_name']!r} disagree")
            kwargs["config_name"] = subset
        for key in ("s1_dir", "s2_dir", "reben_metadata", "lmdb"):  # absolute strings: stable, readable cache ids
            if kwargs.get(key) is not None:
                kwargs[key] = str(Path(kwargs[key]).expanduser().resolve())
        super().__init__(*args, **kwargs)
        if self.config.s2_resampling not in S2_RESAMPLINGS:
            raise ValueError(f"s2_resampling must be one of {S2_RESAMPLINGS}, got {self.config.s2_resampling!r}")
        if self.config.split_by not in SPLIT_PROTOCOLS:
            raise ValueError(f"split_by must be one of {SPLIT_PROTOCOLS}, got {self.config.split_by!r}")
        self._plan: ConversionPlan | None = None

    def __getstate__(self) -> dict[str, Any]:
        """Do not ship the whole plan to every worker: each gets its shard of tasks through gen_kwargs."""
        state = dict(super().__getstate__())
        state["_plan"] = None
        return state

    def plan(self) -> ConversionPlan:
        """The conversion plan (cached); in strict mode a pair unusable before reading raises here."""
        if self._plan is None:
            c = self.config
            self._plan = resplit(plan_conversion(c.name, c.s1_dir, c.s2_dir, c.reben_metadata, c.keep_unpaired,
                                                 c.lmdb),
                                 c.split_by, c.block_km, c.split_seed, tuple(c.split_fractions))
        if self.config.strict and self._plan.skipped:
            raise next(iter(self._plan.skipped.values()))
        return self._plan

    def _info(self) -> datasets.DatasetInfo:
        return datasets.DatasetInfo(
            description=_DESCRIPTIONS.get(self.config.name, "") + " " + __doc__.split("\n\n")[0],
            features=features(s2_only=self.config.s2_only),
            homepage="https://bigearth.net",
            license="CDLA-Permissive-1.0",
            citation=self.CITATION,
        )

    def _split_generators(self, dl_manager: Any) -> list[datasets.SplitGenerator]:
        plan = self.plan()
        missing = "" if plan.subset == "all" else f", {len(plan.missing):,} missing"  # `all` has no list to miss
        unit = "S2 patches" if self.config.s2_only else "pairs"
        logger.info("BigEarthNet %s: %s %s to convert%s, %s skipped before reading", plan.subset,
                    f"{len(plan.tasks):,}", unit, missing, f"{len(plan.skipped):,}")
        for err in plan.skipped.values():
            logger.warning("skipped: %s", err)
        by_split: dict[str, list[dict[str, Any]]] = {}
        for task in plan.tasks:
            by_split.setdefault(task["split"], []).append(task)
        order = [s for s in (*SPLITS, UNASSIGNED) if s in by_split]
        return [datasets.SplitGenerator(name=s, gen_kwargs={"tasks": by_split[s]}) for s in order]

    def _generate_examples(self, tasks: list[dict[str, Any]]) -> Iterator[tuple[str, dict[str, Any]]]:
        for task in tasks:
            try:
                row = read_pair(task, self.config.s2_resampling)
            except BigEarthNetError as err:
                if self.config.strict:
                    raise
                logger.warning("skipped: %s", err)
                continue
            yield task["s2_name"], row

    def as_dataset(self, split: Any = None, **kwargs: Any) -> Any:
        """As `datasets`, but a split left empty (every pair of it skipped) is dropped instead of failing."""
        if split is None and self.info.splits:
            kept = [name for name, info in self.info.splits.items() if info.num_examples]
            if len(kept) != len(self.info.splits):
                parent = super()
                return datasets.DatasetDict({name: parent.as_dataset(split=name, **kwargs) for name in kept})
        return super().as_dataset(split=split, **kwargs)

    def conversion_report(
        self, dataset: datasets.DatasetDict | None = None, written_ids: set[str] | None = None
    ) -> ConversionReport:
        """Converted/missing/skipped counts of the prepared dataset, with a reason for every skipped pair.

        Pairs planned but absent from the output (`dataset`, or the ids of an export given as `written_ids`)
        were skipped while reading; only those are re-read here to recover the reason, which also works when
        the dataset came from the cache.
        """
        plan = self.plan()
        if written_ids is None:
            dataset = dataset if dataset is not None else self.as_dataset()
            written_ids = {i for ds in dataset.values() for i in ds["id"]}
        by_split = Counter(t["split"] for t in plan.tasks if t["s2_name"] in written_ids)
        converted = {s: by_split[s] for s in (*SPLITS, UNASSIGNED) if by_split[s]}
        skipped = dict(plan.skipped)
        for task in plan.tasks:
            if task["s2_name"] not in written_ids:
                try:
                    read_pair(task, self.config.s2_resampling)
                    skipped[task["s2_name"]] = BigEarthNetError("not written", f"pair {task['s2_name']} not written")
                except BigEarthNetError as err:
                    skipped[task["s2_name"]] = err
        single = sum(1 for t in plan.tasks if t["s2_name"] in written_ids and not (t["s1_folder"] and t["s2_folder"]))
        return ConversionReport(plan.subset, plan.subset_size, converted, len(plan.missing), skipped, single,
                                s2_only=self.config.s2_only)


# ----------------------------------------------------------------------------------------------- CLI


def metadata_list(subset: str, reben_metadata: str | None = None) -> list[tuple[str, str, str]]:
    """(s2_name, s1_name, split) of a subset from metadata alone (no imagery needed)."""
    if subset == REBEN:
        if not reben_metadata:
            raise ValueError("--list-only with --subset reben needs --reben-metadata")
        return sorted((s2, s1, split) for s2, s1, _, split, _ in _reben_metadata_pairs(Path(reben_metadata)))
    return sorted((p.s2_name, p.s1_name, p.split) for p in subset_pairs(subset))


def dataset_card(config: BigEarthNetConfig) -> dict[str, Any]:
    """Card fields for `datasets_scripts.common.export_builder`: what the data is and how it was made."""
    if config.s2_only:
        return {
            "pretty_name": f"BigEarthNet-S2 ({config.name})",
            "license": "cdla-permissive-1.0",
            "tags": ["bigearthnet", "sentinel-2", "multi-label"],
            "description": (
                f"Sentinel-2 patches only (no Sentinel-1 partner): {_DESCRIPTIONS[config.name]} `s2` (B01,B02,B03,"
                "B04,B05,B06,B07,B08,B8A,B09,B11,B12 uint16 L2A reflectance) on the 120x120 10 m grid; 20 m / 60 m "
                f"bands upsampled with {config.s2_resampling} resampling. Labels: BigEarthNet-19 nomenclature. "
                "For same-sensor (S2->S2) retrieval: `crjepa embed`, `index`, `search`, `evaluate`."
            ),
            "source": "BigEarthNet v1 / reBEN, https://bigearth.net (converted with `python -m datasets_scripts "
            "bigearthnet` without --s1-dir)",
            "citation": BigEarthNetMM.CITATION,
        }
    return {
        "pretty_name": f"BigEarthNet-MM ({config.name})",
        "license": "cdla-permissive-1.0",
        "tags": ["bigearthnet", "sentinel-1", "sentinel-2", "multi-label"],
        "description": (
            f"{_DESCRIPTIONS[config.name]} Sentinel-1 `s1` (VV,VH float32 dB) and Sentinel-2 `s2` (B01,B02,B03,"
            "B04,B05,B06,B07,B08,B8A,B09,B11,B12 uint16 L2A reflectance) on the 120x120 10 m grid; 20 m / 60 m "
            f"bands upsampled with {config.s2_resampling} resampling. Labels: BigEarthNet-19 nomenclature "
            "(`labels_43` keeps the original CORINE names)."
        ),
        "source": "BigEarthNet v1 / reBEN, https://bigearth.net (converted with `python -m datasets_scripts "
        "bigearthnet`" + (" from the ConfigILM LMDB)" if config.lmdb else ")"),
        "citation": BigEarthNetMM.CITATION,
    }


def add_cli(subparsers: argparse._SubParsersAction) -> argparse.ArgumentParser:
    """Register the `bigearthnet` subcommand on the `python -m datasets_scripts` parser."""
    p = subparsers.add_parser(
        "bigearthnet",
        help="BigEarthNet-MM S1/S2 pairs (BEN-14K, recommended, all; reBEN) -> Parquet / Hub",
        description=__doc__.split("\n\n")[0],
    )
    p.add_argument("--s1-dir", help="folder holding the BigEarthNet-S1 patch folders (omit for an S2-only archive)")
    p.add_argument("--s2-dir", help="folder holding the BigEarthNet-S2 patch folders")
    p.add_argument("--output-dir", help="where the Parquet export goes")
    p.add_argument("--lmdb", metavar="DIR",
                   help="BigEarthNet v2 as distributed for ConfigILM: the BigEarthNet-V2-LMDB folder (safetensors "
                        "patches of both sensors; read without configilm), instead of --s1-dir / --s2-dir; "
                        "subset reben, metadata.parquet found beside it")
    p.add_argument("--subset", choices=ALL_SUBSETS, default=None,
                   help="which pairs (default: ben14k; reben with --lmdb)")
    p.add_argument("--reben-metadata", help="reBEN metadata.parquet (subset reben; default: a metadata.parquet "
                                            "beside or inside --s2-dir or --lmdb)")
    p.add_argument("--push-to-hub", metavar="USER/REPO", help="also push the export to this Hub dataset repo")
    p.add_argument("--list-only", action="store_true", help="print the subset's pair list stats from metadata")
    p.add_argument("--list-out", help="with --list-only: also write the list (s2_name,s1_name,split) here")
    p.add_argument("--strict", action="store_true", help="stop at the first bad pair instead of skipping it")
    p.add_argument("--s2-resampling", choices=S2_RESAMPLINGS, default="nearest", help="20/60 m band upsampling")
    p.add_argument("--num-proc", type=int_in(1, 1024), default=None, help="worker processes (default: all cores)")
    p.add_argument("--cache-dir", help="build cache (default: a temporary folder, removed afterwards)")
    p.add_argument("--keep-unpaired", action="store_true",
                   help="keep an S1 patch without its S2 partner (or the reverse) as a single-sensor row")
    from datasets_scripts.common import add_split_arguments

    add_split_arguments(p, choices=SPLIT_PROTOCOLS)
    p.set_defaults(func=run_cli)
    return p


def _run_list_only(args: argparse.Namespace) -> int:
    rows = metadata_list(args.subset, args.reben_metadata)
    counts = Counter(LIST_SPLIT_NAMES.get(split, split) for _, _, split in rows)
    order = [LIST_SPLIT_NAMES[s] for s in SPLITS] + [UNASSIGNED]
    per_split = ", ".join(f"{s} {counts[s]:,}" for s in order if counts[s])
    print(f"{args.subset}: {len(rows):,} pairs ({per_split})")
    print(f"md5 {pair_list_md5(rows)} of the list `s2_name,s1_name,split` (no header, LF, LC_ALL=C sorted)")
    if args.list_out:
        out = Path(args.list_out)
        tmp = out.with_name(out.name + ".tmp")
        tmp.write_bytes(pair_list_bytes(rows))
        tmp.replace(out)
        print(f"list written to {out}")
    return 0


def _exported_ids(output_dir: Path) -> set[str]:
    """`id` column of an export's Parquet shards."""
    import pyarrow.parquet as pq

    return {i for f in sorted(output_dir.glob("data/*.parquet")) for i in pq.read_table(f, columns=["id"])["id"].to_pylist()}


def run_cli(args: argparse.Namespace) -> int:
    """`python -m datasets_scripts bigearthnet ...`: list from metadata, or convert + export (+ push).

    User errors (bad folders, nothing of the subset present, missing extra, output not empty) print one
    ``error:`` line and return 2; a run that converted nothing returns 1 and leaves no export behind.
    """
    import sys

    from crjepa.data.schema import DataError

    from datasets_scripts.ben_metadata import BigEarthNetMetadataError

    if args.subset is None:
        args.subset = REBEN if getattr(args, "lmdb", None) else "ben14k"
    try:
        try:
            return _run_cli(args)
        except datasets.exceptions.DatasetGenerationError as err:  # --strict: the bad pair, not the wrapper
            if isinstance(err.__cause__, BigEarthNetError):
                raise err.__cause__ from None
            raise
    except (ValueError, OSError, DataError, BigEarthNetMetadataError, ImportError) as err:
        message = str(err)
        if isinstance(err, ImportError) and "crjepa[bigearthnet]" not in message:
            message = f"{message}: BigEarthNet needs the bigearthnet extra: pip install \"crjepa[bigearthnet]\""
        print(f"error: {message}", file=sys.stderr)
        return 2


def _require_extra(module: str = "rasterio") -> None:
    """rasterio (GeoTIFF) and lmdb (the ConfigILM LMDB) are in the bigearthnet extra; say so before any work
    starts."""
    try:
        importlib.import_module(module)
    except ImportError as err:
        raise ImportError(f"{module} is not installed ({err}); BigEarthNet needs the bigearthnet extra: "
                          'pip install "crjepa[bigearthnet]"') from None


def _run_cli(args: argparse.Namespace) -> int:
    if args.list_only:
        return _run_list_only(args)
    lmdb = getattr(args, "lmdb", None)
    if lmdb and (args.s1_dir or args.s2_dir):
        raise ValueError("bigearthnet: give either --lmdb (the ConfigILM LMDB) or --s1-dir / --s2-dir (GeoTIFF "
                         "folders), not both")
    if not ((args.s2_dir or lmdb) and args.output_dir):
        raise ValueError("bigearthnet: --s2-dir and --output-dir are required (and --s1-dir for S1/S2 pairs; or "
                         "--lmdb instead of both), or use --list-only")
    _require_extra("lmdb" if lmdb else "rasterio")
    from datasets_scripts.common import export_builder

    output_existed = Path(args.output_dir).exists()
    cache_dir = args.cache_dir or tempfile.mkdtemp(prefix="crjepa-bigearthnet-")
    try:
        builder = BigEarthNetMM(
            s1_dir=args.s1_dir, s2_dir=args.s2_dir, subset=args.subset, reben_metadata=args.reben_metadata,
            lmdb=lmdb, strict=args.strict, s2_resampling=args.s2_resampling, cache_dir=cache_dir,
            keep_unpaired=getattr(args, "keep_unpaired", False), split_by=getattr(args, "split_by", None) or "official",
            block_km=getattr(args, "block_km", 50.0), split_seed=getattr(args, "split_seed", 0),
            split_fractions=tuple(getattr(args, "split_fractions", (0.8, 0.1, 0.1))),
        )  # fmt: skip
        plan = builder.plan()  # fail fast (no pair present, strict) before any worker starts
        num_proc = min(args.num_proc or os.cpu_count() or 1, max(1, len(plan.tasks) // 2))
        output_dir = Path(
            export_builder(
                builder, args.output_dir, push_to_hub=args.push_to_hub, card=dataset_card(builder.config),
                num_proc=num_proc, overwrite=bool(getattr(args, "overwrite", False)),
            )  # fmt: skip
            or args.output_dir
        )
        report = builder.conversion_report(written_ids=_exported_ids(output_dir))
    finally:
        if not args.cache_dir:
            shutil.rmtree(cache_dir, ignore_errors=True)
    print(report.summary())
    if not sum(report.converted.values()):
        if not output_existed:  # an empty export must not look like a result
            shutil.rmtree(output_dir, ignore_errors=True)
        for err in list(report.skipped.values())[:3]:
            print(f"skipped: {err}", file=sys.stderr)
        print(f"error: every pair was skipped; nothing written to {args.output_dir}", file=sys.stderr)
        return 1
    return 0


def _main() -> int:
    """Stand-alone entry (`python -m datasets_scripts.bigearthnet ...`) while the dispatcher is not there."""
    parser = argparse.ArgumentParser(prog="python -m datasets_scripts.bigearthnet")
    add_cli(parser.add_subparsers(dest="command", required=True))
    args = parser.parse_args()
    return args.func(args)


if __name__ == "__main__":
    raise SystemExit(_main())


__all__ = [
    "BigEarthNetConfig", "BigEarthNetError", "BigEarthNetMM", "ConversionPlan", "ConversionReport", "S1_BANDS",
    "S2_BANDS", "S2_NATIVE_SIZE", "add_cli", "check_band_files", "detect_layout", "find_reben_metadata", "dataset_card", "SPLIT_PROTOCOLS", "resplit", "spatial_group", "features", "metadata_list", "plan_conversion", "read_band",
    "read_pair", "read_s1", "read_s2", "run_cli", "lmdb_keys", "read_s1_lmdb", "read_s2_lmdb", "upsample_band",
]  # fmt: skip
