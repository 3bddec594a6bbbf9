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

class DataError(ValueError):
    """Bad input data, with a message a person can act on (file, sensor, expected vs found)."""


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
