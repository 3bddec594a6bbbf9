"""crjepa/search/blas.py: OpenBLAS's kernels for faiss chosen from the CPU's flags before faiss loads, and faiss's
BLAS threshold lowered to 16 queries unless someone chose another."""

from __future__ import annotations

import numpy as np
import pytest


def test_openblas_kernel_choice_follows_the_cpu_flags_and_yields_to_the_user() -> None:
    from crjepa.search.blas import choose_openblas_kernel

    avx512 = frozenset({"sse3", "avx2", "fma", "avx512f", "avx512bw", "avx512dq", "avx512vl", "avx512cd"})
    for flags, expected in (
        (avx512, "SkylakeX"),
        (frozenset({"avx2", "fma"}), "Haswell"),
        (frozenset({"avx512f", "avx2"}), None),
        (frozenset(), None),
    ):
        env: dict[str, str] = {}
        assert choose_openblas_kernel(env, flags, loaded=False) == expected
        assert env.get("OPENBLAS_CORETYPE") == expected
    env = {"OPENBLAS_CORETYPE": "Zen"}
    assert choose_openblas_kernel(env, avx512, loaded=False) == "Zen" and env == {"OPENBLAS_CORETYPE": "Zen"}
    env = {}
    assert choose_openblas_kernel(env, avx512, loaded=True) is None and env == {}  # too late: faiss has loaded


def test_faiss_in_a_fresh_process_runs_on_the_chosen_openblas_kernel() -> None:
    """Importing crjepa's index module before faiss makes faiss's bundled OpenBLAS (0.3.15, which takes recent
    Xeons for a generic SSE3 CPU) load the kernel the CPU supports; OPENBLAS_VERBOSE=2 makes OpenBLAS say which."""
    import os
    import subprocess
    import sys

    from crjepa.search.blas import choose_openblas_kernel, cpu_flags

    expected = choose_openblas_kernel({}, cpu_flags(), loaded=False)
    if expected is None:
        pytest.skip("this CPU has neither AVX-512 nor AVX2: OpenBLAS keeps its own choice")
    env = {key: value for key, value in os.environ.items() if key != "OPENBLAS_CORETYPE"} | {"OPENBLAS_VERBOSE": "2"}
    script = "import crjepa.search.index, os; print(os.environ['OPENBLAS_CORETYPE'])"
    run = subprocess.run([sys.executable, "-c", script], env=env, capture_output=True, text=True, timeout=120)
    assert run.returncode == 0, run.stderr
    assert run.stdout.strip() == expected
    cores = [line.split(":", 1)[1].strip() for line in run.stderr.splitlines() if line.startswith("Core:")]
    assert cores and set(cores) == {expected}, run.stderr  # what faiss's OpenBLAS really loaded


def test_faiss_scores_query_batches_with_blas_from_16_queries_unless_the_user_chose() -> None:
    """faiss 1.15 streams the whole database (an IVF index's centroids) once per query below 128,000 queries x
    dimension: every batch under 1,000 queries on 2 threads ran ~4x slower (crjepa/search/blas.py). Importing
    crjepa's index module lowers the threshold to 16 queries at d=256, keeps a value someone else set, and the
    results of both paths agree."""
    import subprocess
    import sys
    from types import SimpleNamespace

    import faiss

    import crjepa.search.kinds  # noqa: F401  (the module every faiss user of crjepa imports: it lowers the threshold)
    from crjepa.search.blas import BLAS_THRESHOLD, lower_faiss_blas_threshold

    assert faiss.cvar.distance_compute_blas_threshold == BLAS_THRESHOLD
    script = (
        "import faiss; faiss.cvar.distance_compute_blas_threshold = 7; import crjepa.search.index; "
        "print(faiss.cvar.distance_compute_blas_threshold)"
    )
    run = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True, timeout=120)
    assert run.returncode == 0 and run.stdout.split() == ["7"], run.stderr  # a value set before is kept
    cvar = SimpleNamespace(distance_compute_blas_threshold=128_000)
    assert lower_faiss_blas_threshold(cvar) == BLAS_THRESHOLD == cvar.distance_compute_blas_threshold

    rng = np.random.default_rng(0)
    x, q = rng.standard_normal((3000, 256), dtype=np.float32), rng.standard_normal((64, 256), dtype=np.float32)
    index = faiss.IndexFlatIP(256)
    index.add(x)
    blas = index.search(q, 10)  # 64 x 256 = 16,384 >= 4,096: BLAS
    try:
        faiss.cvar.distance_compute_blas_threshold = 128_000
        streamed = index.search(q, 10)
    finally:
        faiss.cvar.distance_compute_blas_threshold = BLAS_THRESHOLD
    np.testing.assert_array_equal(blas[1], streamed[1])
    np.testing.assert_allclose(blas[0], streamed[0], rtol=1e-5, atol=1e-4)
