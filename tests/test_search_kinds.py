"""crjepa/search/kinds.py: the index kinds' default parameters from the archive size, and every parameter type- and
range-checked before faiss sees it."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

from crjepa.search.index import build_index
from crjepa.search.kinds import default_params

from helpers import unit_vectors


def test_auto_rule() -> None:
    assert default_params("auto", 49_999, 256)[0] == "exact"
    kind, params = default_params("auto", 1_000_000, 256)
    assert kind == "ivfpq" and params["nlist"] == 4096 and params["m"] == 64


def test_index_parameters_are_type_and_range_checked() -> None:
    """`--param M=-4` made faiss allocate until std::bad_alloc and `nlist=0` crashed it; each is now one error."""
    x = unit_vectors(np.random.default_rng(7), 500, 16)
    for kind, params, message in (
        ("hnsw", {"M": 1000}, r"M=1000 must be an integer in \[2, 512\]"),
        ("ivfpq", {"nlist": 0}, r"nlist=0 must be an integer in \[1, "),
        ("ivfpq", {"nlist": 8, "nprobe": 2.5}, "nprobe=2.5 must be an integer"),
        ("hnsw", {"efSearch": True}, "efSearch=True must be an integer"),
        ("ivfpq", {"nlist": 64, "train_size": 10}, "train_size=10 must be at least nlist"),
    ):
        with pytest.raises(ValueError, match=message):
            build_index(x, kind=kind, recall=None, **params)
    index = build_index(x, kind="hnsw", recall=None)
    with pytest.raises(ValueError, match="efSearch=0 must be"):
        index.search(x[:2], k=3, efSearch=0)
    with pytest.raises(ValueError, match="k must be an integer >= 1"):
        index.search(x[:2], k=0)


@pytest.mark.slow
def test_a_negative_hnsw_m_is_refused_before_faiss_allocates(tmp_path: Path) -> None:
    """`--param M=-4` made faiss allocate until std::bad_alloc (or the OOM killer): checked in a process whose address
    space is capped, so a regression fails this test instead of exhausting the machine."""
    from helpers import run_python

    script = (
        "import resource, numpy as np; resource.setrlimit(resource.RLIMIT_AS, (6 << 30, 6 << 30)); "
        "from crjepa.search.index import build_index\n"
        "try:\n    build_index(np.ones((300, 16), np.float32), kind='hnsw', recall=None, M=-4)\n"
        "except ValueError as err:\n    print('refused:', err)"
    )
    proc = run_python(["-c", script], tmp_path)
    assert proc.returncode == 0 and "refused: hnsw index: M=-4 must be an integer in [2, 512]" in proc.stdout, (
        proc.stdout + proc.stderr[-2000:]
    )
