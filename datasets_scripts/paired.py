"""Generic paired builder for your own two sensors, driven by one CSV.

    id,s1,s2,labels,split                       <- header: id, two sensor columns, labels, optional split
    p0001,s1/p0001.tif,s2/p0001.tif,Arable land;Pastures,train
    p0002,s1/p0002.npy,s2/p0002.npy,3,test

- Sensor names are the two columns after ``id`` that are not ``labels``/``split`` (or ``sensors=("a", "b")``);
  any other column is kept as a string metadata column.
- Paths are relative to the CSV's folder (or absolute). Formats: GeoTIFF (rasterio, (C, H, W)), PNG/JPEG
  (pillow, HWC converted to CHW) and .npy (numpy, (C, H, W) or (H, W), no pickles). Every file of a sensor
  must have the shape and dtype of that sensor's first file (a safe cast such as uint8 -> uint16 is allowed);
  a mismatch is an error naming the file, the sensor and both shapes.
- ``labels``: class names or integer ids joined by ``label_separator`` (default ``;``). Class names come from
  ``class_names`` (a list, or a text file with one name per line) or, if not given, from the CSV: the sorted
  set of names, or ``0..max`` when all labels are integers.
- ``split``: train / validation / test / unassigned; without the column every pair is ``train``.
- Partially paired archives: with ``keep_unpaired=True`` (``--keep-unpaired``) a sensor cell may be EMPTY: the row
  is kept with that sensor missing (a null value; the loader's presence mask says so). A row with no image at
  all is an error. Without the flag an empty cell is an error.
- Spatial splits (recommended when the CSV has no split of its own, or its split mixes neighbours):
  ``split_by="tile"`` (``--split-by tile``) puts every row of a ``tile`` column value in one split;
  ``split_by="block"`` (``--split-by block --block-km 50``) does the same for ``block_km`` square cells of the
  ``lat`` / ``lon`` columns (degrees). Whole groups go to train / validation / test in ``split_fractions``
  (default 0.8 / 0.1 / 0.1), shuffled by ``split_seed``: deterministic, and no tile or block is in two splits.
  Patches on either side of a block border can still differ in split: pick blocks much larger than a patch.
"""

from __future__ import annotations

import csv
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import datasets

from .common import SPLIT_BY, DataError, PairedBuilder, Record, block_key, infer_column_type, split_by_group

RESERVED = ("id", "labels", "split")


@dataclass
class PairedConfig(datasets.BuilderConfig):
    """csv_path: the pairs CSV; sensors, class_names, label_separator: see the module docstring."""

    csv_path: str | None = None
    sensors: tuple[str, ...] | None = None
    class_names: tuple[str, ...] | str | None = None
    label_separator: str = ";"
    keep_unpaired: bool = False
    split_by: str | None = None
    block_km: float = 50.0
    split_seed: int = 0
    split_fractions: tuple[float, ...] = (0.8, 0.1, 0.1)


class PairedFolder(PairedBuilder):
    """`datasets` builder for any two co-registered sensors listed in a CSV."""

    BUILDER_CONFIG_CLASS = PairedConfig
    BUILDER_CONFIGS = [PairedConfig(name="default")]
    CARD = {
        "pretty_name": "Paired remote-sensing images",
        "license": "other",
        "description": "Co-registered image pairs of two sensors, exported with crjepa's generic builder.",
    }

    def _keep_unpaired(self) -> bool:
        return bool(self.config.keep_unpaired)

    # -- CSV ----------------------------------------------------------------------------------------------
    def _csv(self) -> tuple[Path, list[str], list[dict[str, str]]]:
        if getattr(self, "_cached_csv", None) is None:
            if not self.config.csv_path:
                raise DataError(
                    "PairedFolder needs csv_path=<CSV with columns id,<sensor a>,<sensor b>,labels[,split]>"
                )
            path = Path(self.config.csv_path).expanduser().resolve()
            if not path.is_file():
                raise DataError(f"Pairs CSV not found: {path}")
            with open(path, newline="", encoding="utf-8") as f:
                reader = csv.DictReader(f)
                header = [h.strip() for h in (reader.fieldnames or [])]
                rows = [{k.strip(): (v or "").strip() for k, v in row.items() if k} for row in reader]
            for col in ("id", "labels"):
                if col not in header:
                    raise DataError(f"{path}: header {header} has no {col!r} column")
            self._cached_csv = (path, header, rows)
        return self._cached_csv

    def _sensor_names(self) -> list[str]:
        path, header, _ = self._csv()
        names = list(self.config.sensors) if self.config.sensors else [h for h in header if h not in RESERVED][:2]
        missing = [s for s in names if s not in header]
        if len(names) != 2 or missing:
            raise DataError(
                f"{path}: need exactly two sensor columns besides {RESERVED}; header is {header}"
                + (f", missing {missing}" if missing else "")
            )
        return names

    def _class_names(self) -> list[str]:
        names = self.config.class_names
        if isinstance(names, str):
            file = Path(names).expanduser()
            if not file.is_file():
                raise DataError(f"Class names file not found: {file}")
            return [line.strip() for line in file.read_text(encoding="utf-8").splitlines() if line.strip()]
        if names:
            return list(names)
        tokens = {t for row in self._csv()[2] for t in self._tokens(row["labels"])}
        if tokens and all(t.isdigit() for t in tokens):
            return [str(i) for i in range(max(int(t) for t in tokens) + 1)]
        return sorted(tokens)

    def _tokens(self, text: str) -> list[str]:
        return [t.strip() for t in text.split(self.config.label_separator) if t.strip()]

    def _records(self) -> list[Record]:
        path, header, rows = self._csv()
        sensors = self._sensor_names()
        names = self._class_names()
        lookup = {name: i for i, name in enumerate(names)}
        metadata = self._metadata_columns()
        records = []
        for line, row in enumerate(rows, start=2):
            labels = []
            for tok in self._tokens(row["labels"]):
                if tok in lookup:
                    labels.append(lookup[tok])
                elif tok.isdigit() and int(tok) < len(names):
                    labels.append(int(tok))
                else:
                    raise DataError(f"{path} line {line}: unknown label {tok!r}; classes are {names}")
            sources: dict[str, Path | None] = {}
            for s in sensors:
                if not row.get(s):
                    if not self.config.keep_unpaired:
                        raise DataError(
                            f"{path} line {line}: empty path for sensor {s!r} (pass --keep-unpaired / "
                            "keep_unpaired=True to keep rows that lack a sensor)"
                        )
                    sources[s] = None
                    continue
                p = Path(row[s]).expanduser()
                sources[s] = p if p.is_absolute() else path.parent / p
            if all(v is None for v in sources.values()):
                raise DataError(f"{path} line {line}: row {row['id']!r} has no image for any sensor {sensors}")
            records.append(
                Record(
                    row["id"],
                    sources,
                    sorted(set(labels)),
                    row.get("split") or "train",
                    {m: row.get(m, "") for m in metadata},
                )
            )
        for s in sensors:
            if records and all(r.sources[s] is None for r in records):
                raise DataError(f"{path}: no row has an image for sensor {s!r}")
        if self.config.split_by:
            self._spatial_split(path, rows, records)
        return records

    def _spatial_split(self, path: Path, rows: list[dict[str, str]], records: list[Record]) -> None:
        """Replace each record's split by the split of its tile / block (`split_by_group`)."""
        how = self.config.split_by
        if how not in SPLIT_BY:
            raise DataError(f"split_by must be one of {SPLIT_BY}, got {how!r}")
        groups: dict[str, str] = {}
        for line, (row, rec) in enumerate(zip(rows, records), start=2):
            if how == "tile":
                if not row.get("tile"):
                    raise DataError(f"{path} line {line}: --split-by tile needs a 'tile' value in every row")
                groups[rec.id] = row["tile"]
            else:
                try:
                    lat, lon = float(row["lat"]), float(row["lon"])
                except (KeyError, TypeError, ValueError):
                    raise DataError(
                        f"{path} line {line}: --split-by block needs numeric 'lat' and 'lon' columns "
                        f"(degrees), found lat={row.get('lat')!r} lon={row.get('lon')!r}"
                    ) from None
                groups[rec.id] = block_key(lat, lon, self.config.block_km)
        split = split_by_group(groups, self.config.split_fractions, self.config.split_seed)
        for rec in records:
            rec.split = split[rec.id]

    def _metadata_columns(self) -> dict[str, str]:
        """{column: datasets dtype} of the CSV's other columns: numbers (lat, lon, ...) typed, the rest strings."""
        _, header, rows = self._csv()
        sensors = self._sensor_names()
        return {
            h: infer_column_type(row.get(h, "") for row in rows)
            for h in header
            if h not in RESERVED and h not in sensors
        }

    def _info(self) -> datasets.DatasetInfo:
        self.METADATA = self._metadata_columns()
        return super()._info()


BUILDER_CLASS = PairedFolder


def add_cli(subparsers: Any) -> None:
    """Register the ``paired`` subcommand."""
    from .common import add_export_arguments, add_split_arguments

    p = subparsers.add_parser(
        "paired",
        help="your own two sensors, listed in a CSV (GeoTIFF / PNG / .npy)",
        description="Export pairs listed in a CSV: id,<sensor a>,<sensor b>,labels[,split].",
    )
    p.add_argument("csv", help="CSV with header id,<sensor a>,<sensor b>,labels[,split][,metadata...]")
    p.add_argument("--sensors", nargs=2, default=None, metavar=("A", "B"), help="sensor columns (default: header)")
    p.add_argument(
        "--class-names",
        nargs="+",
        default=None,
        help="class names in id order, or one path to a text file with one name per line",
    )
    p.add_argument("--label-separator", default=";")
    p.add_argument(
        "--keep-unpaired",
        action="store_true",
        help="keep rows with an empty sensor cell (that sensor is missing in the row)",
    )
    add_split_arguments(p)
    add_export_arguments(p)
    p.set_defaults(func=run_cli)


def run_cli(args: Any) -> int:
    """Run the ``paired`` subcommand."""
    from .common import run_export

    names = args.class_names
    if names and len(names) == 1 and Path(names[0]).is_file():
        names = names[0]
    elif names:
        names = tuple(names)
    return run_export(
        PairedFolder,
        args,
        csv_path=str(Path(args.csv).resolve()),
        sensors=tuple(args.sensors) if args.sensors else None,
        class_names=names,
        label_separator=args.label_separator,
        keep_unpaired=args.keep_unpaired,
        split_by=args.split_by,
        block_km=args.block_km,
        split_seed=args.split_seed,
        split_fractions=tuple(args.split_fractions),
    )
