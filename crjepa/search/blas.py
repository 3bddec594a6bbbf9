"""Choosing the OpenBLAS kernels faiss runs on, before faiss loads its OpenBLAS.

The faiss-cpu wheels (1.15.1) bundle OpenBLAS 0.3.15, whose CPU detection predates Sapphire Rapids and later
Xeons: on those it falls back to its generic "Prescott" (SSE3) kernels, and every BLAS-bound step of faiss
(k-means when an IVF index trains, the list assignment of ``add``, exact search) runs about 5x slower than the CPU
allows. Measured on this project's dev VM (Intel Xeon with AVX-512 and AMX, 2 vCPUs), faiss.knn of 32,768 x 4,096
at d=256: 21 GFLOP/s per thread as detected, 104 with the SkylakeX kernels (250 on 2 threads), BENCHMARKS.md.

OpenBLAS reads ``OPENBLAS_CORETYPE`` once, when the library loads. :func:`choose_openblas_kernel` sets it, unless
the user did, to the best kernel family the CPU's flags support (SkylakeX for AVX-512 F/BW/DQ/VL/CD, Haswell for
AVX2 + FMA, nothing otherwise or when the flags cannot be read); newer libraries that do know the CPU pick the
same sgemm kernels for these families. ``crjepa.search`` calls it on import, so it takes effect when a crjepa
module is what imports faiss first; a program that imported faiss earlier keeps what OpenBLAS detected (set
``OPENBLAS_CORETYPE`` yourself then). ``OPENBLAS_CORETYPE=`` any value you set wins.

faiss also decides per call whether a batch of queries is scored with BLAS at all: below
``faiss.cvar.distance_compute_blas_threshold`` (compared with queries x dimension; 128,000 in faiss 1.15, i.e.
500 queries at d=256) it streams the whole database once per query. For an IVF index that database is the coarse
quantiser's centroids, scored inside each thread's slice of the batch, so on 2 threads every batch below 1,000
queries took the slow path. Measured on the dev VM (``benchmarks/faiss_batches.py``, BENCHMARKS.md) on
``build_index(recall=0.95)`` at 1M x 256 (nprobe 23, k_factor 8): batches of 64 / 250 / 500 queries at 11.4k /
10.5k / 10.7k q/s with faiss's threshold, 25.0k / 25.5k / 29.0k with BLAS from 16 queries, 1,000 and more the
same either way; exact search over 50,000 vectors 2.4x / 4.9x / 6.2x at 16 / 64 / 250 queries. For 1 to 8 queries
per call the streaming path is the faster one (1 query, IVF-PQ at 1M, nprobe 1: 2.2k q/s with BLAS against 6.2k
without), hence 16.
:func:`lower_faiss_blas_threshold` (called when ``crjepa.search.kinds``, which every faiss module of crjepa imports,
loads faiss) sets the threshold to
:data:`BLAS_THRESHOLD` unless it was changed from faiss's default already. Inner products from BLAS and from the
streaming path agree to float32 rounding.
"""

from __future__ import annotations

import os
import sys
from collections.abc import MutableMapping
from pathlib import Path
from typing import Any

KERNELS: tuple[tuple[str, frozenset[str]], ...] = (
    ("SkylakeX", frozenset({"avx512f", "avx512bw", "avx512dq", "avx512vl", "avx512cd"})),
    ("Haswell", frozenset({"avx2", "fma"})),
)
"""OpenBLAS kernel families, best first, with the CPU flags (as /proc/cpuinfo names them) each needs."""


def cpu_flags(cpuinfo: Path = Path("/proc/cpuinfo")) -> frozenset[str]:
    """The instruction-set flags of the first CPU in ``cpuinfo`` (Linux); empty where it cannot be read."""
    try:
        with open(cpuinfo, encoding="utf-8", errors="replace") as handle:
            for line in handle:
                if line.startswith("flags"):
                    return frozenset(line.split(":", 1)[1].split())
    except OSError:
        pass
    return frozenset()


def choose_openblas_kernel(
    environ: MutableMapping[str, str] | None = None, flags: frozenset[str] | None = None, loaded: bool | None = None
) -> str | None:
    """Set ``OPENBLAS_CORETYPE`` in ``environ`` (default: this process) to the best kernel family of
    :data:`KERNELS` that ``flags`` (default: :func:`cpu_flags`) support; returns the kernel in effect for a
    faiss loaded from now on (the user's own value if set), or None when nothing was chosen or faiss is already
    ``loaded`` (default: "faiss" in ``sys.modules``)."""
    environ = os.environ if environ is None else environ
    if environ.get("OPENBLAS_CORETYPE"):
        return environ["OPENBLAS_CORETYPE"]
    if ("faiss" in sys.modules) if loaded is None else loaded:
        return None
    flags = cpu_flags() if flags is None else flags
    for kernel, needed in KERNELS:
        if needed <= flags:
            environ["OPENBLAS_CORETYPE"] = kernel
            return kernel
    return None


FAISS_DEFAULT_BLAS_THRESHOLD = 128_000
"""``faiss.cvar.distance_compute_blas_threshold`` as faiss 1.15 ships it (queries x dimension)."""
BLAS_THRESHOLD = 16 * 256
"""What crjepa sets instead: BLAS from 16 queries at d=256 (the crossover measured above lies between 4 and 16)."""


def lower_faiss_blas_threshold(cvar: Any) -> int:
    """Set ``cvar.distance_compute_blas_threshold`` (``faiss.cvar``) to :data:`BLAS_THRESHOLD` if it still has
    faiss's default (a value set by the user or another library is kept); returns the value in effect."""
    if cvar.distance_compute_blas_threshold == FAISS_DEFAULT_BLAS_THRESHOLD:
        cvar.distance_compute_blas_threshold = BLAS_THRESHOLD
    return int(cvar.distance_compute_blas_threshold)


__all__ = ["BLAS_THRESHOLD", "KERNELS", "choose_openblas_kernel", "cpu_flags", "lower_faiss_blas_threshold"]
