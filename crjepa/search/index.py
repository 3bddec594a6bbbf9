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

Files written by :meth:`RetrievalIndex.save` (atomically: a temp folder renamed into place):
``index.faiss`` (faiss.write_index), ``index.json`` (metadata), ``ids.json`` (dataset ids in faiss order), and the
writer's marker ``.crjepa-output.json``. Loading trusts none of them (see :meth:`RetrievalIndex.load`).
"""

from __future__ import annotations

import json
import math
import os
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any, Literal

import faiss
import numpy as np

from crjepa.utils.atomic import atomic_dir, read_consistently

Kind = Literal["auto", "exact", "hnsw", "ivfpq"]
AUTO_EXACT_MAX = 50_000
FORMAT_VERSION = 1
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


def _as_float32_rows(vectors: Any, what: str) -> np.ndarray:
    """(n, d) C-contiguous float32 copy from numpy / torch / lists; a single vector becomes one row."""
    if hasattr(vectors, "detach"):  # torch.Tensor, without importing torch
        vectors = vectors.detach().float().cpu().numpy()
    x = np.array(vectors, dtype=np.float32, order="C", ndmin=2)  # always a copy: normalised in place later
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
      32 * nlist points (capped at n) with ``niter`` = 25 iterations. Chosen on three 1M x 256 benchmark
      archives (BENCHMARKS.md), which are limited by different things: on the isotropic one (noise as large as
      the centre) and the hierarchical one by how many true neighbours the probed lists hold (nprobe; k-means
      quality is worth 0.015-0.025 recall@10: 98k points x 20 it. against 131k x 25), on the tight isotropic
      one (spread 0.5) by re-ranking enough candidates to cover a whole 100-point cluster (k_factor 8: 0.967,
      16: 0.9997). Refining from float16 or int8 copies instead of the float32 vectors was not faster enough
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
            "train_size": min(n, 32 * nlist),
            "niter": 25,
        }
    raise ValueError(f"unknown index kind {kind!r}; use 'auto', 'exact', 'hnsw' or 'ivfpq'")


_SEARCH_PARAMS = {"exact": (), "hnsw": ("efSearch",), "ivfpq": ("nprobe", "k_factor")}


def _apply_search_params(index: faiss.Index, kind: str, params: dict[str, Any]) -> None:
    """Set the search-time knobs stored in ``params`` on a (loaded or new) faiss index."""
    if kind == "hnsw":
        faiss.downcast_index(index).hnsw.efSearch = int(params["efSearch"])
    elif kind == "ivfpq":
        refine = faiss.downcast_index(index)
        refine.k_factor = float(params["k_factor"])
        faiss.extract_index_ivf(refine).nprobe = int(params["nprobe"])


def _make_faiss_index(x: np.ndarray, kind: str, params: dict[str, Any], seed: int) -> faiss.Index:
    """Create, train and fill the faiss index for normalised float32 rows ``x``."""
    n, dim = x.shape
    if kind == "exact":
        index = faiss.IndexFlatIP(dim)
    elif kind == "hnsw":
        index = faiss.IndexHNSWFlat(dim, int(params["M"]), faiss.METRIC_INNER_PRODUCT)
        index.hnsw.efConstruction = int(params["efConstruction"])
    else:
        if dim % int(params["m"]):
            raise ValueError(f"ivfpq: m={params['m']} sub-quantisers must divide the dimension {dim}")
        if n < params["nlist"]:
            raise ValueError(f"ivfpq: {n} vectors cannot train nlist={params['nlist']} lists; use kind='exact'")
        factory = f"IVF{int(params['nlist'])},PQ{int(params['m'])}x4fs,RFlat"
        index = faiss.index_factory(dim, factory, faiss.METRIC_INNER_PRODUCT)
        faiss.extract_index_ivf(index).cp.niter = int(params["niter"])
        rng = np.random.default_rng(seed)
        train = x if params["train_size"] >= n else x[np.sort(rng.choice(n, int(params["train_size"]), replace=False))]
        index.train(train)
    index.add(x)
    _apply_search_params(index, kind, params)
    return index


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
        self.metadata.params.update(params)
        _apply_search_params(self.index, self.metadata.kind, self.metadata.params)

    def search(self, queries: Any, k: int = 10) -> tuple[np.ndarray, np.ndarray]:
        """Top-k of each query: (scores (q, k) float32 cosine, ids (q, k) dataset-id strings).

        Queries are L2-normalised here. Where fewer than k results exist the id is "" and the score -inf.
        """
        q = _as_float32_rows(queries, "queries")
        if q.shape[1] != self.metadata.dimension:
            raise ValueError(
                f"query dimension {q.shape[1]} does not match the index dimension {self.metadata.dimension} "
                f"(index built from {self.metadata.fingerprint or 'an unnamed model'}, space "
                f"{self.metadata.space or '?'})"
            )
        if k < 1:
            raise ValueError(f"k must be >= 1, got {k}")
        if self.metadata.metric == "ip":
            faiss.normalize_L2(q)
        scores, rows = self.index.search(q, int(k))
        found = rows >= 0
        ids = np.where(found, self.ids[np.where(found, rows, 0)], "")
        return np.where(found, scores, -np.inf).astype(np.float32), ids

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
}
MAX_DIMENSION = 65_536


class IndexFileError(ValueError):
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
        if not isinstance(params.get(name), (int, float)) or isinstance(params.get(name), bool) or \
                not 0 < params[name] <= 1_000_000:
            raise IndexFileError(f"{file}: search parameter {name}={params.get(name)!r} is missing or out of range; "
                                 f"{rebuild}")
    return IndexMetadata(**meta)


def _read_faiss(file: Path, kind: str, metric: str, dimension: int) -> faiss.Index:
    """faiss.read_index through a Python stream that refuses any structure but the ones of ``kind``.

    Every 4-byte read that looks like a faiss fourcc (four ASCII letters or digits; no legitimate integer
    field of our indices is that large) must be one we write: a crafted file declaring on-disk ("ilod") or
    other inverted lists stops before faiss acts on it. No IO flags: never memory-mapped."""
    allowed, cls = _FOURCC[(kind, metric)]
    rebuild = f"rebuild it with `crjepa index` (or delete {file.parent})"
    seen: list[bytes] = []

    with file.open("rb") as stream:
        def read(n: int) -> bytes:
            data = stream.read(n)
            if n == 4 and len(data) == 4 and all(48 <= c <= 122 and chr(c).isalnum() for c in data):
                if not seen and data != _TOP[(kind, metric)] or data not in allowed:
                    raise IndexFileError(f"{file} holds faiss structure {data.decode()!r}, not a {kind} index as "
                                         f"crjepa writes it; refusing to load it: {rebuild}")
                seen.append(data)
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
    if type(index) is not cls or index.d != dimension:  # read_index returns the concrete class (and owns it)
        raise IndexFileError(f"{file} holds a {type(index).__name__} of dimension {index.d}; index.json says a "
                             f"{kind} index of dimension {dimension}: {rebuild}")
    return index


def _read_index_folder(path: Path) -> tuple[faiss.Index, np.ndarray, IndexMetadata]:
    meta_file, ids_file = path / META_FILE, path / IDS_FILE
    try:
        meta = json.loads(meta_file.read_text())
    except (ValueError, UnicodeDecodeError) as err:
        raise IndexFileError(f"{meta_file} is not valid JSON ({err}); rebuild the index") from None
    metadata = _check_metadata(meta, meta_file)
    index = _read_faiss(path / INDEX_FILE, metadata.kind, metadata.metric, metadata.dimension)
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
    ids: Any = None,
    fingerprint: str = "",
    space: str = "",
    sensor: str = "",
    threads: int | None = None,
    seed: int = 0,
    **params: Any,
) -> RetrievalIndex:
    """Build a :class:`RetrievalIndex` over ``vectors`` (n, dim).

    ``metric="ip"`` L2-normalises the vectors (cosine similarity, the paper's ranking); ``"l2"`` keeps them and
    is supported for ``"exact"`` only. ``ids`` are the dataset ids of the rows (default "0".."n-1").
    ``params`` override :func:`default_params` (e.g. ``nlist=8192, nprobe=64`` or ``efSearch=128``).
    """
    x = _as_float32_rows(vectors, "vectors")
    n, dim = x.shape
    if n == 0:
        raise ValueError("cannot build an index over an empty archive (0 vectors)")
    ids = np.arange(n).astype(str) if ids is None else np.asarray(ids).astype(str)
    if len(ids) != n:
        raise ValueError(f"{len(ids)} ids given for {n} vectors")
    resolved, defaults = default_params(kind, n, dim)
    unknown = set(params) - set(defaults)
    if unknown:
        raise ValueError(f"{resolved} index: unknown parameters {sorted(unknown)}; accepted: {sorted(defaults)}")
    full = {**defaults, **params}
    if metric == "ip":
        faiss.normalize_L2(x)
    elif metric != "l2" or resolved != "exact":
        raise ValueError(f"metric {metric!r} with kind {resolved!r}: use metric='ip' (or 'l2' with kind='exact')")
    set_threads(threads)
    index = faiss.IndexFlatL2(dim) if metric == "l2" else None
    if index is not None:
        index.add(x)
    else:
        index = _make_faiss_index(x, resolved, full, seed)
    metadata = IndexMetadata(
        dimension=dim, kind=resolved, metric=metric, params=full, fingerprint=fingerprint, space=space,
        sensor=sensor, count=n,
    )
    return RetrievalIndex(index, ids, metadata)


__all__ = ["IndexFileError", "IndexMetadata", "RetrievalIndex", "available_cpus", "build_index", "default_params", "set_threads"]
