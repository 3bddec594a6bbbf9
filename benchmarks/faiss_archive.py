"""Retrieval over a large archive on CPU: build time, memory, queries/s and recall@10 of faiss indices.

Data: ``--n`` (default 1,000,000) x ``--dim`` (256) unit vectors around ``--clusters`` (10,000) random unit
centres, Gaussian noise of norm ``--spread`` (1.0: about as large as the centre, so the top-10 of a query is
decided inside its cluster by the noise, a hard case for compressed codes); ``--queries`` (10,000) drawn the
same way. Ground truth: exact inner-product search (the "Flat" row). Recall@10 = |approx top10 n exact top10|
/ 10, averaged over queries; queries/s with all queries in one batched call (after a warm-up batch).

``--profile hierarchical`` draws a second, differently hard archive: 100 super-clusters of 100 clusters each
(cluster centre = super centre + an offset 2.5x as long), points varying along 16 directions of their cluster
(norm ``--spread``, default 1.2) plus isotropic noise of norm 0.4: overlapping clusters, so IVF needs many
probes, while the within-cluster order is low-dimensional, so compressed codes rank well.

``--profile mixed`` is the archive the defaults were NOT tuned on: four equal populations with their own
random centres, 1,000 clusters at spread 1.4, 5,000 at 0.7, 20,000 at 1.0 and 50,000 at 0.5 (so 76,000 clusters of
very different sizes and tightness: ~250 points each down to ~5).

``--calibrated`` builds ``build_index(recall=T)`` once per ``--targets`` value (default 0.95 0.98) and
reports, on the 10,000 fresh queries: the recall reached, q/s, build and calibration seconds, and the fastest fixed
IVF-PQ setting (nprobe x k_factor grid on the baseline build of docs/DESIGN.md) reaching the same recall, timed in turns
with it (the fastest of 5 rounds each).

Rows: the baselines of docs/DESIGN.md (Flat; HNSW32 efSearch 64; IVF4096,PQ64x4fs,RFlat with nprobe 32 and
k_factor 16) and the project default ``crjepa.search.index.build_index(kind="auto")``.

    python benchmarks/faiss_archive.py                 # 1M x 256, a few minutes on 2 cores
    python benchmarks/faiss_archive.py --spread 0.5    # tight clusters: re-ranking depth decides
    python benchmarks/faiss_archive.py --profile hierarchical
    python benchmarks/faiss_archive.py --n 200000 --skip hnsw
    python benchmarks/faiss_archive.py --profile mixed --calibrated --skip hnsw ivfpq default
"""

from __future__ import annotations

import argparse
import datetime
import json
import os
import platform
import tempfile
import time
from collections.abc import Callable
from pathlib import Path

# isort: off
import crjepa.search  # noqa: F401 -- before faiss: picks OpenBLAS's kernels (crjepa/search/blas.py)

# isort: on
import faiss
import numpy as np

from crjepa.search.index import RetrievalIndex, build_index, set_threads


def clustered_unit_vectors(
    rng: np.random.Generator, centres: np.ndarray, n: int, spread: float, chunk: int = 100_000
) -> np.ndarray:
    """n float32 unit vectors: a random centre plus Gaussian noise of expected norm ``spread``, normalised."""
    dim = centres.shape[1]
    out = np.empty((n, dim), dtype=np.float32)
    for start in range(0, n, chunk):
        stop = min(n, start + chunk)
        x = centres[rng.integers(0, len(centres), stop - start)]
        x += rng.standard_normal(x.shape, dtype=np.float32) * np.float32(spread / np.sqrt(dim))
        out[start:stop] = x / np.linalg.norm(x, axis=1, keepdims=True)
    return out


def hierarchical_unit_vectors(
    rng: np.random.Generator,
    n: int,
    queries: int,
    dim: int,
    clusters: int,
    spread: float,
    intrinsic: int = 16,
    noise: float = 0.4,
    offset: float = 2.5,
    chunk: int = 50_000,
) -> tuple[np.ndarray, np.ndarray]:
    """Archive and queries from the ``hierarchical`` profile (see the module docstring)."""
    supers = max(1, clusters // 100)
    unit = lambda a: a / np.linalg.norm(a, axis=1, keepdims=True)  # noqa: E731
    top = unit(rng.standard_normal((supers, dim), dtype=np.float32))
    centres = unit(
        top[np.arange(clusters) % supers] + offset * unit(rng.standard_normal((clusters, dim), dtype=np.float32))
    )
    pool = unit(rng.standard_normal((4096, dim), dtype=np.float32))
    basis = rng.integers(0, len(pool), (clusters, intrinsic))  # the directions each cluster varies along

    def draw(m: int) -> np.ndarray:
        out = np.empty((m, dim), dtype=np.float32)
        for start in range(0, m, chunk):
            stop = min(m, start + chunk)
            c = rng.integers(0, clusters, stop - start)
            z = rng.standard_normal((stop - start, intrinsic, 1), dtype=np.float32) * np.float32(
                spread / np.sqrt(intrinsic)
            )
            x = centres[c] + (pool[basis[c]] * z).sum(axis=1)
            x += rng.standard_normal(x.shape, dtype=np.float32) * np.float32(noise / np.sqrt(dim))
            out[start:stop] = unit(x)
        return out

    return draw(n), draw(queries)


MIXED = ((1_000, 1.4), (5_000, 0.7), (20_000, 1.0), (50_000, 0.5))
"""(clusters, spread) of the four populations of the ``mixed`` profile."""


def mixed_unit_vectors(rng: np.random.Generator, n: int, queries: int, dim: int) -> tuple[np.ndarray, np.ndarray]:
    """Archive and queries from the ``mixed`` profile: equal shares of each population of ``MIXED``, shuffled."""
    populations = []
    for clusters, spread in MIXED:
        centres = rng.standard_normal((clusters, dim), dtype=np.float32)
        centres /= np.linalg.norm(centres, axis=1, keepdims=True)
        populations.append((centres, spread))

    def draw(m: int) -> np.ndarray:
        share = -(-m // len(populations))
        out = np.concatenate([clustered_unit_vectors(rng, c, share, s) for c, s in populations])[:m]
        return out[rng.permutation(m)]

    return draw(n), draw(queries)


def rss_mib() -> float:
    """Resident memory of this process now (Linux), in MiB."""
    for line in Path("/proc/self/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1]) / 1024
    return float("nan")


def file_mib(index: faiss.Index) -> float:
    """Size of the index as written by faiss.write_index (what a user stores / downloads)."""
    with tempfile.TemporaryDirectory() as tmp:
        faiss.write_index(index, f"{tmp}/i.faiss")
        return os.path.getsize(f"{tmp}/i.faiss") / 2**20


def measure(
    name: str,
    build: Callable[[], Callable[[np.ndarray, int], np.ndarray]],
    queries: np.ndarray,
    truth: np.ndarray | None,
    k: int,
) -> dict:
    """Build (timed, RSS growth), then search all queries in one call; recall against ``truth``."""
    rss0, t0 = rss_mib(), time.perf_counter()
    search, index = build()
    build_s = time.perf_counter() - t0
    rss = rss_mib() - rss0
    search(queries[:500], k)  # warm-up
    t0 = time.perf_counter()
    found = search(queries, k)
    qps = len(queries) / (time.perf_counter() - t0)
    recall = 1.0 if truth is None else float((found[:, :, None] == truth[:, None, :]).any(axis=2).mean())
    row = {
        "index": name,
        "build_s": round(build_s, 1),
        "rss_mib": round(rss),
        "file_mib": round(file_mib(index)),
        "qps": round(qps),
        "recall@10": round(recall, 4),
    }
    print(f"  {row}", flush=True)
    return row | {"found": found}


def faiss_factory(factory: str, x: np.ndarray, train_size: int, **search: float) -> Callable:
    """Builder for a plain index_factory index (baselines), trained on a random subsample."""

    def build():
        index = faiss.index_factory(x.shape[1], factory, faiss.METRIC_INNER_PRODUCT)
        if not index.is_trained:
            rng = np.random.default_rng(1)
            index.train(x[np.sort(rng.choice(len(x), min(len(x), train_size), replace=False))])
        index.add(x)
        params = ",".join(f"{key}={value}" for key, value in search.items())
        if params:
            faiss.ParameterSpace().set_index_parameters(index, params)
        return (lambda q, k: index.search(q, k)[1]), index

    return build


def project_default(x: np.ndarray) -> Callable:
    """Builder for ``build_index(kind="auto")`` (ids are the row numbers, mapped back to ints here)."""

    def build():
        index: RetrievalIndex = build_index(x, kind="auto")
        print(f"  default = {index.metadata.kind} {index.metadata.params}", flush=True)
        return (lambda q, k: index.search(q, k)[1].astype(np.int64)), index.index

    return build


FIXED_NPROBE = (16, 32, 64, 128, 256, 512, 1024, 2048, 4096)
FIXED_K_FACTOR = (8, 16, 64, 256)
"""The fixed IVF-PQ settings the calibrated index is compared with: every combination, on the docs/DESIGN.md baseline
build (IVF4096,PQ64x4fs,RFlat trained by faiss' defaults on 131,072 points), nprobe rising until one rung past
the first where every k_factor reaches the highest target."""


def _timed_search(
    search: Callable[[np.ndarray], np.ndarray], queries: np.ndarray, truth: np.ndarray, runs: int = 1
) -> tuple[float, int]:
    """Recall@k and q/s (the best of ``runs`` batched calls of all queries, after a 500-query warm-up)."""
    search(queries[:500])
    best, found = np.inf, None
    for _ in range(runs):
        t0 = time.perf_counter()
        found = search(queries)
        best = min(best, time.perf_counter() - t0)
    return _recall(found, truth), round(len(queries) / best)


def _recall(found: np.ndarray, truth: np.ndarray) -> float:
    """Recall@k of the found ids (q, k) against the true top-k (q, k), 4 decimals."""
    return round(float((found[:, :, None] == truth[:, None, :]).any(axis=2).mean()), 4)


def _interleaved(
    searches: dict[str, Callable[[np.ndarray], np.ndarray]], queries: np.ndarray, truth: np.ndarray, runs: int = 5
) -> dict[str, tuple[float, int]]:
    """Recall@k and q/s of each search, timed in turns (one batched call of all queries each, ``runs`` rounds,
    the fastest call of each kept, after a 500-query warm-up): this VM's speed drifts by up to ~40 % over
    minutes, and searches timed one after another would each see a different machine."""
    best = {name: np.inf for name in searches}
    found: dict[str, np.ndarray] = {}
    for search in searches.values():
        search(queries[:500])
    for _ in range(runs):
        for name, search in searches.items():
            t0 = time.perf_counter()
            found[name] = search(queries)
            best[name] = min(best[name], time.perf_counter() - t0)
    return {name: (_recall(found[name], truth), round(len(queries) / best[name])) for name in searches}


def calibrated_rows(
    archive: np.ndarray, queries: np.ndarray, truth: np.ndarray, k: int, targets: list[float]
) -> list[dict]:
    """``build_index(recall=T)`` per target against the best fixed IVF-PQ setting reaching the same recall.

    The fixed grid runs on the baseline build (:data:`FIXED_NPROBE` x :data:`FIXED_K_FACTOR`, one run each, to
    find the fastest settings per recall); the calibrated index and the three fastest fixed settings reaching its
    fresh recall are then timed in turns (:func:`_interleaved`, fastest of 5 rounds), so the ratio is neither one
    noisy run against another nor two moments of a drifting machine.
    Also: the coverage of the true top-10 by the calibrated index's probed lists (the IVF ceiling)."""
    t0 = time.perf_counter()
    baseline = faiss.index_factory(archive.shape[1], "IVF4096,PQ64x4fs,RFlat", faiss.METRIC_INNER_PRODUCT)
    baseline.train(archive[np.sort(np.random.default_rng(1).choice(len(archive), 131_072, replace=False))])
    baseline.add(archive)
    baseline_s = time.perf_counter() - t0
    rows: list[dict] = [
        {
            "index": "baseline build IVF4096,PQ64x4fs,RFlat (faiss defaults, 131,072 training points)",
            "build_s": round(baseline_s, 1),
        }
    ]
    print(f"  {rows[0]}", flush=True)

    def fixed_search(nprobe: int, k_factor: int) -> Callable[[np.ndarray], np.ndarray]:
        ivf = faiss.SearchParametersIVF(nprobe=nprobe)
        params = faiss.IndexRefineSearchParameters(k_factor=k_factor, base_index_params=ivf)
        return lambda q: baseline.search(q, k, params=params)[1]

    grid, beyond = [], 0
    for nprobe in FIXED_NPROBE:
        for k_factor in FIXED_K_FACTOR:
            recall, qps = _timed_search(fixed_search(nprobe, k_factor), queries, truth)
            grid.append({"nprobe": nprobe, "k_factor": k_factor, "recall@10": recall, "qps": qps})
            print(f"  fixed {grid[-1]}", flush=True)
        beyond += all(p["recall@10"] >= max(targets) for p in grid[-len(FIXED_K_FACTOR) :])
        if beyond == 2:  # one rung past the first where every k_factor reaches the highest target
            break
    rows.append({"index": "fixed grid on the baseline build", "grid": grid})

    for target in targets:
        t0 = time.perf_counter()
        index = build_index(archive, kind="auto", recall=target)
        build_s = time.perf_counter() - t0
        cal = index.metadata.calibration

        def calibrated(q: np.ndarray, index: RetrievalIndex = index) -> np.ndarray:
            return index.search(q, k)[1].astype(np.int64)

        fresh = _recall(calibrated(queries), truth)  # then the three fastest fixed settings reaching it, timed in turns
        reaching = sorted((p for p in grid if p["recall@10"] >= fresh), key=lambda p: -p["qps"])[:3]
        contestants = {"calibrated": calibrated} | {
            (p["nprobe"], p["k_factor"]): fixed_search(p["nprobe"], p["k_factor"]) for p in reaching
        }
        timed = _interleaved(contestants, queries, truth)
        recall, qps = timed.pop("calibrated")
        row = {
            "index": f"build_index(recall={target})",
            "target": target,
            "kind": index.metadata.kind,
            "recall@10": recall,
            "qps": qps,
            "build_s": round(build_s, 1),
            "calibration_s": cal["seconds"],
            "params": cal["params"],
            "calibration_recall": cal["recall"],
            "calibration_queries": cal["queries"],
            "exact_qps_calibration": cal.get("exact_qps"),
            "ann": cal.get("ann"),
            "points": cal["points"],
        }
        row["fixed_timed"] = [
            {"nprobe": key[0], "k_factor": key[1], "recall@10": r, "qps": q} for key, (r, q) in timed.items()
        ]
        row["best_fixed"] = None  # the fastest fixed setting at the calibrated index's fresh recall or above
        for point in row["fixed_timed"]:
            if point["recall@10"] >= recall and (row["best_fixed"] is None or point["qps"] > row["best_fixed"]["qps"]):
                row["best_fixed"] = {**point, "ratio": round(qps / point["qps"], 2)}
        print(f"  {row}", flush=True)
        rows.append(row)
        if index.metadata.kind == "ivfpq":
            ivf = faiss.extract_index_ivf(faiss.downcast_index(index.index))
            coverage = {}
            assign = ivf_assignments(ivf, truth)  # the list of each true neighbour: the same for every nprobe
            for nprobe in (32, 64, 128, 256, 1024):  # share of the true top-10 in the probed lists (IVF ceiling)
                _, lists = ivf.quantizer.search(queries, nprobe)
                coverage[nprobe] = round(float((assign[:, :, None] == lists[:, None, :]).any(axis=2).mean()), 4)
            print(f"  coverage of the true top-10 by the probed lists: {coverage}", flush=True)
            rows.append({"index": "coverage", "coverage": coverage})
        del index
    return rows


def ivf_assignments(ivf: faiss.IndexIVF, rows: np.ndarray) -> np.ndarray:
    """The inverted list of each archive row in ``rows`` (any shape)."""
    owner = np.empty(ivf.ntotal, dtype=np.int64)
    invlists = ivf.invlists
    for lst in range(ivf.nlist):
        size = invlists.list_size(lst)
        if size:
            ids = faiss.rev_swig_ptr(invlists.get_ids(lst), size).copy()
            owner[ids] = lst
    return owner[rows]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--n", type=int, default=1_000_000, help="archive size")
    parser.add_argument("--dim", type=int, default=256)
    parser.add_argument("--queries", type=int, default=10_000)
    parser.add_argument("--clusters", type=int, default=10_000)
    parser.add_argument("--profile", choices=["isotropic", "hierarchical", "mixed"], default="isotropic")
    parser.add_argument("--calibrated", action="store_true", help="also the recall-calibrated builds")
    parser.add_argument("--targets", type=float, nargs="+", default=[0.95, 0.98])
    parser.add_argument(
        "--spread",
        type=float,
        default=None,
        help="within-cluster spread relative to the unit centre (isotropic 1.0, hierarchical 1.2)",
    )
    parser.add_argument("--k", type=int, default=10)
    parser.add_argument("--threads", type=int, default=None, help="faiss threads (default: available CPUs)")
    parser.add_argument("--skip", nargs="*", default=[], choices=["hnsw", "ivfpq", "default"])
    parser.add_argument("--seed", type=int, default=0)
    args = parser.parse_args()

    threads = set_threads(args.threads)
    rng = np.random.default_rng(args.seed)
    t0 = time.perf_counter()
    if args.profile == "isotropic":
        args.spread = 1.0 if args.spread is None else args.spread
        centres = rng.standard_normal((args.clusters, args.dim), dtype=np.float32)
        centres /= np.linalg.norm(centres, axis=1, keepdims=True)
        archive = clustered_unit_vectors(rng, centres, args.n, args.spread)
        queries = clustered_unit_vectors(rng, centres, args.queries, args.spread)
    elif args.profile == "mixed":
        archive, queries = mixed_unit_vectors(rng, args.n, args.queries, args.dim)
    else:
        args.spread = 1.2 if args.spread is None else args.spread
        archive, queries = hierarchical_unit_vectors(rng, args.n, args.queries, args.dim, args.clusters, args.spread)
    print(
        f"{args.profile} data {args.n} x {args.dim} + {args.queries} queries in {time.perf_counter() - t0:.1f}s, "
        f"{threads} threads, load {os.getloadavg()}",
        flush=True,
    )

    t0 = time.perf_counter()
    truth = faiss.knn(queries, archive, args.k, metric=faiss.METRIC_INNER_PRODUCT)[1]
    rows = [{"index": "Flat (exact)", "qps": round(len(queries) / (time.perf_counter() - t0)), "recall@10": 1.0}]
    print(f"  {rows[0]}", flush=True)
    candidates = {
        "hnsw": ("HNSW32 (efSearch 64)", faiss_factory("HNSW32", archive, 0, efSearch=64)),
        "ivfpq": (
            "IVF4096,PQ64x4fs,RFlat (nprobe 32, k_factor 16)",
            faiss_factory("IVF4096,PQ64x4fs,RFlat", archive, 131_072, nprobe=32, k_factor_rf=16),
        ),
        "default": ("crjepa default: build_index(kind='auto')", project_default(archive)),
    }
    for key, (name, build) in candidates.items():
        if key not in args.skip:
            row = measure(name, build, queries, truth, args.k)
            row.pop("found")
            rows.append(row)
    if args.calibrated:
        rows += calibrated_rows(archive, queries, truth, args.k, args.targets)

    print(
        f"\n{args.profile} {args.n:,} x {args.dim} archive, {args.queries:,} queries, top-{args.k}, {threads} threads, "
        f"{platform.processor() or platform.machine()}, {datetime.date.today()}, load {os.getloadavg()[0]:.2f}\n"
    )
    print("| index | build s | RSS growth MiB | file MiB | queries/s | recall@10 |")
    print("|---|---|---|---|---|---|")
    for r in rows:
        if "qps" in r:
            print(
                f"| {r['index']} | {r.get('build_s', '')} | {r.get('rss_mib', '')} | {r.get('file_mib', '')} | "
                f"{r['qps']:,} | {r['recall@10']} |"
            )
    print(
        json.dumps(
            {
                "benchmark": "faiss_archive",
                "n": args.n,
                "dim": args.dim,
                "queries": args.queries,
                "clusters": args.clusters,
                "profile": args.profile,
                "spread": args.spread,
                "load": os.getloadavg(),
                "threads": threads,
                "openblas_coretype": os.environ.get("OPENBLAS_CORETYPE"),
                "faiss": faiss.__version__,
                "date": str(datetime.date.today()),
                "rows": rows,
            }
        )
    )


if __name__ == "__main__":
    main()
