"""The search behind `crjepa app` (crjepa/app/engine.py): searches equal the archive's, filters rank exactly the
items that pass, uploads (real BigEarthNet patch folders as zips) embed like `search_by_image`, and every bad input
is one AppError sentence."""

from __future__ import annotations

import zipfile
from pathlib import Path

import numpy as np
import pytest
import torch

from crjepa.app.engine import ALL, AppError, Explorer, FaissBackend, Filter, filter_rows, load_explorer
from crjepa.eval.directions import directions_of
from crjepa.eval.visualize import DatasetImages
from crjepa.hub.archive import load_embeddings
from modeling_crjepa import CRJepaConfig, CRJepaModel
from modeling_crjepa.configuration_crjepa import PRESETS

from helpers import synthetic_pairs, write_app_archive

ROWS = 40


@pytest.fixture(scope="module")
def pairs():
    return synthetic_pairs({"train": ROWS // 2, "test": ROWS // 2})


@pytest.fixture(scope="module")
def archive_dir(tmp_path_factory, model, pairs) -> Path:
    """An archive of 40 synthetic pairs (metadata: split, row number) with stored exact indices, and its model."""
    return write_app_archive(tmp_path_factory.mktemp("app") / "emb", model, pairs, ROWS // 2)


@pytest.fixture(scope="module")
def explorer(archive_dir, model, pairs) -> Explorer:
    return Explorer(load_embeddings(archive_dir), model=model, images=DatasetImages(pairs))


def zip_folder(folder: Path, target: Path) -> Path:
    """A patch folder zipped as a person would: the folder itself, its band GeoTIFFs and JSON inside."""
    with zipfile.ZipFile(target, "w") as archive:
        for file in sorted(folder.iterdir()):
            archive.write(file, f"{folder.name}/{file.name}")
    return target


def test_search_by_id_equals_the_archive_search_in_every_direction(explorer):
    archive = explorer.archive
    query = archive.ids[3]
    rows = explorer.search_id(query, ALL, k=6)
    assert [row.direction for row in rows] == directions_of(archive.sensors) == ["s1->s1", "s2->s2", "s1->s2", "s2->s1"]
    query_labels = archive.labels[archive.position(query)]
    for row in rows:
        expected = archive.search_by_id(query, row.direction, 6)
        assert [(t.id, t.score, t.labels) for t in row.results] == [(h.id, h.score, h.labels) for h in expected]
        assert [t.relevant for t in row.results] == [
            bool((archive.labels[h.position] & query_labels).any()) for h in expected
        ]
        assert row.query.id == query and row.query.image is not None and all(t.image for t in row.results)
    assert {t.relevant for row in rows for t in row.results} == {True, False}  # both marks occur
    one = explorer.search_id(query, "s2->s1", k=2)
    assert [r.direction for r in one] == ["s2->s1"] and len(one[0].results) == 2


def test_a_filter_ranks_exactly_the_items_that_pass_it(explorer):
    archive = explorer.archive
    query, label = archive.ids[0], "Arable land"
    where = Filter(labels=(label,))
    passing = filter_rows(archive, where)
    assert 0 < passing.sum() < len(archive)
    for row in explorer.search_id(query, ALL, k=5, where=where):
        source, target = row.direction.split("->")
        space = "unified" if source == target else "cross"
        q = archive.vectors[f"{source}_{space}"][0]
        candidates = np.flatnonzero(passing & (np.arange(len(archive)) != (0 if source == target else -1)))
        scores = archive.vectors[f"{target}_{space}"][candidates] @ q
        expected = [archive.ids[i] for i in candidates[np.argsort(-scores, kind="stable")[:5]]]
        assert [t.id for t in row.results] == expected
        assert all(label in t.labels for t in row.results)
    everything = Filter(field="split", value="train, test")  # passes every item: the faiss results again
    assert [t.id for t in explorer.search_id(query, "s1->s2", 7, everything)[0].results] == [
        h.id for h in archive.search_by_id(query, "s1->s2", 7)
    ]
    few = Filter(field="row", value="30..32")  # 3 items pass: k=10 returns those 3
    assert sorted(t.id for t in explorer.search_id(query, "s1->s2", 10, few)[0].results) == archive.ids[30:33]


def test_metadata_values_and_ranges_compare_numbers_as_numbers(explorer):
    archive = explorer.archive
    assert filter_rows(archive, Filter(field="row", value="5..12")).sum() == 8  # as text, "5" > "12": none
    assert filter_rows(archive, Filter(field="row", value="..3")).sum() == 4
    assert filter_rows(archive, Filter(field="split", value="test")).sum() == ROWS // 2
    assert filter_rows(archive, Filter(field="split", value="")).all()  # an empty value does not filter
    assert not Filter(field="split") and Filter(labels=("Pastures",))


@pytest.mark.parametrize(
    "call, words",
    [
        (lambda e: e.search_id("no-such-id"), ["Unknown id 'no-such-id'", "40 items"]),
        (lambda e: e.search_id(""), ["Pick an archive id"]),
        (
            lambda e: e.search_id(e.archive.ids[0], where=Filter(labels=("Pastures",), field="row", value="1000..")),
            ["No archive item passes the filter", "loosen it"],
        ),
        (lambda e: e.search_id(e.archive.ids[0], where=Filter(labels=("Glaciers",))), ["Unknown label", "Glaciers"]),
        (
            lambda e: e.search_id(e.archive.ids[0], where=Filter(field="country", value="Serbia")),
            ["Unknown metadata field 'country'"],
        ),
        (lambda e: e.search_id(e.archive.ids[0], k=0), ["k must be between 1 and 50"]),
        (lambda e: e.search_id(e.archive.ids[0], "s1->s9"), ["Unknown sensor 's9'"]),
        (lambda e: e.search_image(None), ["Upload a query image first"]),
    ],
)
def test_bad_input_is_one_sentence(explorer, call, words):
    with pytest.raises(AppError) as error:
        call(explorer)
    message = str(error.value)
    assert all(word in message for word in words), message
    assert "\n" not in message and "Traceback" not in message


def test_uploaded_npy_and_geotiff_search_like_search_by_image(explorer, pairs, tmp_path):
    from helpers import write_tif

    image = np.asarray(pairs[5]["s2"], dtype=np.uint16)
    np.save(tmp_path / "query.npy", image)
    write_tif(tmp_path / "query.tif", image)
    expected = explorer.archive.search_by_image(explorer.model, image, "s2", "s1", k=4)
    for name in ("query.npy", "query.tif"):
        rows = explorer.search_image(tmp_path / name, k=4)
        assert [r.direction for r in rows] == ["s2->s2", "s2->s1"]  # same sensor first
        assert [(t.id, t.score) for t in rows[1].results] == [(h.id, h.score) for h in expected]
        assert rows[0].results[0].id == pairs[5]["id"]  # the stored copy of the image ranks first
        assert all(t.relevant is None for r in rows for t in r.results)  # an upload has no labels
        assert rows[0].query.id == name and rows[0].query.image is not None


def test_a_real_bigearthnet_patch_folder_zip_searches_like_its_bands(explorer, ben_v1_dirs, tmp_path):
    from datasets_scripts.bigearthnet import read_s2

    folder = sorted(p for p in ben_v1_dirs[1].iterdir() if p.is_dir())[0]
    upload = zip_folder(folder, tmp_path / "patch.zip")
    expected = read_s2(folder, folder.name)  # the converter's reading: 20/60 m bands upsampled to 120 px
    rows = explorer.search_image(upload, k=3, target="s2")
    assert [(t.id, t.score) for t in rows[0].results] == [
        (h.id, h.score) for h in explorer.archive.search_by_image(explorer.model, expected, "s2", "s2", k=3)
    ]


def test_wrong_band_count_and_a_sensor_the_model_lacks_are_messages(explorer, archive_dir, ben_v1_dirs, tmp_path):
    np.save(tmp_path / "rgb.npy", np.zeros((3, 16, 16), np.uint8))
    with pytest.raises(AppError, match=r"rgb.npy has 3 band\(s\); no sensor of the model has that many \(wrong band"):
        explorer.search_image(tmp_path / "rgb.npy")
    np.save(tmp_path / "s2.npy", np.zeros((12, 16, 16), np.uint16))
    with pytest.raises(AppError, match=r"s2.npy has 12 band\(s\) but s1 images have 2 \(VV, VH\); wrong band count"):
        explorer.search_image(tmp_path / "s2.npy", sensor="s1")
    s1_folder = sorted(p for p in ben_v1_dirs[0].iterdir() if p.is_dir())[0]
    s1_zip = zip_folder(s1_folder, tmp_path / "s1.zip")
    assert explorer.search_image(s1_zip, k=2)[0].direction == "s1->s1"  # the tiny model has an s1 stem
    tiny = PRESETS["tiny"]
    torch.manual_seed(0)
    s2_only = CRJepaModel(
        CRJepaConfig.from_preset(
            "tiny",
            sensors={"s2": 12},
            band_names={"s2": tiny["band_names"]["s2"]},
            sar_sensors=[],
            band_mean={"s2": tiny["band_mean"]["s2"]},
            band_std={"s2": tiny["band_std"]["s2"]},
        )
    ).eval()
    lacking = Explorer(load_embeddings(archive_dir), model=s2_only)
    with pytest.raises(
        AppError,
        match=r"s1.zip is a Sentinel-1 patch \(bands VH, VV\); the model has no sensor for "
        r"it \(its sensors: s2: 12 bands",
    ):
        lacking.search_image(s1_zip)
    no_model = Explorer(load_embeddings(archive_dir))
    with pytest.raises(AppError, match="needs the model that embedded the archive: start the app with --model"):
        no_model.search_image(tmp_path / "s2.npy")


def test_ids_are_suggested_as_the_person_types(explorer):
    ids = explorer.archive.ids
    assert explorer.matching_ids("") == sorted(ids)[:100]
    assert explorer.matching_ids("TEST-0-00001") == sorted(i for i in ids if "test-0-00001" in i)
    starts = explorer.matching_ids("synthetic-train-0-00000")
    assert starts and all(i.startswith("synthetic-train-0-00000") for i in starts)
    assert explorer.matching_ids("0-000003", limit=5) == sorted(i for i in ids if "0-000003" in i)[:5]


def test_facts_name_the_model_data_and_recall_promise(explorer):
    facts = dict(explorer.facts())
    assert facts["Model"].startswith(f"not recorded (fingerprint {explorer.archive.fingerprint}; 32-d embeddings")
    assert facts["Data set"] == "synthetic: 40 items, 19 classes"
    assert facts["Recall promise"] == "s1_unified, s1_cross, s2_unified, s2_cross: exact search (recall 1.0)"
    assert facts["Sensors"] == "s1 (2 bands: VV, VH), s2 (12 bands: B01 … B12)"


def test_load_explorer_checks_the_model_and_opens_the_recorded_images(archive_dir, pairs, tmp_path):
    explorer = load_explorer(archive_dir, model=str(archive_dir.parent / "model"), data="recorded")
    assert isinstance(explorer.backend, FaissBackend) and explorer.model is not None
    row = pairs[7]
    assert np.array_equal(explorer.images(row["id"], "s2"), np.asarray(row["s2"]))  # the archive's own images
    assert explorer.search_id(row["id"], "s2->s2", 2)[0].query.image is not None
    assert load_explorer(archive_dir).images is None  # no --data: no pictures, and the tiles say so
    assert "start the app with --data" in load_explorer(archive_dir).search_id(row["id"], "s1->s1", 1)[0].query.note
    torch.manual_seed(1)
    CRJepaModel(CRJepaConfig.from_preset("tiny")).save_pretrained(tmp_path / "other")
    from crjepa.hub.archive import EmbeddingsError

    with pytest.raises(EmbeddingsError, match="was embedded by model"):
        load_explorer(archive_dir, model=str(tmp_path / "other"))


def test_a_backend_object_serves_the_page(archive_dir):
    """Any object with `vector` and `search` (e.g. another engine) replaces faiss; the page's rows come from it."""
    calls = []

    class Recording(FaissBackend):
        def search(self, vector, column, k, *, exclude_position=None, where=None):
            calls.append((column, k, exclude_position, where))
            return super().search(vector, column, k, exclude_position=exclude_position, where=where)

    explorer = load_explorer(archive_dir, backend=Recording)
    explorer.search_id(explorer.archive.ids[2], "s2->s2", 3, Filter(labels=("Pastures",)))
    assert calls == [("s2_unified", 3, 2, Filter(labels=("Pastures",)))]
