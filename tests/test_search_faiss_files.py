"""crjepa/search/faiss_files.py: a saved index folder round-trips, and nothing in a downloaded one is trusted (crafted
structures, inflated counts, corrupt metadata: one clear error, before faiss acts or allocates)."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest

from crjepa.search.index import RetrievalIndex, build_index

from helpers import clustered_vectors, unit_vectors


def test_save_load_round_trip_and_fingerprint(tmp_path: Path) -> None:
    rng = np.random.default_rng(1)
    archive, queries = clustered_vectors(rng, 3000, 10, 32, 30)
    ids = [f"scene/{i}" for i in range(3000)]
    for kind, params in (("exact", {}), ("hnsw", {}), ("ivfpq", {"nlist": 16, "m": 8, "nprobe": 4})):
        index = build_index(
            archive, kind=kind, ids=ids, fingerprint="repo@abc123", space="cross", sensor="s1", **params
        )
        before = index.search(queries, k=5)
        target = index.save(tmp_path / kind)
        assert sorted(p.name for p in target.iterdir()) == [
            ".crjepa-output.json",
            "ids.json",
            "index.faiss",
            "index.json",
        ]
        index.save(tmp_path / kind)  # overwriting an existing index works and leaves no temp folders behind
        assert sorted(p.name for p in tmp_path.iterdir() if p.name.startswith(".")) == []
        loaded = RetrievalIndex.load(tmp_path / kind, expected_fingerprint="repo@abc123")
        after = loaded.search(queries, k=5)
        np.testing.assert_array_equal(after[1], before[1])
        np.testing.assert_allclose(after[0], before[0])
        assert (loaded.metadata.kind, loaded.metadata.sensor, loaded.metadata.space) == (kind, "s1", "cross")
        assert loaded.metadata.params == index.metadata.params
    with pytest.raises(ValueError, match="built from model 'repo@abc123' but 'repo@other' was expected"):
        RetrievalIndex.load(tmp_path / "exact", expected_fingerprint="repo@other")
    with pytest.raises(FileNotFoundError, match="missing"):
        RetrievalIndex.load(tmp_path / "nothing")


def test_crafted_on_disk_index_is_refused_before_faiss_maps_anything(tmp_path: Path) -> None:
    """A downloaded index.faiss declaring on-disk inverted lists would make faiss open (and map read-write) a file
    it names; the loader refuses the structure before faiss acts on it, and the named file stays untouched."""
    import faiss

    from crjepa.search.faiss_files import IndexFileError

    rng = np.random.default_rng(3)
    x = unit_vectors(rng, 300, 16)
    build_index(x, kind="exact").save(tmp_path / "idx")
    victim = tmp_path / "victim.ivfdata"
    quantizer = faiss.IndexFlatIP(16)
    crafted = faiss.IndexIVFFlat(quantizer, 16, 4, faiss.METRIC_INNER_PRODUCT)
    crafted.train(x)
    invlists = faiss.OnDiskInvertedLists(4, crafted.code_size, str(victim))
    crafted.replace_invlists(invlists)  # (Python keeps ownership of invlists and quantizer: kept alive below)
    crafted.add(x)
    faiss.write_index(crafted, str(tmp_path / "idx" / "index.faiss"))
    del crafted, invlists, quantizer
    before = victim.read_bytes()
    with pytest.raises(IndexFileError, match=r"index.faiss holds faiss structure 'IwFl', not an exact index"):
        RetrievalIndex.load(tmp_path / "idx")
    assert victim.read_bytes() == before
    # the same file claimed as an ivfpq index (the kind whose structures include inverted lists)
    meta = json.loads((tmp_path / "idx" / "index.json").read_text())
    meta.update(kind="ivfpq", params={"nprobe": 4, "k_factor": 4})
    (tmp_path / "idx" / "index.json").write_text(json.dumps(meta))
    with pytest.raises(IndexFileError, match="refusing to load it"):
        RetrievalIndex.load(tmp_path / "idx")
    assert victim.read_bytes() == before


def test_corrupt_index_folders_give_one_clear_error(tmp_path: Path) -> None:
    from crjepa.search.faiss_files import IndexFileError

    x = unit_vectors(np.random.default_rng(4), 200, 16)
    for case in ("truncated", "unknown key", "wrong type", "bad dimension", "ids"):
        folder = tmp_path / case.replace(" ", "_")
        build_index(x, kind="hnsw").save(folder)
        meta = json.loads((folder / "index.json").read_text())
        if case == "truncated":
            data = (folder / "index.faiss").read_bytes()
            (folder / "index.faiss").write_bytes(data[: len(data) // 3])
            message = r"index.faiss is truncated or corrupt.*rebuild it with `crjepa index`"
        elif case == "unknown key":
            meta["surprise"] = 1
            message = r"index.json: unknown key\(s\) \['surprise'\]"
        elif case == "wrong type":
            meta["dimension"] = "16"
            message = r"index.json: dimension must be int, found '16'"
        elif case == "bad dimension":
            meta["dimension"] = 32
            message = r"holds a IndexHNSWFlat of dimension 16; index.json says a hnsw index of dimension 32"
        else:
            (folder / "ids.json").write_text(json.dumps(["a", "b"]))
            message = r"ids.json must list one id per vector \(200\)"
        (folder / "index.json").write_text(json.dumps(meta))
        with pytest.raises(IndexFileError, match=message):
            RetrievalIndex.load(folder)


def _claim(data: bytearray, at: int, count: int) -> bytearray:
    data[at : at + 8] = int(count).to_bytes(8, "little")
    return data


def test_inflated_counts_in_a_faiss_file_are_refused_before_anything_is_allocated(tmp_path: Path) -> None:
    """A few-KB index.faiss whose header claims a gigabyte (stored vectors, an inverted list) made faiss allocate
    it before reading ("corrupt" came after 16.9 GB of RSS); every count is now checked against the bytes the
    file really has before faiss sees it. Graph neighbours that are not node ids are refused too (faiss would
    read outside its arrays when searching)."""
    from crjepa.search.faiss_files import IndexFileError

    from helpers import peak_rss_kib, reset_peak_rss

    rng = np.random.default_rng(5)
    x = unit_vectors(rng, 600, 16)
    n, d = 600, 16
    cases = {}
    build_index(x, kind="exact").save(tmp_path / "exact")
    data = bytearray((tmp_path / "exact" / "index.faiss").read_bytes())
    cases["exact"] = _claim(data, 37, 250_000_000)  # the stored vectors: 1 GB of floats
    build_index(x, kind="hnsw", recall=None).save(tmp_path / "hnsw")
    data = bytearray((tmp_path / "hnsw" / "index.faiss").read_bytes())
    cases["hnsw"] = _claim(bytearray(data), len(data) - n * d * 4 - 8, 250_000_000)  # its stored vectors
    position = 37  # the HNSW graph after the header: assign_probas, cum_nneighbor_per_level, levels, offsets
    for element in (8, 4, 4, 8):
        position += 8 + int.from_bytes(data[position : position + 8], "little") * element
    neighbours = position + 8
    data[neighbours : neighbours + 4] = (n + 5).to_bytes(4, "little")  # a neighbour that is no node
    cases["hnsw neighbour"] = data
    build_index(x, kind="ivfpq", recall=None, nlist=8).save(tmp_path / "ivfpq")
    data = bytearray((tmp_path / "ivfpq" / "index.faiss").read_bytes())
    cases["ivfpq list"] = _claim(bytearray(data), data.index(b"ilbl") + 4 + 32, 1 << 36)  # 512 GB of list ids
    cases["ivfpq vectors"] = _claim(data, len(data) - 4 - n * d * 4 - 8, 250_000_000)
    messages = {
        "exact": "the stored vectors claims 250,000,000 x 4 bytes",
        "hnsw": "the stored vectors claims 250,000,000 x 4 bytes",
        "hnsw neighbour": "an HNSW neighbour is not a node id",
        "ivfpq list": "an inverted list's ids claims 68,719,476,736 x 8 bytes",
        "ivfpq vectors": "the stored vectors claims 250,000,000 x 4 bytes",
    }
    for case, crafted in cases.items():
        folder = tmp_path / case.split()[0]
        (folder / "index.faiss").write_bytes(bytes(crafted))
        measured = reset_peak_rss()
        before = peak_rss_kib()
        with pytest.raises(IndexFileError, match="truncated or corrupt") as raised:
            RetrievalIndex.load(folder)
        assert messages[case] in str(raised.value) and str(folder / "index.faiss") in str(raised.value), case
        if measured:
            assert peak_rss_kib() - before < 100_000, f"{case}: {peak_rss_kib() - before} KiB allocated"


def test_an_index_json_with_search_knobs_out_of_range_is_refused(tmp_path: Path) -> None:
    from crjepa.search.faiss_files import IndexFileError

    x = unit_vectors(np.random.default_rng(8), 300, 16)
    build_index(x, kind="ivfpq", recall=None, nlist=8).save(tmp_path / "i")
    meta = json.loads((tmp_path / "i" / "index.json").read_text())
    meta["params"]["k_factor"] = 10**9  # 10^9 re-ranked candidates per result
    (tmp_path / "i" / "index.json").write_text(json.dumps(meta))
    with pytest.raises(IndexFileError, match=r"k_factor=1000000000 must be a number in \[1, 4096\]"):
        RetrievalIndex.load(tmp_path / "i")
