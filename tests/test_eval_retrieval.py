"""compute_embeddings and evaluate_retrieval on the tiny model and built-in synthetic pairs (CPU, seconds)."""

from __future__ import annotations

from pathlib import Path
from types import SimpleNamespace

import datasets
import numpy as np
import pytest
import torch

from crjepa.eval.metrics import f1_at_k, mean_average_precision, precision_at_k
from crjepa.eval.retrieval import (
    EmbeddingSet,
    _shard,
    compute_embeddings,
    evaluate_embeddings,
    evaluate_retrieval,
    multi_hot,
    select_split,
)
from modeling_crjepa import preprocess_batch

from helpers import synthetic_pairs


@pytest.fixture(scope="module")
def pairs() -> datasets.Dataset:
    return synthetic_pairs({"validation": 40, "test": 56})


@pytest.mark.parametrize("architecture", ["crjepa", "xjepa"])
def test_a_training_model_embeds_through_its_encoder(pairs, architecture):
    """What training evaluates (CRJepaForPreTraining, a baseline) embeds through get_encoder(): the pretraining
    model's vectors are those of its encoder `.crjepa`; a baseline is its own encoder."""
    from crjepa.baselines.models import build_model

    torch.manual_seed(0)
    trained = build_model(architecture, "tiny").eval()
    encoder = trained.crjepa if architecture == "crjepa" else trained
    assert trained.get_encoder() is encoder
    small = pairs.select(range(6))
    through_model, direct = (compute_embeddings(m, small, batch_size=4) for m in (trained, encoder))
    for column in direct.columns:
        np.testing.assert_array_equal(through_model[column], direct[column])


def test_embeddings_match_direct_model_calls_in_dataset_order(model, pairs):
    emb = compute_embeddings(model, pairs, batch_size=16)
    assert emb.columns == ["s1_unified", "s1_cross", "s2_unified", "s2_cross"]
    assert emb.ids == pairs["id"]
    assert emb.labels.shape == (len(pairs), 19) and emb.labels.dtype == np.uint8
    np.testing.assert_array_equal(emb.labels, multi_hot(pairs["labels"], 19))
    assert emb.class_names == pairs.features["labels"].feature.names
    rows = [0, 17, len(pairs) - 1]
    raw = pairs.with_format("numpy")[rows]
    for sensor in ("s1", "s2"):
        pixels = preprocess_batch(torch.as_tensor(raw[sensor].astype(np.float32)), sensor, model.config)
        for space in ("unified", "cross"):
            with torch.no_grad():
                expected = model.get_embeddings(pixels, sensor=sensor, space=space).numpy()
            got = emb[f"{sensor}_{space}"]
            assert got.dtype == np.float32 and got.shape == (len(pairs), model.config.retrieval_dim)
            np.testing.assert_allclose(got[rows], expected, atol=1e-5)
    np.testing.assert_allclose(np.linalg.norm(emb["s2_cross"], axis=1), 1.0, atol=1e-5)


def test_embeddings_from_a_loader_equal_those_from_the_dataset(model, pairs):
    small = pairs.select(range(20))
    loader = [
        {
            "s1": torch.as_tensor(b["s1"]),
            "s2": torch.as_tensor(b["s2"].astype(np.int32)),
            "labels": torch.as_tensor(multi_hot(b["labels"], 19)).float(),
            "id": list(b["id"]),
        }
        for b in (small.with_format("numpy")[i : i + 8] for i in range(0, 20, 8))
    ]
    from_loader = compute_embeddings(model, loader, spaces=("cross",))
    from_dataset = compute_embeddings(model, small, spaces=("cross",), batch_size=7)
    assert from_loader.ids == from_dataset.ids
    np.testing.assert_array_equal(from_loader.labels, from_dataset.labels)
    np.testing.assert_allclose(from_loader["s1_cross"], from_dataset["s1_cross"], atol=1e-5)


@pytest.mark.parametrize("num_items,processes", [(10, 3), (2, 4), (9, 3)])
def test_shards_cover_every_item_once_in_order(num_items, processes):
    shards = [_shard(num_items, SimpleNamespace(num_processes=processes, process_index=p)) for p in range(processes)]
    assert len({len(idx) for idx, _ in shards}) == 1  # equal lengths, as accelerate's gather requires
    real = np.concatenate([idx[:count] for idx, count in shards])
    np.testing.assert_array_equal(real, np.arange(num_items))
    gathered = np.concatenate([idx for idx, _ in shards])[:num_items]  # what gather + cut gives
    np.testing.assert_array_equal(gathered, np.arange(num_items))


def test_accelerate_shards_are_gathered_in_dataset_order(model, pairs):
    """Each fake process embeds its shard; concatenating the gathered shards (as accelerate's gather does) and
    cutting the padding gives exactly the single-process result."""
    small = pairs.select(range(11))
    full = compute_embeddings(model, small, spaces=("unified",), batch_size=4)
    local_parts = []
    for rank in range(3):
        fake = SimpleNamespace(
            num_processes=3,
            process_index=rank,
            device=torch.device("cpu"),
            is_local_main_process=rank == 0,
            unwrap_model=lambda m: m,
            gather=lambda t: t,
        )
        part = compute_embeddings(model, small, spaces=("unified",), batch_size=4, accelerator=fake)
        assert part.ids == full.ids  # ids and labels come from the dataset on every process
        local_parts.append(part["s2_unified"])
    assert [len(p) for p in local_parts] == [4, 4, 4]
    np.testing.assert_allclose(np.concatenate(local_parts)[:11], full["s2_unified"], atol=1e-5)


def test_evaluate_retrieval_four_directions_and_markdown(model, pairs):
    results = evaluate_retrieval(model, pairs, k=5, dataset_name="synthetic")
    directions = ["s1->s1", "s2->s2", "s1->s2", "s2->s1"]
    assert results.directions == directions and results.multi_label
    assert list(results.metrics) == ["F1@5", "F1@5 (CSMAE)", "mAP@5 (any shared)"]
    for values in results.metrics.values():
        assert list(values) == directions
        assert all(0.0 <= v <= 1.0 for v in values.values())
    lines = results.to_markdown().splitlines()
    assert lines[0] == "| metric | S1->S1 | S2->S2 | S1->S2 | S2->S1 |"
    assert lines[1] == "|---|---|---|---|---|"
    assert lines[2].startswith("| F1@5 | ") and f"{results['F1@5']['s1->s2'] * 100:.2f}" in lines[2]
    assert len(lines) == 2 + 3
    entries = results.model_index()
    assert len(entries) == 3 * 4 and entries[0].task_type == "image-feature-extraction"
    assert entries[0].dataset_name == entries[0].dataset_type == "synthetic"
    assert (entries[0].metric_type, entries[0].metric_args) == ("crjepa_f1_at_k", {"k": 5, "variant": "paper"})
    assert entries[0].metric_value == round(results["F1@5"]["s1->s1"] * 100, 2)
    assert type(results).from_dict(results.as_dict()).metrics == results.metrics


def test_split_protocol_scores_queries_against_the_other_split(model, pairs):
    results = evaluate_retrieval(
        model, pairs, query_split="validation", gallery_split="test", k=5, dataset_name="synthetic"
    )
    assert (results.num_queries, results.num_gallery) == (40, 56)
    assert results.describe() == (
        "synthetic, queries from the validation split, gallery from the test split: 40 queries x 56 gallery items"
    )
    queries = compute_embeddings(model, select_split(pairs, "validation"))
    gallery = compute_embeddings(model, select_split(pairs, "test"))
    expected = f1_at_k(queries["s1_cross"] @ gallery["s2_cross"].T, queries.labels, gallery.labels, k=5)
    assert results["F1@5"]["s1->s2"] == pytest.approx(expected)
    same = f1_at_k(queries["s2_unified"] @ gallery["s2_unified"].T, queries.labels, gallery.labels, k=5)
    assert results["F1@5"]["s2->s2"] == pytest.approx(same)  # no self-exclusion across splits
    with pytest.raises(ValueError, match="splits"):
        select_split(pairs, "train")


def _random_set(labels: np.ndarray, seed: int = 0, dim: int = 8) -> EmbeddingSet:
    rng = np.random.default_rng(seed)
    vectors = {}
    for name in ("a_unified", "a_cross", "b_unified", "b_cross"):
        v = rng.normal(size=(len(labels), dim)).astype(np.float32)
        vectors[name] = v / np.linalg.norm(v, axis=1, keepdims=True)
    return EmbeddingSet(vectors, [f"x{i}" for i in range(len(labels))], labels, None)


def test_same_modal_directions_exclude_self_matches():
    labels = multi_hot([[i % 3] for i in range(12)], 3)  # single-label: mAP and P@k
    emb = _random_set(labels)
    results = evaluate_embeddings(emb, k=1)
    assert list(results.metrics) == ["mAP", "P@1"] and not results.multi_label
    sim = emb["a_unified"] @ emb["a_unified"].T
    without_self = precision_at_k(sim, labels, labels, k=1, exclude_self=True)
    with_self = precision_at_k(sim, labels, labels, k=1)
    assert with_self == 1.0 and without_self < 1.0  # a case where including self would change the score
    assert results["P@1"]["a->a"] == pytest.approx(without_self)
    assert results["mAP"]["b->b"] == pytest.approx(
        mean_average_precision(emb["b_unified"] @ emb["b_unified"].T, labels, labels, exclude_self=True)
    )
    cross = emb["a_cross"] @ emb["b_cross"].T  # cross-modal: the partner is a legitimate hit, nothing excluded
    assert results["P@1"]["a->b"] == pytest.approx(precision_at_k(cross, labels, labels, k=1))


def test_chunked_evaluation_equals_one_shot():
    rng = np.random.default_rng(1)
    labels = (rng.random((30, 5)) < 0.3).astype(np.uint8)
    labels[labels.sum(1) == 0, 0] = 1
    emb = _random_set(labels, seed=2)
    one_shot = evaluate_embeddings(emb, k=5)
    chunked = evaluate_embeddings(emb, k=5, max_similarity_elements=7 * 30)
    for metric in ("F1@5", "mAP@5 (any shared)"):
        for direction, value in one_shot[metric].items():
            assert chunked[metric][direction] == pytest.approx(value)
    assert "F1@5 (CSMAE)" not in chunked.metrics and chunked.notes  # not decomposable: skipped, and said so


def test_clear_errors_for_bad_input(model, pairs):
    with pytest.raises(ValueError, match="Unknown sensor 'rgb'"):
        compute_embeddings(model, pairs, sensors=["rgb"])
    with pytest.raises(ValueError, match="empty"):
        compute_embeddings(model, pairs.select([]))
    with pytest.raises(ValueError, match="outside 0..2"):
        multi_hot([[0], [5]], 3)


def test_rows_lacking_a_sensor_are_neither_queries_nor_candidates(model):
    """A partially paired split: compute_embeddings records which rows have each sensor, and every direction
    is scored on its own rows (queries with the source sensor, gallery with the target sensor), exactly as
    if the other rows were not there; the placeholder vectors of absent rows never count."""
    from crjepa.data.loading import load_paired_dataset, presence

    ds = load_paired_dataset(
        "synthetic", "train", num_train=60, num_validation=0, num_test=0, image_size=32, pairing_rate=0.5
    )
    emb = compute_embeddings(model, ds, batch_size=16)
    have = presence(ds, ["s1", "s2"])
    assert emb.present is not None and all(np.array_equal(emb.present[s], have[s]) for s in have)
    results = evaluate_embeddings(emb, k=5)

    def subset(rows):
        return EmbeddingSet(
            {c: v[rows] for c, v in emb.vectors.items()},
            [emb.ids[i] for i in np.flatnonzero(rows)],
            emb.labels[rows],
            None,
        )

    s1, s2 = subset(have["s1"]), subset(have["s2"])
    assert results["F1@5"]["s1->s1"] == pytest.approx(evaluate_embeddings(s1, k=5)["F1@5"]["s1->s1"])
    assert results["F1@5"]["s2->s2"] == pytest.approx(evaluate_embeddings(s2, k=5)["F1@5"]["s2->s2"])
    assert results["F1@5"]["s1->s2"] == pytest.approx(evaluate_embeddings(s1, s2, k=5)["F1@5"]["s1->s2"])
    assert results["F1@5"]["s2->s1"] == pytest.approx(evaluate_embeddings(s2, s1, k=5)["F1@5"]["s2->s1"])
    assert results.direction_counts["s1->s2"] == [int(have["s1"].sum()), int(have["s2"].sum())]
    n1, n2 = int(have["s1"].sum()), int(have["s2"].sum())  # the header says each direction's own counts
    assert (
        results.describe().endswith(
            f"queries x gallery items per direction: S1->S1 {n1} x {n1}, S2->S2 {n2} x "
            f"{n2}, S1->S2 {n1} x {n2}, S2->S1 {n2} x {n1}"
        )
        and n1 < 60
        and n2 < 60
    )
    # placeholders cannot leak: absent rows made identical to the first query change nothing
    for column in emb.vectors:
        rows = ~emb.present[column.split("_")[0]]
        emb.vectors[column][rows] = emb.vectors[column][np.flatnonzero(~rows)[0]]
    assert evaluate_embeddings(emb, k=5).metrics == results.metrics


def test_a_direction_without_rows_is_reported_not_scored():
    labels = multi_hot([[i % 3, (i + 1) % 3] for i in range(12)], 3)
    emb = _random_set(labels)
    emb.present = {"a": np.zeros(12, bool), "b": np.ones(12, bool)}
    results = evaluate_embeddings(emb, k=2)
    assert results["F1@2"]["a->b"] is None and results["F1@2"]["a->a"] is None
    assert results["F1@2"]["b->b"] is not None and results["F1@2"]["b->a"] is None
    assert any(note.startswith("a->b: not scored (0 queries with 'a'") for note in results.notes)
    assert "| n/a |" in results.to_markdown()
    assert {r.metric_config for r in results.model_index()} == {"b->b"}


def test_model_index_names_a_hub_task_and_the_evaluate_module_with_the_arguments_that_give_each_value(model, pairs):
    """task.type is a Hub task (the model's pipeline tag), dataset.type an id, and metric.type + metric.args name the
    evaluate module (crjepa/eval/metrics_modules/<type>/) and the compute() arguments that reproduce the value."""
    from transformers.pipelines import PIPELINE_REGISTRY

    from crjepa.eval import metrics
    from crjepa.eval.retrieval import MODEL_INDEX_TASK, dataset_id, metric_module

    assert MODEL_INDEX_TASK in PIPELINE_REGISTRY.get_supported_tasks()
    assert dataset_id("BEN-14K (reBEN)") == "ben-14k-reben"
    results = evaluate_retrieval(model, pairs, k=5, dataset_name="BEN-14K (reBEN)")
    queries = compute_embeddings(model, pairs)
    sim = queries["s1_cross"] @ queries["s2_cross"].T
    functions = {
        "crjepa_f1_at_k": metrics.f1_at_k,
        "crjepa_map": metrics.mean_average_precision,
        "crjepa_precision_at_k": metrics.precision_at_k,
    }
    modules = Path(metrics.__file__).parent / "metrics_modules"
    for entry in results.model_index(dataset_type="user/ben14k"):
        assert entry.task_type == "image-feature-extraction" and entry.dataset_type == "user/ben14k"
        assert (modules / entry.metric_type / f"{entry.metric_type}.py").is_file()
        if entry.metric_config == "s1->s2":
            value = functions[entry.metric_type](sim, queries.labels, queries.labels, **entry.metric_args)
            assert entry.metric_value == pytest.approx(round(value * 100, 2)), entry.metric_name
    assert results.model_index()[0].dataset_type == "ben-14k-reben"
    single = [metric_module(name) for name in ("mAP", "P@5")]
    assert single == [
        ("crjepa_map", {"relevance": "same_class"}),
        ("crjepa_precision_at_k", {"k": 5, "relevance": "same_class"}),
    ]
