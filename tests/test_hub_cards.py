"""crjepa.hub.cards: every card of the project (model, embeddings archive, exported data set) in one module,
with one size bucket the Hub accepts."""

from __future__ import annotations

import datasets
import pytest
from huggingface_hub import DatasetCard

from crjepa.hub.cards import SIZE_CATEGORIES, render_dataset_card, render_embeddings_card, size_category

HUB_BUCKETS = {"n<1K", "1K<n<10K", "10K<n<100K", "100K<n<1M", "1M<n<10M", "10M<n<100M", "100M<n<1B", "1B<n<10B"}


@pytest.mark.parametrize("rows, bucket", [(0, "n<1K"), (999, "n<1K"), (1_000, "1K<n<10K"),
                                          (99_999, "10K<n<100K"), (590_326, "100K<n<1M"),
                                          (1_000_000, "1M<n<10M"), (2_500_000_000, "1B<n<10B")])
def test_size_category_uses_the_hub_buckets(rows, bucket):
    assert size_category(rows) == bucket
    assert {name for _, name in SIZE_CATEGORIES} <= HUB_BUCKETS


@pytest.mark.parametrize("rows", [500, 1_200_000])
def test_embeddings_and_dataset_cards_agree_on_the_size(rows):
    info = {"num_rows": rows, "sensors": ["s1", "s2"], "dimension": 8, "class_names": ["a", "b"],
            "metadata_columns": [], "vector_columns": ["s1_cross", "s2_cross"], "indices": {}}
    embeddings = DatasetCard(str(render_embeddings_card(info, "id-0")))
    features = datasets.Features({"id": datasets.Value("string"),
                                  "s1": datasets.Array3D((2, 4, 4), "float32"),
                                  "labels": datasets.Sequence(datasets.ClassLabel(names=["a", "b"])),
                                  "split": datasets.Value("string")})
    exported = DatasetCard(render_dataset_card(datasets.DatasetInfo(features=features), {"train": rows}))
    assert embeddings.data.size_categories == exported.data.size_categories == [size_category(rows)]


def test_model_card_promises_the_call_that_works_and_structured_results_the_hub_reads():
    """The rendered card: pipeline_tag image-feature-extraction (the checkpoint's own pipeline serves it), no hosted
    widget, the pipeline call in the usage, Pillow named; model-index with a Hub task, evaluate module ids."""
    import copy

    from huggingface_hub import ModelCard
    from transformers.pipelines import PIPELINE_REGISTRY

    from crjepa.eval.retrieval import RetrievalResults
    from crjepa.hub.cards import render_model_card
    from crjepa.train.training import DEFAULTS
    from modeling_crjepa import CRJepaConfig

    run_config = copy.deepcopy(DEFAULTS)
    run_config["data"].update(name="BEN-14K (reBEN)", hub_id=None)
    results = RetrievalResults(dataset_name="BEN-14K (reBEN)", sensors=["s1", "s2"], k=5, multi_label=True,
                               metrics={"F1@5": {"s1->s1": 0.7, "s2->s2": 0.8, "s1->s2": 0.75, "s2->s1": 0.74}},
                               query_split="test", num_queries=10, num_gallery=10)
    card = ModelCard(str(render_model_card(CRJepaConfig.from_preset("tiny"), run_config, results)))
    assert card.data.pipeline_tag in PIPELINE_REGISTRY.get_supported_tasks() and card.data.inference is False
    assert 'pipeline("image-feature-extraction", model=' in card.text and "Pillow" in card.text
    entries = card.data.eval_results
    assert {r.task_type for r in entries} == {"image-feature-extraction"}
    assert {r.dataset_type for r in entries} == {"ben-14k-reben"} and {r.metric_type for r in entries} == {
        "crjepa_f1_at_k"}
    assert entries[0].metric_args == {"k": 5, "variant": "paper"} and entries[0].metric_value == 70.0
