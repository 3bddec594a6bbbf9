"""crjepa/hub/archive/search.py: search by id needs no model, search by image embeds only the query; a wrong sensor,
dimension, id, model or index is an error people can act on."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import numpy as np
import pytest
import torch

from crjepa.hub.archive import (
    EmbeddingsError,
    build_indices,
    load_embeddings,
    model_fingerprint,
    write_embeddings_dataset,
)
from modeling_crjepa import CRJepaConfig, CRJepaModel


def test_search_by_id_needs_no_model_and_by_image_embeds_only_the_query(
    archive_dir, model, archive_pairs, archive_embeddings
):
    archive = load_embeddings(archive_dir)
    hits = archive.search_by_id(archive_embeddings.ids[3], "s1->s2", k=4)
    assert [h.rank for h in hits] == [1, 2, 3, 4]
    assert hits[0].score >= hits[-1].score
    expected = np.argsort(-(archive_embeddings["s1_cross"][3] @ archive_embeddings["s2_cross"].T), kind="stable")[:4]
    assert [h.position for h in hits] == expected.tolist()
    assert hits[0].labels == [
        archive_embeddings.class_names[c] for c in np.flatnonzero(archive_embeddings.labels[hits[0].position])
    ]

    image = archive_pairs.with_format("numpy")[3]["s2"]
    same = archive.search_by_image(model, image, "s2", k=3)
    assert same[0].id == archive_embeddings.ids[3] and same[0].score == pytest.approx(1.0, abs=1e-4)
    cross = archive.search_by_image(model, image, "s2", "s1", k=5)
    assert [h.id for h in cross] == [h.id for h in archive.search_by_id(archive_embeddings.ids[3], "s2->s1", k=5)]


def test_bad_input_gives_clear_errors(tmp_path, archive_dir, model, archive_pairs, archive_embeddings):
    archive = load_embeddings(archive_dir)
    with pytest.raises(EmbeddingsError, match="holds 32-d vectors"):
        archive.search(np.ones(16, np.float32), "s2_cross", k=3)
    with pytest.raises(ValueError, match="Unknown sensor 's3'"):
        archive.search_by_id(archive_embeddings.ids[0], "s3->s1")
    with pytest.raises(ValueError, match="Unknown sensor 'rgb'"):
        archive.search_by_image(model, np.zeros((3, 8, 8), np.float32), "rgb")
    with pytest.raises(EmbeddingsError, match="No item with id 'nope'"):
        archive.search_by_id("nope", "s1->s2")

    torch.manual_seed(1)
    other = CRJepaModel(CRJepaConfig.from_preset("tiny"))
    with pytest.raises(EmbeddingsError, match="embedded by model .* fingerprint"):
        load_embeddings(archive_dir, model=other)
    with pytest.raises(EmbeddingsError, match="fingerprint"):
        archive.search_by_image(other, archive_pairs.with_format("numpy")[0]["s1"], "s1")

    # an index built by another model, dropped into the archive
    copy = Path(shutil.copytree(archive_dir, tmp_path / "copy"))
    foreign = build_indices(
        archive_embeddings.vectors,
        archive_embeddings.ids,
        kind="exact",
        fingerprint=model_fingerprint(other),
        columns=["s1_cross"],
    )["s1_cross"]
    foreign.save(copy / "faiss" / "s1_cross")
    with pytest.raises(EmbeddingsError, match="s1_cross.*built from model"):
        load_embeddings(copy)

    # archive_embeddings of another dimension
    mixed = dict(archive_embeddings.vectors, s2_cross=archive_embeddings["s2_cross"][:, :16])
    with pytest.raises(EmbeddingsError, match="one dimension"):
        write_embeddings_dataset(
            tmp_path / "mixed", archive_embeddings.ids, archive_embeddings.labels, archive_embeddings.class_names, mixed
        )
    info = json.loads((copy / "embeddings_info.json").read_text())
    (copy / "embeddings_info.json").write_text(json.dumps({**info, "dimension": 64}))
    with pytest.raises(EmbeddingsError, match="32-d vectors but embeddings_info.json says 64-d"):
        load_embeddings(copy, load_indices=False)

    # an empty archive: refused on write, and reported on load
    with pytest.raises(EmbeddingsError, match="empty"):
        write_embeddings_dataset(
            tmp_path / "empty",
            [],
            np.zeros((0, 19)),
            archive_embeddings.class_names,
            {"s1_cross": np.zeros((0, 32), np.float32)},
        )
    assert not (tmp_path / "empty").exists()
    import pyarrow.parquet as pq

    parquet = next((archive_dir / "data").glob("*.parquet"))
    empty = Path(shutil.copytree(archive_dir, tmp_path / "empty2"))
    pq.write_table(pq.read_table(parquet).slice(0, 0), next((empty / "data").glob("*.parquet")))
    with pytest.raises(EmbeddingsError, match="empty"):
        load_embeddings(empty)
