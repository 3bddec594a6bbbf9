"""datasets_scripts/bigearthnet/splits.py: `--split-by tile|block` never puts one tile or block in two splits, and
says so when there are fewer groups than splits."""

from __future__ import annotations

from datasets_scripts.bigearthnet import (
    BigEarthNetMM,
    ConversionPlan,
    resplit,
    spatial_group,
)

from helpers import BEN_V1_EXAMPLES, BEN_V1_SNOWY, run_datasets_scripts


def test_split_by_tile_and_block_never_split_a_tile_or_block(ben_v1_dirs, tmp_path):
    import copy

    builder = BigEarthNetMM(
        s1_dir=ben_v1_dirs[0],
        s2_dir=ben_v1_dirs[1],
        subset="all",
        cache_dir=str(tmp_path / "c"),
        split_by="tile",
        split_fractions=(0.5, 0.25, 0.25),
    )
    official = BigEarthNetMM(
        s1_dir=ben_v1_dirs[0], s2_dir=ben_v1_dirs[1], subset="all", cache_dir=str(tmp_path / "c")
    ).plan()
    assert {t["s2_name"]: t["split"] for t in official.tasks} == {k: v[2] for k, v in BEN_V1_EXAMPLES.items()}
    for split_by, block_km in (("tile", 50.0), ("block", 10.0)):
        splits = {}
        for seed in range(4):
            tasks = (
                builder.plan()
                if (split_by, seed) == ("tile", 0)
                else resplit(
                    ConversionPlan("all", 6, copy.deepcopy(official.tasks)), split_by, block_km, seed, (0.5, 0.25, 0.25)
                )
            ).tasks
            by_group: dict[str, set[str]] = {}
            for t in tasks:
                if t["split"] != "unassigned":  # rows without an official split are not re-split
                    by_group.setdefault(spatial_group(t, split_by, block_km), set()).add(t["split"])
            assert len(by_group) == (4 if split_by == "tile" else 5) and all(len(s) == 1 for s in by_group.values())
            assert {t["split"] for t in tasks if t["s2_name"] == BEN_V1_SNOWY} == {"unassigned"}  # stays out
            splits[seed] = tuple(t["split"] for t in tasks)
        assert len(set(splits.values())) > 1
    ireland = [
        {"s2_name": n, "s1_name": BEN_V1_EXAMPLES[n][0], "s2_folder": None}
        for n in sorted(BEN_V1_EXAMPLES)
        if BEN_V1_EXAMPLES[n][1] == "Ireland"
    ]  # 29UPU patches 36_85 and 4_55: ~38 km apart
    assert {spatial_group(t, "tile") for t in ireland} == {"29UPU"}
    assert len({spatial_group(t, "block", 10.0) for t in ireland}) == 2
    assert len({spatial_group(t, "block", 120.0) for t in ireland}) == 1


def test_split_by_tile_with_fewer_tiles_than_splits_warns(reben_dirs, tmp_path, capsys):
    """The reBEN sample lies in one tile: --split-by tile can fill only one split, and says so (it used to put
    every row in train silently; training then stopped on an empty test split)."""
    code, stdout, err = run_datasets_scripts(
        [
            "bigearthnet",
            "--s1-dir",
            str(reben_dirs["s1"]),
            "--s2-dir",
            str(reben_dirs["s2"]),
            "--subset",
            "reben",
            "--keep-unpaired",
            "--split-by",
            "tile",
            "--output-dir",
            str(tmp_path / "out"),
            "--num-proc",
            "1",
        ],
        capsys,
    )
    assert code == 0, err
    assert "converted 18 pairs (train 18)" in stdout
    warnings = [line for line in err.splitlines() if "spatial split" in line]
    assert len(warnings) == 1 and warnings[0].startswith("warning: spatial split: "), err
    assert "18 rows lie in 1 group(s)" in warnings[0] and "'validation' and 'test' got no rows" in warnings[0]
    assert "--split-by block" in warnings[0]
