"""Planning a conversion: which pairs of a subset are on disk (or in the LMDB), which are missing, which are
unusable before any pixel is read. Pairing goes through the metadata (bigearthnet-common's lists for v1, reBEN's
metadata.parquet for v2) or, for v1 `all`, through each S1 patch's JSON."""

from __future__ import annotations

import os
from dataclasses import dataclass, field
from pathlib import Path

from crjepa.data.schema import DataError
from datasets_scripts.ben_metadata import UNASSIGNED, all_pairs, subset_pairs, to_ben19
from datasets_scripts.bigearthnet.layouts import (
    ALL_SUBSETS,
    REBEN,
    V1,
    detect_layout,
    find_reben_metadata,
    subset_hint,
)
from datasets_scripts.bigearthnet.reading import (
    BigEarthNetError,
    BigEarthNetNotFoundError,
    PairTask,
    lmdb_keys,
    read_json,
)

MetadataPair = tuple[str, str, str | None, str, list[str] | None]
"""(s2_name, s1_name, country, split, 19-class labels or None) of one pair as the metadata lists it."""


@dataclass
class ConversionPlan:
    """What a build will read: pairs present on disk, pairs of the subset absent, pairs unusable before reading."""

    subset: str
    subset_size: int
    tasks: list[PairTask] = field(default_factory=list)
    missing: list[str] = field(default_factory=list)
    skipped: dict[str, BigEarthNetError] = field(default_factory=dict)


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
    """The folder argument `what` (s1_dir, s2_dir, lmdb) as a Path, refused when absent or not a folder."""
    if not path:
        raise DataError(f"BigEarthNet: {what} is required")
    root = Path(path)
    if not root.is_dir():
        raise BigEarthNetNotFoundError(f"BigEarthNet: {what} {root} is not a folder")
    return root


def _plan_from_metadata(
    subset: str,
    pairs: list[MetadataPair],
    s1_root: Path | None,
    s2_root: Path,
    keep_unpaired: bool = False,
    lmdb: Path | None = None,
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
    plan = ConversionPlan(subset, len(pairs))

    def add(
        s2_name: str,
        s1_name: str | None,
        s2_folder: Path | None,
        s1_folder: Path | None,
        split: str,
        country: str | None,
        labels: list[str] | None,
    ) -> None:
        task: PairTask = {"s2_name": s2_name, "s1_name": s1_name,
                          "s2_folder": str(s2_folder) if s2_folder is not None else None,
                          "s1_folder": str(s1_folder) if s1_folder is not None else None, "split": split,
                          "country": country, "labels": labels, "layout": layout}  # fmt: skip
        if lmdb is not None:
            task["lmdb"] = str(lmdb)
        plan.tasks.append(task)

    for s2_name, s1_name, country, split, labels in pairs:
        s2_folder, s1_folder = s2_index.get(s2_name), s1_index.get(s1_name)
        if s1_root is None:
            if s2_folder is None:
                plan.missing.append(s2_name)
            else:
                add(s2_name, None, s2_folder, None, split, country, labels)
        elif s2_folder is None and s1_folder is None:
            plan.missing.append(s2_name)
        elif keep_unpaired or (s2_folder is not None and s1_folder is not None):
            add(s2_name, s1_name, s2_folder, s1_folder, split, country, labels)
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
        rows: list[MetadataPair] = [
            (
                s2,
                known[s2].s1_name if s2 in known else "",
                known[s2].country if s2 in known else None,
                known[s2].split if s2 in known else UNASSIGNED,
                None,
            )
            for s2 in sorted(s2_names)
        ]
        sub = _plan_from_metadata("all", rows, None, s2_root)
        plan.tasks = sub.tasks
        plan.missing = [s2 for s2 in known if s2 not in s2_names]
        return plan
    s1_names = sorted(e.name for e in os.scandir(s1_root) if e.is_dir())
    found: list[MetadataPair] = []
    for s1_name in tqdm(s1_names, desc="pairing S1 patches via their JSON", unit="patch"):
        try:
            meta = read_json(s1_root / s1_name / f"{s1_name}_labels_metadata.json", s1_name)
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
                {
                    "s2_name": s2_name,
                    "s1_name": None,
                    "s2_folder": str(s2_root / s2_name),
                    "s1_folder": None,
                    "split": pair.split if pair else UNASSIGNED,
                    "country": pair.country if pair else None,
                    "labels": None,
                    "layout": "v1",
                }  # fmt: skip
            )
            continue
        plan.skipped[s2_name] = BigEarthNetError(
            "S1 partner missing", f"patch {s2_name}: no S1 patch under {s1_root} names it as its partner"
        )
    present = named | s2_names
    plan.missing = [s2 for s2 in known if s2 not in present]
    return plan


def reben_metadata_pairs(path: Path) -> list[MetadataPair]:
    """(patch_id, s1_name, country, split, 19-class labels) from reBEN's metadata.parquet."""
    import pyarrow.parquet as pq

    if not path.is_file():
        raise BigEarthNetNotFoundError(
            f"reBEN metadata file not found: {path} (pass reben_metadata=.../metadata.parquet)"
        )
    table = pq.read_table(path)
    needed = {"patch_id", "s1_name", "labels", "split", "country"}
    if not needed <= set(table.column_names):
        raise DataError(
            f"{path}: columns {sorted(needed - set(table.column_names))} missing; found {table.column_names}"
        )
    aliases = {"val": "validation", "validation": "validation", "train": "train", "test": "test"}
    rows: list[MetadataPair] = []
    for r in table.select(sorted(needed)).to_pylist():
        labels = to_ben19(list(r["labels"] or []), where=f"{path.name}, patch {r['patch_id']}")
        rows.append((r["patch_id"], r["s1_name"], r["country"], aliases.get(r["split"], UNASSIGNED), labels))
    return rows


def plan_conversion(
    subset: str,
    s1_dir: str | None,
    s2_dir: str | None,
    reben_metadata: str | os.PathLike | None = None,
    keep_unpaired: bool = False,
    lmdb: str | None = None,
) -> ConversionPlan:
    """Which pairs of `subset` are present, missing, or unusable before any GeoTIFF is read.

    ``s1_dir=None`` plans an S2-only archive (every S2 patch of the subset present under s2_dir); with
    `keep_unpaired`, half pairs are planned as single-sensor rows. ``lmdb``: the ConfigILM LMDB folder instead
    of the two folders (subset reben; its metadata.parquet is found beside it).
    """
    if subset not in ALL_SUBSETS:
        raise DataError(f"unknown BigEarthNet subset {subset!r}; expected one of {', '.join(ALL_SUBSETS)}")
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
                raise BigEarthNetNotFoundError(f"BigEarthNet reben: {subset_hint(subset, s1_root, s2_root, None)}")
            if not reben_metadata:
                raise DataError(
                    f"subset 'reben' needs reBEN's metadata.parquet: pass --reben-metadata PATH (none found beside "
                    f"or in {s2_root})"
                )
            pairs = reben_metadata_pairs(Path(reben_metadata))
        else:
            pairs = [(p.s2_name, p.s1_name, p.country, p.split, None) for p in subset_pairs(subset)]
        plan = _plan_from_metadata(subset, pairs, s1_root, s2_root, keep_unpaired)
    if not plan.tasks:
        half = next(iter(plan.skipped.values()), None)
        example = f" For example: {half}." if half is not None else ""
        raise BigEarthNetNotFoundError(
            f"BigEarthNet {subset}: none of its {plan.subset_size:,} pairs is present"
            + (" with both patches" if s1_root is not None else "")
            + f" ({len(plan.skipped)} half pairs).{example} "
            + subset_hint(subset, s1_root, s2_root, reben_metadata)
        )
    return plan


def _plan_lmdb(subset: str, lmdb: str, reben_metadata: str | os.PathLike | None, keep_unpaired: bool) -> ConversionPlan:
    """The pairs of reBEN's metadata whose patches are keys of the ConfigILM LMDB folder ``lmdb``."""
    if subset != REBEN:
        raise DataError(f"--lmdb holds BigEarthNet v2 (reBEN) patches: use --subset reben, not {subset!r}")
    root = _check_dir(lmdb, "lmdb")
    if not (root / "data.mdb").is_file():
        raise BigEarthNetNotFoundError(
            f"BigEarthNet: {root} is not an LMDB folder (no data.mdb); --lmdb takes the "
            "BigEarthNet-V2-LMDB folder of the ConfigILM distribution"
        )
    metadata = reben_metadata or find_reben_metadata(root)
    if not metadata:
        raise DataError(
            f"subset 'reben' needs reBEN's metadata.parquet: pass --reben-metadata PATH (none found "
            f"beside or in {root})"
        )
    pairs = reben_metadata_pairs(Path(metadata))
    plan = _plan_from_metadata(subset, pairs, root, root, keep_unpaired, lmdb=root)
    if not plan.tasks:
        keys = sorted(lmdb_keys(root))
        half = next(iter(plan.skipped.values()), None)
        raise BigEarthNetNotFoundError(
            f"BigEarthNet reben: none of the {plan.subset_size:,} pairs of {metadata} is in the LMDB {root} with "
            f"both patches ({len(keys):,} entries, e.g. {keys[:2]}; {len(plan.skipped)} half pairs"
            + (f", for example: {half}" if half is not None else "")
            + ")"
        )
    return plan


def metadata_list(subset: str, reben_metadata: str | None = None) -> list[tuple[str, str, str]]:
    """(s2_name, s1_name, split) of a subset from metadata alone (no imagery needed)."""
    if subset == REBEN:
        if not reben_metadata:
            raise DataError("--list-only with --subset reben needs --reben-metadata")
        return sorted((s2, s1, split) for s2, s1, _, split, _ in reben_metadata_pairs(Path(reben_metadata)))
    return sorted((p.s2_name, p.s1_name, p.split) for p in subset_pairs(subset))
