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
