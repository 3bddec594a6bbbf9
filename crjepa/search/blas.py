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
"""

from __future__ import annotations

import os
import sys
from collections.abc import MutableMapping
from pathlib import Path

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


def choose_openblas_kernel(environ: MutableMapping[str, str] | None = None, flags: frozenset[str] | None = None,
                           loaded: bool | None = None) -> str | None:
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


__all__ = ["KERNELS", "choose_openblas_kernel", "cpu_flags"]
