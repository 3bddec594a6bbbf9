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

Modules: `reading` (band GeoTIFFs, LMDB entries, a planned pair into a row), `layouts` (v1 / v2 detection and the
subset hints), `plans` (which pairs of a subset are present, missing or unusable), `splits` (tile / block
re-splits), `builder` (the `datasets` builder, its schema, report and card), `cli` (the subcommand).
"""

from __future__ import annotations

from datasets_scripts.bigearthnet.builder import (
    SUMMARY,
    BigEarthNetConfig,
    BigEarthNetMM,
    ConversionReport,
    dataset_card,
    features,
)
from datasets_scripts.bigearthnet.cli import add_cli, run_cli
from datasets_scripts.bigearthnet.layouts import ALL_SUBSETS, REBEN, detect_layout, find_reben_metadata
from datasets_scripts.bigearthnet.plans import ConversionPlan, metadata_list, plan_conversion
from datasets_scripts.bigearthnet.reading import (
    PATCH_SIZE,
    S2_NATIVE_SIZE,
    S2_RESAMPLINGS,
    BigEarthNetError,
    BigEarthNetNotFoundError,
    MissingExtraError,
    PairTask,
    check_band_files,
    lmdb_keys,
    read_band,
    read_pair,
    read_s1,
    read_s1_lmdb,
    read_s2,
    read_s2_lmdb,
    upsample_band,
)
from datasets_scripts.bigearthnet.splits import SPLIT_PROTOCOLS, resplit, spatial_group

BUILDER_CLASS = BigEarthNetMM
"""The builder `crjepa.data.loading` builds for the data source ``bigearthnet`` (crjepa.data.schema.BUILDER_MODULES)."""

__all__ = [
    "ALL_SUBSETS", "BUILDER_CLASS", "PATCH_SIZE", "REBEN", "S2_NATIVE_SIZE", "S2_RESAMPLINGS", "SPLIT_PROTOCOLS",
    "SUMMARY", "BigEarthNetConfig", "BigEarthNetError", "BigEarthNetMM", "BigEarthNetNotFoundError",
    "ConversionPlan", "ConversionReport", "MissingExtraError", "PairTask", "add_cli", "check_band_files",
    "dataset_card", "detect_layout", "features", "find_reben_metadata", "lmdb_keys", "metadata_list",
    "plan_conversion", "read_band", "read_pair", "read_s1", "read_s1_lmdb", "read_s2", "read_s2_lmdb", "resplit",
    "run_cli", "spatial_group", "upsample_band",
]  # fmt: skip
