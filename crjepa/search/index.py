"""faiss indices over CR-JEPA embeddings, with dataset ids and provenance (model fingerprint, space, sensor).

Vectors are L2-normalised float32 and compared by inner product (= cosine similarity), the paper's ranking.
Index kinds (``build_index(kind=...)``):

* ``"exact"``: ``IndexFlatIP``, brute force; the reference for evaluation and for archives below 50,000 items.
* ``"hnsw"``: ``IndexHNSWFlat`` (graph; no training, slow to build on large archives).
* ``"ivfpq"``: an inverted file (flat coarse quantiser, searched with BLAS over query batches), 4-bit PQ
  fast-scan codes and exact re-ranking of the best ``k_factor * k`` candidates on the stored float vectors
  (``IndexRefineFlat``): ``IVF{nlist},PQ{m}x4fs,RFlat``. k-means on a subsample keeps the build short.
* ``"auto"``: ``"exact"`` below ``AUTO_EXACT_MAX`` (50,000) vectors, ``"ivfpq"`` above (the winner of
  ``benchmarks/faiss_archive.py`` at 1M x 256; see :func:`default_params` for the size rule).

Recall calibration (``build_index(vectors, recall=0.95)``, the default for ANN kinds): a fixed nprobe / k_factor
cannot promise a recall on embeddings it was not tuned on, so the build measures it on the archive itself. It holds
out ``calibration_queries`` archive vectors (added to the index only after calibration, so they are fresh
queries: an HNSW graph finds its own nodes' neighbours far more easily than a new vector's), computes their exact
top-k among the other vectors, walks the operating points (ivfpq: nprobe on a ~1.4x ladder up to every list x
k_factor in ``K_FACTORS`` up to 256, computed exactly from one fast-scan pass per nprobe; hnsw: efSearch) and keeps
the fastest point whose measured recall@k meets the target. ``kind="auto"`` then keeps the promise with an exact
index when the IVF-PQ one cannot reach the target or is slower than exact search at it (the exact top-k of the
held-out vectors is an exact search: its time is measured for free). What it measured (recall, its standard
error, #queries, q/s, seconds, and the timed points) is stored in ``IndexMetadata.calibration``;
``RetrievalIndex.search(recall=...)`` picks another stored point per call.

Files written by :meth:`RetrievalIndex.save` (atomically: a temp folder renamed into place):
``index.faiss`` (faiss.write_index), ``index.json`` (metadata), ``ids.json`` (dataset ids in faiss order), and the
writer's marker ``.crjepa-output.json``. Loading trusts none of them (see :meth:`RetrievalIndex.load`).
"""

from __future__ import annotations

import json
import math
import os
import struct
import time
from dataclasses import asdict, dataclass, field
from pathlib import Path
from collections.abc import Callable, Sequence
from typing import Any, Literal

import faiss
import numpy as np

from crjepa.search.blas import lower_faiss_blas_threshold
from crjepa.utils.atomic import atomic_dir, read_consistently
from crjepa.errors import CRJepaError

lower_faiss_blas_threshold(faiss.cvar)  # batches from 16 queries on BLAS (crjepa/search/blas.py)

Kind = Literal["auto", "exact", "hnsw", "ivfpq"]
AUTO_EXACT_MAX = 50_000
DEFAULT_RECALL = 0.95
"""Default recall@10 target of ANN indices. At 1M x 256 on 2 cores 0.95 runs at 13-29k q/s on three of the four
benchmark archives while 0.98 needs ~4% of the archive scanned per query on the isotropic / hierarchical ones (6-8k
q/s, BENCHMARKS.md);
the neighbours an index misses at 0.95 are near-ties in cosine score, which move F1@5 on label sets by far less than
the model's own run-to-run noise. Ask for more with ``recall=0.98`` (or 1.0 = kind "exact")."""
K_FACTORS = (1, 2, 4, 8, 16, 32, 64, 128, 256)
"""Re-ranking depths (candidates per result) the ivfpq calibration walks. The deep ones are for archives whose 4-bit
PQ ranks poorly: on benchmarks/faiss_archive.py's ``mixed`` profile (76,000 clusters, the smallest of ~5 points)
recall@10 at nprobe 2048 of 4096 is 0.948 with 32 x k re-ranked candidates and 0.980 with 256 x k."""
CALIBRATION_TARGETS = (0.9, 0.95, 0.98, 0.99)
"""Targets besides the build's own whose fastest point is also timed and stored (``search(recall=...)``)."""
FORMAT_VERSION = 1
SEARCH_BATCH_BYTES = 256 << 20
"""Working memory of one faiss search call (`RetrievalIndex.search` cuts the queries into batches to stay below)."""
INDEX_FILE, META_FILE, IDS_FILE = "index.faiss", "index.json", "ids.json"


def available_cpus() -> int:
    """CPUs this process may really use: the affinity mask, capped by a cgroup v2 CPU quota (containers).

    faiss (OpenMP) defaults to the host's core count, which oversubscribes a CPU-limited container.
    """
    cpus = len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else os.cpu_count() or 1
    try:
        quota, period = Path("/sys/fs/cgroup/cpu.max").read_text().split()
        if quota != "max":
            cpus = min(cpus, max(1, math.ceil(int(quota) / int(period))))
    except (OSError, ValueError):
        pass
    return cpus


def set_threads(threads: int | None = None) -> int:
    """Set faiss' OpenMP threads: ``threads``, else ``$OMP_NUM_THREADS`` if set, else the available CPUs."""
    if threads is None:
        env = os.environ.get("OMP_NUM_THREADS", "")
        threads = int(env) if env.isdigit() and int(env) > 0 else available_cpus()
    faiss.omp_set_num_threads(threads)
    return threads


def _as_float32_rows(vectors: Any, what: str, copy: bool = True) -> np.ndarray:
    """(n, d) C-contiguous float32 from numpy / torch / lists (a copy unless ``copy=False`` and it already is
    one); a single vector becomes one row."""
    if hasattr(vectors, "detach"):  # torch.Tensor, without importing torch
        vectors = vectors.detach().float().cpu().numpy()
    x = np.array(vectors, dtype=np.float32, order="C", ndmin=2, copy=True if copy else None)  # normalised in place
    if x.ndim != 2:
        raise ValueError(f"{what} must be a (n, dim) array, got shape {x.shape}")
    if not np.isfinite(x).all():
        raise ValueError(f"{what} contain NaN or inf values; check the embeddings")
    return x


def default_params(kind: Kind, n: int, dim: int) -> tuple[str, dict[str, Any]]:
    """Resolve ``kind="auto"`` and fill the parameters the caller left out, from the archive size.

    * exact: none.
    * hnsw: M=32, efConstruction=40, efSearch=64.
    * ivfpq: nlist = 4 * sqrt(n) rounded to a power of two in [64, 65536] (4096 at 1M); m = dim / 4
      sub-quantisers of 4 bits (32-byte codes at dim 256; the largest divisor of dim <= dim / 4);
      nprobe = nlist / 64 (>= 8); k_factor = 12 re-ranked candidates per result; k-means on ``train_size`` =
      48 * nlist points (capped at n) with ``niter`` = 8 iterations. Chosen on three 1M x 256 benchmark
      archives (BENCHMARKS.md), which are limited by different things: on the isotropic one (noise as large as
      the centre) and the hierarchical one by how many true neighbours the probed lists hold (nprobe), where the
      k-means sample matters far more than its iterations (recall@10 at nprobe 16 / k_factor 8 on isotropic:
      65k points x 12 it. 0.832, 131k x 12 0.933, 131k x 25 0.934, 197k x 8 0.953, 262k x 6 0.952, 393k x 4
      0.936, 524k x 3 0.899; 197k x 8 trains in 18.7 s on 2 cores against 31.7 s for 131k x 25), on the tight
      isotropic one (spread 0.5) by re-ranking enough candidates to cover a whole 100-point cluster (k_factor 8:
      0.967, 16: 0.9997). Refining from float16 or int8 copies instead of the float32 vectors was not faster enough
      to pay for the lost recall.
    """
    if kind == "auto":
        kind = "exact" if n < AUTO_EXACT_MAX else "ivfpq"
    if kind == "exact":
        return kind, {}
    if kind == "hnsw":
        return kind, {"M": 32, "efConstruction": 40, "efSearch": 64}
    if kind == "ivfpq":
        nlist = int(min(65536, max(64, 2 ** round(math.log2(4 * math.sqrt(max(n, 1)))))))
        m = max(d for d in range(1, max(1, dim // 4) + 1) if dim % d == 0)
        return kind, {
            "nlist": nlist,
            "m": m,
            "nprobe": max(8, nlist // 64),
            "k_factor": 12,
            "train_size": min(n, 48 * nlist),
            "niter": 8,
        }
    raise ValueError(f"unknown index kind {kind!r}; use 'auto', 'exact', 'hnsw' or 'ivfpq'")


_SEARCH_PARAMS = {"exact": (), "hnsw": ("efSearch",), "ivfpq": ("nprobe", "k_factor")}
PARAM_LIMITS: dict[str, tuple[type, float, float]] = {
    "nlist": (int, 1, 1 << 20), "m": (int, 1, 65_536), "nprobe": (int, 1, 1 << 20),
    "k_factor": (float, 1, 4096), "train_size": (int, 1, 1 << 31), "niter": (int, 1, 1000),
    "M": (int, 2, 512), "efConstruction": (int, 1, 1 << 16), "efSearch": (int, 1, 1 << 16),
}
"""Type and range of every index parameter (build, search, index.json): a negative M made faiss allocate until
std::bad_alloc, nlist=0 crashed it."""


def check_params(kind: str, params: dict[str, Any], where: str = "") -> None:
    """Raise ValueError naming the first parameter of the wrong type or outside `PARAM_LIMITS`."""
    for name, value in params.items():
        if name not in PARAM_LIMITS:
            continue
        kind_of, low, high = PARAM_LIMITS[name]
        number = isinstance(value, (int, float)) and not isinstance(value, bool)
        if not number or (kind_of is int and not float(value).is_integer()) or not low <= value <= high:
            what = "an integer" if kind_of is int else "a number"
            raise ValueError(f"{where}{kind} index: {name}={value!r} must be {what} in [{low:g}, {high:g}]")


def _apply_search_params(index: faiss.Index, kind: str, params: dict[str, Any]) -> None:
    """Set the search-time knobs stored in ``params`` on a (loaded or new) faiss index."""
    if kind == "hnsw":
        faiss.downcast_index(index).hnsw.efSearch = int(params["efSearch"])
    elif kind == "ivfpq":
        refine = faiss.downcast_index(index)
        refine.k_factor = float(params["k_factor"])
        faiss.extract_index_ivf(refine).nprobe = int(params["nprobe"])


def _make_faiss_index(x: np.ndarray, kind: str, params: dict[str, Any], seed: int, add: bool = True) -> faiss.Index:
    """Create, train and (``add``) fill the faiss index for normalised float32 rows ``x``."""
    n, dim = x.shape
    if kind == "exact":
        index = faiss.IndexFlatIP(dim)
    elif kind == "hnsw":
        index = faiss.IndexHNSWFlat(dim, int(params["M"]), faiss.METRIC_INNER_PRODUCT)
        index.hnsw.efConstruction = int(params["efConstruction"])
    else:
        if dim % int(params["m"]) or int(params["m"]) > dim:
            raise ValueError(f"ivfpq: m={params['m']} sub-quantisers must divide the dimension {dim}")
        if n < params["nlist"]:
            raise ValueError(f"ivfpq: {n} vectors cannot train nlist={params['nlist']} lists; use kind='exact'")
        factory = f"IVF{int(params['nlist'])},PQ{int(params['m'])}x4fs,RFlat"
        index = faiss.index_factory(dim, factory, faiss.METRIC_INNER_PRODUCT)
        faiss.extract_index_ivf(index).cp.niter = int(params["niter"])
        rng = np.random.default_rng(seed)
        train = x if params["train_size"] >= n else x[np.sort(rng.choice(n, int(params["train_size"]), replace=False))]
        index.train(train)
    if add:
        index.add(x)
    _apply_search_params(index, kind, params)
    return index


def _search_parameters(kind: str, params: dict[str, Any]) -> Any:
    """faiss per-call SearchParameters for ``params`` (the index's own settings are left as they are)."""
    if kind == "hnsw":
        return faiss.SearchParametersHNSW(efSearch=int(params["efSearch"]))
    if kind == "ivfpq":
        ivf = faiss.SearchParametersIVF(nprobe=int(params["nprobe"]))
        out = faiss.IndexRefineSearchParameters(k_factor=float(params["k_factor"]), base_index_params=ivf)
        out.ivf_params_ref = ivf  # keep the base parameters alive as long as the refine parameters
        return out
    return None


def _ladder(start: int, stop: int) -> list[int]:
    """Integers from ``start`` to ``stop`` (both included) in steps of ~sqrt(2): 1, 2, 3, 4, 6, 8, 11, 16, 23, ..."""
    out, value = [], float(start)
    while round(value) < stop:
        if not out or round(value) > out[-1]:
            out.append(int(round(value)))
        value *= math.sqrt(2)
    return out + [int(stop)]


def _drop_self(found: np.ndarray, rows: np.ndarray) -> np.ndarray:
    """Remove each query's own archive row from its result row (or the last result if it is absent): (q, w-1)."""
    keep = found != rows[:, None]
    absent = keep.all(axis=1)
    keep[absent, -1] = False
    return found[keep].reshape(len(found), found.shape[1] - 1)


def _recall_per_query(found: np.ndarray, truth: np.ndarray) -> np.ndarray:
    """|found top-k n exact top-k| / k for each query (k = truth.shape[1]; -1 entries match nothing)."""
    k = truth.shape[1]
    return (found[:, :k, None] == truth[:, None, :]).any(axis=2).sum(axis=1) / k


def _summary(per_query: np.ndarray) -> tuple[float, float]:
    """Mean recall and its standard error."""
    se = float(per_query.std(ddof=1) / math.sqrt(len(per_query))) if len(per_query) > 1 else 0.0
    return float(per_query.mean()), se


def timed_qps(run: Callable[[], Any], queries: int, min_s: float = 0.1, max_s: float = 0.5) -> float:
    """Queries/s of ``run()`` (one batched search of ``queries`` queries): the fastest of repeated runs (at least 3,
    for at least ``min_s`` in all), since the machine may be shared and one short run is mostly noise; slow points
    (near-exhaustive scans) stop repeating once ``max_s`` is spent, a long run being its own average. The timer of
    every calibration, faiss or search engine."""
    best, spent, runs = math.inf, 0.0, 0
    while (runs < 3 or spent < min_s) and not (runs and spent >= max_s):
        t0 = time.perf_counter()
        run()
        took = time.perf_counter() - t0
        best, spent, runs = min(best, took), spent + took, runs + 1
    return queries / max(best, 1e-9)


def _timed_qps(index: faiss.Index, q: np.ndarray, k: int, search_params: Any, min_s: float = 0.1,
               max_s: float = 0.5) -> float:
    """`timed_qps` of one batched faiss search of ``q``."""
    return timed_qps(lambda: index.search(q, k, params=search_params), len(q), min_s, max_s)


EF_LADDER = (16, 24, 32, 48, 64, 96, 128, 192, 256, 384, 512, 768, 1024)
"""Candidate-list sizes a graph index's calibration walks (faiss efSearch; Milvus HNSW ef, DiskANN search_list)."""


def walk_knob(knob: str, values: Sequence[int], search: Callable[[dict[str, int]], np.ndarray],
              qps: Callable[[dict[str, int]], float], truth: np.ndarray, target: float, targets: Sequence[float],
              deadline: float) -> list[dict[str, Any]]:
    """Operating points of a search whose recall and time both grow with one knob (HNSW efSearch, an IVF index's
    nprobe, DiskANN's search_list): value by value, the recall@k of ``search({knob: value})`` (result ids, (q, >=k))
    against the exact top-k ``truth`` and its q/s (``qps``), until a value meets the highest of ``targets`` (or the
    build's ``target`` once ``deadline`` has passed). The first value that meets a target is then the fastest that
    does, so `pick_point` needs no more."""
    points: list[dict[str, Any]] = []
    for value in values:
        point = {knob: int(value)}
        speed = qps(point)
        recall = float(_recall_per_query(search(point), truth).mean())
        points.append({**point, "recall": round(recall, 4), "qps": round(speed)})
        if recall >= max(targets) or (time.perf_counter() > deadline and recall >= target):
            break
    return points


def finish_calibration(points: list[dict[str, Any]], knobs: Sequence[str], target: float,
                       search: Callable[[dict[str, Any]], np.ndarray], truth: np.ndarray, started: float,
                       exact_qps: float, **extra: Any) -> dict[str, Any]:
    """The calibration record of an index (faiss or search engine): the fastest measured point meeting ``target``
    (`pick_point`), its recall@k re-measured over the held-out queries with its standard error, and everything
    measured (``IndexMetadata.calibration``; a Milvus collection's properties)."""
    best = pick_point(points, target)
    chosen = {key: best[key] for key in knobs}
    recall, se = _summary(_recall_per_query(search(chosen), truth))
    return {
        "target": target, "recall": round(recall, 4), "recall_se": round(se, 4), "met": recall >= target,
        "k": int(truth.shape[1]), "queries": len(truth), "qps": best["qps"], **extra, "params": chosen,
        "seconds": round(time.perf_counter() - started, 2), "points": points, "exact_qps": round(exact_qps),
    }


FAR_BELOW = 0.05
"""While a rung's best recall is this far below the build's target the walk steps ~2x in nprobe, not ~1.4x."""
SHALLOW = 32
"""The walk re-ranks up to ``SHALLOW`` x k candidates per query until a rung shows the ranking limits recall
(``SHALLOW`` x k recalls more than ``SHALLOW / 2`` x k), then all of ``K_FACTORS``."""


def _walk_ivfpq(index: faiss.Index, x: np.ndarray, q: np.ndarray, truth: np.ndarray, targets: list[float],
                deadline: float) -> dict[tuple[int, int], float]:
    """Recall@k of every (nprobe, k_factor) on the ladder, until every k_factor meets the highest target (or
    nprobe is 4x the first rung where one did, or ``deadline``). One fast-scan pass per nprobe gives the
    candidates of the deepest k_factor; the shallower ones re-rank its prefix exactly, as IndexRefineFlat does.
    Factors above ``SHALLOW`` are walked only from the rung where re-ranking deeper starts to pay (the
    exact scores of 256 x k candidates per query cost ~8x those of 32 x k)."""
    refine = faiss.downcast_index(index)
    ivf = faiss.extract_index_ivf(refine)
    base = refine.base_index
    k = truth.shape[1]
    grid: dict[tuple[int, int], float] = {}
    first_top: int | None = None
    factors = tuple(f for f in K_FACTORS if f <= SHALLOW)
    far = False  # the last rung's best recall was FAR_BELOW the build's target: take every other rung
    for rung, nprobe in enumerate(_ladder(1, ivf.nlist)):
        if far and rung % 2 and nprobe < ivf.nlist:
            continue
        ivf.nprobe = nprobe
        width = k * max(factors)
        chunk = max(1, (1 << 25) // (width * x.shape[1]))
        _, cand = base.search(q, width)
        scores = np.empty(cand.shape, dtype=np.float32)
        for start in range(0, len(q), chunk):  # exact scores of all candidates, ~128 MB of gathered rows at a time
            c = cand[start:start + chunk]
            scores[start:start + chunk] = np.einsum("bmd,bd->bm", x[np.maximum(c, 0)], q[start:start + chunk])
        scores[cand < 0] = -np.inf
        for factor in factors:
            depth = k * factor
            top = np.argsort(-scores[:, :depth], axis=1, kind="stable")[:, :k]
            grid[(nprobe, factor)] = float(_recall_per_query(np.take_along_axis(cand[:, :depth], top, 1), truth).mean())
        met = [f for f in factors if grid[(nprobe, f)] >= max(targets)]
        if met and first_top is None:
            first_top = nprobe
        if len(met) == len(factors) or (first_top is not None and nprobe >= 4 * first_top):
            break
        if time.perf_counter() > deadline and any(r >= targets[0] for r in grid.values()):
            break  # the budget only cuts the walk once the build's own target is met
        far = max(grid[(nprobe, f)] for f in factors) < targets[0] - FAR_BELOW
        if max(factors) == SHALLOW and grid[(nprobe, SHALLOW)] > grid[(nprobe, SHALLOW // 2)] + 0.002:
            factors = K_FACTORS  # the 4-bit ranking, not the probed lists, limits recall: re-rank deeper
    return grid


def _staircase(grid: dict[tuple[int, int], float], goal: float) -> set[tuple[int, int]]:
    """The (nprobe, k_factor) points worth timing for ``goal``: per k_factor the fewest probes that meet it, minus
    those a smaller k_factor meets with as few probes (same scan, shallower re-rank: never slower)."""
    points: set[tuple[int, int]] = set()
    fewest = None
    for factor in K_FACTORS:
        ok = [p for (p, f), r in grid.items() if f == factor and r >= goal]
        if ok and (fewest is None or min(ok) < fewest):
            fewest = min(ok)
            points.add((fewest, factor))
    return points


def _calibrate(index: faiss.Index, kind: str, params: dict[str, Any], x: np.ndarray, q: np.ndarray, target: float,
               k: int, budget_s: float) -> dict[str, Any]:
    """Set ``params``' search knobs to the fastest operating point whose recall@k for the held-out queries ``q``
    (archive vectors not yet added) against the indexed rows ``x`` meets ``target``; returns what was measured
    (stored as ``IndexMetadata.calibration``)."""
    t0 = time.perf_counter()
    truth = faiss.knn(q, x, k, metric=faiss.METRIC_INNER_PRODUCT)[1]
    exact_qps = len(q) / max(time.perf_counter() - t0, 1e-9)  # the exact top-k is an exact search: time it
    targets = sorted({*CALIBRATION_TARGETS, target})
    deadline = time.perf_counter() + budget_s  # for the walk, after the exact top-k
    points: list[dict[str, Any]] = []
    if kind == "ivfpq":
        grid = _walk_ivfpq(index, x, q, truth, [target, *targets], deadline)
        chosen_points = set().union(*(_staircase(grid, goal) for goal in targets))
        if not any(r >= target for r in grid.values()):  # unreachable: the best recall seen, cheapest first
            best = max(grid.values())
            chosen_points.add(min(key for key, r in grid.items() if r == best))
        for nprobe, factor in sorted(chosen_points):
            search = {"nprobe": nprobe, "k_factor": factor}
            qps = _timed_qps(index, q, k, _search_parameters(kind, search))
            points.append({**search, "recall": round(grid[(nprobe, factor)], 4), "qps": round(qps)})
    else:  # hnsw: recall and time both grow with efSearch, so the first rung that meets the target is the fastest
        points = walk_knob("efSearch", [ef for ef in EF_LADDER if ef >= k],
                           lambda p: index.search(q, k, params=_search_parameters(kind, p))[1],
                           lambda p: _timed_qps(index, q, k, _search_parameters(kind, p)), truth, target, targets,
                           deadline)
    record = finish_calibration(points, _SEARCH_PARAMS[kind], target,
                                lambda p: index.search(q, k, params=_search_parameters(kind, p))[1], truth, t0,
                                exact_qps, threads=faiss.omp_get_max_threads())
    params.update(record["params"])
    _apply_search_params(index, kind, params)
    return record


def _exact_instead(x: np.ndarray, calibration: dict[str, Any], kind: str) -> tuple[faiss.Index, dict[str, Any]]:
    """``kind="auto"`` when the calibrated ANN index cannot keep the promise (its best recall is below the target)
    or is slower than exact search at it: an exact index over all rows, and a calibration record that says so
    (recall 1.0 at the exact search's measured q/s; what the ANN index reached is kept under ``"ann"``)."""
    index = faiss.IndexFlatIP(x.shape[1])
    index.add(x)
    ann = {key: calibration[key] for key in ("recall", "recall_se", "met", "qps", "params", "points")}
    why = "slower than exact search" if calibration["met"] else "below the target"
    return index, {**calibration, "recall": 1.0, "recall_se": 0.0, "met": True, "qps": calibration["exact_qps"],
                   "params": {}, "points": [], "ann": {"kind": kind, "why": why, **ann}}


def held_out_count(n: int, calibration_queries: int) -> int:
    """How many archive vectors a calibration holds out as queries: ``calibration_queries``, at most a tenth."""
    return min(calibration_queries, n // 10)


def held_out_rows(n: int, count: int, seed: int) -> np.ndarray:
    """The archive rows (positions, unsorted) a calibration with ``seed`` holds out as queries."""
    return np.random.default_rng(seed + 1).choice(n, count, replace=False)


def _hold_out(x: np.ndarray, ids: np.ndarray, count: int, seed: int) -> None:
    """Move ``count`` random rows of ``x`` (and their ids) to the end, in place, by swapping with tail rows:
    the held-out calibration queries are added to the index last, after calibration."""
    n = len(x)
    rows = held_out_rows(n, count, seed)
    tail = np.arange(n - count, n)
    move = np.setdiff1d(rows, tail)  # held-out rows not yet in the tail
    free = np.setdiff1d(tail, rows)  # tail rows that are not held out
    x[move], x[free] = x[free].copy(), x[move].copy()
    ids[move], ids[free] = ids[free].copy(), ids[move].copy()


def pick_point(points: list[dict[str, Any]], recall: float) -> dict[str, Any]:
    """The fastest calibrated point whose recall meets ``recall``; the highest-recall one when none does."""
    ok = [p for p in points if p["recall"] >= recall]
    if ok:
        return max(ok, key=lambda p: (p["qps"], p["recall"]))
    return max(points, key=lambda p: (p["recall"], p["qps"]))


@dataclass
class IndexMetadata:
    """What an index was built from: checked on load so that queries and archive come from the same model."""

    dimension: int
    kind: str
    metric: str = "ip"
    params: dict[str, Any] = field(default_factory=dict)
    fingerprint: str = ""  # e.g. model repo + revision + weights hash: identifies the embedding model
    space: str = ""  # "unified" (same-modal) or "cross" (cross-modal) head
    sensor: str = ""  # sensor of the archive vectors, e.g. "s2"
    count: int = 0
    calibration: dict[str, Any] = field(default_factory=dict)  # what `build_index(recall=...)` measured
    faiss_version: str = faiss.__version__
    format_version: int = FORMAT_VERSION


class RetrievalIndex:
    """A faiss index plus the dataset ids of its rows and its provenance; ``search`` returns dataset ids."""

    def __init__(self, index: faiss.Index, ids: np.ndarray, metadata: IndexMetadata) -> None:
        if index.ntotal != len(ids):
            raise ValueError(f"the faiss index holds {index.ntotal} vectors but {len(ids)} ids were given")
        self.index, self.ids, self.metadata = index, ids, metadata

    def __len__(self) -> int:
        return int(self.index.ntotal)

    def __repr__(self) -> str:
        m = self.metadata
        return f"RetrievalIndex({len(self)} x {m.dimension}, kind={m.kind}, sensor={m.sensor!r}, space={m.space!r})"

    def set_search_params(self, **params: Any) -> None:
        """Change search-time knobs (hnsw: efSearch; ivfpq: nprobe, k_factor)."""
        allowed = _SEARCH_PARAMS[self.metadata.kind]
        unknown = set(params) - set(allowed)
        if unknown:
            raise ValueError(f"{self.metadata.kind} index: unknown search params {sorted(unknown)}; use {allowed}")
        check_params(self.metadata.kind, params)
        self.metadata.params.update(params)
        _apply_search_params(self.index, self.metadata.kind, self.metadata.params)

    def search(self, queries: Any, k: int = 10, *, recall: float | None = None,
               **params: Any) -> tuple[np.ndarray, np.ndarray]:
        """Top-k of each query: (scores (q, k) float32 cosine, ids (q, k) dataset-id strings).

        Queries are L2-normalised here. Where fewer than k results exist the id is "" and the score -inf.
        Speed against recall, for this call only: ``recall=0.98`` takes the fastest point the build's calibration
        measured at that recall or more (the highest-recall one if none reached it); or explicit knobs
        (ivfpq: ``nprobe=``, ``k_factor=``; hnsw: ``efSearch=``).

        Memory is bounded whatever the caller passes: queries go to faiss in batches whose working memory (the
        k x k_factor re-ranked candidates of IVF-PQ, the result heaps, the id strings) stays within
        `SEARCH_BATCH_BYTES`, and faiss is asked for at most as many results as the index holds; only the
        returned (q, k) arrays grow with q and k.
        """
        q = _as_float32_rows(queries, "queries")
        if q.shape[1] != self.metadata.dimension:
            raise ValueError(
                f"query dimension {q.shape[1]} does not match the index dimension {self.metadata.dimension} "
                f"(index built from {self.metadata.fingerprint or 'an unnamed model'}, space "
                f"{self.metadata.space or '?'})"
            )
        if isinstance(k, bool) or not isinstance(k, (int, np.integer)) or k < 1:
            raise ValueError(f"k must be an integer >= 1, got {k!r}")
        k = int(k)
        knobs = self._call_knobs(recall, params)
        search_params = _search_parameters(self.metadata.kind, {**self.metadata.params, **knobs}) if knobs else None
        if self.metadata.metric == "ip":
            faiss.normalize_L2(q)
        depth = min(k, len(self))  # faiss never finds more than the index holds
        batch = self._batch_rows(depth, {**self.metadata.params, **knobs})
        scores = np.full((len(q), k), -np.inf, dtype=np.float32)
        ids = np.full((len(q), k), "", dtype=self.ids.dtype)
        parts = max(1, -(-len(q) // batch))
        bounds = [len(q) * part // parts for part in range(parts + 1)]  # equal batches (+-1): none a sliver
        for start, stop in zip(bounds[:-1], bounds[1:]):
            found_scores, rows = self.index.search(q[start:stop], depth, params=search_params)
            found = rows >= 0
            scores[start:stop, :depth] = np.where(found, found_scores, -np.inf)
            ids[start:stop, :depth] = np.where(found, self.ids[np.where(found, rows, 0)], "")
        return scores, ids

    def _batch_rows(self, depth: int, knobs: dict[str, Any]) -> int:
        """Queries per faiss call such that the call's working memory stays within `SEARCH_BATCH_BYTES`."""
        per_result = 4 + 8 + 8 + 4 * max(1, self.ids.dtype.itemsize // 4)  # score, row, temporaries, id string
        per_query = depth * per_result
        if self.metadata.kind == "ivfpq":  # the base index's candidates, re-ranked on the stored vectors
            per_query += 2 * int(depth * float(knobs.get("k_factor", 1))) * 12
        elif self.metadata.kind == "hnsw":
            per_query += 2 * max(depth, int(knobs.get("efSearch", 16))) * 12
        return max(1, SEARCH_BATCH_BYTES // per_query)

    def _call_knobs(self, recall: float | None, params: dict[str, Any]) -> dict[str, Any]:
        """The search knobs of one call ({}: the index's stored settings)."""
        kind = self.metadata.kind
        unknown = set(params) - set(_SEARCH_PARAMS[kind])
        if unknown:
            raise ValueError(f"{kind} index: unknown search params {sorted(unknown)}; use {_SEARCH_PARAMS[kind]}")
        if recall is not None:
            if params:
                raise ValueError("give either recall= or explicit search params, not both")
            if not 0 < recall <= 1:
                raise ValueError(f"recall must be in (0, 1], got {recall}")
            points = self.metadata.calibration.get("points")
            if kind == "exact":
                return {}
            if not points:
                raise ValueError(f"this {kind} index was built without recall calibration (fixed params "
                                 f"{self.metadata.params}); rebuild it with recall=..., or pass explicit params")
            params = {key: pick_point(points, recall)[key] for key in _SEARCH_PARAMS[kind]}
        check_params(kind, params)
        return dict(params)

    def save(self, directory: str | os.PathLike[str], overwrite: bool = False) -> Path:
        """Write index + metadata + ids to ``directory`` atomically (temp folder beside it, then an atomic swap).

        Replaces only an earlier index folder (or an empty one) unless ``overwrite``; one writer at a time
        (`crjepa.utils.atomic.atomic_dir`: `OutputExistsError`, `LockedError`)."""
        target = Path(directory)
        with atomic_dir(target, kind=OUTPUT_KIND, overwrite=overwrite) as tmp:
            faiss.write_index(self.index, str(tmp / INDEX_FILE))
            (tmp / META_FILE).write_text(json.dumps(asdict(self.metadata), indent=2, sort_keys=True))
            (tmp / IDS_FILE).write_text(json.dumps(self.ids.tolist()))
        return target

    @classmethod
    def load(cls, directory: str | os.PathLike[str], expected_fingerprint: str | None = None) -> RetrievalIndex:
        """Read an index written by :meth:`save`; ``expected_fingerprint`` guards against a different model.

        The folder may come from the Hub, so nothing in it is trusted (docs/RELIABILITY.md): index.json is
        checked key by key (`IndexFileError` names the file), index.faiss is read through a stream that accepts only
        the faiss structures `build_index` writes for the recorded kind (no memory-mapped or on-disk inverted
        lists, which would open other local files) and the loaded object must be that class. All three files
        come from one version of the folder even while a writer replaces it (`read_consistently`).
        """
        path = Path(directory)
        missing = [name for name in (INDEX_FILE, META_FILE, IDS_FILE) if not (path / name).is_file()]
        if missing:
            raise FileNotFoundError(f"{path} is not a saved RetrievalIndex: missing {', '.join(missing)}")
        index, ids, metadata = read_consistently(path, _read_index_folder)
        if expected_fingerprint is not None and (not metadata.fingerprint
                                                 or metadata.fingerprint != expected_fingerprint):
            raise ValueError(
                f"{path} was built from model {metadata.fingerprint!r} but {expected_fingerprint!r} was expected: "
                "the embeddings are not comparable; rebuild the index with this model"
            )
        return cls(index, ids, metadata)


OUTPUT_KIND = "faiss-index"
_FOURCC = {  # the faiss structures build_index writes, per kind (top level first)
    ("exact", "ip"): ({b"IxFI"}, faiss.IndexFlatIP),
    ("exact", "l2"): ({b"IxF2"}, faiss.IndexFlatL2),
    ("hnsw", "ip"): ({b"IHNf", b"IxFI"}, faiss.IndexHNSWFlat),
    ("ivfpq", "ip"): ({b"IxRF", b"IwPf", b"IxFI", b"ilbl", b"ilar"}, faiss.IndexRefineFlat),
}
_TOP = {("exact", "ip"): b"IxFI", ("exact", "l2"): b"IxF2", ("hnsw", "ip"): b"IHNf", ("ivfpq", "ip"): b"IxRF"}
_META_TYPES: dict[str, tuple[type, ...]] = {
    "dimension": (int,), "kind": (str,), "metric": (str,), "params": (dict,), "fingerprint": (str,),
    "space": (str,), "sensor": (str,), "count": (int,), "faiss_version": (str,), "format_version": (int,),
    "calibration": (dict,),
}
MAX_DIMENSION = 65_536
MAX_META_BYTES = 16 << 20
MAX_ID_BYTES = 4096
"""index.json and ids.json are read whole: a larger file than they can need is refused before it is read."""


class IndexFileError(CRJepaError, ValueError):
    """A saved index folder that cannot be used as it is (corrupt, truncated, unknown structure, bad metadata)."""


def _check_metadata(meta: Any, file: Path) -> IndexMetadata:
    """index.json -> IndexMetadata, refusing unknown keys, wrong types and out-of-range values."""
    rebuild = f"rebuild the index (`crjepa index <archive>`) or delete {file.parent}"
    if not isinstance(meta, dict):
        raise IndexFileError(f"{file} must hold a JSON object; {rebuild}")
    unknown = sorted(set(meta) - set(_META_TYPES))
    if unknown:
        raise IndexFileError(f"{file}: unknown key(s) {unknown} (this crjepa knows {sorted(_META_TYPES)}); "
                             f"a newer crjepa wrote it or it was edited: {rebuild}")
    for key, types in _META_TYPES.items():
        if key in meta and (not isinstance(meta[key], types) or isinstance(meta[key], bool)):
            raise IndexFileError(f"{file}: {key} must be {types[0].__name__}, found {meta[key]!r}; {rebuild}")
    for key in ("dimension", "kind"):
        if key not in meta:
            raise IndexFileError(f"{file}: {key} is missing; {rebuild}")
    if meta.get("format_version", 0) > FORMAT_VERSION:
        raise IndexFileError(f"{file}: format {meta['format_version']} is newer than this crjepa; upgrade crjepa")
    if not 1 <= meta["dimension"] <= MAX_DIMENSION:
        raise IndexFileError(f"{file}: dimension {meta['dimension']} is out of range [1, {MAX_DIMENSION}]; {rebuild}")
    if (meta["kind"], meta.get("metric", "ip")) not in _FOURCC:
        raise IndexFileError(f"{file}: kind {meta['kind']!r} with metric {meta.get('metric', 'ip')!r} is not an index "
                             f"crjepa writes (exact, hnsw, ivfpq); {rebuild}")
    params = meta.get("params", {})
    for name in _SEARCH_PARAMS[meta["kind"]]:
        if name not in params:
            raise IndexFileError(f"{file}: search parameter {name} is missing; {rebuild}")
    try:
        check_params(meta["kind"], params)
    except ValueError as err:
        raise IndexFileError(f"{file}: {err}; {rebuild}") from None
    points = meta.get("calibration", {}).get("points", [])
    if not isinstance(points, list) or not all(
            isinstance(point, dict) and all(isinstance(point.get(name), (int, float)) and not isinstance(
                point.get(name), bool) and 0 <= point[name] <= 1_000_000 for name in (*_SEARCH_PARAMS[meta["kind"]],
                                                                                    "recall", "qps"))
            for point in points):
        raise IndexFileError(f"{file}: calibration points must be objects with numeric search parameters, recall "
                             f"and qps; {rebuild}")
    return IndexMetadata(**meta)


_CLASS_NAMES = {b"IxFI": "IndexFlatIP", b"IxF2": "IndexFlatL2", b"IHNf": "IndexHNSWFlat", b"IxRF": "IndexRefineFlat",
                b"IwPf": "IndexIVFPQFastScan"}
_METRIC_CODES = {"ip": faiss.METRIC_INNER_PRODUCT, "l2": faiss.METRIC_L2}
_HEADER_DUMMY = 1 << 20  # faiss writes two constant 8-byte fields in every index header
_MAX_COUNT = 1 << 40  # faiss' own bound on a vector's length


class _Layout:
    """The reads faiss makes of an index file that `build_index` wrote, checked as they happen (`_read_faiss`).

    A generator per faiss structure (`header`, `flat`, `hnsw`, `ivfpq_fastscan`, `refine`) yields what faiss must
    read next, ``("field", n)`` (a scalar: its bytes come back through ``send``, checked before faiss sees them) or
    ``("blob", n, check)`` (the payload of a vector, whose length was checked against the bytes left in the file
    before faiss allocates it; ``check`` sees its chunks, e.g. graph neighbours must be node ids). Every size (a
    vector length, a number of lists, a code size) is checked against the file's real size and the structure's
    other fields before faiss acts on it, so a 64 KB file cannot make faiss allocate gigabytes. The layout is faiss
    1.9-1.15's; another faiss writing another layout gets a clear refusal, never an unchecked read."""

    def __init__(self, file: Path, size: int, kind: str, metric: str, dimension: int, rebuild: str) -> None:
        self.file, self.size, self.kind, self.metric, self.dimension, self.rebuild = (
            file, size, kind, metric, dimension, rebuild)
        self.position = 0  # bytes consumed so far (updated by the reader)

    # -------------------------------------------------------------------------------- errors
    def refuse(self, why: str) -> IndexFileError:
        return IndexFileError(f"{self.file} {why}; refusing to load it: {self.rebuild}")

    def corrupt(self, why: str) -> IndexFileError:
        return IndexFileError(f"{self.file} is truncated or corrupt ({why}); {self.rebuild}")

    # -------------------------------------------------------------------------------- primitives
    def field(self, fmt: str):
        data = yield ("field", struct.calcsize(fmt))
        return struct.unpack(fmt, data)[0]

    def vector(self, element: int, what: str, exact: int | None = None, most: int | None = None,
               check: Any = None):
        """A faiss vector: an 8-byte count, then count x element bytes (read only when the file holds them)."""
        count = yield from self.field("<Q")
        left = self.size - self.position
        if count >= _MAX_COUNT or count * element > left:
            raise self.corrupt(f"{what} claims {count:,} x {element} bytes at byte {self.position:,}, "
                               f"{left:,} bytes are left")
        if exact is not None and count != exact:
            raise self.corrupt(f"{what} holds {count:,} values, the index structure needs {exact:,}")
        if most is not None and count > most:
            raise self.corrupt(f"{what} holds {count:,} values, at most {most:,} are possible")
        if count:
            yield ("blob", count * element, check)
        return count

    def int_in(self, fmt: str, what: str, low: int, high: int):
        value = yield from self.field(fmt)
        if not low <= value <= high:
            raise self.corrupt(f"{what} is {value}, outside [{low}, {high}]")
        return value

    # -------------------------------------------------------------------------------- structures
    def index(self, allowed: tuple[bytes, ...], ntotal: int | None = None):
        """One index: its fourcc (one of ``allowed``), the common header, then its own fields."""
        fourcc = yield from self.field("4s")
        if fourcc not in allowed:
            name = fourcc.decode("latin-1")
            shown = name if name.isprintable() else repr(fourcc)
            raise self.refuse(f"holds faiss structure {shown!r}, not a{'n' if self.kind[0] in 'aeiou' else ''} "
                              f"{self.kind} index as crjepa writes it")
        d = yield from self.field("<i")
        if d != self.dimension:
            raise IndexFileError(f"{self.file} holds a {_CLASS_NAMES[fourcc]} of dimension {d}; index.json says a "
                                 f"{self.kind} index of dimension {self.dimension}: {self.rebuild}")
        count = yield from self.field("<q")
        if not 0 <= count <= self.size or (ntotal is not None and count != ntotal):
            raise self.corrupt(f"the {_CLASS_NAMES[fourcc]} claims {count:,} vectors")
        for _ in range(2):
            if (yield from self.field("<q")) != _HEADER_DUMMY:
                raise self.refuse("has a header faiss does not write")
        yield from self.int_in("<B", "is_trained", 0, 1)
        metric = yield from self.field("<i")
        if metric != _METRIC_CODES[self.metric]:
            raise self.refuse(f"uses metric {metric}, not the {self.metric!r} of index.json")
        body = {b"IxFI": self.flat, b"IxF2": self.flat, b"IHNf": self.hnsw, b"IxRF": self.refine,
                b"IwPf": self.ivfpq_fastscan}[fourcc]
        yield from body(count)
        return count

    def flat(self, count: int):
        yield from self.vector(4, "the stored vectors", exact=count * self.dimension)

    def hnsw(self, count: int):
        levels: list[np.ndarray] = []
        offsets: list[np.ndarray] = []
        yield from self.vector(8, "assign_probas", most=64)
        cum = []
        yield from self.vector(4, "cum_nneighbor_per_level", most=65,
                               check=lambda chunk: cum.append(np.frombuffer(chunk, np.int32)))
        yield from self.vector(4, "levels", exact=count,
                               check=lambda chunk: levels.append(np.frombuffer(chunk, np.int32)))
        yield from self.vector(8, "offsets", exact=count + 1,
                               check=lambda chunk: offsets.append(np.frombuffer(chunk, np.uint64)))
        per_level = np.concatenate(cum) if cum else np.zeros(0, np.int32)
        level = np.concatenate(levels) if levels else np.zeros(0, np.int32)
        offset = np.concatenate(offsets) if offsets else np.zeros(0, np.uint64)
        if len(per_level) < 2 or per_level[0] != 0 or np.any(np.diff(per_level) < 0):
            raise self.corrupt("the HNSW neighbour counts per level are not a cumulative sum")
        if count and (level.min() < 1 or level.max() >= len(per_level)):
            raise self.corrupt("an HNSW node has a level outside the graph's levels")
        if offset[0] != 0 or np.any(np.diff(offset.astype(np.int64)) != per_level[level].astype(np.int64)):
            raise self.corrupt("the HNSW neighbour lists do not match the nodes' levels")

        def neighbours(chunk: bytes) -> None:
            ids = np.frombuffer(chunk, np.int32)
            if ids.size and (ids.min() < -1 or ids.max() >= count):
                raise self.corrupt(f"an HNSW neighbour is not a node id (0..{count - 1})")

        yield from self.vector(4, "neighbors", exact=int(offset[-1]), check=neighbours)
        entry = yield from self.field("<i")
        top = yield from self.field("<i")
        if count and (not 0 <= entry < count or top != int(level.max()) - 1):
            raise self.corrupt("the HNSW entry point or top level does not fit the graph")
        for what in ("efConstruction", "efSearch", "upper_beam"):
            yield from self.int_in("<i", what, 0, 1 << 24)
        yield from self.index((b"IxFI",), ntotal=count)  # the stored vectors

    def refine(self, count: int):
        yield from self.index((b"IwPf",), ntotal=count)
        yield from self.index((b"IxFI",), ntotal=count)
        k_factor = yield from self.field("<f")
        if not 0 < k_factor <= 1e6:
            raise self.corrupt(f"k_factor is {k_factor}")

    def ivfpq_fastscan(self, count: int):
        nlist = yield from self.int_in("<Q", "nlist", 1, max(1, (self.size - self.position) // 16))
        yield from self.field("<Q")  # nprobe: the index's own setting, replaced by index.json's
        yield from self.index((b"IxFI",), ntotal=nlist)  # the coarse quantiser
        yield from self.int_in("<B", "the direct map", 0, 0)
        yield from self.vector(8, "the direct map", exact=0)
        yield from self.int_in("<B", "by_residual", 0, 0)
        yield from self.field("<Q")  # code_size, derived from the PQ below
        bbs = yield from self.int_in("<i", "bbs", 32, 1024)
        m2 = yield from self.field("<Q")
        yield from self.int_in("<i", "implem", 0, 15)
        yield from self.int_in("<Q", "qbs2", 0, 1 << 16)
        if (yield from self.field("<Q")) != self.dimension:
            raise self.corrupt("the product quantiser's dimension differs from the index's")
        m = yield from self.int_in("<Q", "the number of sub-quantisers", 1, self.dimension)
        nbits = yield from self.int_in("<Q", "the bits per code", 4, 4)
        if self.dimension % m or m2 != m + (m % 2) or bbs % 32:
            raise self.corrupt("the product quantiser's fields do not fit together")
        yield from self.vector(4, "the PQ centroids", exact=self.dimension << nbits)
        if (yield from self.field("4s")) != b"ilbl":
            raise self.refuse("holds inverted lists of another kind than the in-memory blocks crjepa writes")
        yield from self.int_in("<Q", "the number of inverted lists", nlist, nlist)
        yield from self.field("<Q")  # code_size
        per_block = yield from self.int_in("<Q", "codes per block", bbs, bbs)
        block = yield from self.int_in("<Q", "the block size", bbs * m2 // 2, bbs * m2 // 2)
        total = 0

        def list_ids(chunk: bytes) -> None:
            ids = np.frombuffer(chunk, np.int64)
            if ids.size and (ids.min() < 0 or ids.max() >= count):
                raise self.corrupt(f"an inverted list holds an id outside 0..{count - 1}")

        for _ in range(nlist):
            size = yield from self.vector(8, "an inverted list's ids", most=count - total, check=list_ids)
            total += size
            yield from self.vector(1, "an inverted list's codes", exact=-(-size // per_block) * block)
        if total != count:
            raise self.corrupt(f"the inverted lists hold {total:,} vectors, the index {count:,}")


def _read_faiss(file: Path, kind: str, metric: str, dimension: int) -> faiss.Index:
    """faiss.read_index through a Python stream that lets faiss read only what `_Layout` expects for ``kind``.

    Every field faiss reads is checked before faiss sees it: the structures must be the ones `build_index` writes
    for the recorded kind (a crafted file declaring on-disk ("ilod") or other inverted lists stops before faiss
    acts on it), every length must fit in the bytes the file really has, graph neighbours and list ids must be
    valid. No IO flags: never memory-mapped."""
    _, cls = _FOURCC[(kind, metric)]
    rebuild = f"rebuild it with `crjepa index` (or delete {file.parent})"
    layout = _Layout(file, file.stat().st_size, kind, metric, dimension, rebuild)
    plan = layout.index((_TOP[(kind, metric)],))
    step: list[Any] = [next(plan)]
    blob_left = [0]

    with file.open("rb") as stream:
        def read(n: int) -> bytes:
            want = step[0]
            if want is None:
                raise layout.refuse("holds more than the index structure crjepa writes")
            if want[0] == "field":
                if n != want[1] or blob_left[0]:
                    raise layout.refuse(f"is read in a layout this crjepa cannot check (faiss {faiss.__version__} "
                                        f"read {n} bytes at byte {layout.position:,})")
                data = stream.read(n)
                layout.position += len(data)
                if len(data) < n:
                    raise layout.corrupt(f"it ends at byte {layout.position:,}")
                step[0] = _advance(plan, data)
                return data
            left = blob_left[0] or want[1]
            if n > left:
                raise layout.refuse(f"is read in a layout this crjepa cannot check (faiss {faiss.__version__} "
                                    f"read {n} bytes at byte {layout.position:,})")
            data = stream.read(n)
            layout.position += len(data)
            if want[2] is not None and data:
                want[2](data)
            blob_left[0] = left - len(data)
            if len(data) < n:
                raise layout.corrupt(f"it ends at byte {layout.position:,}")
            if not blob_left[0]:
                step[0] = _advance(plan, None)
            return data

        try:
            index = faiss.read_index(faiss.PyCallbackIOReader(read, 1 << 20))
        except IndexFileError:
            raise
        except RuntimeError as err:
            cause = err.__cause__ or err.__context__
            if isinstance(cause, IndexFileError):
                raise cause from None
            if "IndexFileError" in str(err) or "refusing to load" in str(err):
                raise IndexFileError(str(err).split("IndexFileError: ")[-1].strip().splitlines()[0]) from None
            raise IndexFileError(f"{file} is truncated or corrupt (faiss could not read it); {rebuild}") from None
    if step[0] is not None:
        raise layout.corrupt("faiss stopped before the end of the index structure")
    if type(index) is not cls or index.d != dimension:  # read_index returns the concrete class (and owns it)
        raise IndexFileError(f"{file} holds a {type(index).__name__} of dimension {index.d}; index.json says a "
                             f"{kind} index of dimension {dimension}: {rebuild}")
    return index


def _advance(plan: Any, data: bytes | None) -> Any:
    """The next expected read of a layout generator (None once it is complete)."""
    try:
        return plan.send(data)
    except StopIteration:
        return None


def _read_index_folder(path: Path) -> tuple[faiss.Index, np.ndarray, IndexMetadata]:
    meta_file, ids_file = path / META_FILE, path / IDS_FILE
    if meta_file.stat().st_size > MAX_META_BYTES:
        raise IndexFileError(f"{meta_file} is {meta_file.stat().st_size:,} bytes, more than index metadata can need "
                             f"({MAX_META_BYTES:,}); rebuild the index")
    try:
        meta = json.loads(meta_file.read_text())
    except (ValueError, UnicodeDecodeError) as err:
        raise IndexFileError(f"{meta_file} is not valid JSON ({err}); rebuild the index") from None
    metadata = _check_metadata(meta, meta_file)
    index = _read_faiss(path / INDEX_FILE, metadata.kind, metadata.metric, metadata.dimension)
    most = 16 + index.ntotal * (MAX_ID_BYTES + 8)  # JSON of ntotal ids (read whole: checked against the count first)
    if ids_file.stat().st_size > most:
        raise IndexFileError(f"{ids_file} is {ids_file.stat().st_size:,} bytes, more than {index.ntotal:,} ids can "
                             "take; rebuild the index")
    try:
        ids = json.loads(ids_file.read_text())
    except (ValueError, UnicodeDecodeError) as err:
        raise IndexFileError(f"{ids_file} is not valid JSON ({err}); rebuild the index") from None
    if not isinstance(ids, list) or not all(isinstance(i, (str, int)) for i in ids) or len(ids) != index.ntotal:
        raise IndexFileError(f"{ids_file} must list one id per vector ({index.ntotal}); rebuild the index")
    _apply_search_params(index, metadata.kind, metadata.params)
    return index, np.asarray(ids, dtype=str), metadata


def build_index(
    vectors: Any,
    kind: Kind = "auto",
    metric: Literal["ip", "l2"] = "ip",
    *,
    recall: float | None = DEFAULT_RECALL,
    ids: Any = None,
    fingerprint: str = "",
    space: str = "",
    sensor: str = "",
    threads: int | None = None,
    seed: int = 0,
    calibration_queries: int = 500,
    calibration_k: int = 10,
    calibration_budget_s: float = 10.0,
    copy: bool = True,
    **params: Any,
) -> RetrievalIndex:
    """Build a :class:`RetrievalIndex` over ``vectors`` (n, dim).

    ``metric="ip"`` L2-normalises the vectors (cosine similarity, the paper's ranking); ``"l2"`` keeps them and
    is supported for ``"exact"`` only. ``ids`` are the dataset ids of the rows (default "0".."n-1").
    ``params`` override :func:`default_params` (e.g. ``nlist=8192, nprobe=64`` or ``efSearch=128``).

    ``recall``: the recall@``calibration_k`` the ANN kinds must reach; their search knobs are calibrated on
    ``calibration_queries`` held-out archive vectors (module docstring), unless the caller fixes the search
    knobs (``nprobe`` / ``k_factor`` / ``efSearch``) or passes ``recall=None``. ``calibration_budget_s`` bounds
    the walk once the build's target is met (the search for the higher per-call targets' points stops there).
    The held-out rows are added last, so a calibrated index holds
    its rows (and ``ids``) in archive order except for those ``calibration_queries`` rows. ``copy=False``
    normalises (and reorders) a float32 C-contiguous ``vectors`` in place instead of copying it (large archives
    read for indexing only).
    """
    x = _as_float32_rows(vectors, "vectors", copy=copy)
    n, dim = x.shape
    if n == 0:
        raise ValueError("cannot build an index over an empty archive (0 vectors)")
    ids = np.arange(n).astype(str) if ids is None else np.array(ids).astype(str)  # a copy: reordered below
    if len(ids) != n:
        raise ValueError(f"{len(ids)} ids given for {n} vectors")
    if recall is not None and not 0 < recall <= 1:
        raise ValueError(f"recall must be in (0, 1], got {recall}")
    if kind == "auto" and recall == 1.0:
        kind = "exact"
    resolved, defaults = default_params(kind, n, dim)
    unknown = set(params) - set(defaults)
    if unknown:
        raise ValueError(f"{resolved} index: unknown parameters {sorted(unknown)}; accepted: {sorted(defaults)}")
    full = {**defaults, **params}
    check_params(resolved, full)
    if resolved == "ivfpq" and not full["nlist"] <= full["train_size"]:
        raise ValueError(f"ivfpq index: train_size={full['train_size']} must be at least nlist={full['nlist']}")
    if metric == "ip":
        faiss.normalize_L2(x)
    elif metric != "l2" or resolved != "exact":
        raise ValueError(f"metric {metric!r} with kind {resolved!r}: use metric='ip' (or 'l2' with kind='exact')")
    set_threads(threads)
    calibration: dict[str, Any] = {}
    fixed = set(params) & set(_SEARCH_PARAMS[resolved])
    held = held_out_count(n, calibration_queries) if recall is not None and resolved != "exact" and not fixed else 0
    if metric == "l2":
        index = faiss.IndexFlatL2(dim)
        index.add(x)
    elif held < 1:
        index = _make_faiss_index(x, resolved, full, seed)
    else:  # calibrate on held-out rows moved to the end: index the rest, calibrate, then add them too
        _hold_out(x, ids, held, seed)
        kept = n - held
        index = _make_faiss_index(x[:kept], resolved, full, seed, add=False)
        index.add(x[:kept])
        calibration = _calibrate(index, resolved, full, x[:kept], x[kept:], float(recall), calibration_k,
                                 calibration_budget_s)
        if kind == "auto" and (not calibration["met"] or calibration["qps"] < calibration["exact_qps"]):
            del index
            index, calibration = _exact_instead(x, calibration, resolved)
            resolved, full = "exact", {}
        else:
            index.add(x[kept:])
    metadata = IndexMetadata(
        dimension=dim, kind=resolved, metric=metric, params=full, fingerprint=fingerprint, space=space,
        sensor=sensor, count=n, calibration=calibration,
    )
    return RetrievalIndex(index, ids, metadata)


def merge_results(parts: list[tuple[np.ndarray, np.ndarray]], k: int) -> tuple[np.ndarray, np.ndarray]:
    """Global top-k from the (scores, ids) of several shards' ``search`` calls (what a serving layer over
    sharded indices does, docs/SCALE.md): per query, the k best scores of all shards, best first."""
    scores = np.concatenate([s for s, _ in parts], axis=1)
    ids = np.concatenate([i for _, i in parts], axis=1)
    order = np.argsort(-scores, axis=1, kind="stable")[:, :k]
    return np.take_along_axis(scores, order, 1), np.take_along_axis(ids, order, 1)


def describe_calibration(metadata: IndexMetadata) -> str:
    """One line for people: what the index promises and what it measured (printed by `crjepa index`)."""
    c = metadata.calibration
    if metadata.kind == "exact":
        ann = c.get("ann")
        if not ann:
            return "exact search (recall 1.0)"
        knobs = ", ".join(f"{key} {value:g}" for key, value in ann["params"].items())
        return (f"exact search (recall 1.0, {c['qps']:,} q/s on {c['threads']} threads) for target {c['target']}: "
                f"the calibrated {ann['kind']} index was {ann['why']} (best {ann['recall']:.3f} at {ann['qps']:,} "
                f"q/s; {knobs}), measured on {c['queries']} held-out archive vectors in {c['seconds']:.1f} s")
    if not c:
        return f"{metadata.kind} {metadata.params}: fixed search params, recall not measured"
    knobs = ", ".join(f"{key} {value:g}" for key, value in c["params"].items())
    verdict = "" if c["met"] else f" (target {c['target']} NOT reached: best found)"
    return (f"{metadata.kind} recall@{c['k']} {c['recall']:.3f} +- {c['recall_se']:.3f} for target {c['target']}"
            f"{verdict}, measured on {c['queries']} held-out archive vectors; {c['qps']:,} q/s on {c['threads']} "
            f"threads; {knobs}; calibration {c['seconds']:.1f} s")


__all__ = [
    "DEFAULT_RECALL", "IndexFileError", "IndexMetadata", "RetrievalIndex", "available_cpus", "build_index",
    "default_params", "describe_calibration", "merge_results", "pick_point", "set_threads",
]
