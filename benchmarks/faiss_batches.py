"""Queries/s against the size of a query batch, with faiss's default BLAS threshold and with crjepa's.

faiss 1.15 scores a batch with BLAS only from ``distance_compute_blas_threshold`` = 128,000 queries x dimension
(500 queries at d=256); below it streams the database once per query. An IVF index scores its coarse centroids
per thread slice of the batch, so on 2 threads every batch under 1,000 queries took the slow path. crjepa lowers
the threshold to 16 queries at d=256 (``crjepa/search/blas.py``). This script times, in one process and on the
same indices, both thresholds for batches of 1 to 10,000 queries:

* ``ivfpq``: ``build_index(recall=0.95)`` over ``--n`` (1,000,000) x 256 vectors of the isotropic archive of
  ``benchmarks/faiss_archive.py`` (``--spread``), at its calibrated nprobe / k_factor and at nprobe 64;
* ``exact``: ``build_index(kind="exact")`` over the first 50,000 of them (the largest archive ``kind="auto"``
  searches exhaustively).

Each cell: the best of repeated searches of the same batch for at least 0.3 s (queries drawn like the archive,
not in it).

    python benchmarks/faiss_batches.py                 # ~2 min on 2 cores
    python benchmarks/faiss_batches.py --n 200000
"""

from __future__ import annotations

import argparse
import datetime
import json
import os
import platform
import time

# isort: off
import crjepa.search  # noqa: F401 -- before faiss: picks OpenBLAS's kernels (crjepa/search/blas.py)

# isort: on
import faiss
import numpy as np
from faiss_archive import clustered_unit_vectors

from crjepa.search.blas import FAISS_DEFAULT_BLAS_THRESHOLD
from crjepa.search.index import RetrievalIndex, build_index, set_threads
from crjepa.search.kinds import AUTO_EXACT_MAX

BATCHES = (1, 4, 16, 64, 250, 500, 1000, 10_000)


def qps(index: RetrievalIndex, batch: np.ndarray, min_s: float = 0.3, **params: int) -> int:
    """Queries/s of ``index.search(batch, 10)``: the fastest of repeated calls (at least 3, for ``min_s`` in all)."""
    best, spent, runs = float("inf"), 0.0, 0
    while runs < 3 or spent < min_s:
        t0 = time.perf_counter()
        index.search(batch, 10, **params)
        took = time.perf_counter() - t0
        best, spent, runs = min(best, took), spent + took, runs + 1
    return round(len(batch) / best)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--n", type=int, default=1_000_000)
    parser.add_argument("--spread", type=float, default=1.0)
    parser.add_argument("--seed", type=int, default=0)
    args = parser.parse_args()

    threads = set_threads(None)
    crjepa_threshold = faiss.cvar.distance_compute_blas_threshold
    rng = np.random.default_rng(args.seed)
    centres = rng.standard_normal((10_000, 256), dtype=np.float32)
    centres /= np.linalg.norm(centres, axis=1, keepdims=True)
    archive = clustered_unit_vectors(rng, centres, args.n, args.spread)
    queries = clustered_unit_vectors(rng, centres, max(BATCHES), args.spread)

    t0 = time.perf_counter()
    ivfpq = build_index(archive, kind="ivfpq", recall=0.95)
    print(
        f"ivfpq built in {time.perf_counter() - t0:.1f} s, calibrated {ivfpq.metadata.calibration['params']}",
        flush=True,
    )
    exact = build_index(archive[:AUTO_EXACT_MAX], kind="exact")
    setups = [
        (
            f"ivfpq {args.n:,} calibrated {ivfpq.metadata.params['nprobe']}/{ivfpq.metadata.params['k_factor']}",
            ivfpq,
            {},
        ),
        (f"ivfpq {args.n:,} nprobe 64", ivfpq, {"nprobe": 64}),
        (f"exact {AUTO_EXACT_MAX:,}", exact, {}),
    ]
    rows = []
    for name, index, params in setups:
        for batch in BATCHES:
            row = {"index": name, "batch": batch}
            for label, threshold in (("faiss_default", FAISS_DEFAULT_BLAS_THRESHOLD), ("crjepa", crjepa_threshold)):
                faiss.cvar.distance_compute_blas_threshold = threshold
                row[label] = qps(index, queries[:batch], **params)
            faiss.cvar.distance_compute_blas_threshold = crjepa_threshold
            row["ratio"] = round(row["crjepa"] / row["faiss_default"], 2)
            print(f"  {row}", flush=True)
            rows.append(row)

    print(
        f"\n{threads} threads, {platform.processor() or platform.machine()}, faiss {faiss.__version__}, "
        f"OPENBLAS_CORETYPE {os.environ.get('OPENBLAS_CORETYPE')}, {datetime.date.today()}, "
        f"load {os.getloadavg()[0]:.2f}\n"
    )
    print(
        f"| index | batch | q/s, faiss default ({FAISS_DEFAULT_BLAS_THRESHOLD:,}) | q/s, crjepa ({crjepa_threshold:,}) "
        "| ratio |"
    )
    print("|---|---|---|---|---|")
    for r in rows:
        print(f"| {r['index']} | {r['batch']:,} | {r['faiss_default']:,} | {r['crjepa']:,} | {r['ratio']} |")
    print(
        json.dumps(
            {
                "benchmark": "faiss_batches",
                "n": args.n,
                "spread": args.spread,
                "threads": threads,
                "faiss": faiss.__version__,
                "openblas_coretype": os.environ.get("OPENBLAS_CORETYPE"),
                "date": str(datetime.date.today()),
                "load": os.getloadavg(),
                "rows": rows,
            }
        )
    )


if __name__ == "__main__":
    main()
