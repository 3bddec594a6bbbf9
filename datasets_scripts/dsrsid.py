"""DSRSID (dual-source remote sensing image dataset): GaoFen-1 panchromatic (1 x 256 x 256, 2 m) and
multispectral (4 x 64 x 64, 8 m) pairs over 8 land-cover classes, 10,000 pairs per class.

Two layouts circulate and both are read:

- PNG folders: ``<root>/Pandata/<class>/*.png`` (8-bit grey) and ``<root>/Muldata/<class>/*.png`` (the 4
  bands stored as an 8-bit RGBA PNG). Pairs are matched by position in natural file-name order within a
  class (the two folders of a class must hold the same number of files). Class names are the folder names,
  sorted.
- HDF5 / MATLAB v7.3 ``.mat``: ``PAN_IMAGES`` (N, 1, 256, 256), ``MUL_IMAGES`` (N, 4, 64, 64) and
  ``LAND_COVER_TYPES`` (1..8), read with h5py (MATLAB's transposed (256, 256, 1, N) order is accepted too).
  Class names: ``class_names`` (default `DSRSID_CLASSES`, in the order of the ids; an assumption, since the
  file stores only numbers).

Splits: the paper gives none. Default = the public protocol: in each class, in index order, the LAST 625
pairs are test and the rest (9,375) train. ``test_per_class`` / ``validation_per_class`` (counts, or
fractions < 1) and ``split_seed`` (shuffle within each class first) change it.
"""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import datasets
import numpy as np

from .common import DataError, PairedBuilder, Record, SensorSpec, conform, list_images, split_by_class

DSRSID_CLASSES: tuple[str, ...] = (
    "aquafarm",
    "cloud",
    "forest",
    "high building",
    "low building",
    "farm land",
    "river",
    "water",
)
"""Class names for the .mat variant, ids 1..8 in this order (an assumption; pass class_names to change)."""
PUBLIC_TEST_PER_CLASS = 625
SENSORS: dict[str, int] = {"pan": 1, "ms": 4}


@dataclass
class DSRSIDConfig(datasets.BuilderConfig):
    """data_dir: a folder with Pandata/ and Muldata/, or an HDF5 .mat file."""

    test_per_class: float = PUBLIC_TEST_PER_CLASS
    validation_per_class: float = 0
    split_seed: int | None = None
    class_names: tuple[str, ...] | None = None


class DSRSID(PairedBuilder):
    """`datasets` builder for DSRSID (PNG folders or HDF5 .mat)."""

    BUILDER_CONFIG_CLASS = DSRSIDConfig
    BUILDER_CONFIGS = [DSRSIDConfig(name="default")]
    METADATA = ("source_file",)
    CARD = {
        "pretty_name": "DSRSID (GaoFen-1 PAN / MS pairs)",
        "license": "other",
        "description": "Dual-source remote sensing image dataset: GaoFen-1 panchromatic (1x256x256, 2 m) and "
        "multispectral (4x64x64, 8 m) image pairs over 8 land-cover classes; relevance = same class.",
        "source": "Li et al., 'Learning source-invariant deep hashing convolutional neural networks for "
        "cross-source remote sensing image retrieval', IEEE TGRS 2018. Split: per class the last 625 "
        "pairs (index order) are test, the rest train (public protocol; the CR-JEPA paper gives none).",
        "tags": ["gaofen-1", "panchromatic", "multispectral"],
    }

    # -- layout -------------------------------------------------------------------------------------------
    def _is_mat(self) -> bool:
        return self._root().is_file()

    def _class_names(self) -> list[str]:
        if self.config.class_names:
            return list(self.config.class_names)
        if self._is_mat():
            return list(DSRSID_CLASSES)
        return sorted(p.name for p in (self._root() / "Pandata").iterdir() if p.is_dir())

    def _records(self) -> list[Record]:
        pairs = self._mat_pairs() if self._is_mat() else self._png_pairs()
        keys_by_class: dict[int, list[str]] = {}
        for rec in pairs:
            keys_by_class.setdefault(rec.labels[0], []).append(rec.id)
        cfg = self.config
        splits = split_by_class(keys_by_class, cfg.test_per_class, cfg.validation_per_class, cfg.split_seed)
        for rec in pairs:
            rec.split = splits[rec.id]
        return pairs

    def _png_pairs(self) -> list[Record]:
        root = self._root()
        for sub in ("Pandata", "Muldata"):
            if not (root / sub).is_dir():
                raise DataError(
                    f"DSRSID folder {root} has no {sub}/ (expected {root}/Pandata/<class>/ and "
                    f"{root}/Muldata/<class>/, or pass the .mat file)"
                )
        records = []
        for cid, cls in enumerate(self._class_names()):
            pan, ms = (
                list_images(root / "Pandata" / cls),
                (list_images(root / "Muldata" / cls) if (root / "Muldata" / cls).is_dir() else []),
            )
            if len(pan) != len(ms):
                raise DataError(
                    f"DSRSID class {cls!r}: {len(pan)} PAN images in {root / 'Pandata' / cls} but "
                    f"{len(ms)} MS images in {root / 'Muldata' / cls}; pairs are matched by index"
                )
            for p, m in zip(pan, ms):
                records.append(
                    Record(
                        f"{cls}/{p.stem}",
                        {"pan": p, "ms": m},
                        [cid],
                        "",
                        {"source_file": f"{p.relative_to(root)}|{m.relative_to(root)}"},
                    )
                )
        return records

    # -- HDF5 .mat ----------------------------------------------------------------------------------------
    @staticmethod
    def _mat_array(h5: Any, key: str, n: int | None = None) -> Any:
        if key not in h5:
            raise DataError(f"{h5.filename}: no {key!r} array (found {sorted(h5.keys())})")
        return h5[key]

    def _mat_pairs(self) -> list[Record]:
        import h5py

        path = self._root()
        try:
            with h5py.File(path, "r") as h5:
                types = np.asarray(self._mat_array(h5, "LAND_COVER_TYPES")).astype(np.int64).ravel()
                n = len(types)
                for key, channels in (("PAN_IMAGES", 1), ("MUL_IMAGES", 4)):
                    shape = self._mat_array(h5, key).shape
                    if len(shape) != 4 or n not in (shape[0], shape[-1]):
                        raise DataError(
                            f"{path}: {key} has shape {shape}; expected (N, {channels}, H, W) with "
                            f"N = {n} entries of LAND_COVER_TYPES"
                        )
        except OSError as exc:
            raise DataError(f"Cannot read DSRSID .mat file {path} as HDF5 (MATLAB v7.3): {exc}") from exc
        names = self._class_names()
        if types.min() < 1 or types.max() > len(names):
            raise DataError(f"{path}: LAND_COVER_TYPES must lie in 1..{len(names)}, found {types.min()}..{types.max()}")
        return [
            Record(
                f"{names[t - 1]}/{i:06d}",
                {"pan": ("PAN_IMAGES", i), "ms": ("MUL_IMAGES", i)},
                [int(t) - 1],
                "",
                {"source_file": f"{path.name}#{i}"},
            )
            for i, t in enumerate(types)
        ]

    def _sensor_specs(self) -> dict[str, SensorSpec]:
        if not self._is_mat():
            return super()._sensor_specs()
        import h5py

        with h5py.File(self._root(), "r") as h5:
            n = h5["LAND_COVER_TYPES"].size
            specs = {}
            for sensor, key in (("pan", "PAN_IMAGES"), ("ms", "MUL_IMAGES")):
                ds = h5[key]
                shape = ds.shape[1:] if ds.shape[0] == n else ds.shape[:3][::-1]
                specs[sensor] = SensorSpec(tuple(int(s) for s in shape), np.dtype(ds.dtype).name)
        return specs

    def _validate(self, records: list[Record]) -> None:
        if not self._is_mat():  # a .mat has one shape per array, checked in _mat_pairs/_sensor_specs
            super()._validate(records)

    def _generate_examples(self, records: list[Record]) -> Iterator[tuple[str, dict[str, Any]]]:
        if not self._is_mat():
            yield from super()._generate_examples(records)
            return
        import h5py

        specs = self._sensor_specs()
        path = self._root()
        chunk = 256
        with h5py.File(path, "r") as h5:
            n = h5["LAND_COVER_TYPES"].size
            for start in range(0, len(records), chunk):
                part = records[start : start + chunk]
                idx = np.array([r.sources["pan"][1] for r in part])
                runs = np.split(idx, np.flatnonzero(np.diff(idx) != 1) + 1)  # contiguous runs: one read each
                arrays = {}
                for sensor, key in (("pan", "PAN_IMAGES"), ("ms", "MUL_IMAGES")):
                    ds = h5[key]
                    arrays[sensor] = np.concatenate(
                        [
                            ds[r[0] : r[-1] + 1]
                            if ds.shape[0] == n
                            else np.asarray(ds[..., r[0] : r[-1] + 1]).transpose(3, 2, 1, 0)
                            for r in runs
                        ]
                    )
                for j, rec in enumerate(part):
                    row = {s: conform(arrays[s][j], specs[s], f"{path}#{rec.sources[s][1]}", s) for s in specs}
                    yield (
                        rec.id,
                        {
                            "id": rec.id,
                            **row,
                            "labels": rec.labels,
                            "split": rec.split,
                            "source_file": rec.metadata["source_file"],
                        },
                    )


BUILDER_CLASS = DSRSID


def add_cli(subparsers: Any) -> None:
    """Register the ``dsrsid`` subcommand."""
    from .common import add_export_arguments

    p = subparsers.add_parser(
        "dsrsid", help="DSRSID GaoFen-1 PAN/MS pairs (PNG folders or .mat)", description=__doc__.split("\n\n")[0]
    )
    p.add_argument("data", help="folder with Pandata/ and Muldata/, or the HDF5 .mat file")
    from crjepa.utils.arguments import int_in, number_in

    p.add_argument(
        "--test-per-class",
        type=number_in(0, 1e9),
        default=PUBLIC_TEST_PER_CLASS,
        help="test pairs per class: a count, or a fraction < 1 (default 625: the public protocol)",
    )
    p.add_argument("--validation-per-class", type=number_in(0, 1e9), default=0)
    p.add_argument(
        "--split-seed", type=int_in(0, 2**32 - 1), default=None, help="shuffle within each class before splitting"
    )
    p.add_argument("--class-names", nargs="+", default=None, help="class names for ids 1..8 (.mat variant)")
    add_export_arguments(p)
    p.set_defaults(func=run_cli)


def run_cli(args: Any) -> int:
    """Run the ``dsrsid`` subcommand."""
    from .common import run_export

    return run_export(
        DSRSID,
        args,
        data_dir=str(Path(args.data).resolve()),
        test_per_class=_num(args.test_per_class),
        validation_per_class=_num(args.validation_per_class),
        split_seed=args.split_seed,
        class_names=tuple(args.class_names) if args.class_names else None,
    )


def _num(x: float) -> int | float:
    """CLI numbers: whole numbers are counts, others fractions."""
    return int(x) if float(x).is_integer() and x >= 1 else float(x)
