"""Peak memory of one `RetrievalIndex.search` call, batched (crjepa's default) and in one faiss call (the baseline:
SEARCH_BATCH_BYTES set beyond reach), on the same index in the same run.

    python benchmarks/search_memory.py --rows 100000 --queries 10000 --k 10 100 1000

Builds a calibrated IVF-PQ index over clustered vectors once (kept in --work), then measures each (mode, k) in a fresh
process: the rise of the peak resident memory (Linux VmHWM, reset just before the call) during the search, next to
the size of the returned arrays. Prints a Markdown table (BENCHMARKS.md, "Search memory").
"""

from __future__ import annotations

import argparse
import json
import platform
import subprocess
import sys
import time
from pathlib import Path

CHILD = r"""
import json, sys, time
from pathlib import Path
import numpy as np
import crjepa.search.index as module
from crjepa.search.index import RetrievalIndex
folder, queries, k, mode = sys.argv[1], int(sys.argv[2]), int(sys.argv[3]), sys.argv[4]
if mode == "one call":
    module.SEARCH_BATCH_BYTES = 1 << 62
index = RetrievalIndex.load(folder)
q = np.load(Path(folder).parent / "queries.npy")[:queries]
def peak():
    return next(int(l.split()[1]) for l in open("/proc/self/status") if l.startswith("VmHWM"))
Path("/proc/self/clear_refs").write_text("5")
before = peak()
t = time.perf_counter()
scores, ids = index.search(q, k, recall=0.99)
print(json.dumps({"rise_mib": (peak() - before) / 1024, "output_mib": (scores.nbytes + ids.nbytes) / 2**20,
                  "seconds": time.perf_counter() - t, "params": {key: index.metadata.params[key]
                                                                 for key in ("nprobe", "k_factor")}}))
"""


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rows", type=int, default=100_000)
    parser.add_argument("--queries", type=int, default=10_000)
    parser.add_argument("--dim", type=int, default=64)
    parser.add_argument("--k", type=int, nargs="+", default=[10, 100, 1000])
    parser.add_argument("--work", default="outputs/search-memory")
    args = parser.parse_args()
    import numpy as np

    from crjepa.search.index import build_index

    work = Path(args.work)
    folder = work / f"ivfpq-{args.rows}x{args.dim}"
    if not (folder / "index.faiss").is_file():
        rng = np.random.default_rng(0)
        centres = rng.standard_normal((args.rows // 100, args.dim)).astype(np.float32)
        x = centres[rng.integers(0, len(centres), args.rows)] + 0.5 * rng.standard_normal((args.rows, args.dim))
        q = centres[rng.integers(0, len(centres), args.queries)] + 0.5 * rng.standard_normal((args.queries, args.dim))
        work.mkdir(parents=True, exist_ok=True)
        np.save(work / "queries.npy", q.astype(np.float32))
        build_index(x.astype(np.float32), kind="ivfpq").save(folder, overwrite=True)
    print(
        f"{platform.node()} {platform.processor() or platform.machine()}, {time.strftime('%Y-%m-%d')}, "
        f"{args.rows:,} x {args.dim} calibrated IVF-PQ, {args.queries:,} queries, recall=0.99 point"
    )
    print("| k | mode | peak RSS rise (MiB) | returned arrays (MiB) | seconds |")
    print("|---|---|---|---|---|")
    for k in args.k:
        for mode in ("batched", "one call"):
            run = subprocess.run(
                [sys.executable, "-c", CHILD, str(folder), str(args.queries), str(k), mode],
                capture_output=True,
                text=True,
            )
            if run.returncode:
                print(f"| {k} | {mode} | failed (exit {run.returncode}: {run.stderr.strip().splitlines()[-1:]}) | | |")
                continue
            r = json.loads(run.stdout.strip().splitlines()[-1])
            print(f"| {k} | {mode} | {r['rise_mib']:,.0f} | {r['output_mib']:,.0f} | {r['seconds']:.1f} |", flush=True)


if __name__ == "__main__":
    main()
