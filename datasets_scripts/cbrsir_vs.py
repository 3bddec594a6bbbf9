"""CBRSIR_VS: RGB optical (3 x 256 x 256, 1 m) and Sentinel-1 SAR intensity (1 x 64 x 64, 10 m) pairs,
10 classes, 26,901 pairs (CR-JEPA paper). No public layout is known, so crjepa defines this one:

    <root>/optical/<class>/<stem>.png|.tif      RGB image
    <root>/sar/<class>/<stem>.png|.tif          SAR image of the same place (same <stem>)
    <root>/splits.csv                           optional: header ``id,split``; id = ``<class>/<stem>``

Pairs are matched by identical file stem within a class; an image without a partner is an error naming it.
Class names are the class folder names, sorted. Shapes and dtypes are taken from the first pair and every
other pair must match. Without splits.csv the split is deterministic: in each class (stems in natural order,
shuffled with ``split_seed``) 20 % test, 10 % validation, the rest train. Pairs missing from a given
splits.csv are ``unassigned``.
"""

from __future__ import annotations

import csv
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import datasets

from .common import SPLITS, DataError, PairedBuilder, Record, list_images, split_by_class

SENSORS: dict[str, int] = {"rgb": 3, "sar": 1}


@dataclass
class CBRSIRConfig(datasets.BuilderConfig):
    """data_dir: the root folder of the layout above."""

    test_fraction: float = 0.2
    validation_fraction: float = 0.1
    split_seed: int | None = 0


class CBRSIRVS(PairedBuilder):
    """`datasets` builder for CBRSIR_VS in the crjepa layout."""

    BUILDER_CONFIG_CLASS = CBRSIRConfig
    BUILDER_CONFIGS = [CBRSIRConfig(name="default")]
    CARD = {
        "pretty_name": "CBRSIR_VS (RGB optical / Sentinel-1 SAR pairs)",
        "license": "other",
        "description": "RGB optical (3x256x256, 1 m) and Sentinel-1 SAR intensity (1x64x64, 10 m) image pairs "
        "over 10 classes; relevance = same class.",
        "source": "Layout defined by crjepa (optical/<class>/<stem>, sar/<class>/<stem>, optional splits.csv).",
        "tags": ["sar", "optical", "sentinel-1"],
    }

    def _class_names(self) -> list[str]:
        root = self._root()
        if not (root / "optical").is_dir() or not (root / "sar").is_dir():
            raise DataError(f"CBRSIR_VS folder {root} must hold optical/<class>/ and sar/<class>/")
        return sorted(p.name for p in (root / "optical").iterdir() if p.is_dir())

    def _records(self) -> list[Record]:
        root = self._root()
        records: list[Record] = []
        keys_by_class: dict[int, list[str]] = {}
        for cid, cls in enumerate(self._class_names()):
            optical = {p.stem: p for p in list_images(root / "optical" / cls)}
            sar_dir = root / "sar" / cls
            sar = {p.stem: p for p in list_images(sar_dir)} if sar_dir.is_dir() else {}
            for stem in sorted(set(optical) ^ set(sar)):
                have = optical.get(stem) or sar.get(stem)
                other = sar_dir if stem in optical else root / "optical" / cls
                raise DataError(f"{have} has no partner named {stem}.* in {other}")
            for stem, path in optical.items():
                rec = Record(f"{cls}/{stem}", {"rgb": path, "sar": sar[stem]}, [cid], "")
                records.append(rec)
                keys_by_class.setdefault(cid, []).append(rec.id)
        splits_csv = root / "splits.csv"
        if splits_csv.is_file():
            given = _read_splits(splits_csv)
            ids = {r.id for r in records}
            unknown = sorted(set(given) - ids)
            if unknown:
                raise DataError(
                    f"{splits_csv} names {len(unknown)} ids with no image pair, e.g. {unknown[0]!r}; "
                    f"ids are <class>/<stem>"
                )
            for rec in records:
                rec.split = given.get(rec.id, "unassigned")
        else:
            cfg = self.config
            splits = split_by_class(keys_by_class, cfg.test_fraction, cfg.validation_fraction, cfg.split_seed)
            for rec in records:
                rec.split = splits[rec.id]
        return records


def _read_splits(path: Path) -> dict[str, str]:
    """id -> split from a CSV with header id,split."""
    with open(path, newline="", encoding="utf-8") as f:
        reader = csv.DictReader(f)
        if not reader.fieldnames or not {"id", "split"} <= set(reader.fieldnames):
            raise DataError(f"{path}: needs a header with columns id,split (found {reader.fieldnames})")
        out = {}
        for line, row in enumerate(reader, start=2):
            if row["split"] not in SPLITS:
                raise DataError(f"{path} line {line}: unknown split {row['split']!r}; use one of {', '.join(SPLITS)}")
            out[row["id"]] = row["split"]
    return out


BUILDER_CLASS = CBRSIRVS


def add_cli(subparsers: Any) -> None:
    """Register the ``cbrsir_vs`` subcommand."""
    from .common import add_export_arguments

    p = subparsers.add_parser(
        "cbrsir_vs", help="CBRSIR_VS RGB/SAR pairs (optical/<class>, sar/<class>)", description=__doc__.split("\n\n")[0]
    )
    p.add_argument("data", help="root folder holding optical/<class>/ and sar/<class>/ (and splits.csv)")
    from crjepa.utils.arguments import int_in, number_in

    p.add_argument("--test-fraction", type=number_in(0, 1), default=0.2)
    p.add_argument("--validation-fraction", type=number_in(0, 1), default=0.1)
    p.add_argument("--split-seed", type=int_in(0, 2**32 - 1), default=0)
    add_export_arguments(p)
    p.set_defaults(func=run_cli)


def run_cli(args: Any) -> int:
    """Run the ``cbrsir_vs`` subcommand."""
    from .common import run_export

    return run_export(
        CBRSIRVS,
        args,
        data_dir=str(Path(args.data).resolve()),
        test_fraction=args.test_fraction,
        validation_fraction=args.validation_fraction,
        split_seed=args.split_seed,
    )
