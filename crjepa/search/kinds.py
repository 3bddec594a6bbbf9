"""The faiss index kinds crjepa builds (exact, HNSW, IVF-PQ): their default parameters from the archive's size,
the type and range of every parameter, how each is created and how its search knobs are set.

Vectors are L2-normalised float32 compared by inner product (= cosine similarity), the paper's ranking:

* ``"exact"``: ``IndexFlatIP``, brute force; the reference for evaluation and for archives below 50,000 items.
* ``"hnsw"``: ``IndexHNSWFlat`` (graph; no training, slow to build on large archives).
* ``"ivfpq"``: an inverted file (flat coarse quantiser, searched with BLAS over query batches), 4-bit PQ
  fast-scan codes and exact re-ranking of the best ``k_factor * k`` candidates on the stored float vectors
  (``IndexRefineFlat``): ``IVF{nlist},PQ{m}x4fs,RFlat``. k-means on a subsample keeps the build short.
* ``"auto"``: ``"exact"`` below ``AUTO_EXACT_MAX`` (50,000) vectors, ``"ivfpq"`` above (the winner of
  ``benchmarks/faiss_archive.py`` at 1M x 256; see :func:`default_params` for the size rule).

Every crjepa module that uses faiss imports this one, which lowers faiss's BLAS threshold once faiss is loaded
(`crjepa.search.blas`).
"""

from __future__ import annotations

import math
from typing import Any, Literal

import faiss
import numpy as np

from crjepa.errors import CRJepaError
from crjepa.search.blas import lower_faiss_blas_threshold

lower_faiss_blas_threshold(faiss.cvar)  # batches from 16 queries on BLAS (crjepa/search/blas.py)

Kind = Literal["auto", "exact", "hnsw", "ivfpq"]
AUTO_EXACT_MAX = 50_000


class IndexArgumentError(CRJepaError, ValueError):
    """An argument of an index build or search that does not fit: the kind, a parameter (unknown, of the wrong type,
    out of range, too many lists for the vectors), the recall target, k, the query's shape."""


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
    raise IndexArgumentError(f"unknown index kind {kind!r}; use 'auto', 'exact', 'hnsw' or 'ivfpq'")


SEARCH_PARAMS = {"exact": (), "hnsw": ("efSearch",), "ivfpq": ("nprobe", "k_factor")}
PARAM_LIMITS: dict[str, tuple[type, float, float]] = {
    "nlist": (int, 1, 1 << 20),
    "m": (int, 1, 65_536),
    "nprobe": (int, 1, 1 << 20),
    "k_factor": (float, 1, 4096),
    "train_size": (int, 1, 1 << 31),
    "niter": (int, 1, 1000),
    "M": (int, 2, 512),
    "efConstruction": (int, 1, 1 << 16),
    "efSearch": (int, 1, 1 << 16),
}
"""Type and range of every index parameter (build, search, index.json): a negative M made faiss allocate until
std::bad_alloc, nlist=0 crashed it."""


def check_params(kind: str, params: dict[str, Any], where: str = "") -> None:
    """Raise IndexArgumentError naming the first parameter of the wrong type or outside `PARAM_LIMITS`."""
    for name, value in params.items():
        if name not in PARAM_LIMITS:
            continue
        kind_of, low, high = PARAM_LIMITS[name]
        number = isinstance(value, (int, float)) and not isinstance(value, bool)
        if not number or (kind_of is int and not float(value).is_integer()) or not low <= value <= high:
            what = "an integer" if kind_of is int else "a number"
            raise IndexArgumentError(f"{where}{kind} index: {name}={value!r} must be {what} in [{low:g}, {high:g}]")


def apply_search_params(index: faiss.Index, kind: str, params: dict[str, Any]) -> None:
    """Set the search-time knobs stored in ``params`` on a (loaded or new) faiss index."""
    if kind == "hnsw":
        faiss.downcast_index(index).hnsw.efSearch = int(params["efSearch"])
    elif kind == "ivfpq":
        refine = faiss.downcast_index(index)
        refine.k_factor = float(params["k_factor"])
        faiss.extract_index_ivf(refine).nprobe = int(params["nprobe"])


def make_faiss_index(x: np.ndarray, kind: str, params: dict[str, Any], seed: int, add: bool = True) -> faiss.Index:
    """Create, train and (``add``) fill the faiss index for normalised float32 rows ``x``."""
    n, dim = x.shape
    if kind == "exact":
        index = faiss.IndexFlatIP(dim)
    elif kind == "hnsw":
        index = faiss.IndexHNSWFlat(dim, int(params["M"]), faiss.METRIC_INNER_PRODUCT)
        index.hnsw.efConstruction = int(params["efConstruction"])
    else:
        if dim % int(params["m"]) or int(params["m"]) > dim:
            raise IndexArgumentError(f"ivfpq: m={params['m']} sub-quantisers must divide the dimension {dim}")
        if n < params["nlist"]:
            raise IndexArgumentError(f"ivfpq: {n} vectors cannot train nlist={params['nlist']} lists; use kind='exact'")
        factory = f"IVF{int(params['nlist'])},PQ{int(params['m'])}x4fs,RFlat"
        index = faiss.index_factory(dim, factory, faiss.METRIC_INNER_PRODUCT)
        faiss.extract_index_ivf(index).cp.niter = int(params["niter"])
        rng = np.random.default_rng(seed)
        train = x if params["train_size"] >= n else x[np.sort(rng.choice(n, int(params["train_size"]), replace=False))]
        index.train(train)
    if add:
        index.add(x)
    apply_search_params(index, kind, params)
    return index


def search_parameters(kind: str, params: dict[str, Any]) -> Any:
    """faiss per-call SearchParameters for ``params`` (the index's own settings are left as they are)."""
    if kind == "hnsw":
        return faiss.SearchParametersHNSW(efSearch=int(params["efSearch"]))
    if kind == "ivfpq":
        ivf = faiss.SearchParametersIVF(nprobe=int(params["nprobe"]))
        out = faiss.IndexRefineSearchParameters(k_factor=float(params["k_factor"]), base_index_params=ivf)
        out.ivf_params_ref = ivf  # keep the base parameters alive as long as the refine parameters
        return out
    return None


__all__ = [
    "AUTO_EXACT_MAX",
    "IndexArgumentError",
    "Kind",
    "PARAM_LIMITS",
    "SEARCH_PARAMS",
    "apply_search_params",
    "check_params",
    "default_params",
    "make_faiss_index",
    "search_parameters",
]
