"""crjepa/search/calibration.py: an index built for a recall target keeps it on fresh queries, per-call targets pick
other measured points, kind="auto" keeps the promise with exact search, fixed knobs turn the calibration off."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

from crjepa.search.index import RetrievalIndex, build_index

from helpers import clustered_vectors, unit_vectors


def _recall(found: np.ndarray, exact: np.ndarray) -> float:
    return float(np.mean([len(set(a) & set(b)) / exact.shape[1] for a, b in zip(found, exact)]))


@pytest.mark.parametrize(
    "kind, params, spread",
    [
        ("hnsw", {"M": 16, "efConstruction": 40}, 1.5),  # efSearch 16 reaches 0.88 here, 0.9 needs ~48
        ("ivfpq", {"nlist": 128}, 1.0),  # nprobe 1 reaches ~0.6
    ],
)
@pytest.mark.slow
def test_calibrated_index_keeps_its_recall_on_fresh_queries(
    kind: str, params: dict, spread: float, tmp_path: Path
) -> None:
    """build_index(recall=T) measures recall on held-out archive vectors; fresh queries get that recall too."""
    rng = np.random.default_rng(7)
    archive, queries = clustered_vectors(rng, 20_000, 2_000, 64, 400, spread=spread)
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
    np.testing.assert_array_equal(
        loaded.search(queries[:50], k=10, recall=0.99)[1], index.search(queries[:50], k=10, recall=0.99)[1]
    )


@pytest.mark.slow
def test_auto_index_turns_exact_when_the_ann_index_cannot_keep_the_promise() -> None:
    """kind="auto" proposes IVF-PQ from 50,000 vectors on; when its calibration cannot reach the target recall (here
    structureless vectors, whose 4-bit codes rank badly) or exact search is faster at it, the build keeps the promise
    with an exact index and records what the ANN index reached. kind="ivfpq" keeps IVF-PQ and says it missed."""
    from crjepa.search.index import describe_calibration

    rng = np.random.default_rng(11)
    archive, queries = unit_vectors(rng, 50_000, 16), unit_vectors(rng, 20, 16)
    auto = build_index(archive, kind="auto", recall=0.9999, calibration_queries=200)
    cal = auto.metadata.calibration
    assert auto.metadata.kind == "exact" and len(auto) == 50_000
    assert cal["met"] and cal["recall"] == 1.0 and cal["qps"] == cal["exact_qps"] > 0 and cal["params"] == {}
    assert cal["ann"]["kind"] == "ivfpq" and cal["ann"]["why"] in ("below the target", "slower than exact search")
    assert "exact search (recall 1.0" in describe_calibration(auto.metadata) and "ivfpq" in describe_calibration(
        auto.metadata
    )
    from crjepa.hub.archive.indices import calibration_summary
    from crjepa.hub.cards import render_embeddings_card

    info = {
        "num_rows": 50_000,
        "sensors": ["s2"],
        "dimension": 16,
        "class_names": ["a"],
        "metadata_columns": [],
        "vector_columns": ["s2_cross"],
        "indices": {"s2_cross": "exact"},
        "index_calibration": {"s2_cross": calibration_summary(auto)},
    }
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
    archive, _ = clustered_vectors(rng, 2_000, 0, 32, 20)
    index = build_index(archive, kind="hnsw", efSearch=24)
    assert index.metadata.calibration == {} and index.metadata.params["efSearch"] == 24
    with pytest.raises(ValueError, match="built without recall calibration"):
        index.search(archive[:2], k=3, recall=0.9)
    assert build_index(archive, kind="auto", recall=1.0).metadata.kind == "exact"
    with pytest.raises(ValueError, match="recall must be in"):
        build_index(archive, kind="hnsw", recall=1.5)
