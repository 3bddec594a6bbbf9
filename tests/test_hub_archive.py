"""Embeddings archives: write -> load in a fresh process -> search, the push path, fingerprints, bad input."""

from __future__ import annotations

import json
import re
import shutil
import textwrap
from pathlib import Path

import faiss
import numpy as np
import pytest
import torch

from modeling_crjepa import CRJepaConfig, CRJepaModel
from crjepa.hub.archive import (
    EmbeddingsError,
    HubError,
    build_indices,
    check_hub_access,
    config_summary,
    load_embeddings,
    model_fingerprint,
    push_folder,
    write_embeddings_dataset,
)
from crjepa.eval.retrieval import compute_embeddings
from helpers import run_python, synthetic_pairs



@pytest.fixture(scope="module")
def pairs():
    return synthetic_pairs({"test": 80})


@pytest.fixture(scope="module")
def embeddings(model, pairs):
    return compute_embeddings(model, pairs, batch_size=32)


def write_archive(folder: Path, model, pairs, embeddings, indices: bool = True) -> Path:
    fingerprint = model_fingerprint(model)
    built = build_indices(embeddings.vectors, embeddings.ids, kind="exact", fingerprint=fingerprint) if indices else None
    return write_embeddings_dataset(
        folder, embeddings.ids, embeddings.labels, embeddings.class_names, embeddings.vectors,
        metadata={"split": pairs["split"]}, model_fingerprint=fingerprint, config_summary=config_summary(model.config),
        indices=built, model_repo_id="someone/crjepa-tiny", source={"dataset": "synthetic"})


@pytest.fixture(scope="module")
def archive_dir(tmp_path_factory, model, pairs, embeddings) -> Path:
    return write_archive(tmp_path_factory.mktemp("hub") / "emb", model, pairs, embeddings)


def exact_top_k(queries: np.ndarray, gallery: np.ndarray, k: int, exclude: np.ndarray | None = None) -> np.ndarray:
    scores = queries @ gallery.T
    if exclude is not None:
        scores[np.arange(len(queries)), exclude] = -np.inf
    return np.argsort(-scores, axis=1, kind="stable")[:, :k]


def test_archive_loads_in_a_fresh_process_and_search_equals_exact_numpy(archive_dir, embeddings):
    queries = [embeddings.ids[i] for i in (0, 7, 33, 79)]
    script = textwrap.dedent(f"""
        import json, sys
        from crjepa.hub.archive import load_embeddings
        archive = load_embeddings({str(archive_dir)!r})
        assert sorted(archive.indices) == ['s1_cross', 's1_unified', 's2_cross', 's2_unified'], archive.indices
        out = {{d: [[h.id for h in archive.search_by_id(q, d, k=5)] for q in {queries!r}]
               for d in ('s1->s2', 's2->s1', 's2->s2')}}
        print(json.dumps(out))
    """)
    proc = run_python(["-c", script], cwd=archive_dir.parent)
    assert proc.returncode == 0, proc.stderr
    found = json.loads(proc.stdout.strip().splitlines()[-1])
    rows = np.array([embeddings.ids.index(q) for q in queries])
    ids = np.array(embeddings.ids)
    cross = exact_top_k(embeddings["s1_cross"][rows], embeddings["s2_cross"], 5)
    assert found["s1->s2"] == ids[cross].tolist()
    back = exact_top_k(embeddings["s2_cross"][rows], embeddings["s1_cross"], 5)
    assert found["s2->s1"] == ids[back].tolist()
    same = exact_top_k(embeddings["s2_unified"][rows], embeddings["s2_unified"], 5, exclude=rows)
    assert found["s2->s2"] == ids[same].tolist()
    assert not set(queries) & {i for hits in found["s2->s2"] for i in hits[:1]}  # self removed


def test_staged_folder_is_complete_and_loads_with_datasets_and_faiss(archive_dir, embeddings):
    from datasets import load_dataset
    from huggingface_hub import DatasetCard

    parquet = sorted((archive_dir / "data").glob("*.parquet"))
    assert len(parquet) == 1
    ds = load_dataset("parquet", data_files=[str(p) for p in parquet], split="train",
                      cache_dir=str(archive_dir.parent / "cache"))
    assert ds.column_names == ["id", "labels", "split", "s1_unified", "s1_cross", "s2_unified", "s2_cross"]
    assert ds.features["labels"].feature.names == embeddings.class_names
    assert ds.features["s2_cross"].length == 32
    np.testing.assert_array_equal(np.asarray(ds["s2_cross"], dtype=np.float32), embeddings["s2_cross"])
    assert ds["id"] == embeddings.ids
    info = json.loads((archive_dir / "embeddings_info.json").read_text())
    assert info["dimension"] == 32 and info["sensors"] == ["s1", "s2"] and info["spaces"] == ["unified", "cross"]
    assert info["model_repo_id"] == "someone/crjepa-tiny" and len(info["model_fingerprint"]) == 16
    assert info["indices"] == {c: "exact" for c in embeddings.columns}
    for column in embeddings.columns:
        index = faiss.read_index(str(archive_dir / "faiss" / column / "index.faiss"))
        assert (index.ntotal, index.d) == (80, 32)
        assert json.loads((archive_dir / "faiss" / column / "ids.json").read_text()) == embeddings.ids
    card = DatasetCard.load(archive_dir / "README.md")
    assert card.data.configs[0]["data_files"][0]["path"] == "data/train-*.parquet"
    assert "someone/crjepa-tiny" in card.text and info["model_fingerprint"] in card.text
    assert not [p for p in archive_dir.parent.iterdir() if ".tmp-" in p.name]


class FakeHubApi:
    """Records what push_folder asks of the Hub."""

    def __init__(self, token: str | None = "hf_fake", fail_whoami: bool = False) -> None:
        self.token, self.fail_whoami, self.calls = token, fail_whoami, []

    def whoami(self, token=None):
        self.calls.append(("whoami", token))
        if self.fail_whoami:
            raise ConnectionError("Failed to resolve 'huggingface.co'\nmore detail")
        return {"name": "someone"}

    def create_repo(self, repo_id, **kwargs):
        self.calls.append(("create_repo", repo_id, kwargs))
        return f"https://huggingface.co/datasets/{repo_id}"

    def upload_folder(self, **kwargs):
        self.calls.append(("upload_folder", kwargs))


def test_push_goes_through_the_injected_client(archive_dir):
    api = FakeHubApi()
    url = push_folder(archive_dir, "someone/emb", repo_type="dataset", api=api, private=True)
    assert url == "https://huggingface.co/datasets/someone/emb"
    names = [c[0] for c in api.calls]
    assert names == ["whoami", "create_repo", "upload_folder"]
    _, repo_id, create = api.calls[1]
    assert repo_id == "someone/emb" and create["repo_type"] == "dataset" and create["exist_ok"] is True
    assert create["private"] is True
    upload = api.calls[2][1]
    assert upload["folder_path"] == str(archive_dir) and upload["repo_type"] == "dataset"
    assert upload["repo_id"] == "someone/emb" and upload["commit_message"]
    assert (archive_dir / ".crjepa-output.json").is_file() and ".crjepa-output.json" in upload["ignore_patterns"]


def test_hub_access_failures_are_one_clear_sentence(monkeypatch, tmp_path):
    with pytest.raises(HubError, match="no Hugging Face token") as err:
        check_hub_access("someone/emb", api=FakeHubApi(token=None))
    assert "\n" not in str(err.value)
    with pytest.raises(HubError, match="could not be reached .*ConnectionError") as err:  # not "token refused"
        push_folder(tmp_path, "someone/emb", api=FakeHubApi(fail_whoami=True))
    assert "\n" not in str(err.value)
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    with pytest.raises(HubError, match="HF_HUB_OFFLINE"):
        check_hub_access("someone/emb")
    with pytest.raises(HubError, match="user-or-org/name"):
        check_hub_access("not-a-repo-id")


def test_load_from_hub_uses_snapshot_download(archive_dir):
    class FakeDownloadApi:
        def snapshot_download(self, repo_id, repo_type=None, revision=None, token=None):
            assert (repo_id, repo_type) == ("someone/emb", "dataset")
            return str(archive_dir)

    archive = load_embeddings("someone/emb", api=FakeDownloadApi())
    assert len(archive) == 80 and archive.dimension == 32


def test_search_by_id_needs_no_model_and_by_image_embeds_only_the_query(archive_dir, model, pairs, embeddings):
    archive = load_embeddings(archive_dir)
    hits = archive.search_by_id(embeddings.ids[3], "s1->s2", k=4)
    assert [h.rank for h in hits] == [1, 2, 3, 4]
    assert hits[0].score >= hits[-1].score
    expected = np.argsort(-(embeddings["s1_cross"][3] @ embeddings["s2_cross"].T), kind="stable")[:4]
    assert [h.position for h in hits] == expected.tolist()
    assert hits[0].labels == [embeddings.class_names[c] for c in np.flatnonzero(embeddings.labels[hits[0].position])]

    image = pairs.with_format("numpy")[3]["s2"]
    same = archive.search_by_image(model, image, "s2", k=3)
    assert same[0].id == embeddings.ids[3] and same[0].score == pytest.approx(1.0, abs=1e-4)
    cross = archive.search_by_image(model, image, "s2", "s1", k=5)
    assert [h.id for h in cross] == [h.id for h in archive.search_by_id(embeddings.ids[3], "s2->s1", k=5)]


def test_fingerprint_is_stable_across_save_and_load_and_tracks_weights(model, tmp_path):
    fresh = CRJepaModel(model.config.__class__.from_dict(model.config.to_dict()))
    fresh.load_state_dict(model.state_dict())
    before = model_fingerprint(fresh)  # never saved: saving adds fields (custom_pipelines) that change no vector
    fresh.save_pretrained(tmp_path / "m")
    reloaded = CRJepaModel.from_pretrained(tmp_path / "m")
    assert model_fingerprint(reloaded) == model_fingerprint(fresh) == before
    model = fresh
    with torch.no_grad():
        next(reloaded.parameters()).view(-1)[0] += 1e-3
    assert model_fingerprint(reloaded) != model_fingerprint(model)


def test_bad_input_gives_clear_errors(tmp_path, archive_dir, model, pairs, embeddings):
    archive = load_embeddings(archive_dir)
    with pytest.raises(EmbeddingsError, match="holds 32-d vectors"):
        archive.search(np.ones(16, np.float32), "s2_cross", k=3)
    with pytest.raises(ValueError, match="Unknown sensor 's3'"):
        archive.search_by_id(embeddings.ids[0], "s3->s1")
    with pytest.raises(ValueError, match="Unknown sensor 'rgb'"):
        archive.search_by_image(model, np.zeros((3, 8, 8), np.float32), "rgb")
    with pytest.raises(EmbeddingsError, match="No item with id 'nope'"):
        archive.search_by_id("nope", "s1->s2")

    torch.manual_seed(1)
    other = CRJepaModel(CRJepaConfig.from_preset("tiny"))
    with pytest.raises(EmbeddingsError, match="embedded by model .* fingerprint"):
        load_embeddings(archive_dir, model=other)
    with pytest.raises(EmbeddingsError, match="fingerprint"):
        archive.search_by_image(other, pairs.with_format("numpy")[0]["s1"], "s1")

    # an index built by another model, dropped into the archive
    copy = Path(shutil.copytree(archive_dir, tmp_path / "copy"))
    foreign = build_indices(embeddings.vectors, embeddings.ids, kind="exact", fingerprint=model_fingerprint(other),
                            columns=["s1_cross"])["s1_cross"]
    foreign.save(copy / "faiss" / "s1_cross")
    with pytest.raises(EmbeddingsError, match="s1_cross.*built from model"):
        load_embeddings(copy)

    # embeddings of another dimension
    mixed = dict(embeddings.vectors, s2_cross=embeddings["s2_cross"][:, :16])
    with pytest.raises(EmbeddingsError, match="one dimension"):
        write_embeddings_dataset(tmp_path / "mixed", embeddings.ids, embeddings.labels, embeddings.class_names, mixed)
    info = json.loads((copy / "embeddings_info.json").read_text())
    (copy / "embeddings_info.json").write_text(json.dumps({**info, "dimension": 64}))
    with pytest.raises(EmbeddingsError, match="32-d vectors but embeddings_info.json says 64-d"):
        load_embeddings(copy, load_indices=False)

    # an empty archive: refused on write, and reported on load
    with pytest.raises(EmbeddingsError, match="empty"):
        write_embeddings_dataset(tmp_path / "empty", [], np.zeros((0, 19)), embeddings.class_names,
                                 {"s1_cross": np.zeros((0, 32), np.float32)})
    assert not (tmp_path / "empty").exists()
    import pyarrow.parquet as pq

    parquet = next((archive_dir / "data").glob("*.parquet"))
    empty = Path(shutil.copytree(archive_dir, tmp_path / "empty2"))
    pq.write_table(pq.read_table(parquet).slice(0, 0), next((empty / "data").glob("*.parquet")))
    with pytest.raises(EmbeddingsError, match="empty"):
        load_embeddings(empty)


def test_failed_write_leaves_nothing_behind(tmp_path, model, pairs, embeddings, monkeypatch):
    import crjepa.hub.archive as hub

    target = write_archive(tmp_path / "emb", model, pairs, embeddings, indices=False)
    before = sorted(p.relative_to(target) for p in target.rglob("*"))

    def broken(*args, **kwargs):
        raise RuntimeError("disk full")

    monkeypatch.setattr(hub, "render_card", broken)
    with pytest.raises(RuntimeError, match="disk full"):
        write_archive(tmp_path / "emb", model, pairs, embeddings)
    assert sorted(p.relative_to(target) for p in target.rglob("*")) == before  # old archive intact
    assert [p.name for p in tmp_path.iterdir()] == ["emb"]  # no temp folders left


def test_export_encoder_pushes_the_retrieval_model_without_predictors(tmp_path):
    """A pretraining folder -> export_encoder -> push_folder (injected client): the pushed folder holds a
    CRJepaModel (no predictor weights) that embeds exactly as the pretraining model does, with card and processor."""
    from safetensors import safe_open

    from modeling_crjepa import CRJepaForPreTraining, CRJepaImageProcessor
    from crjepa.hub.archive import export_encoder

    torch.manual_seed(0)
    full = CRJepaForPreTraining(CRJepaConfig.from_preset("tiny")).eval()
    full.save_pretrained(tmp_path / "model")
    CRJepaImageProcessor.from_config(full.config).save_pretrained(tmp_path / "model")
    encoder_dir = export_encoder(tmp_path / "model", tmp_path / "model_encoder")
    with safe_open(str(encoder_dir / "model.safetensors"), "pt") as f:
        keys = list(f.keys())
    assert keys and not any("predictors" in k for k in keys)
    assert json.loads((encoder_dir / "config.json").read_text())["architectures"] == ["CRJepaModel"]
    assert {"README.md", "preprocessor_config.json", "image_processing_crjepa.py", "modeling_crjepa.py"} <= {
        p.name for p in encoder_dir.iterdir()}
    x = torch.randn(2, 12, 32, 32)
    assert torch.equal(CRJepaModel.from_pretrained(encoder_dir).eval().get_embeddings(x, "s2", "cross"),
                       full.crjepa.get_embeddings(x, "s2", "cross"))
    api = FakeHubApi()
    push_folder(encoder_dir, "someone/crjepa-encoder", repo_type="model", api=api)
    assert api.calls[2][1]["folder_path"] == str(encoder_dir)
    with pytest.raises(FileNotFoundError, match="config.json"):
        export_encoder(tmp_path / "nothing", tmp_path / "out")
    assert not (tmp_path / "out").exists()


def test_rows_lacking_a_sensor_store_null_vectors_and_are_not_searchable_there(model, tmp_path):
    """A partially paired archive: a row without S1 has null S1 vectors (datasets reads None), the S1 indices
    hold only the rows with S1 (built at write time, on first search, and by `crjepa index`), search never
    returns a row from a column it lacks, and searching from a sensor the item lacks is an error naming it."""
    import datasets
    import pyarrow.parquet as pq

    from crjepa.data.loading import load_paired_dataset
    from crjepa.hub.archive import add_indices

    ds = load_paired_dataset("synthetic", "train", num_train=40, num_validation=0, num_test=0, image_size=32,
                             pairing_rate=0.5)
    emb = compute_embeddings(model, ds, batch_size=16)
    fingerprint = model_fingerprint(model)
    folder = write_embeddings_dataset(
        tmp_path / "partial", emb.ids, emb.labels, emb.class_names, emb.vectors, model_fingerprint=fingerprint,
        indices=build_indices(emb.vectors, emb.ids, kind="exact", fingerprint=fingerprint, present=emb.present),
        present=emb.present)
    has_s1, has_s2 = emb.present["s1"], emb.present["s2"]
    table = pq.read_table(next((folder / "data").glob("*.parquet")))
    assert table["s1_cross"].null_count == int((~has_s1).sum()) > 0
    rows = datasets.load_dataset("parquet", data_files=str(folder / "data" / "*.parquet"), split="train",
                                 cache_dir=str(tmp_path / "hf"))
    assert [r is None for r in rows["s2_unified"]] == list(~has_s2)

    s1_only = emb.ids[int(np.flatnonzero(has_s1 & ~has_s2)[0])]
    for reopen in (lambda: load_embeddings(folder), lambda: load_embeddings(folder, load_indices=False)):
        archive = reopen()
        assert np.array_equal(archive.present["s1"], has_s1) and np.array_equal(archive.present["s2"], has_s2)
        hits = archive.search_by_id(s1_only, "s1->s2", k=int(has_s2.sum()))
        assert {h.id for h in hits} == {i for i, keep in zip(emb.ids, has_s2) if keep}
        expected = exact_top_k(emb.vectors["s1_cross"][[emb.ids.index(s1_only)]], emb.vectors["s2_cross"][has_s2], 3)
        assert [h.id for h in hits[:3]] == [np.asarray(emb.ids)[has_s2][j] for j in expected[0]]
        with pytest.raises(EmbeddingsError, match=f"Item '{s1_only}' has no 's2' image.*search from a sensor it has "
                                                  r"\(\['s1'\]\)"):
            archive.search_by_id(s1_only, "s2->s1")
        with pytest.raises(EmbeddingsError, match="k=40 must be between 1 and the number of searchable items"):
            archive.search_by_id(s1_only, "s1->s1", k=40)
    add_indices(folder, kind="exact")  # `crjepa index` over the null-holding columns
    assert len(load_embeddings(folder).indices["s2_cross"]) == int(has_s2.sum())


# ---------------------------------------------------------------------------------------------- downloaded archives
def _rewrite(folder: Path, change) -> None:
    """Rewrite the archive's one Parquet file with ``change(table) -> table``."""
    import pyarrow.parquet as pq

    parquet = next((folder / "data").glob("*.parquet"))
    pq.write_table(change(pq.read_table(parquet)), parquet)


def test_a_downloaded_archive_is_checked_before_it_is_used(tmp_path, archive_dir):
    """Duplicate or null ids were accepted (search by id then showed every hit as the duplicated id), a tampered
    num_rows went into the card `crjepa index` rewrites, format_version 99 was read, and a variable-length vector
    column ended in an AttributeError: each is now one EmbeddingsError naming the file or column."""
    import pyarrow as pa

    from crjepa.cli import main
    from crjepa.hub.archive import add_indices

    def with_ids(values):
        def change(table):
            return table.set_column(0, table.schema.field("id"), pa.array(values, pa.string()))
        return change

    ids = load_embeddings(archive_dir, load_indices=False).ids
    cases = {
        "duplicate": (with_ids([ids[0], ids[0], *ids[2:]]), "1 id(s) on more than one row"),
        "null": (with_ids([None, *ids[1:]]), "1 row(s) without an id"),
        "empty": (with_ids(["", *ids[1:]]), "with an empty id"),
    }
    for case, (change, message) in cases.items():
        folder = Path(shutil.copytree(archive_dir, tmp_path / case))
        _rewrite(folder, change)
        with pytest.raises(EmbeddingsError, match=re.escape(message)):
            load_embeddings(folder)
        with pytest.raises(EmbeddingsError, match=re.escape(message)):
            add_indices(folder, kind="exact")  # `crjepa index` refuses it too
    for field, value, message in (("num_rows", 10**12, "num_rows is 1000000000000 but the Parquet files"),
                                  ("format_version", 99, "format_version 99 is newer than this crjepa reads"),
                                  ("repo_id", "x/y\nimport os", "repo_id must be a Hub repo id"),
                                  ("metadata_columns", ["a|b"], "metadata_columns must be a list")):
        folder = Path(shutil.copytree(archive_dir, tmp_path / field))
        info = json.loads((folder / "embeddings_info.json").read_text())
        (folder / "embeddings_info.json").write_text(json.dumps({**info, field: value}))
        with pytest.raises(EmbeddingsError, match=re.escape(message)):
            add_indices(folder, kind="exact")
        assert "1T<n" not in (folder / "README.md").read_text() and "1B<n<10B" not in (folder / "README.md").read_text()
    folder = Path(shutil.copytree(archive_dir, tmp_path / "ragged"))

    def ragged(table):
        column = table["s1_cross"].to_pylist()
        column[0] = column[0][:5]
        at = table.schema.get_field_index("s1_cross")
        ragged_type = pa.list_(pa.float32())
        return table.set_column(at, pa.field("s1_cross", ragged_type), pa.array(column, ragged_type))

    _rewrite(folder, ragged)
    assert main(["index", str(folder), "--kind", "exact", "--columns", "s1_cross"]) == 2
    with pytest.raises(EmbeddingsError, match=r"Column 's1_cross' of .* is list<element: float>, not fixed-size"):
        load_embeddings(folder)


def test_an_archive_declaring_100k_classes_costs_its_labels_not_rows_x_classes(tmp_path):
    """class_names within MAX_CLASSES (100,000) made loading allocate a dense rows x classes matrix (3.2 GB for a
    19 MB archive); labels are now kept as lists and multi-hot rows are built on request."""
    import tracemalloc

    rows, classes = 4000, 100_000
    rng = np.random.default_rng(0)
    vectors = rng.standard_normal((rows, 8)).astype(np.float32)
    labels = [[int(c) for c in rng.choice(classes, 2, replace=False)] for _ in range(rows)]
    names = [f"class-{i}" for i in range(classes)]
    folder = write_embeddings_dataset(tmp_path / "wide", [f"id{i}" for i in range(rows)], labels, names,
                                      {"s2_unified": vectors}, model_fingerprint="ab")
    tracemalloc.start()
    try:
        archive = load_embeddings(folder, load_indices=False)
        hits = archive.search_by_id("id7", "s2->s2", k=3)
        _, peak = tracemalloc.get_traced_memory()
    finally:
        tracemalloc.stop()
    assert peak < 60e6, f"{peak / 1e6:.0f} MB traced; a dense label matrix is {rows * classes / 1e6:.0f} MB"
    assert archive.labels.shape == (rows, classes) and sorted(archive.labels.classes(7)) == sorted(labels[7])
    row = archive.labels[7]
    assert row.shape == (classes,) and row.sum() == 2 and row[labels[7]].all()
    assert all(hit.labels == [names[c] for c in sorted(labels[hit.position])] for hit in hits)
