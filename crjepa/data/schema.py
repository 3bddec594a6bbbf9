"""The row schema every data set of crjepa shares, defined once (docs/CONTRACTS.md).

``id`` (str), one ``Array3D(C, H, W)`` column per sensor at native size and dtype, ``labels`` (class ids),
``split`` and metadata strings. Builders (datasets_scripts) write it; loaders, evaluation and the CLI read it.
Also the registry of built-in data sources (the builders of datasets_scripts, by module name). Imports no torch
(and `datasets` only when the schema is built).
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

from crjepa.errors import CRJepaError

if TYPE_CHECKING:  # datasets is imported on use: the schema's constants and DataError stay instant to import
    import datasets

SPLITS: tuple[str, ...] = ("train", "validation", "test", "unassigned")
"""Split names used in the ``split`` column, in the order splits are written."""

S2_BANDS: tuple[str, ...] = ("B01", "B02", "B03", "B04", "B05", "B06", "B07", "B08", "B8A", "B09", "B11", "B12")
"""Channel order of every ``s2`` column (Sentinel-2 L2A as in BigEarthNet; B10 is not part of L2A). The model's
presets (modeling_crjepa.configuration_crjepa, which cannot import the application) spell the same order in
``band_names["s2"]``; a test ties the two."""
S1_BANDS: tuple[str, ...] = ("VV", "VH")
"""Channel order of every ``s1`` column (Sentinel-1 polarisations, dB)."""


class DataError(CRJepaError, ValueError):
    """Bad input data, with a message a person can act on (file, sensor, expected vs found)."""


SYNTHETIC_OPTIONS: dict[str, tuple[type, float, float]] = {
    "num_train": (int, 0, 1_000_000),
    "num_validation": (int, 0, 1_000_000),
    "num_test": (int, 0, 1_000_000),
    "image_size": (int, 8, 512),
    "seed": (int, 0, 2**31 - 1),
    "pairing_rate": (float, 0, 1),
    "cache_dir": (str, 0, 0),
}
"""Options of the built-in synthetic data (type, low, high): run configs (``data.options``), `crjepa embed
synthetic` and archives that record their source are checked against them before anything is generated."""
SYNTHETIC_BUDGET = 4 << 30
"""The most bytes the synthetic pairs (built in memory, 14 channels at up to 4 bytes) may take."""


def check_synthetic_options(options: Mapping[str, Any], where: str = "the synthetic data options") -> None:
    """Raise DataError naming the first unknown, mistyped or out-of-range synthetic option, or a set of sizes whose
    pixels would not fit `SYNTHETIC_BUDGET`."""
    unknown = sorted(set(options) - set(SYNTHETIC_OPTIONS))
    if unknown:
        raise DataError(f"{where}: unknown option(s) {unknown}; the synthetic data takes {sorted(SYNTHETIC_OPTIONS)}")
    for key, value in options.items():
        kind, low, high = SYNTHETIC_OPTIONS[key]
        if kind is str:
            if value is not None and not isinstance(value, str):
                raise DataError(f"{where}: {key} must be a folder path, found {value!r}")
            continue
        number = isinstance(value, (int, float)) and not isinstance(value, bool)
        if not number or (kind is int and not float(value).is_integer()) or not low <= value <= high:
            what = "an integer" if kind is int else "a number"
            raise DataError(f"{where}: {key} must be {what} in [{low:g}, {high:g}], found {value!r}")
    size = int(options.get("image_size", 32))
    pairs = sum(int(options.get(f"num_{s}", 500)) for s in ("train", "validation", "test"))
    if pairs * size * size * 14 * 4 > SYNTHETIC_BUDGET:
        raise DataError(
            f"{where}: {pairs:,} pairs of {size}x{size} pixels would take more than "
            f"{SYNTHETIC_BUDGET >> 30} GiB in memory; use fewer pairs or a smaller image_size"
        )


BUILDER_MODULES: dict[str, str] = {
    "synthetic": "datasets_scripts.synthetic",
    "bigearthnet": "datasets_scripts.bigearthnet",
    "dsrsid": "datasets_scripts.dsrsid",
    "cbrsir_vs": "datasets_scripts.cbrsir_vs",
    "paired": "datasets_scripts.paired",
}
"""Data source name -> builder module (imported on use, so the application never imports the builders at import
time). Each module exposes ``add_cli(subparsers)`` and ``run_cli(args)`` (and usually ``BUILDER_CLASS``)."""


@dataclass(frozen=True)
class SensorSpec:
    """Native shape (C, H, W) and numpy dtype name of one sensor's images."""

    shape: tuple[int, int, int]
    dtype: str

    def describe(self) -> str:
        return f"{tuple(self.shape)} {self.dtype}"


def paired_features(
    sensors: Mapping[str, SensorSpec], class_names: Sequence[str], metadata: Sequence[str] | Mapping[str, str] = ()
) -> datasets.Features:
    """The row schema shared by all builders: id, one Array3D per sensor, labels, split, metadata columns (names:
    strings; a mapping gives each column's datasets dtype, e.g. {"lat": "float64", "tile": "string"})."""
    import datasets

    feats: dict[str, Any] = {"id": datasets.Value("string")}
    for name, spec in sensors.items():
        if len(spec.shape) != 3:
            raise DataError(f"Sensor {name!r}: images must be (C, H, W), got shape {spec.shape}")
        feats[name] = datasets.Array3D(shape=tuple(int(s) for s in spec.shape), dtype=spec.dtype)
    feats["labels"] = datasets.Sequence(datasets.ClassLabel(names=list(class_names)))
    feats["split"] = datasets.Value("string")
    types = dict(metadata) if isinstance(metadata, Mapping) else dict.fromkeys(metadata, "string")
    for column, dtype in types.items():
        feats[column] = datasets.Value(dtype)
    return datasets.Features(feats)


def sensor_columns(features: datasets.Features) -> list[str]:
    """Names of the image (Array3D) columns of a paired dataset, in schema order."""
    import datasets

    return [k for k, v in features.items() if isinstance(v, datasets.Array3D)]
