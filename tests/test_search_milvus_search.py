"""crjepa/search/milvus/search.py on Milvus Lite: results equal faiss's, filters select inside Milvus before the top-k,
the CLI prints the same hits with either backend."""

from __future__ import annotations

import json
import os

import numpy as np
import pytest

pytest.importorskip("pymilvus")
pytest.importorskip("milvus_lite")

from crjepa.hub.archive import EmbeddingsError, load_embeddings  # noqa: E402
from crjepa.search import milvus  # noqa: E402

from helpers import SEARCH_ARCHIVE_CLASSES  # noqa: E402


def test_filter_expressions_check_names_and_quote_values():
    info = {"class_names": SEARCH_ARCHIVE_CLASSES, "metadata_columns": ["tile", "s2_date"]}
    expr = milvus.filter_expression(info, ["Arable land"], {"tile": 'T"1\\'}, {"s2_date": ("2017-06-01", "")})
    assert expr == 'array_contains(labels, 0) and tile == "T\\"1\\\\" and s2_date >= "2017-06-01"'
    with pytest.raises(EmbeddingsError, match="unknown class 'Forest'.*Arable land"):
        milvus.filter_expression(info, ["Forest"])
    with pytest.raises(EmbeddingsError, match="no metadata column 'date'.*'tile', 's2_date'"):
        milvus.filter_expression(info, equal={"date": "x"})


def test_flat_collections_return_what_faiss_returns(milvus_flat):
    folder, uri, vectors, present, records = milvus_flat
    assert {r["rows"] for c, r in records.items() if c.startswith("s1")} == {int(present.sum())}
    reference, engine = load_embeddings(folder), load_embeddings(folder, milvus_uri=uri)
    for query in ("p00003", "p00500"):
        for direction in ("s1->s2", "s2->s1", "s1->s1", "s2->s2"):
            expected, found = reference.search_by_id(query, direction, 8), engine.search_by_id(query, direction, 8)
            assert [h.id for h in found] == [h.id for h in expected], direction
            assert [h.labels for h in found] == [h.labels for h in expected]
            assert [h.metadata for h in found] == [h.metadata for h in expected] and found[0].metadata["tile"]
            assert [h.position for h in found] == [h.position for h in expected]
            np.testing.assert_allclose([h.score for h in found], [h.score for h in expected], atol=1e-5)
    with pytest.raises(EmbeddingsError, match="No item with id 'p00009' and a 's1' vector"):
        engine.search_by_id("p00009", "s1->s2")  # row 9 has no s1 image: not in the s1 collections


def test_filters_select_before_the_top_k_inside_milvus(milvus_flat):
    folder, uri, vectors, present, _ = milvus_flat
    engine = load_embeddings(folder, milvus_uri=uri)
    reference = load_embeddings(folder)
    where = engine.filter(["Urban fabric"], {"tile": "T3"}, {"s2_date": ("2017-03-01", "2017-09-30")})
    labels, meta = reference.labels, reference.metadata
    match = np.array(
        [
            bool(labels[i, 3]) and meta["tile"][i] == "T3" and "2017-03-01" <= meta["s2_date"][i] <= "2017-09-30"
            for i in range(len(reference))
        ]
    )
    query = reference.vectors["s2_unified"][0]
    scores = reference.vectors["s2_unified"] @ query
    expected = [reference.ids[i] for i in np.argsort(-np.where(match, scores, -np.inf), kind="stable")[:10]]
    hits = engine.search(query, "s2_unified", 10, where=where)
    assert [h.id for h in hits] == expected and all(h.metadata["tile"] == "T3" for h in hits)
    unfiltered = {reference.ids[i] for i in np.argsort(-scores)[:10]}
    assert len(unfiltered & set(expected)) < 10  # filtering the unfiltered top-10 afterwards would find fewer
    assert engine.search(query, "s2_unified", 5, where='tile == "nowhere"') == []


@pytest.mark.slow
def test_cli_search_by_uri_prints_the_faiss_shape_with_filters(milvus_flat, capsys):
    from crjepa.cli import main

    folder, uri, *_ = milvus_flat
    assert main(["search", str(folder), "--id", "p00004", "--direction", "s2->s1", "-k", "5", "--json"]) == 0
    faiss_hits = json.loads(capsys.readouterr().out)["s2->s1"]
    assert (
        main(
            [
                "search",
                str(folder),
                "--id",
                "p00004",
                "--direction",
                "s2->s1",
                "-k",
                "5",
                "--json",
                "--backend",
                "milvus",
                "--uri",
                uri,
            ]
        )
        == 0
    )
    milvus_hits = json.loads(capsys.readouterr().out)["s2->s1"]
    assert [set(h) for h in milvus_hits] == [set(h) for h in faiss_hits]
    assert [h["id"] for h in milvus_hits] == [h["id"] for h in faiss_hits]
    assert (
        main(
            [
                "search",
                str(folder),
                "--id",
                "p00004",
                "--direction",
                "s2->s1",
                "--json",
                "--backend",
                "milvus",
                "--uri",
                uri,
                "--label",
                "Pastures",
                "--meta",
                "tile=T2",
                "--range",
                "s2_date=2017-02-01..",
            ]
        )
        == 0
    )
    hits = json.loads(capsys.readouterr().out)["s2->s1"]
    assert hits and all(
        "Pastures" in h["labels"] and h["metadata"]["tile"] == "T2" and h["metadata"]["s2_date"] >= "2017-02-01"
        for h in hits
    )
    assert main(["search", str(folder), "--id", "p00004", "--backend", "milvus", "--uri", uri, "--label", "Moon"]) == 2
    assert "unknown class 'Moon'" in capsys.readouterr().err
    assert os.path.isdir(uri)
