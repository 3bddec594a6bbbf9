"""faiss indices over CR-JEPA embeddings, with dataset ids and provenance (model fingerprint, space, sensor).

Vectors are L2-normalised float32 and compared by inner product (= cosine similarity), the paper's ranking.
`build_index` builds one of the index kinds of `crjepa.search.kinds` (``kind="auto"``: exact below 50,000 vectors,
IVF-PQ above) and, for the ANN kinds, calibrates its search knobs to a recall target on held-out archive vectors
(`crjepa.search.calibration`, the default ``recall=0.95``). `RetrievalIndex` searches it by dataset id in bounded
memory, saves it atomically and loads it without trusting the files (`crjepa.search.faiss_files`).
"""

from __future__ import annotations

import math
import os
from pathlib import Path
from typing import Any, Literal

import faiss
import numpy as np

from crjepa.search.calibration import DEFAULT_RECALL, calibrate, exact_instead, held_out_count, hold_out, pick_point
from crjepa.search.faiss_files import IndexFileError, IndexMetadata, read_index_folder, write_index_folder
from crjepa.search.kinds import (
    SEARCH_PARAMS,
    IndexArgumentError,
    Kind,
    apply_search_params,
    check_params,
    default_params,
    make_faiss_index,
    search_parameters,
)

SEARCH_BATCH_BYTES = 256 << 20
"""Working memory of one faiss search call (`RetrievalIndex.search` cuts the queries into batches to stay below)."""


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
        raise IndexArgumentError(f"{what} must be a (n, dim) array, got shape {x.shape}")
    if not np.isfinite(x).all():
        raise IndexArgumentError(f"{what} contain NaN or inf values; check the embeddings")
    return x


class RetrievalIndex:
    """A faiss index plus the dataset ids of its rows and its provenance; ``search`` returns dataset ids."""

    def __init__(self, index: faiss.Index, ids: np.ndarray, metadata: IndexMetadata) -> None:
        if index.ntotal != len(ids):
            raise IndexArgumentError(f"the faiss index holds {index.ntotal} vectors but {len(ids)} ids were given")
        self.index, self.ids, self.metadata = index, ids, metadata

    def __len__(self) -> int:
        return int(self.index.ntotal)

    def __repr__(self) -> str:
        m = self.metadata
        return f"RetrievalIndex({len(self)} x {m.dimension}, kind={m.kind}, sensor={m.sensor!r}, space={m.space!r})"

    def set_search_params(self, **params: Any) -> None:
        """Change search-time knobs (hnsw: efSearch; ivfpq: nprobe, k_factor)."""
        allowed = SEARCH_PARAMS[self.metadata.kind]
        unknown = set(params) - set(allowed)
        if unknown:
            raise IndexArgumentError(
                f"{self.metadata.kind} index: unknown search params {sorted(unknown)}; use {allowed}"
            )
        check_params(self.metadata.kind, params)
        self.metadata.params.update(params)
        apply_search_params(self.index, self.metadata.kind, self.metadata.params)

    def search(
        self, queries: Any, k: int = 10, *, recall: float | None = None, **params: Any
    ) -> tuple[np.ndarray, np.ndarray]:
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
            raise IndexArgumentError(
                f"query dimension {q.shape[1]} does not match the index dimension {self.metadata.dimension} "
                f"(index built from {self.metadata.fingerprint or 'an unnamed model'}, space "
                f"{self.metadata.space or '?'})"
            )
        if isinstance(k, bool) or not isinstance(k, (int, np.integer)) or k < 1:
            raise IndexArgumentError(f"k must be an integer >= 1, got {k!r}")
        k = int(k)
        knobs = self._call_knobs(recall, params)
        search_params = search_parameters(self.metadata.kind, {**self.metadata.params, **knobs}) if knobs else None
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
        unknown = set(params) - set(SEARCH_PARAMS[kind])
        if unknown:
            raise IndexArgumentError(
                f"{kind} index: unknown search params {sorted(unknown)}; use {SEARCH_PARAMS[kind]}"
            )
        if recall is not None:
            if params:
                raise IndexArgumentError("give either recall= or explicit search params, not both")
            if not 0 < recall <= 1:
                raise IndexArgumentError(f"recall must be in (0, 1], got {recall}")
            points = self.metadata.calibration.get("points")
            if kind == "exact":
                return {}
            if not points:
                raise IndexArgumentError(
                    f"this {kind} index was built without recall calibration (fixed params "
                    f"{self.metadata.params}); rebuild it with recall=..., or pass explicit "
                    "params"
                )
            params = {key: pick_point(points, recall)[key] for key in SEARCH_PARAMS[kind]}
        check_params(kind, params)
        return dict(params)

    def save(self, directory: str | os.PathLike[str], overwrite: bool = False) -> Path:
        """Write index + metadata + ids to ``directory`` atomically (`crjepa.search.faiss_files.write_index_folder`:
        replaces only an earlier index folder, or an empty one, unless ``overwrite``; one writer at a time)."""
        return write_index_folder(directory, self.index, self.ids, self.metadata, overwrite)

    @classmethod
    def load(cls, directory: str | os.PathLike[str], expected_fingerprint: str | None = None) -> RetrievalIndex:
        """Read an index written by :meth:`save`; ``expected_fingerprint`` guards against a different model.

        The folder may come from the Hub, so nothing in it is trusted (`crjepa.search.faiss_files.read_index_folder`:
        `IndexFileError` names the file; FileNotFoundError when one is missing).
        """
        path = Path(directory)
        index, ids, metadata = read_index_folder(path)
        if expected_fingerprint is not None and (
            not metadata.fingerprint or metadata.fingerprint != expected_fingerprint
        ):
            raise IndexFileError(
                f"{path} was built from model {metadata.fingerprint!r} but {expected_fingerprint!r} was expected: "
                "the embeddings are not comparable; rebuild the index with this model"
            )
        return cls(index, ids, metadata)


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
        raise IndexArgumentError("cannot build an index over an empty archive (0 vectors)")
    ids = np.arange(n).astype(str) if ids is None else np.array(ids).astype(str)  # a copy: reordered below
    if len(ids) != n:
        raise IndexArgumentError(f"{len(ids)} ids given for {n} vectors")
    if recall is not None and not 0 < recall <= 1:
        raise IndexArgumentError(f"recall must be in (0, 1], got {recall}")
    if kind == "auto" and recall == 1.0:
        kind = "exact"
    resolved, defaults = default_params(kind, n, dim)
    unknown = set(params) - set(defaults)
    if unknown:
        raise IndexArgumentError(
            f"{resolved} index: unknown parameters {sorted(unknown)}; accepted: {sorted(defaults)}"
        )
    full = {**defaults, **params}
    check_params(resolved, full)
    if resolved == "ivfpq" and not full["nlist"] <= full["train_size"]:
        raise IndexArgumentError(f"ivfpq index: train_size={full['train_size']} must be at least nlist={full['nlist']}")
    if metric == "ip":
        faiss.normalize_L2(x)
    elif metric != "l2" or resolved != "exact":
        raise IndexArgumentError(
            f"metric {metric!r} with kind {resolved!r}: use metric='ip' (or 'l2' with kind='exact')"
        )
    set_threads(threads)
    calibration: dict[str, Any] = {}
    fixed = set(params) & set(SEARCH_PARAMS[resolved])
    held = held_out_count(n, calibration_queries) if recall is not None and resolved != "exact" and not fixed else 0
    if metric == "l2":
        index = faiss.IndexFlatL2(dim)
        index.add(x)
    elif held < 1:
        index = make_faiss_index(x, resolved, full, seed)
    else:  # calibrate on held-out rows moved to the end: index the rest, calibrate, then add them too
        hold_out(x, ids, held, seed)
        kept = n - held
        index = make_faiss_index(x[:kept], resolved, full, seed, add=False)
        index.add(x[:kept])
        calibration = calibrate(
            index, resolved, full, x[:kept], x[kept:], float(recall), calibration_k, calibration_budget_s
        )
        if kind == "auto" and (not calibration["met"] or calibration["qps"] < calibration["exact_qps"]):
            del index
            index, calibration = exact_instead(x, calibration, resolved)
            resolved, full = "exact", {}
        else:
            index.add(x[kept:])
    metadata = IndexMetadata(
        dimension=dim,
        kind=resolved,
        metric=metric,
        params=full,
        fingerprint=fingerprint,
        space=space,
        sensor=sensor,
        count=n,
        calibration=calibration,
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
        return (
            f"exact search (recall 1.0, {c['qps']:,} q/s on {c['threads']} threads) for target {c['target']}: "
            f"the calibrated {ann['kind']} index was {ann['why']} (best {ann['recall']:.3f} at {ann['qps']:,} "
            f"q/s; {knobs}), measured on {c['queries']} held-out archive vectors in {c['seconds']:.1f} s"
        )
    if not c:
        return f"{metadata.kind} {metadata.params}: fixed search params, recall not measured"
    knobs = ", ".join(f"{key} {value:g}" for key, value in c["params"].items())
    verdict = "" if c["met"] else f" (target {c['target']} NOT reached: best found)"
    return (
        f"{metadata.kind} recall@{c['k']} {c['recall']:.3f} +- {c['recall_se']:.3f} for target {c['target']}"
        f"{verdict}, measured on {c['queries']} held-out archive vectors; {c['qps']:,} q/s on {c['threads']} "
        f"threads; {knobs}; calibration {c['seconds']:.1f} s"
    )


__all__ = [
    "SEARCH_BATCH_BYTES",
    "RetrievalIndex",
    "available_cpus",
    "build_index",
    "describe_calibration",
    "merge_results",
    "set_threads",
]
