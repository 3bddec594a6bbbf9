"""Retrieval metrics of the CR-JEPA paper, vectorised in numpy.

Every function takes a (queries x gallery) similarity array (numpy or torch; larger = more similar) and
multi-hot label arrays (queries x classes, gallery x classes; 1-D integer class ids are accepted for
single-label sets) and returns a float in [0, 1].

Shared conventions (one implementation in :func:`_iter_rankings`):

* Ranking: by descending similarity; ties are broken deterministically by the lower gallery index first.
* Exclusions: ``exclude_self=True`` removes the diagonal of a square same-modal similarity (the query is an
  item of the gallery); ``query_ids`` / ``gallery_ids`` remove every gallery item whose id equals the query's
  id (split protocols where the same scene is in both sets, or a cross-modal search that must not return the
  query's own partner). Excluded items are neither ranked nor counted as relevant.
* Relevance: ``"same_class"``: the query and gallery label vectors are identical (single-label: same class);
  ``"any_shared"``: at least one label in common.
* Queries are processed in chunks (``chunk_size`` rows, default sized to about 2**22 similarity entries) and
  top-k lists are selected with ``argpartition``, so a 100k x 100k evaluation never holds an n^2 temporary.
* A query with no relevant gallery item scores 0 in every metric (torchmetrics' ``empty_target_action="neg"``).
"""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass
from typing import Any, Literal

import numpy as np

Relevance = Literal["same_class", "any_shared"]

_CHUNK_ELEMENTS = 1 << 22


def _to_numpy(x: Any) -> np.ndarray:
    """Array from numpy / torch (any device, bf16 included) / nested lists."""
    if hasattr(x, "detach"):  # torch.Tensor, without importing torch
        x = x.detach().cpu()
        if x.dtype.is_floating_point:
            x = x.float()
        x = x.numpy()
    return np.asarray(x)


def _as_multi_hot(query_labels: Any, gallery_labels: Any) -> tuple[np.ndarray, np.ndarray]:
    """Both label sets as uint8 multi-hot arrays; 1-D integer class ids become one-hot rows."""
    q, g = _to_numpy(query_labels), _to_numpy(gallery_labels)
    if q.ndim == 1 and g.ndim == 1:
        num_classes = int(max(q.max(initial=0), g.max(initial=0))) + 1
        q, g = np.eye(num_classes, dtype=np.uint8)[q], np.eye(num_classes, dtype=np.uint8)[g]
    if q.ndim != 2 or g.ndim != 2 or q.shape[1] != g.shape[1]:
        raise ValueError(
            "labels must be multi-hot arrays (queries x classes) and (gallery x classes) with the same number "
            f"of classes, or two 1-D class-id arrays; got shapes {q.shape} and {g.shape}"
        )
    return (q != 0).astype(np.uint8), (g != 0).astype(np.uint8)


def _check_similarity(similarity: Any, num_queries: int, num_gallery: int) -> np.ndarray:
    sim = _to_numpy(similarity)
    if sim.dtype.kind not in "fiu":
        raise ValueError(f"similarity must be numeric, got dtype {sim.dtype}")
    if sim.shape != (num_queries, num_gallery):
        raise ValueError(
            f"similarity has shape {sim.shape} but the labels give {num_queries} queries x {num_gallery} gallery items"
        )
    if sim.dtype.kind == "f" and np.isnan(sim).any():
        raise ValueError("similarity contains NaN; rank with finite scores (check the embeddings)")
    return sim


def _id_keys(query_ids: Any, gallery_ids: Any) -> tuple[np.ndarray, np.ndarray]:
    """Integer codes for ids so that equal ids get equal codes (works for strings and numbers)."""
    q, g = np.asarray(query_ids).astype(str), np.asarray(gallery_ids).astype(str)
    _, codes = np.unique(np.concatenate([q, g]), return_inverse=True)
    return codes[: len(q)], codes[len(q) :]


def _row_keys(query_labels: np.ndarray, gallery_labels: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Integer codes for label vectors so that identical label sets get equal codes (same_class relevance)."""
    _, codes = np.unique(np.concatenate([query_labels, gallery_labels]), axis=0, return_inverse=True)
    codes = codes.reshape(-1)
    return codes[: len(query_labels)], codes[len(query_labels) :]


def _top_k_indices(scores: np.ndarray, k: int) -> np.ndarray:
    """Indices of the k best columns per row, best first, ties broken by the lower column index.

    ``argpartition`` alone is not deterministic for ties at the k-th value, so the k-th value is found first
    and the items equal to it are taken in index order.
    """
    n = scores.shape[1]
    if k >= n:
        return np.argsort(-scores, axis=1, kind="stable")[:, :k]
    kth = np.take_along_axis(scores, np.argpartition(-scores, k - 1, axis=1)[:, k - 1 : k], axis=1)
    above = scores > kth
    at = scores == kth
    need = k - above.sum(axis=1, keepdims=True)
    chosen = above | (at & (np.cumsum(at, axis=1) <= need))
    idx = np.nonzero(chosen)[1].reshape(len(scores), k)  # ascending column index within each row
    order = np.argsort(-np.take_along_axis(scores, idx, axis=1), axis=1, kind="stable")
    return np.take_along_axis(idx, order, axis=1)


@dataclass
class _Rankings:
    """Ranked gallery indices for a chunk of queries plus what the metrics need to judge them."""

    rows: slice  # query rows of this chunk
    order: np.ndarray  # (chunk, k or gallery) gallery indices, best first
    valid: np.ndarray | None  # (chunk, gallery) bool mask of the not-excluded items, or None


def _iter_rankings(
    similarity: Any,
    num_queries: int,
    num_gallery: int,
    k: int | None,
    exclude_self: bool,
    query_ids: Any,
    gallery_ids: Any,
    chunk_size: int | None,
) -> Iterator[_Rankings]:
    """Yield the top-k (or full, for ``k=None``) ranking of each chunk of queries, exclusions applied."""
    sim = _check_similarity(similarity, num_queries, num_gallery)
    if exclude_self and num_queries != num_gallery:
        raise ValueError(
            f"exclude_self needs a square similarity (queries are the gallery); got {num_queries} x {num_gallery}"
            "; pass query_ids/gallery_ids to exclude matches between different sets"
        )
    if (query_ids is None) != (gallery_ids is None):
        raise ValueError("pass both query_ids and gallery_ids, or neither")
    keys = None
    if query_ids is not None:
        keys = _id_keys(query_ids, gallery_ids)
        if len(keys[0]) != num_queries or len(keys[1]) != num_gallery:
            raise ValueError(
                f"query_ids/gallery_ids have {len(keys[0])}/{len(keys[1])} entries for a {num_queries} x "
                f"{num_gallery} similarity"
            )
    if k is not None and not (isinstance(k, (int, np.integer)) and k > 0):
        raise ValueError(f"k must be a positive integer or None, got {k!r}")
    step = chunk_size or max(1, _CHUNK_ELEMENTS // max(num_gallery, 1))
    for start in range(0, num_queries, step):
        rows = slice(start, min(start + step, num_queries))
        scores = sim[rows].astype(np.float64)
        valid = None
        if exclude_self or keys is not None:
            valid = np.ones(scores.shape, dtype=bool)
            if exclude_self:
                r = np.arange(rows.start, rows.stop)
                valid[r - rows.start, r] = False
            if keys is not None:
                valid &= keys[0][rows, None] != keys[1][None, :]
            scores[~valid] = -np.inf
            if k is not None and (short := valid.sum(axis=1).min()) < k:
                raise ValueError(f"k={k} but a query has only {short} gallery items left after the exclusions")
        elif k is not None and k > num_gallery:
            raise ValueError(f"k={k} is larger than the gallery ({num_gallery} items)")
        order = np.argsort(-scores, axis=1, kind="stable") if k is None else _top_k_indices(scores, k)
        yield _Rankings(rows, order, valid)


def _ranked_relevance(
    rank: _Rankings,
    query_labels: np.ndarray,
    gallery_labels: np.ndarray,
    relevance: Relevance,
    keys: tuple[np.ndarray, np.ndarray] | None,
) -> tuple[np.ndarray, np.ndarray]:
    """Relevance of the ranked items (chunk x ranked, in ``rank.order``) and the number of relevant,
    non-excluded items in the whole gallery per query (chunk,)."""
    if relevance == "same_class":
        assert keys is not None
        full = keys[0][rank.rows, None] == keys[1][None, :]
    else:
        full = query_labels[rank.rows].astype(np.float32) @ gallery_labels.T.astype(np.float32) > 0
    if rank.valid is not None:  # excluded items are never relevant
        full &= rank.valid
    return np.take_along_axis(full, rank.order, axis=1), full.sum(axis=1)


def _prepare(
    query_labels: Any, gallery_labels: Any, relevance: Relevance | None
) -> tuple[np.ndarray, np.ndarray, tuple[np.ndarray, np.ndarray] | None]:
    """Multi-hot labels, plus label-set codes for same_class relevance; validates ``relevance``."""
    if relevance not in (None, "same_class", "any_shared"):
        raise ValueError(f"relevance must be 'same_class' or 'any_shared', got {relevance!r}")
    q, g = _as_multi_hot(query_labels, gallery_labels)
    keys = _row_keys(q, g) if relevance == "same_class" else None
    return q, g, keys


def precision_at_k(
    similarity: Any,
    query_labels: Any,
    gallery_labels: Any,
    k: int = 5,
    relevance: Relevance = "same_class",
    exclude_self: bool = False,
    *,
    query_ids: Any = None,
    gallery_ids: Any = None,
    chunk_size: int | None = None,
) -> float:
    """P@k: share of relevant items among the top k, averaged over queries (the paper's P@5)."""
    q, g, keys = _prepare(query_labels, gallery_labels, relevance)
    total = 0.0
    for rank in _iter_rankings(similarity, len(q), len(g), k, exclude_self, query_ids, gallery_ids, chunk_size):
        total += _ranked_relevance(rank, q, g, relevance, keys)[0].mean(axis=1).sum()
    return float(total / len(q))


def mean_average_precision(
    similarity: Any,
    query_labels: Any,
    gallery_labels: Any,
    k: int | None = None,
    relevance: Relevance = "same_class",
    exclude_self: bool = False,
    *,
    normalizer: Literal["retrieved", "min_k_relevant"] = "retrieved",
    query_ids: Any = None,
    gallery_ids: Any = None,
    chunk_size: int | None = None,
) -> float:
    """mAP: mean over queries of AP = sum over relevant ranks r of precision@r, divided by a normaliser.

    ``k=None`` (the paper's "global mAP"): the whole gallery is ranked and AP is divided by the number of
    relevant gallery items (equals scikit-learn's ``average_precision_score`` without ties).
    ``k`` given (mAP@k): only the top k count, and AP is divided by
    ``normalizer="retrieved"``: the number of relevant items within the top k (torchmetrics' ``RetrievalMAP``
    with ``top_k``; common in remote-sensing retrieval), or ``"min_k_relevant"``: min(k, relevant items in
    the whole gallery) (the "ideal" normaliser, which also penalises missing relevant items).
    """
    if normalizer not in ("retrieved", "min_k_relevant"):
        raise ValueError(f"normalizer must be 'retrieved' or 'min_k_relevant', got {normalizer!r}")
    q, g, keys = _prepare(query_labels, gallery_labels, relevance)
    total = 0.0
    for rank in _iter_rankings(similarity, len(q), len(g), k, exclude_self, query_ids, gallery_ids, chunk_size):
        rel, num_relevant = _ranked_relevance(rank, q, g, relevance, keys)
        hits = np.cumsum(rel, axis=1)
        precision_sum = (rel * hits / np.arange(1, rel.shape[1] + 1)).sum(axis=1)
        if k is not None and normalizer == "min_k_relevant":
            denom = np.minimum(num_relevant, k)
        else:  # k=None: all relevant items are ranked, so hits[:, -1] == num_relevant
            denom = hits[:, -1]
        total += np.divide(precision_sum, denom, out=np.zeros_like(precision_sum), where=denom > 0).sum()
    return float(total / len(q))


def _graded_counts(
    rank: _Rankings, query_labels: np.ndarray, gallery_labels: np.ndarray
) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """|Yq n Yr|, |Yr| (chunk x k) and |Yq| (chunk x 1) for the ranked items."""
    q = query_labels[rank.rows].astype(np.float64)
    r = gallery_labels[rank.order].astype(np.float64)
    return np.einsum("qc,qkc->qk", q, r), r.sum(axis=2), q.sum(axis=1, keepdims=True)


def f1_at_k(
    similarity: Any,
    query_labels: Any,
    gallery_labels: Any,
    k: int = 5,
    variant: Literal["paper", "csmae"] = "paper",
    exclude_self: bool = False,
    *,
    query_ids: Any = None,
    gallery_ids: Any = None,
    chunk_size: int | None = None,
) -> float:
    """F1@k with graded multi-label relevance (BEN-14K).

    For query labels Yq and a retrieved item's labels Yr: P = |Yq n Yr| / |Yr|, R = |Yq n Yr| / |Yq|.

    * ``"paper"`` (CR-JEPA): item F1 = 2PR / (P + R) = 2|Yq n Yr| / (|Yq| + |Yr|), 0 without overlap;
      averaged over the top k, then over queries.
    * ``"csmae"`` (CSMAE's F1@10, as in its ``retrieval.py``): P and R are averaged over the top k and then
      over all queries; F1 is the harmonic mean of these two GLOBAL averages (not a per-query harmonic mean).

    Items or queries with no labels contribute P = R = F1 = 0 (CSMAE's code would divide by zero).
    """
    if variant not in ("paper", "csmae"):
        raise ValueError(f"variant must be 'paper' or 'csmae', got {variant!r}")
    q, g, _ = _prepare(query_labels, gallery_labels, None)
    f1_sum = p_sum = r_sum = 0.0
    for rank in _iter_rankings(similarity, len(q), len(g), k, exclude_self, query_ids, gallery_ids, chunk_size):
        inter, size_r, size_q = _graded_counts(rank, q, g)
        if variant == "paper":
            size = size_q + size_r
            f1_sum += np.divide(2 * inter, size, out=np.zeros_like(inter), where=inter > 0).mean(axis=1).sum()
        else:
            p_sum += np.divide(inter, size_r, out=np.zeros_like(inter), where=inter > 0).mean(axis=1).sum()
            r_sum += np.divide(inter, size_q, out=np.zeros_like(inter), where=inter > 0).mean(axis=1).sum()
    if variant == "paper":
        return float(f1_sum / len(q))
    p, r = p_sum / len(q), r_sum / len(q)
    return float(2 * p * r / (p + r)) if p + r > 0 else 0.0


_EVALUATE_METRICS = {
    # result key -> (function, its keyword arguments that evaluate's compute() forwards)
    "f1_at_k": (f1_at_k, ("k", "variant")),
    "map": (mean_average_precision, ("k", "relevance", "normalizer")),
    "precision_at_k": (precision_at_k, ("k", "relevance")),
}


def evaluate_metric_class(name: Literal["f1_at_k", "map", "precision_at_k"]) -> type:
    """Base class for the ``evaluate`` modules in ``metrics_modules/`` (one implementation for all three).

    Each module file subclasses it, so ``evaluate.load(dir)`` finds a class defined in that file. Query rows
    are the features (``similarity`` row, ``query_labels`` row: ``add_batch`` streams queries); the gallery
    labels, ``k`` etc. are ``compute()`` keyword arguments. ``evaluate`` is imported here, lazily, so that
    importing the metrics never pulls in ``evaluate``/``datasets``.
    """
    import datasets
    import evaluate

    function, options = _EVALUATE_METRICS[name]
    rows = {"similarity": datasets.Sequence(datasets.Value("float64"))}
    features = [
        datasets.Features({**rows, "query_labels": datasets.Sequence(datasets.Value("int64"))}),  # multi-hot
        datasets.Features({**rows, "query_labels": datasets.Value("int64")}),  # single-label class ids
    ]

    class RetrievalMetric(evaluate.Metric):
        def _info(self) -> evaluate.MetricInfo:
            return evaluate.MetricInfo(
                description=(function.__doc__ or "").strip(),
                citation="CR-JEPA (cross-modal remote-sensing retrieval); see crjepa.eval.metrics",
                inputs_description=(
                    "similarity: (queries x gallery) floats; query_labels: multi-hot rows or class ids; "
                    f"compute() kwargs: gallery_labels, {', '.join(options)}, exclude_self, query_ids, gallery_ids"
                ),
                features=features,
            )

        def _compute(
            self,
            similarity: Any,
            query_labels: Any,
            gallery_labels: Any = None,
            exclude_self: bool = False,
            query_ids: Any = None,
            gallery_ids: Any = None,
            **kwargs: Any,
        ) -> dict[str, float]:
            if gallery_labels is None:
                raise ValueError(f"{name}: pass gallery_labels=... to compute()")
            unknown = set(kwargs) - set(options)
            if unknown:
                raise ValueError(f"{name}: unknown arguments {sorted(unknown)}; accepted: {list(options)}")
            value = function(
                np.asarray(similarity, dtype=np.float64),
                np.asarray(query_labels),
                gallery_labels,
                exclude_self=exclude_self,
                query_ids=query_ids,
                gallery_ids=gallery_ids,
                **kwargs,
            )
            return {name: value}

    return RetrievalMetric


__all__ = ["evaluate_metric_class", "f1_at_k", "mean_average_precision", "precision_at_k"]
