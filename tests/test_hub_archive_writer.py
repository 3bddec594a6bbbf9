"""crjepa/hub/archive/writer.py: `write_embeddings_dataset` writes a complete archive (Parquet that `datasets` reads,
faiss indices, info, card) atomically: a failed write leaves the earlier archive as it was."""

from __future__ import annotations

import json

import faiss
import numpy as np
import pytest

from helpers import write_model_archive


def test_staged_folder_is_complete_and_loads_with_datasets_and_faiss(archive_dir, archive_embeddings):
    from datasets import load_dataset
    from huggingface_hub import DatasetCard

    parquet = sorted((archive_dir / "data").glob("*.parquet"))
    assert len(parquet) == 1
    ds = load_dataset(
        "parquet", data_files=[str(p) for p in parquet], split="train", cache_dir=str(archive_dir.parent / "cache")
    )
    assert ds.column_names == ["id", "labels", "split", "s1_unified", "s1_cross", "s2_unified", "s2_cross"]
    assert ds.features["labels"].feature.names == archive_embeddings.class_names
    assert ds.features["s2_cross"].length == 32
    np.testing.assert_array_equal(np.asarray(ds["s2_cross"], dtype=np.float32), archive_embeddings["s2_cross"])
    assert ds["id"] == archive_embeddings.ids
    info = json.loads((archive_dir / "embeddings_info.json").read_text())
    assert info["dimension"] == 32 and info["sensors"] == ["s1", "s2"] and info["spaces"] == ["unified", "cross"]
    assert info["model_repo_id"] == "someone/crjepa-tiny" and len(info["model_fingerprint"]) == 16
    assert info["indices"] == {c: "exact" for c in archive_embeddings.columns}
    for column in archive_embeddings.columns:
        index = faiss.read_index(str(archive_dir / "faiss" / column / "index.faiss"))
        assert (index.ntotal, index.d) == (80, 32)
        assert json.loads((archive_dir / "faiss" / column / "ids.json").read_text()) == archive_embeddings.ids
    card = DatasetCard.load(archive_dir / "README.md")
    assert card.data.configs[0]["data_files"][0]["path"] == "data/train-*.parquet"
    assert "someone/crjepa-tiny" in card.text and info["model_fingerprint"] in card.text
    assert not [p for p in archive_dir.parent.iterdir() if ".tmp-" in p.name]


def test_failed_write_leaves_nothing_behind(tmp_path, model, archive_pairs, archive_embeddings, monkeypatch):
    import crjepa.hub.archive.writer as writer

    target = write_model_archive(tmp_path / "emb", model, archive_pairs, archive_embeddings, indices=False)
    before = sorted(p.relative_to(target) for p in target.rglob("*"))

    def broken(*args, **kwargs):
        raise RuntimeError("disk full")

    monkeypatch.setattr(writer, "render_embeddings_card", broken)
    with pytest.raises(RuntimeError, match="disk full"):
        write_model_archive(tmp_path / "emb", model, archive_pairs, archive_embeddings)
    assert sorted(p.relative_to(target) for p in target.rglob("*")) == before  # old archive intact
    assert [p.name for p in tmp_path.iterdir()] == ["emb"]  # no temp folders left
