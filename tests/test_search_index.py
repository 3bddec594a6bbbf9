"""crjepa/search/index.py: `build_index` and `RetrievalIndex.search`: exact equals numpy, ANN recall, shards merged,
queries batched within a memory budget, errors people can act on."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from crjepa.search.index import build_index

from helpers import assert_close_at_scale, clustered_vectors, unit_vectors


def test_exact_search_equals_numpy_topk() -> None:
    rng = np.random.default_rng(0)
    archive, queries = unit_vectors(rng, 500, 32), unit_vectors(rng, 20, 32)
    ids = np.array([f"S2_{i:04d}" for i in range(500)])
    index = build_index(3.0 * archive, kind="exact", ids=ids)  # not unit length: build_index normalises
    scores, found = index.search(torch.from_numpy(queries), k=7)
    sim = queries @ archive.T
    top = np.argsort(-sim, axis=1)[:, :7]
    np.testing.assert_array_equal(found, ids[top])
    np.testing.assert_allclose(scores, np.take_along_axis(sim, top, axis=1), atol=1e-5)
    assert found.dtype.kind == "U" and index.metadata.kind == "exact"


@pytest.mark.slow
def test_hnsw_and_ivfpq_recall_at_100k() -> None:
    """ANN recall@10 against exact search on a clustered 100,000 x 64 archive."""
    rng = np.random.default_rng(2)
    archive, queries = clustered_vectors(rng, 100_000, 200, 64, 1000)
    _, exact = build_index(archive, kind="exact").search(queries, k=10)

    def recall(found: np.ndarray) -> float:
        return float(np.mean([len(set(a) & set(b)) / 10 for a, b in zip(found, exact)]))

    hnsw = build_index(archive, kind="hnsw", M=16, efConstruction=40, efSearch=64)
    assert recall(hnsw.search(queries, k=10)[1]) >= 0.95
    ivfpq = build_index(archive, kind="ivfpq")
    assert recall(ivfpq.search(queries, k=10)[1]) >= ivfpq.metadata.calibration["target"] - 0.01  # calibrated


def test_errors() -> None:
    rng = np.random.default_rng(3)
    index = build_index(unit_vectors(rng, 100, 16), kind="exact", fingerprint="m1", space="unified")
    with pytest.raises(ValueError, match="query dimension 8 does not match the index dimension 16"):
        index.search(unit_vectors(rng, 2, 8), k=3)
    with pytest.raises(ValueError, match="empty archive"):
        build_index(np.zeros((0, 16), dtype=np.float32))
    with pytest.raises(ValueError, match="NaN"):
        build_index(np.full((4, 16), np.nan))
    with pytest.raises(ValueError, match="unknown parameters"):
        build_index(unit_vectors(rng, 100, 16), kind="hnsw", nprobe=3)
    with pytest.raises(ValueError, match="3 ids given for 100 vectors"):
        build_index(unit_vectors(rng, 100, 16), ids=["a", "b", "c"])
    # fewer results than k: empty id, -inf score
    scores, ids = build_index(unit_vectors(rng, 3, 16), kind="exact").search(unit_vectors(rng, 1, 16), k=5)
    assert list(ids[0, 3:]) == ["", ""] and np.isneginf(scores[0, 3:]).all()


def test_two_shards_merged_equal_the_single_index() -> None:
    """docs/SCALE.md in miniature: an archive split over two shards, searched per shard and merged, gives the
    single index's results (exact shards via merge_results; IVF-PQ shards sharing one trained quantiser and
    codebook via faiss.IndexShards)."""
    import faiss

    from crjepa.search.index import merge_results

    rng = np.random.default_rng(9)
    archive, queries = clustered_vectors(rng, 6_000, 50, 32, 60)
    ids = np.array([f"scene-{i}" for i in range(6_000)])
    whole = build_index(archive, kind="exact", ids=ids).search(queries, k=10)
    halves = [
        build_index(archive[part], kind="exact", ids=ids[part]).search(queries, k=10)
        for part in (slice(0, 3_000), slice(3_000, None))
    ]
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


def test_search_batches_its_queries_within_the_memory_budget(monkeypatch) -> None:
    """10^4 queries at k=1000 on an IVF-PQ index asked faiss for 10^4 x 1000 x k_factor candidates at once (7.5 GB
    at k=100 on 10^5 rows, OOM-killed at k=1000): the queries now go in batches whose working memory fits
    SEARCH_BATCH_BYTES, with the results of one call."""
    import crjepa.search.index as index_module

    rng = np.random.default_rng(6)
    x, q = clustered_vectors(rng, 4000, 300, 16, 40)
    for kind, params in (
        ("ivfpq", {"nlist": 32, "nprobe": 8, "k_factor": 16}),
        ("exact", {}),
        ("hnsw", {"efSearch": 64}),
    ):
        index = build_index(x, kind=kind, recall=None, **params)
        whole = index.search(q, k=50)
        calls: list[int] = []
        real = index.index

        class Spy:
            ntotal = real.ntotal

            def search(self, queries, k, params=None, calls=calls, real=real):
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
