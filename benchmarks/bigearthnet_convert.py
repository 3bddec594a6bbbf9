"""GeoTIFF -> Arrow conversion throughput of the BigEarthNet-MM builder (pairs/s), on replicated real pairs.

The 6 real BigEarthNet v1 example pairs shipped in bigearthnet-common are copied under new patch names into
`--pairs` pairs (S1 JSONs rewritten to name their new S2 partner), then subset `all` is built with 1 process and
with all cores. Not a test; run by hand:  python benchmarks/bigearthnet_convert.py --pairs 600
"""

from __future__ import annotations

import argparse
import importlib.util
import json
import os
import platform
import shutil
import tarfile
import tempfile
import time
from datetime import date
from pathlib import Path

from datasets_scripts.bigearthnet import BigEarthNetMM


def replicate_examples(root: Path, num_pairs: int) -> tuple[Path, Path]:
    """Write `num_pairs` S1/S2 pairs under root/S1, root/S2 by copying the example pairs under new names."""
    package = Path(list(importlib.util.find_spec("bigearthnet_common").submodule_search_locations)[0])
    src = root / "src"
    for sensor in ("S1", "S2"):
        with tarfile.open(package / f"BigEarthNet-{sensor}-Example.tar.bz2") as tar:
            tar.extractall(src, filter="data")
    s1_src, s2_src = src / "BigEarthNet-S1-Example", src / "BigEarthNet-S2-Example"
    pairs = []
    for s1_dir in sorted(s1_src.iterdir()):
        s1_meta = json.loads((s1_dir / f"{s1_dir.name}_labels_metadata.json").read_text())
        pairs.append((s1_dir.name, s1_meta["corresponding_s2_patch"], s1_meta))
    s1_root, s2_root = root / "S1", root / "S2"
    for i in range(num_pairs):
        s1_old, s2_old, s1_meta = pairs[i % len(pairs)]
        # new grid position: names stay valid BigEarthNet names (date, tile) but are unique
        s1_new = "_".join(s1_old.split("_")[:-2] + [str(100 + i // 100), str(i % 100)])
        s2_new = "_".join(s2_old.split("_")[:-2] + [str(100 + i // 100), str(i % 100)])
        for old, new, folder_src, folder_dst in ((s1_old, s1_new, s1_src, s1_root), (s2_old, s2_new, s2_src, s2_root)):
            (folder_dst / new).mkdir(parents=True)
            for f in (folder_src / old).iterdir():
                shutil.copyfile(f, folder_dst / new / f.name.replace(old, new))
        meta = dict(s1_meta, corresponding_s2_patch=s2_new)
        (s1_root / s1_new / f"{s1_new}_labels_metadata.json").write_text(json.dumps(meta))
    shutil.rmtree(src)
    return s1_root, s2_root


def time_build(s1: Path, s2: Path, num_proc: int | None, cache: Path) -> float:
    """Seconds for download_and_prepare of subset `all` (planning included)."""
    builder = BigEarthNetMM(s1_dir=s1, s2_dir=s2, subset="all", cache_dir=str(cache))
    builder.plan()  # metadata CSVs (a few s) are not conversion work: load them before the clock starts
    start = time.perf_counter()
    builder.download_and_prepare(num_proc=num_proc)
    return time.perf_counter() - start


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--pairs", type=int, default=600)
    parser.add_argument("--workdir", help="where the replicated pairs go (default: a temp folder)")
    args = parser.parse_args()
    cores = os.cpu_count() or 1
    with tempfile.TemporaryDirectory(dir=args.workdir) as tmp:
        root = Path(tmp)
        s1, s2 = replicate_examples(root, args.pairs)
        results = {}
        for num_proc in dict.fromkeys([1, cores]):
            seconds = time_build(s1, s2, num_proc if num_proc > 1 else None, root / f"cache{num_proc}")
            results[num_proc] = args.pairs / seconds
            print(f"num_proc={num_proc}: {args.pairs} pairs in {seconds:.1f} s = {results[num_proc]:.0f} pairs/s")
    print(f"machine: {platform.processor() or platform.machine()}, {cores} cores; date {date.today().isoformat()}")


if __name__ == "__main__":
    main()
