"""BigEarthNet v2 (reBEN) conversion throughput: GeoTIFF folders vs the ConfigILM LMDB, on the same patches.

The 24 real reBEN pairs of configilm's wheel (its LMDB of safetensors patches and metadata.parquet) are replicated
under new patch names into ``--pairs`` pairs, written both as bigearth.net's GeoTIFF folders and as a ConfigILM
LMDB, then each is converted by `python -m datasets_scripts bigearthnet` (one process, then ``--num-proc``).
The wheel comes from ``--wheel`` or the tests' cache (``~/.cache/crjepa-test-wheels``, filled by `pip download
configilm==0.7.1 --no-deps`). Not a test; run by hand:

    python benchmarks/reben_convert.py --pairs 480 --num-proc 1 2
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import shutil
import tempfile
import time
import zipfile
from datetime import UTC, datetime
from pathlib import Path

BENV2 = "configilm/extra/mock_data/BENv2/"


def _renamed(name: str, i: int) -> str:
    """A patch name at a new grid position (the last two fields), unique per ``i``."""
    return "_".join(name.split("_")[:-2] + [str(100 + i // 100), str(i % 100)])


def replicate(wheel: Path, root: Path, num_pairs: int) -> tuple[Path, Path, Path, Path]:
    """(s1_dir, s2_dir, metadata.parquet, lmdb_dir) holding the same ``num_pairs`` pairs in both layouts."""
    import lmdb
    import numpy as np
    import pyarrow as pa
    import pyarrow.parquet as pq
    import rasterio
    from safetensors.numpy import load, save

    src = root / "src"
    with zipfile.ZipFile(wheel) as whl:
        whl.extractall(src, [m for m in whl.namelist() if m.startswith(BENV2)])
    meta = pq.read_table(src / BENV2 / "metadata.parquet").to_pylist()
    env = lmdb.open(str(src / BENV2 / "BigEarthNet-V2-LMDB"), readonly=True, lock=False)
    with env.begin() as txn:
        patches = {key.decode(): load(bytes(value)) for key, value in txn.cursor()}
    env.close()
    pairs = [r for r in meta if r["patch_id"] in patches and r["s1_name"] in patches]
    s1_dir, s2_dir, lmdb_dir = root / "BigEarthNet-S1", root / "BigEarthNet-S2", root / "BENv2" / "BigEarthNet-V2-LMDB"
    lmdb_dir.mkdir(parents=True)
    out = lmdb.open(str(lmdb_dir), map_size=1 << 36)
    rows = []
    with out.begin(write=True) as txn:
        for i in range(num_pairs):
            row = dict(pairs[i % len(pairs)])
            s2, s1 = _renamed(row["patch_id"], i), _renamed(row["s1_name"], i)
            for old, new, top, parts in ((row["patch_id"], s2, s2_dir, 2), (row["s1_name"], s1, s1_dir, 3)):
                bands = patches[old]
                txn.put(new.encode(), save(bands))
                folder = top / "_".join(new.split("_")[:-parts]) / new
                folder.mkdir(parents=True, exist_ok=True)
                for band, array in bands.items():
                    with rasterio.open(
                        folder / f"{new}_{band}.tif",
                        "w",
                        driver="GTiff",
                        height=array.shape[0],
                        width=array.shape[1],
                        count=1,
                        dtype=array.dtype,
                    ) as dst:
                        dst.write(np.asarray(array), 1)
            rows.append({**row, "patch_id": s2, "s1_name": s1})
    out.close()
    table = pa.Table.from_pylist(rows)
    pq.write_table(table, root / "metadata.parquet")
    shutil.copy(root / "metadata.parquet", root / "BENv2" / "metadata.parquet")
    shutil.rmtree(src)
    return s1_dir, s2_dir, root / "metadata.parquet", lmdb_dir


def convert(args: list[str]) -> float:
    """Seconds of one `python -m datasets_scripts bigearthnet ARGS` run in this process (planning included)."""
    from datasets_scripts.__main__ import main

    start = time.perf_counter()
    assert main(args) == 0, args
    return time.perf_counter() - start


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--pairs", type=int, default=480)
    parser.add_argument("--num-proc", type=int, nargs="+", default=[1])
    parser.add_argument(
        "--wheel", type=Path, default=Path.home() / ".cache" / "crjepa-test-wheels" / "configilm-0.7.1-py3-none-any.whl"
    )
    args = parser.parse_args()
    with tempfile.TemporaryDirectory(prefix="crjepa-reben-bench-") as tmp:
        root = Path(tmp)
        s1, s2, metadata, lmdb_dir = replicate(args.wheel, root, args.pairs)
        results = []
        for num_proc in args.num_proc:
            for route, source in (
                ("geotiff", ["--s1-dir", str(s1), "--s2-dir", str(s2), "--reben-metadata", str(metadata)]),
                ("lmdb", ["--lmdb", str(lmdb_dir)]),
            ):
                out = root / f"out-{route}-{num_proc}"
                seconds = convert(
                    ["bigearthnet", *source, "--subset", "reben", "--output-dir", str(out), "--num-proc", str(num_proc)]
                )
                results.append(
                    {
                        "route": route,
                        "num_proc": num_proc,
                        "pairs": args.pairs,
                        "seconds": round(seconds, 2),
                        "pairs_per_s": round(args.pairs / seconds, 1),
                    }
                )
                shutil.rmtree(out)
    print(
        json.dumps(
            {
                "utc": datetime.now(UTC).isoformat(timespec="minutes"),
                "cpus": os.cpu_count(),
                "machine": platform.machine(),
                "load": os.getloadavg(),
                "results": results,
            },
            indent=1,
        )
    )


if __name__ == "__main__":
    main()
