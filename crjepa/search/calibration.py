"""Recall calibration: an index promises a recall, not a parameter set.

A fixed nprobe / k_factor cannot promise a recall on embeddings it was not tuned on, so the build measures it on the
archive itself (``build_index(vectors, recall=0.95)``, the default for ANN kinds). It holds out
``calibration_queries`` archive vectors (added to the index only after calibration, so they are fresh queries: an
HNSW graph finds its own nodes' neighbours far more easily than a new vector's), computes their exact top-k among
the other vectors, walks the operating points (ivfpq: nprobe on a ~1.4x ladder up to every list x k_factor in
``K_FACTORS`` up to 256, computed exactly from one fast-scan pass per nprobe; hnsw: efSearch) and keeps the fastest
point whose measured recall@k meets the target. ``kind="auto"`` then keeps the promise with an exact index when the
IVF-PQ one cannot reach the target or is slower than exact search at it (the exact top-k of the held-out vectors is
an exact search: its time is measured for free). What it measured (recall, its standard error, #queries, q/s,
seconds, and the timed points) is stored in ``IndexMetadata.calibration``; ``RetrievalIndex.search(recall=...)``
picks another stored point per call.

The engine-neutral pieces (`timed_qps`, `walk_knob`, `finish_calibration`, `pick_point`, the held-out rows) also
calibrate the Milvus collections of `crjepa.search.milvus`.
"""

from __future__ import annotations

import math
import time
from collections.abc import Callable, Sequence
from typing import Any

import faiss
import numpy as np

from crjepa.search.kinds import SEARCH_PARAMS, apply_search_params, search_parameters

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


def ladder(start: int, stop: int) -> list[int]:
    """Integers from ``start`` to ``stop`` (both included) in steps of ~sqrt(2): 1, 2, 3, 4, 6, 8, 11, 16, 23, ..."""
    out, value = [], float(start)
    while round(value) < stop:
        if not out or round(value) > out[-1]:
            out.append(int(round(value)))
        value *= math.sqrt(2)
    return out + [int(stop)]


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


def _timed_qps(
    index: faiss.Index, q: np.ndarray, k: int, search_params: Any, min_s: float = 0.1, max_s: float = 0.5
) -> float:
    """`timed_qps` of one batched faiss search of ``q``."""
    return timed_qps(lambda: index.search(q, k, params=search_params), len(q), min_s, max_s)


EF_LADDER = (16, 24, 32, 48, 64, 96, 128, 192, 256, 384, 512, 768, 1024)
"""Candidate-list sizes a graph index's calibration walks (faiss efSearch; Milvus HNSW ef, DiskANN search_list)."""


def walk_knob(
    knob: str,
    values: Sequence[int],
    search: Callable[[dict[str, int]], np.ndarray],
    qps: Callable[[dict[str, int]], float],
    truth: np.ndarray,
    target: float,
    targets: Sequence[float],
    deadline: float,
) -> list[dict[str, Any]]:
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


def finish_calibration(
    points: list[dict[str, Any]],
    knobs: Sequence[str],
    target: float,
    search: Callable[[dict[str, Any]], np.ndarray],
    truth: np.ndarray,
    started: float,
    exact_qps: float,
    **extra: Any,
) -> dict[str, Any]:
    """The calibration record of an index (faiss or search engine): the fastest measured point meeting ``target``
    (`pick_point`), its recall@k re-measured over the held-out queries with its standard error, and everything
    measured (``IndexMetadata.calibration``; a Milvus collection's properties)."""
    best = pick_point(points, target)
    chosen = {key: best[key] for key in knobs}
    recall, se = _summary(_recall_per_query(search(chosen), truth))
    return {
        "target": target,
        "recall": round(recall, 4),
        "recall_se": round(se, 4),
        "met": recall >= target,
        "k": int(truth.shape[1]),
        "queries": len(truth),
        "qps": best["qps"],
        **extra,
        "params": chosen,
        "seconds": round(time.perf_counter() - started, 2),
        "points": points,
        "exact_qps": round(exact_qps),
    }


FAR_BELOW = 0.05
"""While a rung's best recall is this far below the build's target the walk steps ~2x in nprobe, not ~1.4x."""
SHALLOW = 32
"""The walk re-ranks up to ``SHALLOW`` x k candidates per query until a rung shows the ranking limits recall
(``SHALLOW`` x k recalls more than ``SHALLOW / 2`` x k), then all of ``K_FACTORS``."""


def _walk_ivfpq(
    index: faiss.Index, x: np.ndarray, q: np.ndarray, truth: np.ndarray, targets: list[float], deadline: float
) -> dict[tuple[int, int], float]:
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
    for rung, nprobe in enumerate(ladder(1, ivf.nlist)):
        if far and rung % 2 and nprobe < ivf.nlist:
            continue
        ivf.nprobe = nprobe
        width = k * max(factors)
        chunk = max(1, (1 << 25) // (width * x.shape[1]))
        _, cand = base.search(q, width)
        scores = np.empty(cand.shape, dtype=np.float32)
        for start in range(0, len(q), chunk):  # exact scores of all candidates, ~128 MB of gathered rows at a time
            c = cand[start : start + chunk]
            scores[start : start + chunk] = np.einsum("bmd,bd->bm", x[np.maximum(c, 0)], q[start : start + chunk])
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


def calibrate(
    index: faiss.Index,
    kind: str,
    params: dict[str, Any],
    x: np.ndarray,
    q: np.ndarray,
    target: float,
    k: int,
    budget_s: float,
) -> dict[str, Any]:
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
            qps = _timed_qps(index, q, k, search_parameters(kind, search))
            points.append({**search, "recall": round(grid[(nprobe, factor)], 4), "qps": round(qps)})
    else:  # hnsw: recall and time both grow with efSearch, so the first rung that meets the target is the fastest
        points = walk_knob(
            "efSearch",
            [ef for ef in EF_LADDER if ef >= k],
            lambda p: index.search(q, k, params=search_parameters(kind, p))[1],
            lambda p: _timed_qps(index, q, k, search_parameters(kind, p)),
            truth,
            target,
            targets,
            deadline,
        )
    record = finish_calibration(
        points,
        SEARCH_PARAMS[kind],
        target,
        lambda p: index.search(q, k, params=search_parameters(kind, p))[1],
        truth,
        t0,
        exact_qps,
        threads=faiss.omp_get_max_threads(),
    )
    params.update(record["params"])
    apply_search_params(index, kind, params)
    return record


def exact_instead(x: np.ndarray, calibration: dict[str, Any], kind: str) -> tuple[faiss.Index, dict[str, Any]]:
    """``kind="auto"`` when the calibrated ANN index cannot keep the promise (its best recall is below the target)
    or is slower than exact search at it: an exact index over all rows, and a calibration record that says so
    (recall 1.0 at the exact search's measured q/s; what the ANN index reached is kept under ``"ann"``)."""
    index = faiss.IndexFlatIP(x.shape[1])
    index.add(x)
    ann = {key: calibration[key] for key in ("recall", "recall_se", "met", "qps", "params", "points")}
    why = "slower than exact search" if calibration["met"] else "below the target"
    return index, {
        **calibration,
        "recall": 1.0,
        "recall_se": 0.0,
        "met": True,
        "qps": calibration["exact_qps"],
        "params": {},
        "points": [],
        "ann": {"kind": kind, "why": why, **ann},
    }


def held_out_count(n: int, calibration_queries: int) -> int:
    """How many archive vectors a calibration holds out as queries: ``calibration_queries``, at most a tenth."""
    return min(calibration_queries, n // 10)


def held_out_rows(n: int, count: int, seed: int) -> np.ndarray:
    """The archive rows (positions, unsorted) a calibration with ``seed`` holds out as queries."""
    return np.random.default_rng(seed + 1).choice(n, count, replace=False)


def hold_out(x: np.ndarray, ids: np.ndarray, count: int, seed: int) -> None:
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


__all__ = [
    "CALIBRATION_TARGETS",
    "DEFAULT_RECALL",
    "EF_LADDER",
    "K_FACTORS",
    "calibrate",
    "exact_instead",
    "finish_calibration",
    "held_out_count",
    "held_out_rows",
    "hold_out",
    "ladder",
    "pick_point",
    "timed_qps",
    "walk_knob",
]
