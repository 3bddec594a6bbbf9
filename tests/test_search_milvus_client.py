"""crjepa/search/milvus/client.py: index types and their build parameters from the faiss rules at Milvus's segment
size, and a missing Milvus install is one line naming the install command."""

from __future__ import annotations

import sys

import pytest

pytest.importorskip("pymilvus")
pytest.importorskip("milvus_lite")

from crjepa.search import milvus  # noqa: E402
from crjepa.search.kinds import default_params  # noqa: E402

from helpers import write_search_archive  # noqa: E402


def test_index_params_come_from_the_faiss_rules_at_segment_size():
    n, dim = 50_000_000, 256
    lite, server = milvus.segment_rows(True, dim), milvus.segment_rows(False, dim)
    assert (lite, server) == (100_000, 1 << 20)
    ivf = default_params("ivfpq", server, dim)[1]
    assert milvus.index_params("IVF_PQ", n, dim, server) == {"nlist": ivf["nlist"], "m": ivf["m"], "nbits": 8}
    assert milvus.index_params("IVF_FLAT", n, dim, lite) == {"nlist": default_params("ivfpq", lite, dim)[1]["nlist"]}
    assert milvus.index_params("IVF_FLAT", 3000, dim, lite)["nlist"] == default_params("ivfpq", 3000, dim)[1]["nlist"]
    hnsw = default_params("hnsw", n, dim)[1]
    assert milvus.index_params("HNSW", n, dim, server) == {"M": hnsw["M"], "efConstruction": hnsw["efConstruction"]}
    assert milvus.index_params("DISKANN", n, dim, server) == {} == milvus.index_params("FLAT", n, dim, server)
    assert milvus.resolve_index_type("auto", 1000, lite=True) == "FLAT"
    assert milvus.resolve_index_type("auto", 10**6, lite=True) == "IVF_FLAT"
    assert milvus.resolve_index_type("auto", 10**6, lite=False) == "HNSW"
    assert milvus.resolve_index_type("auto", 10**8, lite=False) == "DISKANN"
    for kind in ("IVF_PQ", "DISKANN"):
        assert milvus.resolve_index_type(kind, 10**6, lite=False) == kind
        with pytest.raises(ValueError, match="Milvus Lite .* offers only FLAT, IVF_FLAT, IVF_SQ8, HNSW, HNSW_SQ"):
            milvus.resolve_index_type(kind, 10**6, lite=True)
    assert milvus.knob_ladder("DISKANN", {}, 20)[0] == 24 and milvus.knob_ladder("HNSW", {}, 10)[0] == 16
    assert milvus.knob_ladder("IVF_PQ", {"nlist": 64}, 10) == [1, 2, 3, 4, 6, 8, 11, 16, 23, 32, 45, 64]
    assert milvus.knob_ladder("FLAT", {}, 10) == []


def test_missing_pymilvus_is_one_line_naming_the_install_command(tmp_path, monkeypatch, capsys):
    from crjepa.cli import main

    folder, _ = write_search_archive(tmp_path / "emb", n=20)
    monkeypatch.setitem(sys.modules, "pymilvus", None)
    assert main(["index", str(folder), "--backend", "milvus", "--uri", str(tmp_path / "m.db")]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and 'pip install "crjepa[milvus]"' in err[0] and err[0].startswith("crjepa index: error:")
    assert main(["search", str(folder), "--id", "p00001", "--label", "Pastures"]) == 2  # filters need Milvus
    assert "--backend milvus" in capsys.readouterr().err
