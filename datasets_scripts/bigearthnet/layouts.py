"""The BigEarthNet layouts on disk and the subsets that fit them: v1 (patch folders directly under the folder, one
JSON per patch) or v2 / reBEN (patch folders nested one level, by product / tile, with reBEN's metadata.parquet
beside them), and in words why a `--subset` found nothing under the folders it was given."""

from __future__ import annotations

import os
from pathlib import Path

from datasets_scripts.ben_metadata import SUBSETS, subset_pairs

REBEN = "reben"
"""The subset of BigEarthNet v2 (reBEN): every pair its metadata.parquet lists."""
ALL_SUBSETS: tuple[str, ...] = (*SUBSETS, REBEN)

V1, V2 = "v1", "v2"
LAYOUT_NAMES = {
    V1: "BigEarthNet v1 (patch folders directly under the folder, one JSON per patch)",
    V2: "BigEarthNet v2 / reBEN (patch folders nested one level, by product / tile)",
}


def _has_band_files(folder: str | os.PathLike, name: str) -> bool:
    """Whether `folder` holds band GeoTIFFs of the patch `name` (a 10 m S2 band or an S1 polarisation)."""
    return any(os.path.exists(os.path.join(folder, f"{name}_{b}.tif")) for b in ("B02", "B04", "VV", "VH"))


def detect_layout(root: Path, sample: int = 50) -> tuple[str | None, list[str]]:
    """(V1, V2 or None, patch names seen) of a BigEarthNet S1 or S2 folder, from its first entries.

    v1: ``root/<patch>/<patch>_B02.tif``; v2 (reBEN): ``root/<product>/<patch>/<patch>_B02.tif``.
    """
    v1: list[str] = []
    v2: list[str] = []
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


def subset_hint(subset: str, s1_root: Path | None, s2_root: Path, reben_metadata: str | os.PathLike | None) -> str:
    """Why a subset found nothing, in words: the layout found and the --subset (and options) that fit it."""
    layout, _ = detect_layout(s2_root)
    where = f"s2_dir={s2_root}" + (f", s1_dir={s1_root}" if s1_root is not None else "")
    if layout is None:
        return (
            f"No BigEarthNet patch folder found under {where}: --s2-dir must be the folder holding the S2 "
            "patch folders (v1: BigEarthNet-v1.0/<patch>/<patch>_B02.tif; v2: BigEarthNet-S2/<product>/<patch>/"
            "<patch>_B02.tif), --s1-dir the same for S1."
        )
    found = f"Found the {LAYOUT_NAMES[layout]} layout under {where}."
    if layout == V2 and subset != REBEN:
        meta = find_reben_metadata(s2_root)
        return f"{found} --subset {subset} lists BigEarthNet v1 patches; for v2 data use --subset reben" + (
            f" (its metadata {meta} is found automatically)." if meta else " --reben-metadata <reBEN metadata.parquet>."
        )
    if layout == V1 and subset == REBEN:
        return (
            f"{found} --subset reben is for v2 data; for v1 use --subset all (every pair found), recommended or ben14k."
        )
    if layout == V1 and subset in SUBSETS and subset != "all":
        s2_names = {e.name for e in os.scandir(s2_root) if e.is_dir()}
        fits = {name: sum(p.s2_name in s2_names for p in subset_pairs(name)) for name in SUBSETS if name != "all"}
        counts = ", ".join(f"{name}: {n}" for name, n in fits.items())
        return (
            f"{found} None of its {len(s2_names):,} S2 patches is in {subset} (patches per subset: {counts}); "
            f"--subset all converts every pair found."
        )
    return found


def find_reben_metadata(s2_dir: str | os.PathLike) -> Path | None:
    """reBEN's metadata.parquet when it lies beside or inside the S2 folder (as bigearth.net's download unpacks)."""
    root = Path(s2_dir)
    for candidate in (root / "metadata.parquet", root.parent / "metadata.parquet"):
        if candidate.is_file():
            return candidate
    return None
