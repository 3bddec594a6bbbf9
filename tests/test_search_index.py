"""faiss retrieval indices: exact equals numpy, round trips, ANN recall, errors people can act on."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
import torch

from helpers import assert_close_at_scale

from crjepa.search.index import RetrievalIndex, build_index, default_params


def _unit(rng: np.random.Generator, n: int, d: int) -> np.ndarray:
    x = rng.standard_normal((n, d)).astype(np.float32)
    return x / np.linalg.norm(x, axis=1, keepdims=True)


def _clustered(
    rng: np.random.Generator, n: int, nq: int, d: int, clusters: int, spread: float = 1.0
) -> tuple[np.ndarray, np.ndarray]:
    """Archive (n, d) and queries (nq, d): unit vectors around shared random cluster centres."""
    centres = _unit(rng, clusters, d)
    x = centres[rng.integers(0, clusters, n + nq)]
    x += spread * rng.standard_normal(x.shape).astype(np.float32) / np.sqrt(d)
    x /= np.linalg.norm(x, axis=1, keepdims=True)
    return x[:n], x[n:]


def test_exact_search_equals_numpy_topk() -> None:
    rng = np.random.default_rng(0)
    archive, queries = _unit(rng, 500, 32), _unit(rng, 20, 32)
    ids = np.array([f"S2_{i:04d}" for i in range(500)])
    index = build_index(3.0 * archive, kind="exact", ids=ids)  # not unit length: build_index normalises
    scores, found = index.search(torch.from_numpy(queries), k=7)
    sim = queries @ archive.T
    top = np.argsort(-sim, axis=1)[:, :7]
    np.testing.assert_array_equal(found, ids[top])
    np.testing.assert_allclose(scores, np.take_along_axis(sim, top, axis=1), atol=1e-5)
    assert found.dtype.kind == "U" and index.metadata.kind == "exact"


def test_auto_rule() -> None:
    assert default_params("auto", 49_999, 256)[0] == "exact"
    kind, params = default_params("auto", 1_000_000, 256)
    assert kind == "ivfpq" and params["nlist"] == 4096 and params["m"] == 64


def test_save_load_round_trip_and_fingerprint(tmp_path: Path) -> None:
    rng = np.random.default_rng(1)
    archive, queries = _clustered(rng, 3000, 10, 32, 30)
    ids = [f"scene/{i}" for i in range(3000)]
    for kind, params in (("exact", {}), ("hnsw", {}), ("ivfpq", {"nlist": 16, "m": 8, "nprobe": 4})):
        index = build_index(archive, kind=kind, ids=ids, fingerprint="repo@abc123", space="cross", sensor="s1",
                            **params)
        before = index.search(queries, k=5)
        target = index.save(tmp_path / kind)
        assert sorted(p.name for p in target.iterdir()) == [".crjepa-output.json", "ids.json", "index.faiss", "index.json"]
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


@pytest.mark.slow
def test_hnsw_and_ivfpq_recall_at_100k() -> None:
    """ANN recall@10 against exact search on a clustered 100,000 x 64 archive."""
    rng = np.random.default_rng(2)
    archive, queries = _clustered(rng, 100_000, 200, 64, 1000)
    _, exact = build_index(archive, kind="exact").search(queries, k=10)

    def recall(found: np.ndarray) -> float:
        return float(np.mean([len(set(a) & set(b)) / 10 for a, b in zip(found, exact)]))

    hnsw = build_index(archive, kind="hnsw", M=16, efConstruction=40, efSearch=64)
    assert recall(hnsw.search(queries, k=10)[1]) >= 0.95
    ivfpq = build_index(archive, kind="ivfpq")
    assert recall(ivfpq.search(queries, k=10)[1]) >= ivfpq.metadata.calibration["target"] - 0.01  # calibrated


def test_errors() -> None:
    rng = np.random.default_rng(3)
    index = build_index(_unit(rng, 100, 16), kind="exact", fingerprint="m1", space="unified")
    with pytest.raises(ValueError, match="query dimension 8 does not match the index dimension 16"):
        index.search(_unit(rng, 2, 8), k=3)
    with pytest.raises(ValueError, match="empty archive"):
        build_index(np.zeros((0, 16), dtype=np.float32))
    with pytest.raises(ValueError, match="NaN"):
        build_index(np.full((4, 16), np.nan))
    with pytest.raises(ValueError, match="unknown parameters"):
        build_index(_unit(rng, 100, 16), kind="hnsw", nprobe=3)
    with pytest.raises(ValueError, match="3 ids given for 100 vectors"):
        build_index(_unit(rng, 100, 16), ids=["a", "b", "c"])
    # fewer results than k: empty id, -inf score
    scores, ids = build_index(_unit(rng, 3, 16), kind="exact").search(_unit(rng, 1, 16), k=5)
    assert list(ids[0, 3:]) == ["", ""] and np.isneginf(scores[0, 3:]).all()


# ---------------------------------------------------------------------------------------------- untrusted files
def test_crafted_on_disk_index_is_refused_before_faiss_maps_anything(tmp_path: Path) -> None:
    """A downloaded index.faiss declaring on-disk inverted lists would make faiss open (and map read-write) a file
    it names; the loader refuses the structure before faiss acts on it, and the named file stays untouched."""
    import faiss

    from crjepa.search.index import IndexFileError

    rng = np.random.default_rng(3)
    x = _unit(rng, 300, 16)
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
    from crjepa.search.index import IndexFileError

    x = _unit(np.random.default_rng(4), 200, 16)
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


def _recall(found: np.ndarray, exact: np.ndarray) -> float:
    return float(np.mean([len(set(a) & set(b)) / exact.shape[1] for a, b in zip(found, exact)]))


@pytest.mark.parametrize("kind, params, spread", [
    ("hnsw", {"M": 16, "efConstruction": 40}, 1.5),  # efSearch 16 reaches 0.88 here, 0.9 needs ~48
    ("ivfpq", {"nlist": 128}, 1.0),  # nprobe 1 reaches ~0.6
])
@pytest.mark.slow
def test_calibrated_index_keeps_its_recall_on_fresh_queries(kind: str, params: dict, spread: float,
                                                            tmp_path: Path) -> None:
    """build_index(recall=T) measures recall on held-out archive vectors; fresh queries get that recall too."""
    rng = np.random.default_rng(7)
    archive, queries = _clustered(rng, 20_000, 2_000, 64, 400, spread=spread)
    _, exact = build_index(archive, kind="exact").search(queries, k=10)
    index = build_index(archive, kind=kind, recall=0.9, **params)
    cal = index.metadata.calibration
    fresh = _recall(index.search(queries, k=10)[1], exact)
    assert cal["met"] and cal["recall"] >= 0.9 and cal["queries"] == 500 and cal["k"] == 10
    assert fresh >= 0.9 - 0.01, (fresh, cal)
    assert abs(fresh - cal["recall"]) <= 3 * cal["recall_se"] + 0.01, (fresh, cal)  # same point, same recall
    assert cal["qps"] > 0 and cal["seconds"] > 0 and cal["points"]
    assert {key: index.metadata.params[key] for key in cal["params"]} == cal["params"]
    # per call: a higher target buys recall with speed, explicit knobs override, nothing changes the index
    high = _recall(index.search(queries, k=10, recall=0.99)[1], exact)
    assert high >= fresh and high >= max(p["recall"] for p in cal["points"]) - 0.02
    low_knobs = {"efSearch": 16} if kind == "hnsw" else {"nprobe": 1, "k_factor": 1}
    assert _recall(index.search(queries, k=10, **low_knobs)[1], exact) < fresh
    assert _recall(index.search(queries, k=10)[1], exact) == fresh
    # the calibration survives save / load
    loaded = RetrievalIndex.load(index.save(tmp_path / kind))
    assert loaded.metadata.calibration == cal
    np.testing.assert_array_equal(loaded.search(queries[:50], k=10, recall=0.99)[1],
                                  index.search(queries[:50], k=10, recall=0.99)[1])


@pytest.mark.slow
def test_auto_index_turns_exact_when_the_ann_index_cannot_keep_the_promise() -> None:
    """kind="auto" proposes IVF-PQ from 50,000 vectors on; when its calibration cannot reach the target recall (here
    structureless vectors, whose 4-bit codes rank badly) or exact search is faster at it, the build keeps the promise
    with an exact index and records what the ANN index reached. kind="ivfpq" keeps IVF-PQ and says it missed."""
    from crjepa.search.index import describe_calibration

    rng = np.random.default_rng(11)
    archive, queries = _unit(rng, 50_000, 16), _unit(rng, 20, 16)
    auto = build_index(archive, kind="auto", recall=0.9999, calibration_queries=200)
    cal = auto.metadata.calibration
    assert auto.metadata.kind == "exact" and len(auto) == 50_000
    assert cal["met"] and cal["recall"] == 1.0 and cal["qps"] == cal["exact_qps"] > 0 and cal["params"] == {}
    assert cal["ann"]["kind"] == "ivfpq" and cal["ann"]["why"] in ("below the target", "slower than exact search")
    assert "exact search (recall 1.0" in describe_calibration(auto.metadata) and "ivfpq" in describe_calibration(
        auto.metadata)
    from crjepa.hub.archive import calibration_summary
    from crjepa.hub.cards import render_embeddings_card

    info = {"num_rows": 50_000, "sensors": ["s2"], "dimension": 16, "class_names": ["a"], "metadata_columns": [],
            "vector_columns": ["s2_cross"], "indices": {"s2_cross": "exact"},
            "index_calibration": {"s2_cross": calibration_summary(auto)}}
    card = str(render_embeddings_card(info, "0"))
    assert "`faiss/s2_cross/` (exact)" in card and "measured 1.000" in card, card
    assert f"exact search because the calibrated ivfpq index was {cal['ann']['why']}" in card, card
    exact = build_index(archive, kind="exact")
    np.testing.assert_array_equal(auto.search(queries, k=10)[1], exact.search(queries, k=10)[1])
    np.testing.assert_array_equal(np.sort(auto.ids.astype(int)), np.arange(50_000))

    ivfpq = build_index(archive, kind="ivfpq", recall=0.9999, calibration_queries=200)
    missed = ivfpq.metadata.calibration
    assert ivfpq.metadata.kind == "ivfpq" and not missed["met"] and missed["recall"] < 0.9999
    assert missed["params"]["k_factor"] >= 64  # the walk went past the old depth cap of 32 for the best recall
    assert "NOT reached" in describe_calibration(ivfpq.metadata)


def test_fixed_search_params_turn_the_calibration_off() -> None:
    rng = np.random.default_rng(8)
    archive, _ = _clustered(rng, 2_000, 0, 32, 20)
    index = build_index(archive, kind="hnsw", efSearch=24)
    assert index.metadata.calibration == {} and index.metadata.params["efSearch"] == 24
    with pytest.raises(ValueError, match="built without recall calibration"):
        index.search(archive[:2], k=3, recall=0.9)
    assert build_index(archive, kind="auto", recall=1.0).metadata.kind == "exact"
    with pytest.raises(ValueError, match="recall must be in"):
        build_index(archive, kind="hnsw", recall=1.5)


def test_two_shards_merged_equal_the_single_index() -> None:
    """docs/SCALE.md in miniature: an archive split over two shards, searched per shard and merged, gives the
    single index's results (exact shards via merge_results; IVF-PQ shards sharing one trained quantiser and
    codebook via faiss.IndexShards)."""
    import faiss

    from crjepa.search.index import merge_results

    rng = np.random.default_rng(9)
    archive, queries = _clustered(rng, 6_000, 50, 32, 60)
    ids = np.array([f"scene-{i}" for i in range(6_000)])
    whole = build_index(archive, kind="exact", ids=ids).search(queries, k=10)
    halves = [build_index(archive[part], kind="exact", ids=ids[part]).search(queries, k=10)
              for part in (slice(0, 3_000), slice(3_000, None))]
    merged = merge_results(halves, k=10)
    np.testing.assert_array_equal(merged[1], whole[1])
    assert_close_at_scale(merged[0], whole[0])  # other BLAS blockings of the same inner products

    trained = faiss.index_factory(32, "IVF64,PQ8x4fs", faiss.METRIC_INNER_PRODUCT)
    trained.train(archive)
    single = faiss.clone_index(trained)
    single.add(archive)
    shards = faiss.IndexShards(32, False, True)  # not threaded, successive ids: shard 2's rows follow shard 1's
    parts = [faiss.clone_index(trained), faiss.clone_index(trained)]
    parts[0].add(archive[:3_000])
    parts[1].add(archive[3_000:])
    for index in (single, *parts):
        faiss.extract_index_ivf(index).nprobe = 8
    for part in parts:
        shards.add_shard(part)
    expected, got = single.search(queries, 10), shards.search(queries, 10)
    np.testing.assert_allclose(got[0], expected[0], atol=1e-5)
    # same ids, except among results tied (4-bit PQ scores) with the k-th score, where either may be returned
    for g, e, s, last in zip(got[1], expected[1], expected[0], expected[0][:, -1]):
        clear = s > last + 1e-5
        assert set(g[clear]) == set(e[clear])


def test_openblas_kernel_choice_follows_the_cpu_flags_and_yields_to_the_user() -> None:
    from crjepa.search.blas import choose_openblas_kernel

    avx512 = frozenset({"sse3", "avx2", "fma", "avx512f", "avx512bw", "avx512dq", "avx512vl", "avx512cd"})
    for flags, expected in ((avx512, "SkylakeX"), (frozenset({"avx2", "fma"}), "Haswell"),
                            (frozenset({"avx512f", "avx2"}), None), (frozenset(), None)):
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

    from crjepa.search.blas import BLAS_THRESHOLD, lower_faiss_blas_threshold

    assert faiss.cvar.distance_compute_blas_threshold == BLAS_THRESHOLD  # this process imported crjepa.search.index
    script = ("import faiss; faiss.cvar.distance_compute_blas_threshold = 7; import crjepa.search.index; "
              "print(faiss.cvar.distance_compute_blas_threshold)")
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


# ---------------------------------------------------------------------------------------------- sizes from files
def _claim(data: bytearray, at: int, count: int) -> bytearray:
    data[at:at + 8] = int(count).to_bytes(8, "little")
    return data


def test_inflated_counts_in_a_faiss_file_are_refused_before_anything_is_allocated(tmp_path: Path) -> None:
    """A few-KB index.faiss whose header claims a gigabyte (stored vectors, an inverted list) made faiss allocate
    it before reading ("corrupt" came after 16.9 GB of RSS); every count is now checked against the bytes the
    file really has before faiss sees it. Graph neighbours that are not node ids are refused too (faiss would
    read outside its arrays when searching)."""
    from helpers import peak_rss_kib, reset_peak_rss

    from crjepa.search.index import IndexFileError

    rng = np.random.default_rng(5)
    x = _unit(rng, 600, 16)
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
        position += 8 + int.from_bytes(data[position:position + 8], "little") * element
    neighbours = position + 8
    data[neighbours:neighbours + 4] = (n + 5).to_bytes(4, "little")  # a neighbour that is no node
    cases["hnsw neighbour"] = data
    build_index(x, kind="ivfpq", recall=None, nlist=8).save(tmp_path / "ivfpq")
    data = bytearray((tmp_path / "ivfpq" / "index.faiss").read_bytes())
    cases["ivfpq list"] = _claim(bytearray(data), data.index(b"ilbl") + 4 + 32, 1 << 36)  # 512 GB of list ids
    cases["ivfpq vectors"] = _claim(data, len(data) - 4 - n * d * 4 - 8, 250_000_000)
    messages = {"exact": "the stored vectors claims 250,000,000 x 4 bytes",
                "hnsw": "the stored vectors claims 250,000,000 x 4 bytes",
                "hnsw neighbour": "an HNSW neighbour is not a node id",
                "ivfpq list": "an inverted list's ids claims 68,719,476,736 x 8 bytes",
                "ivfpq vectors": "the stored vectors claims 250,000,000 x 4 bytes"}
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


def test_search_batches_its_queries_within_the_memory_budget(monkeypatch) -> None:
    """10^4 queries at k=1000 on an IVF-PQ index asked faiss for 10^4 x 1000 x k_factor candidates at once (7.5 GB
    at k=100 on 10^5 rows, OOM-killed at k=1000): the queries now go in batches whose working memory fits
    SEARCH_BATCH_BYTES, with the results of one call."""
    import crjepa.search.index as index_module

    rng = np.random.default_rng(6)
    x, q = _clustered(rng, 4000, 300, 16, 40)
    for kind, params in (("ivfpq", {"nlist": 32, "nprobe": 8, "k_factor": 16}), ("exact", {}),
                         ("hnsw", {"efSearch": 64})):
        index = build_index(x, kind=kind, recall=None, **params)
        whole = index.search(q, k=50)
        calls: list[int] = []
        real = index.index

        class Spy:
            ntotal = real.ntotal

            def search(self, queries, k, params=None):
                calls.append(len(queries))
                return real.search(queries, k, params=params)

        index.index = Spy()
        monkeypatch.setattr(index_module, "SEARCH_BATCH_BYTES", 256 << 10)
        batched = index.search(q, k=50)
        candidates = 50 * (16 if kind == "ivfpq" else 1)  # per query: score + row of each candidate, 12 bytes
        assert len(calls) > 1 and sum(calls) == len(q) and max(calls) * candidates * 12 <= 256 << 10, (kind, calls)
        assert max(calls) - min(calls) <= 1  # equal batches, none a sliver
        np.testing.assert_array_equal(batched[1], whole[1])
        np.testing.assert_allclose(batched[0], whole[0], rtol=0, atol=1e-5)  # cosine scores of unit vectors
        monkeypatch.undo()
    # k beyond the index: faiss is asked for what exists, the rest is padding
    small = build_index(x[:20], kind="exact")
    scores, ids = small.search(q[:3], k=10_000)
    assert scores.shape == (3, 10_000) and (ids[:, 20:] == "").all() and np.isneginf(scores[:, 20:]).all()


def test_index_parameters_are_type_and_range_checked() -> None:
    """`--param M=-4` made faiss allocate until std::bad_alloc and `nlist=0` crashed it; each is now one error."""
    x = _unit(np.random.default_rng(7), 500, 16)
    for kind, params, message in (("hnsw", {"M": 1000}, r"M=1000 must be an integer in \[2, 512\]"),
                                  ("ivfpq", {"nlist": 0}, r"nlist=0 must be an integer in \[1, "),
                                  ("ivfpq", {"nlist": 8, "nprobe": 2.5}, "nprobe=2.5 must be an integer"),
                                  ("hnsw", {"efSearch": True}, "efSearch=True must be an integer"),
                                  ("ivfpq", {"nlist": 64, "train_size": 10}, "train_size=10 must be at least nlist")):
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

    script = ("import resource, numpy as np; resource.setrlimit(resource.RLIMIT_AS, (6 << 30, 6 << 30)); "
              "from crjepa.search.index import build_index\n"
              "try:\n    build_index(np.ones((300, 16), np.float32), kind='hnsw', recall=None, M=-4)\n"
              "except ValueError as err:\n    print('refused:', err)")
    proc = run_python(["-c", script], tmp_path)
    assert proc.returncode == 0 and "refused: hnsw index: M=-4 must be an integer in [2, 512]" in proc.stdout, (
        proc.stdout + proc.stderr[-2000:])


def test_an_index_json_with_search_knobs_out_of_range_is_refused(tmp_path: Path) -> None:
    from crjepa.search.index import IndexFileError

    build_index(_unit(np.random.default_rng(8), 300, 16), kind="ivfpq", recall=None, nlist=8).save(tmp_path / "i")
    meta = json.loads((tmp_path / "i" / "index.json").read_text())
    meta["params"]["k_factor"] = 10**9  # 10^9 re-ranked candidates per result
    (tmp_path / "i" / "index.json").write_text(json.dumps(meta))
    with pytest.raises(IndexFileError, match=r"k_factor=1000000000 must be a number in \[1, 4096\]"):
        RetrievalIndex.load(tmp_path / "i")
