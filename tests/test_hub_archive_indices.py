"""crjepa/hub/archive/indices.py: a column's index holds exactly the rows having its sensor (built at write time, on
first search, and by `add_indices`), so a partially paired archive never returns a row from a column it lacks."""

from __future__ import annotations

import numpy as np
import pytest

from crjepa.eval.retrieval import compute_embeddings
from crjepa.hub.archive import (
    EmbeddingsError,
    build_indices,
    load_embeddings,
    model_fingerprint,
    write_embeddings_dataset,
)

from helpers import exact_top_k


def test_rows_lacking_a_sensor_store_null_vectors_and_are_not_searchable_there(model, tmp_path):
    """A partially paired archive: a row without S1 has null S1 vectors (datasets reads None), the S1 indices
    hold only the rows with S1 (built at write time, on first search, and by `crjepa index`), search never
    returns a row from a column it lacks, and searching from a sensor the item lacks is an error naming it."""
    import datasets
    import pyarrow.parquet as pq

    from crjepa.data.loading import load_paired_dataset
    from crjepa.hub.archive import add_indices

    ds = load_paired_dataset(
        "synthetic", "train", num_train=40, num_validation=0, num_test=0, image_size=32, pairing_rate=0.5
    )
    emb = compute_embeddings(model, ds, batch_size=16)
    fingerprint = model_fingerprint(model)
    folder = write_embeddings_dataset(
        tmp_path / "partial",
        emb.ids,
        emb.labels,
        emb.class_names,
        emb.vectors,
        model_fingerprint=fingerprint,
        indices=build_indices(emb.vectors, emb.ids, kind="exact", fingerprint=fingerprint, present=emb.present),
        present=emb.present,
    )
    has_s1, has_s2 = emb.present["s1"], emb.present["s2"]
    table = pq.read_table(next((folder / "data").glob("*.parquet")))
    assert table["s1_cross"].null_count == int((~has_s1).sum()) > 0
    rows = datasets.load_dataset(
        "parquet", data_files=str(folder / "data" / "*.parquet"), split="train", cache_dir=str(tmp_path / "hf")
    )
    assert [r is None for r in rows["s2_unified"]] == list(~has_s2)

    s1_only = emb.ids[int(np.flatnonzero(has_s1 & ~has_s2)[0])]
    for reopen in (lambda: load_embeddings(folder), lambda: load_embeddings(folder, load_indices=False)):
        archive = reopen()
        assert np.array_equal(archive.present["s1"], has_s1) and np.array_equal(archive.present["s2"], has_s2)
        hits = archive.search_by_id(s1_only, "s1->s2", k=int(has_s2.sum()))
        assert {h.id for h in hits} == {i for i, keep in zip(emb.ids, has_s2) if keep}
        expected = exact_top_k(emb.vectors["s1_cross"][[emb.ids.index(s1_only)]], emb.vectors["s2_cross"][has_s2], 3)
        assert [h.id for h in hits[:3]] == [np.asarray(emb.ids)[has_s2][j] for j in expected[0]]
        with pytest.raises(
            EmbeddingsError,
            match=f"Item '{s1_only}' has no 's2' image.*search from a sensor it has "
            r"\(\['s1'\]\)",
        ):
            archive.search_by_id(s1_only, "s2->s1")
        with pytest.raises(EmbeddingsError, match="k=40 must be between 1 and the number of searchable items"):
            archive.search_by_id(s1_only, "s1->s1", k=40)
    add_indices(folder, kind="exact")  # `crjepa index` over the null-holding columns
    assert len(load_embeddings(folder).indices["s2_cross"]) == int(has_s2.sum())
