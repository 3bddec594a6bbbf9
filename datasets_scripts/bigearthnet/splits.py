"""Spatial splits of a planned conversion: a whole MGRS tile, or a whole `block_km` square of the tile's 1.2 km
patch grid (the `_<row>_<col>` of the patch names), lands in one split, so that neighbouring patches never sit on
both sides of a train/test line. The grouping is BigEarthNet's (tiles and patch grids from the names); assigning
the groups to splits is the shared `datasets_scripts.common.split_by_group`."""

from __future__ import annotations

from pathlib import Path

from crjepa.data.schema import DataError
from datasets_scripts.ben_metadata import SPLITS
from datasets_scripts.bigearthnet.plans import ConversionPlan
from datasets_scripts.bigearthnet.reading import PATCH_SIZE, BigEarthNetError, PairTask, read_json, s1_tile, tile_of
from datasets_scripts.common import split_by_group

SPLIT_PROTOCOLS: tuple[str, ...] = ("official", "tile", "block")
PATCH_KM = PATCH_SIZE * 10 / 1000  # a patch is 1.2 km on a side


def _task_tile(task: PairTask) -> str:
    """MGRS tile of a planned row, from its names (reBEN S2 and v1 S1 names carry it) or, for a v1 S2-only row,
    from its JSON's `tile_source`."""
    tile = tile_of(task["s2_name"]) or (s1_tile(task["s1_name"]) if task["s1_name"] else None)
    if tile is None and task["s2_folder"]:
        path = Path(task["s2_folder"]) / f"{task['s2_name']}_labels_metadata.json"
        try:
            tile = tile_of(read_json(path, task["s2_name"]).get("tile_source"))
        except BigEarthNetError:
            tile = None
    if tile is None:
        raise DataError(
            f"patch {task['s2_name']}: cannot tell its tile (from its names or its JSON's tile_source) "
            "for a spatial split; use --split-by official"
        )
    return tile


def _patch_grid(name: str | None) -> tuple[int, int] | None:
    """(row, col) of a patch in its tile's 1.2 km grid: the last two `_` fields of BigEarthNet patch names."""
    parts = (name or "").rsplit("_", 2)
    if len(parts) == 3 and parts[1].isdigit() and parts[2].isdigit():
        return int(parts[1]), int(parts[2])
    return None


def spatial_group(task: PairTask, split_by: str, block_km: float = 50.0) -> str:
    """Group key of a planned row for `split_by` "tile" (the MGRS tile) or "block" (tile + a `block_km` square
    of the tile's patch grid)."""
    tile = _task_tile(task)
    if split_by == "tile":
        return tile
    if not block_km > 0:
        raise DataError(f"block_km must be > 0, got {block_km}")
    grid = _patch_grid(task["s2_name"]) or _patch_grid(task["s1_name"])
    if grid is None:
        raise DataError(
            f"patch {task['s2_name']}: no _<row>_<col> patch grid position in its name for "
            "--split-by block; use --split-by tile"
        )
    per_block = block_km / PATCH_KM
    return f"{tile}/{int(grid[0] // per_block)}_{int(grid[1] // per_block)}"


def resplit(
    plan: ConversionPlan,
    split_by: str,
    block_km: float = 50.0,
    seed: int = 0,
    fractions: tuple[float, ...] = (0.8, 0.1, 0.1),
) -> ConversionPlan:
    """Re-split the planned rows that have an official split so that each tile / block lies in one split
    (`datasets_scripts.common.split_by_group`); unassigned rows stay unassigned. In place; returns the plan."""
    if split_by == "official":
        return plan
    if split_by not in SPLIT_PROTOCOLS:
        raise DataError(f"split_by must be one of {SPLIT_PROTOCOLS}, got {split_by!r}")
    eligible = [t for t in plan.tasks if t["split"] in SPLITS]
    groups = {t["s2_name"]: spatial_group(t, split_by, block_km) for t in eligible}
    new = split_by_group(groups, fractions, seed)
    for task in eligible:
        task["split"] = new[task["s2_name"]]
    return plan
