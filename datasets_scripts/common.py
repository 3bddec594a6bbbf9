"""Shared data machinery: the one row schema, the image readers, split rules, a base builder and Parquet/Hub export.

Every builder in this package writes rows with the same schema (docs/CONTRACTS.md): ``id``, one
``Array3D(C, H, W)`` column per sensor at native size and dtype, ``labels`` (list of class ids with the class
names in the features), ``split`` and string metadata columns. `paired_features` is the only place that schema
is spelled out; `read_image` / `probe_image` (crjepa.data.images, re-exported here) are the only image readers.
"""

from __future__ import annotations

import logging
import os
import random
import shutil
import tempfile
from collections.abc import Iterable, Iterator, Mapping, Sequence
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import datasets
import numpy as np

from crjepa.data.images import IMAGE_SUFFIXES, NPY_SUFFIXES, PNG_SUFFIXES, TIFF_SUFFIXES, probe_image, read_image  # noqa: F401
from crjepa.data.schema import SPLITS, DataError, SensorSpec, paired_features  # the schema's one home
from crjepa.hub.access import HubError, prepare_push, upload_folder
from crjepa.hub.cards import render_dataset_card
from crjepa.utils.arguments import int_in, number_in, repo_id

logger = logging.getLogger(__name__)


PublishError = HubError
"""Pushing to the Hugging Face Hub failed (no network, no token, no rights): crjepa.hub.access.HubError."""


# ----------------------------------------------------------------------------------------------------------
# Checking images against the schema (the readers themselves live in crjepa.data.images)
# ----------------------------------------------------------------------------------------------------------
def check_spec(found: SensorSpec, expected: SensorSpec, source: str, sensor: str) -> None:
    """Raise a DataError naming the file and sensor if a shape differs or a dtype cannot be cast safely."""
    if tuple(found.shape) != tuple(expected.shape):
        raise DataError(
            f"{source} (sensor {sensor!r}): expected shape {tuple(expected.shape)}, found {tuple(found.shape)}"
        )
    if not np.can_cast(np.dtype(found.dtype), np.dtype(expected.dtype), "safe"):
        raise DataError(
            f"{source} (sensor {sensor!r}): expected dtype {expected.dtype} (or one that casts safely to it), "
            f"found {found.dtype}"
        )


def conform(arr: np.ndarray, spec: SensorSpec, source: str, sensor: str) -> np.ndarray:
    """Check an image against its sensor's spec and cast it safely (e.g. uint8 -> uint16)."""
    check_spec(SensorSpec(tuple(arr.shape), arr.dtype.name), spec, source, sensor)
    return arr if arr.dtype == np.dtype(spec.dtype) else arr.astype(spec.dtype)


def list_images(folder: Path) -> list[Path]:
    """Image files directly inside a folder, sorted by natural order of their stems (2 before 10)."""
    files = [p for p in folder.iterdir() if p.is_file() and p.suffix.lower() in IMAGE_SUFFIXES]
    return sorted(files, key=lambda p: natural_key(p.stem))


def natural_key(text: str) -> tuple:
    """Sort key that orders embedded numbers numerically ("img2" < "img10")."""
    import re

    return tuple(int(t) if t.isdigit() else t for t in re.split(r"(\d+)", text))


# ----------------------------------------------------------------------------------------------------------
# Splits
# ----------------------------------------------------------------------------------------------------------
def _count(n: int, amount: int | float) -> int:
    """An absolute count per class (int) or a fraction of the class (float < 1)."""
    if isinstance(amount, float) and amount < 1:
        return int(round(n * amount))
    return int(amount)


def split_by_class(
    keys_by_class: Mapping[Any, Sequence[str]],
    test: int | float,
    validation: int | float = 0,
    seed: int | None = None,
) -> dict[str, str]:
    """Deterministic per-class split: in each class (keys in index order, or shuffled with ``seed``) the LAST
    ``test`` keys are test, the ``validation`` keys before them validation, the rest train. Counts are per
    class (int) or fractions (float < 1)."""
    out: dict[str, str] = {}
    for cls, keys in keys_by_class.items():
        keys = list(keys)
        if seed is not None:
            random.Random(f"{seed}-{cls}").shuffle(keys)
        n = len(keys)
        n_test = min(n, _count(n, test))
        n_val = min(n - n_test, _count(n, validation))
        n_train = n - n_test - n_val
        for i, key in enumerate(keys):
            out[key] = "train" if i < n_train else "validation" if i < n_train + n_val else "test"
    return out


SPLIT_BY: tuple[str, ...] = ("tile", "block")
"""Spatial split protocols of `split_by_group` (the recommended ones for archives without official splits, and
next to the official splits when neighbouring patches must not sit on both sides of a train/test line)."""
DEFAULT_SPLIT_FRACTIONS: dict[str, float] = {"train": 0.8, "validation": 0.1, "test": 0.1}
KM_PER_DEGREE = 111.32
"""Kilometres per degree of latitude (and of longitude at the equator), for `block_key`."""


def split_by_group(
    groups: Mapping[str, str], fractions: Mapping[str, float] | Sequence[float] | None = None, seed: int = 0
) -> dict[str, str]:
    """Assign whole groups (tiles, spatial blocks) to splits: ``groups`` maps row id -> group key, the result row
    id -> split. Every row of a group lands in the same split, so neighbouring patches (same tile or block)
    never sit on both sides of a train/test line. Groups are visited in an order shuffled by ``seed`` (from the
    sorted keys, so the result depends only on the keys and the seed) and each goes to the split furthest below
    its target share of rows (``fractions``: {split: share} or (train, validation, test); default 0.8/0.1/0.1).
    Deterministic."""
    if fractions is None:
        fractions = DEFAULT_SPLIT_FRACTIONS
    if not isinstance(fractions, Mapping):
        fractions = dict(zip(("train", "validation", "test"), fractions))
    bad = [s for s in fractions if s not in SPLITS]
    if bad or any(float(v) < 0 for v in fractions.values()) or not sum(fractions.values()) > 0:
        raise DataError(f"split fractions {dict(fractions)}: need shares >= 0 (not all 0) for splits in {SPLITS}")
    total_share = sum(float(v) for v in fractions.values())
    targets = {s: float(v) / total_share for s, v in fractions.items() if float(v) > 0}
    members: dict[str, list[str]] = {}
    for row_id, key in groups.items():
        members.setdefault(str(key), []).append(row_id)
    keys = sorted(members)
    random.Random(f"split-by-group-{seed}").shuffle(keys)
    counts = dict.fromkeys(targets, 0)
    out: dict[str, str] = {}
    done = 0
    for key in keys:
        rows = members[key]
        # the split with the largest deficit after this group is added (ties: the order of `targets`)
        split = max(targets, key=lambda s: targets[s] * (done + len(rows)) - counts[s])
        counts[split] += len(rows)
        done += len(rows)
        out.update((row_id, split) for row_id in rows)
    empty = [s for s in targets if not counts[s]]
    if empty and keys:
        logger.warning(
            "spatial split: the %s rows lie in %s group(s) (tiles or blocks), and a whole group goes to "
            "one split, so %s got no rows; use smaller groups (--split-by block --block-km 10) or the official "
            "splits, or train with an evaluation split that has rows",
            f"{done:,}",
            f"{len(keys):,}",
            " and ".join(repr(s) for s in empty),
        )
    return out


def block_key(lat: float, lon: float, block_km: float) -> str:
    """Key of the ``block_km`` x ``block_km`` cell holding (lat, lon) in degrees: rows of equal latitude span,
    columns of ``block_km`` along each row's centre latitude (so cells stay near-square away from the poles)."""
    import math

    if not block_km > 0:
        raise DataError(f"block size must be > 0 km, got {block_km}")
    step = block_km / KM_PER_DEGREE
    row = math.floor(lat / step)
    centre = math.radians((row + 0.5) * step)
    col = math.floor(lon * KM_PER_DEGREE * max(math.cos(centre), 1e-6) / block_km)
    return f"{row}_{col}"


# ----------------------------------------------------------------------------------------------------------
# Base builder for file-backed paired sets
# ----------------------------------------------------------------------------------------------------------
@dataclass
class Record:
    """One pair before reading: its id, a source per sensor (a path, or anything `_load` understands),
    class ids, split and metadata strings."""

    id: str
    sources: dict[str, Any]
    labels: list[int]
    split: str
    metadata: dict[str, str] = field(default_factory=dict)


class PairedBuilder(datasets.GeneratorBasedBuilder):
    """Base for file-backed paired builders. Subclasses give `_sensor_specs`, `_class_names` and `_records`
    (an index of the pairs, cheap: no pixels read). The base validates every file's header before writing
    anything (so one bad file fails fast, naming it), then reads and writes rows split by split."""

    CARD: dict[str, Any] = {}
    """Card facts: pretty_name, license, description, citation, source (used by `export_builder`)."""
    METADATA: tuple[str, ...] | dict[str, str] = ()
    """Metadata columns: names (strings), or {name: datasets dtype} ("int64", "float64", "string")."""

    # -- to implement -------------------------------------------------------------------------------------
    def _keep_unpaired(self) -> bool:
        """True: a record may lack sensors (source None); its row holds a null value there."""
        return False

    def _class_names(self) -> list[str]:
        raise NotImplementedError

    def _records(self) -> list[Record]:
        """Index of all pairs (paths, labels, split), built without reading pixels."""
        raise NotImplementedError

    def _sensor_specs(self) -> dict[str, SensorSpec]:
        """Shape and dtype per sensor; by default those of the first record that has the sensor (every other
        must match)."""
        specs: dict[str, SensorSpec] = {}
        for rec in self._index():
            for sensor, source in rec.sources.items():
                if sensor not in specs and source is not None:
                    specs[sensor] = self._probe(source)
        return specs

    def _probe(self, source: Any) -> SensorSpec:
        """Header-only shape of one source; override for non-file sources."""
        return probe_image(source)

    def _load(self, source: Any) -> np.ndarray:
        """Pixels of one source; override for non-file sources."""
        return read_image(source)

    def _index(self) -> list[Record]:
        """`_records`, computed once per builder."""
        if getattr(self, "_cached_records", None) is None:
            records = self._records()
            if not records:
                raise DataError(f"{type(self).__name__}: no image pairs found under {self.config.data_dir}")
            self._cached_records = records
        return self._cached_records

    # -- datasets plumbing --------------------------------------------------------------------------------
    def _root(self) -> Path:
        if not self.config.data_dir:
            raise DataError(f"{type(self).__name__} needs data_dir=<folder with the raw data>")
        root = Path(self.config.data_dir).expanduser()
        if not root.exists():
            raise DataError(f"Data folder not found: {root}")
        return root

    def _info(self) -> datasets.DatasetInfo:
        return datasets.DatasetInfo(
            description=self.CARD.get("description", ""),
            citation=self.CARD.get("citation", ""),
            homepage=self.CARD.get("homepage", ""),
            license=self.CARD.get("license", ""),
            features=paired_features(self._sensor_specs(), self._class_names(), self.METADATA),
        )

    def _split_generators(self, dl_manager: Any) -> list[datasets.SplitGenerator]:
        records = self._index()
        self._validate(records)
        by_split: dict[str, list[Record]] = {}
        for rec in records:
            if rec.split not in SPLITS:
                raise DataError(f"Pair {rec.id!r}: unknown split {rec.split!r}; use one of {', '.join(SPLITS)}")
            by_split.setdefault(rec.split, []).append(rec)
        return [datasets.SplitGenerator(name=s, gen_kwargs={"records": by_split[s]}) for s in SPLITS if s in by_split]

    def _validate(self, records: list[Record]) -> None:
        """Check every source's header (shape, dtype) and that ids are unique, before any row is written."""
        specs = self._sensor_specs()
        seen: set[str] = set()
        for rec in _progress(records, desc="Checking files"):
            if rec.id in seen:
                raise DataError(f"Duplicate pair id {rec.id!r}")
            seen.add(rec.id)
            for sensor, spec in specs.items():
                if rec.sources.get(sensor) is None:
                    if self._keep_unpaired() and any(v is not None for v in rec.sources.values()):
                        continue
                    raise DataError(f"Pair {rec.id!r} has no {sensor!r} image")
                check_spec(self._probe(rec.sources[sensor]), spec, str(rec.sources[sensor]), sensor)

    def _generate_examples(self, records: list[Record]) -> Iterator[tuple[str, dict[str, Any]]]:
        specs = self._sensor_specs()
        for rec in records:
            row: dict[str, Any] = {"id": rec.id}
            for sensor, spec in specs.items():
                source = rec.sources.get(sensor)
                row[sensor] = None if source is None else conform(self._load(source), spec, str(source), sensor)
            row["labels"] = list(rec.labels)
            row["split"] = rec.split
            types = self.METADATA if isinstance(self.METADATA, Mapping) else dict.fromkeys(self.METADATA, "string")
            for column, dtype in types.items():
                row[column] = typed_value(rec.metadata.get(column, ""), dtype)
            yield rec.id, row


NUMERIC_TYPES = {"int64": int, "float64": float}


def infer_column_type(values: Iterable[str]) -> str:
    """The datasets dtype of a text metadata column: "int64" when every non-empty value is an integer (without a
    leading zero, which an id like "007" would lose), "float64" when every one is a number, else "string"."""
    filled = [v.strip() for v in values if v is not None and v.strip()]
    if not filled:
        return "string"
    for dtype, cast in NUMERIC_TYPES.items():
        try:
            for value in filled:
                cast(value)
        except ValueError:
            continue
        if dtype == "int64" and any(len(v.lstrip("+-")) > 1 and v.lstrip("+-").startswith("0") for v in filled):
            return "string"
        return dtype
    return "string"


def typed_value(value: Any, dtype: str) -> Any:
    """A metadata value as its column's dtype: numbers parsed, an empty cell None (null); strings as they are."""
    if dtype not in NUMERIC_TYPES:
        return "" if value is None else str(value)
    if value is None or (isinstance(value, str) and not value.strip()):
        return None
    return NUMERIC_TYPES[dtype](value)


def _progress(items: Sequence[Any], desc: str) -> Iterable[Any]:
    """A tqdm bar on long work, silent on short lists."""
    if len(items) < 2000:
        return items
    from tqdm.auto import tqdm

    return tqdm(items, desc=desc, unit="file")


# ----------------------------------------------------------------------------------------------------------
# Export: Parquet shards + dataset card, atomically; optional push to the Hub
# ----------------------------------------------------------------------------------------------------------
def export_builder(
    builder: datasets.DatasetBuilder,
    output_dir: str | os.PathLike,
    push_to_hub: str | None = None,
    card: Mapping[str, Any] | None = None,
    num_proc: int | None = None,
    token: str | None = None,
    api: Any = None,
    overwrite: bool = False,
    max_shard_size: str | int = "500MB",
) -> Path:
    """Prepare a builder and export it as a Hub-ready folder: ``data/<split>-NNNNN-of-NNNNN.parquet`` and a
    README.md dataset card. Work happens in a temp folder next to ``output_dir`` that is renamed at the end,
    so a failure never leaves a half-written output. With ``push_to_hub="user/repo"`` credentials are checked
    (and the repo created) first, then the folder is uploaded with ``upload_folder(repo_type="dataset")``;
    ``api`` injects a Hub client (tests). Conversion uses ``num_proc`` processes (default: all cores)."""
    output_dir = Path(output_dir).expanduser().resolve()
    if output_dir.exists() and any(output_dir.iterdir()) and not overwrite:
        raise DataError(f"Output folder {output_dir} exists and is not empty; remove it or pass overwrite=True")
    if push_to_hub:
        api, _ = prepare_push(push_to_hub, repo_type="dataset", token=token, api=api)
    card = dict(card or getattr(builder, "CARD", {}) or {})
    from crjepa.utils.atomic import atomic_dir  # the one atomic-folder mechanism of the project

    with atomic_dir(output_dir, kind="dataset-export", overwrite=overwrite) as tmp:
        work = tmp / "_work"  # datasets also writes lock files next to its output folder
        prepared = work / "prepared"
        num_proc = num_proc if num_proc is not None else (os.cpu_count() or 1)
        # Parquet without content-defined chunking: with it, pyarrow (26) aborts the whole process when a write fails
        # (a full disk: "Check failed: _s.ok() ... WriteArrowDense"), so nothing could clean up or say why
        cdc, datasets.config.DEFAULT_CDC_OPTIONS = datasets.config.DEFAULT_CDC_OPTIONS, False
        try:
            with _quiet_num_proc_fallback():
                builder.download_and_prepare(
                    output_dir=str(prepared),
                    file_format="parquet",
                    num_proc=num_proc if num_proc > 1 else None,
                    max_shard_size=max_shard_size,
                )
        except datasets.exceptions.DatasetGenerationError as exc:
            cause = exc.__cause__
            if isinstance(cause, DataError):
                raise DataError(str(cause)) from None
            raise
        finally:
            datasets.config.DEFAULT_CDC_OPTIONS = cdc
        data_dir = tmp / "data"
        data_dir.mkdir()
        splits: dict[str, int] = {}
        prepared_splits = list(builder.info.splits or {})
        for split in [s for s in SPLITS if s in prepared_splits] + [s for s in prepared_splits if s not in SPLITS]:
            files = sorted(prepared.glob(f"*-{split}.parquet")) + sorted(prepared.glob(f"*-{split}-*.parquet"))
            for i, f in enumerate(files):
                f.rename(data_dir / f"{split}-{i:05d}-of-{len(files):05d}.parquet")
            splits[split] = builder.info.splits[split].num_examples
        shutil.rmtree(work)
        info = builder.info.copy()  # datasets' own metadata: split sizes (rows, bytes) and the Parquet size
        info.download_size = sum(f.stat().st_size for f in data_dir.glob("*.parquet"))
        info.dataset_size = sum(split.num_bytes for split in info.splits.values())
        (tmp / "README.md").write_text(render_dataset_card(info, None, card, push_to_hub), encoding="utf-8")
    logger.info("Exported %s to %s", dict(splits), output_dir)
    if push_to_hub:
        upload_folder(
            api,
            output_dir,
            push_to_hub,
            repo_type="dataset",
            token=token,
            commit_message=f"Upload {card.get('pretty_name', 'dataset')} (crjepa)",
        )
    return output_dir


@contextmanager
def _quiet_num_proc_fallback() -> Iterator[None]:
    """Drop datasets' "Setting num_proc from N back to 1 for the X split ..." lines (logged twice per split that has
    a single shard): the conversion is right either way, and a user cannot act on them."""

    def keep(record: logging.LogRecord) -> bool:
        return not str(record.msg).startswith("Setting num_proc from")

    builder_logger = logging.getLogger("datasets.builder")
    builder_logger.addFilter(keep)
    try:
        yield
    finally:
        builder_logger.removeFilter(keep)


# ----------------------------------------------------------------------------------------------------------
# CLI helpers shared by the builders' subcommands
# ----------------------------------------------------------------------------------------------------------
def add_export_arguments(parser: Any) -> None:
    """--output-dir, --push-to-hub, --token, --num-proc, --overwrite, --cache-dir for a builder subcommand."""
    parser.add_argument("--output-dir", required=True, help="folder to write Parquet shards + README.md into")
    parser.add_argument(
        "--push-to-hub", metavar="USER/REPO", type=repo_id, default=None, help="also upload as a Hub dataset"
    )
    parser.add_argument("--token", default=None, help="Hub token (default: the logged-in one)")
    parser.add_argument(
        "--num-proc", type=int_in(1, 1024), default=None, help="conversion processes (default: all cores)"
    )
    parser.add_argument("--overwrite", action="store_true", help="replace an existing output folder")


def add_split_arguments(parser: Any, choices: Sequence[str] = SPLIT_BY) -> None:
    """--split-by, --block-km, --split-seed, --split-fractions (spatial splits, see `split_by_group`)."""
    parser.add_argument(
        "--split-by",
        choices=list(choices),
        default=None,
        help="re-split so that a tile / spatial block never sits in two splits (recommended)",
    )
    parser.add_argument(
        "--block-km",
        type=number_in(0, 10_000, low_open=True),
        default=50.0,
        help="block side in km for --split-by block",
    )
    parser.add_argument(
        "--split-seed", type=int_in(0, 2**32 - 1), default=0, help="seed of the group shuffle of --split-by"
    )
    parser.add_argument(
        "--split-fractions",
        type=number_in(0, 1),
        nargs=3,
        default=[0.8, 0.1, 0.1],
        metavar=("TRAIN", "VALIDATION", "TEST"),
        help="target shares of rows per split",
    )


def run_export(builder_cls: type, args: Any, **config: Any) -> int:
    """Build ``builder_cls(**config)`` in a throwaway cache and export it as the CLI arguments say. A disk that is
    full or read-only is one line on stderr and exit code 2; errors a person can fix (`CRJepaError`) propagate to
    the entry point (``python -m datasets_scripts``), which prints them as one line."""
    import gc
    import sys

    from crjepa.errors import CRJepaError
    from crjepa.utils.atomic import check_not_inside

    try:
        for value in config.values():  # the output never lies in (or holds) the files it is built from
            if isinstance(value, (str, os.PathLike)) and str(value) and Path(value).exists():
                check_not_inside(args.output_dir, value, what="--output-dir")
        with tempfile.TemporaryDirectory(prefix="crjepa-build-") as cache:
            builder = builder_cls(cache_dir=cache, **config)
            out = export_builder(
                builder,
                args.output_dir,
                push_to_hub=args.push_to_hub,
                num_proc=args.num_proc,
                token=args.token,
                overwrite=args.overwrite,
            )
            # release the builder's Arrow tables (and the reader threads behind them) now, while Arrow is alive: left
            # to the interpreter's final teardown they can abort the finished process ("terminate called without an
            # active exception", apache/arrow#34314, huggingface/datasets#7566; seen once under load in CI)
            del builder
            gc.collect()
    except CRJepaError:  # an occupied output (a FileExistsError too) is not a disk problem
        raise
    except OSError as exc:  # a full or read-only disk: the old output (if any) is intact, no temp folder is left
        where = f"{exc.filename}: " if exc.filename else ""
        print(f"error: {where}{exc.strerror or exc}; free space or choose a writable --output-dir", file=sys.stderr)
        return 2
    print(
        f"Wrote {out}"
        + (f" and pushed to https://huggingface.co/datasets/{args.push_to_hub}" if args.push_to_hub else "")
    )
    return 0
