"""BigEarthNet v1 metadata: class nomenclature, official splits, exclusions and the BEN-14K subset.

Everything here is computed from metadata alone (no imagery, no rasterio, no `datasets`), so the BEN-14K
list of the CR-JEPA paper can be reproduced and checked anywhere in about a second.

The metadata files (bz2 CSVs) ship inside the PyPI package `bigearthnet-common` 2.8.0. We only READ its data
files: importing that package's code needs an old pydantic, so we locate its folder with
`importlib.util.find_spec`, which does not execute it.

BEN-14K rule (docs/PAPER.md): pairs whose country is Serbia and whose S2 acquisition date, taken from the S2 patch
name, is on or before 2017-08-31 (14,834 pairs), minus the official exclusions (seasonal snow, cloud/shadow,
no 19-class label: 2 pairs) = 14,832, with the official train/val/test split. The `season` column of the
metadata CSV is derived from the S1 date and mislabels 115 of these pairs as autumn, so it is never used here.
"""

from __future__ import annotations

import bz2
import datetime as dt
import hashlib
import importlib.util
from functools import lru_cache
from pathlib import Path
from typing import NamedTuple

from crjepa.data.schema import DataError
from crjepa.errors import CRJepaError

# The official BigEarthNet-19 nomenclature, in the order of the official label_indices.json
# (Sumbul et al., "BigEarthNet-MM", IEEE GRSM 2021); class ids in our datasets are indices into this tuple.
BEN19_CLASSES: tuple[str, ...] = (
    "Urban fabric",
    "Industrial or commercial units",
    "Arable land",
    "Permanent crops",
    "Pastures",
    "Complex cultivation patterns",
    "Land principally occupied by agriculture, with significant areas of natural vegetation",
    "Agro-forestry areas",
    "Broad-leaved forest",
    "Coniferous forest",
    "Mixed forest",
    "Natural grassland and sparsely vegetated areas",
    "Moors, heathland and sclerophyllous vegetation",
    "Transitional woodland, shrub",
    "Beaches, dunes, sands",
    "Inland wetlands",
    "Coastal wetlands",
    "Inland waters",
    "Marine waters",
)

# The 43 CORINE Land Cover level-3 names used in BigEarthNet v1 JSONs -> BigEarthNet-19 name, or None for the
# 11 classes the official nomenclature drops (artificial classes other than urban fabric and industrial units,
# bare rock, burnt areas, intertidal flats). Checked against label_indices.json ("label_conversion") and
# bigearthnet-common's OLD2NEW_LABELS_DICT; "Glaciers and perpetual snow" never occurs in BigEarthNet.
CLC43_TO_BEN19: dict[str, str | None] = {
    "Continuous urban fabric": "Urban fabric",
    "Discontinuous urban fabric": "Urban fabric",
    "Industrial or commercial units": "Industrial or commercial units",
    "Road and rail networks and associated land": None,
    "Port areas": None,
    "Airports": None,
    "Mineral extraction sites": None,
    "Dump sites": None,
    "Construction sites": None,
    "Green urban areas": None,
    "Sport and leisure facilities": None,
    "Non-irrigated arable land": "Arable land",
    "Permanently irrigated land": "Arable land",
    "Rice fields": "Arable land",
    "Vineyards": "Permanent crops",
    "Fruit trees and berry plantations": "Permanent crops",
    "Olive groves": "Permanent crops",
    "Pastures": "Pastures",
    "Annual crops associated with permanent crops": "Permanent crops",
    "Complex cultivation patterns": "Complex cultivation patterns",
    "Land principally occupied by agriculture, with significant areas of natural vegetation": (
        "Land principally occupied by agriculture, with significant areas of natural vegetation"
    ),
    "Agro-forestry areas": "Agro-forestry areas",
    "Broad-leaved forest": "Broad-leaved forest",
    "Coniferous forest": "Coniferous forest",
    "Mixed forest": "Mixed forest",
    "Natural grassland": "Natural grassland and sparsely vegetated areas",
    "Moors and heathland": "Moors, heathland and sclerophyllous vegetation",
    "Sclerophyllous vegetation": "Moors, heathland and sclerophyllous vegetation",
    "Transitional woodland/shrub": "Transitional woodland, shrub",
    "Beaches, dunes, sands": "Beaches, dunes, sands",
    "Bare rock": None,
    "Sparsely vegetated areas": "Natural grassland and sparsely vegetated areas",
    "Burnt areas": None,
    "Inland marshes": "Inland wetlands",
    "Peatbogs": "Inland wetlands",
    "Salt marshes": "Coastal wetlands",
    "Salines": "Coastal wetlands",
    "Intertidal flats": None,
    "Water courses": "Inland waters",
    "Water bodies": "Inland waters",
    "Coastal lagoons": "Marine waters",
    "Estuaries": "Marine waters",
    "Sea and ocean": "Marine waters",
}

# Split names: `datasets` convention in dataset rows, official CSV file stems in the BEN-14K list file
# (docs/PAPER.md's md5 0fcce0ed... is reproduced with train/val/test, not with "validation").
SPLITS: tuple[str, ...] = ("train", "validation", "test")
UNASSIGNED = "unassigned"
LIST_SPLIT_NAMES: dict[str, str] = {"train": "train", "validation": "val", "test": "test"}

SUBSETS: tuple[str, ...] = ("ben14k", "recommended", "all")
BEN14K_COUNTRY = "Serbia"
BEN14K_LAST_S2_DATE = dt.date(2017, 8, 31)

# Official exclusion lists (S2 patch names) and the reason each stands for.
EXCLUSION_FILES: dict[str, str] = {
    "seasonal snow": "patches_with_seasonal_snow.csv.bz2",
    "cloud or shadow": "patches_with_cloud_and_shadow.csv.bz2",
    "no 19-class label": "patches_with_no_19_class_targets.csv.bz2",
}


class BigEarthNetMetadataError(CRJepaError, RuntimeError):
    """The BigEarthNet metadata files are missing or not what we expect."""


class PairMeta(NamedTuple):
    """One S1/S2 pair as the metadata knows it; `split` is train/validation/test/unassigned."""

    s2_name: str
    s1_name: str
    country: str | None
    split: str


def metadata_dir() -> Path:
    """Folder of bigearthnet-common's data files, found without importing (executing) the package."""
    spec = importlib.util.find_spec("bigearthnet_common")
    if spec is None or not spec.submodule_search_locations:
        raise BigEarthNetMetadataError(
            "BigEarthNet metadata not found: install the PyPI package bigearthnet-common==2.8.0 "
            '(pip install "crjepa[bigearthnet]"); only its CSV files are read.'
        )
    return Path(list(spec.submodule_search_locations)[0])


def _read_lines(file_name: str) -> list[str]:
    """Non-empty lines of one bz2 metadata file."""
    path = metadata_dir() / file_name
    if not path.is_file():
        raise BigEarthNetMetadataError(f"BigEarthNet metadata file missing: {path}")
    with bz2.open(path, "rt", encoding="utf-8") as f:
        return [line.strip() for line in f if line.strip()]


@lru_cache(maxsize=1)
def all_pairs() -> tuple[PairMeta, ...]:
    """All 590,326 BigEarthNet v1 pairs with country and official split (unassigned if excluded)."""
    header, *lines = _read_lines("s1_s2_name_country_season.csv.bz2")
    if header.split(",")[:3] != ["s1_name", "s2_name", "country"]:
        raise BigEarthNetMetadataError(f"unexpected header in s1_s2_name_country_season.csv.bz2: {header!r}")
    splits = official_splits()
    pairs = []
    for line in lines:  # names and countries hold no commas or quotes: plain split is exact and 5x faster
        s1_name, s2_name, country = line.split(",")[:3]
        pairs.append(PairMeta(s2_name, s1_name, country or None, splits.get(s2_name, UNASSIGNED)))
    return tuple(pairs)


@lru_cache(maxsize=1)
def official_splits() -> dict[str, str]:
    """S2 patch name -> train/validation/test, from the official train/val/test CSVs."""
    splits: dict[str, str] = {}
    for split in SPLITS:
        for name in _read_lines(f"{LIST_SPLIT_NAMES[split]}.csv.bz2"):
            splits[name] = split
    return splits


@lru_cache(maxsize=1)
def excluded_patches() -> dict[str, str]:
    """S2 patch name -> reason, for every patch on an official exclusion list."""
    excluded: dict[str, str] = {}
    for reason, file_name in EXCLUSION_FILES.items():
        for name in _read_lines(file_name):
            excluded.setdefault(name, reason)
    return excluded


def s2_date(s2_name: str) -> dt.date:
    """Acquisition date from an S2 patch name such as S2A_MSIL2A_20170613T101031_87_48 (v1) or reBEN's."""
    try:
        stamp = s2_name.split("_")[2]
        return dt.date(int(stamp[0:4]), int(stamp[4:6]), int(stamp[6:8]))
    except (IndexError, ValueError) as err:
        raise DataError(f"not a Sentinel-2 patch name (expected S2X_MSIL2A_YYYYMMDDThhmmss_...): {s2_name!r}") from err


def is_ben14k(pair: PairMeta) -> bool:
    """docs/PAPER.md's BEN-14K rule before exclusions: Serbia, S2 date (from the name) <= 2017-08-31."""
    return pair.country == BEN14K_COUNTRY and s2_date(pair.s2_name) <= BEN14K_LAST_S2_DATE


def subset_pairs(subset: str) -> list[PairMeta]:
    """Pairs of a BigEarthNet v1 subset per metadata: ben14k, recommended (official 519,284) or all."""
    if subset not in SUBSETS:
        raise DataError(f"unknown BigEarthNet subset {subset!r}; expected one of {', '.join(SUBSETS)}")
    pairs = all_pairs()
    if subset == "all":
        return list(pairs)
    excluded = excluded_patches()
    kept = [p for p in pairs if p.s2_name not in excluded]
    return [p for p in kept if is_ben14k(p)] if subset == "ben14k" else kept


def ben14k_pairs() -> list[tuple[str, str, str]]:
    """The paper's BEN-14K: (s2_name, s1_name, split) rows, split in train/validation/test, sorted by s2_name."""
    return sorted((p.s2_name, p.s1_name, p.split) for p in subset_pairs("ben14k"))


def pair_list_bytes(rows: list[tuple[str, str, str]]) -> bytes:
    """The list file `s2_name,s1_name,split` (official split names train/val/test), LF, LC_ALL=C sorted."""
    lines = sorted(f"{s2},{s1},{LIST_SPLIT_NAMES.get(split, split)}\n".encode() for s2, s1, split in rows)
    return b"".join(lines)


def pair_list_md5(rows: list[tuple[str, str, str]]) -> str:
    """md5 of `pair_list_bytes(rows)`: docs/PAPER.md gives 0fcce0ed1b79a7432f9e9ea5f9888b90 for BEN-14K."""
    return hashlib.md5(pair_list_bytes(rows)).hexdigest()


def to_ben19(labels_43: list[str], where: str = "") -> list[str]:
    """Map CLC level-3 names to BigEarthNet-19 names (sorted by class id, deduplicated, dropped ones removed).

    Names already in the 19-class nomenclature (reBEN metadata) pass through. Unknown names raise, naming `where`.
    """
    out: set[str] = set()
    for name in labels_43:
        if name in CLC43_TO_BEN19:
            mapped = CLC43_TO_BEN19[name]
            if mapped is not None:
                out.add(mapped)
        elif name in BEN19_CLASSES:
            out.add(name)
        else:
            raise DataError(f"{where}: unknown land-cover label {name!r} (not a CLC level-3 or BigEarthNet-19 name)")
    return sorted(out, key=BEN19_CLASSES.index)
