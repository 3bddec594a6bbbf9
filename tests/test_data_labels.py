"""crjepa.data.labels: the one way class-id lists become multi-hot rows (lists, Arrow columns, data sets)."""

from __future__ import annotations

import datasets
import numpy as np
import pyarrow as pa
import pytest

from crjepa.data.labels import class_names_of, label_lists, multi_hot, num_classes_of

LISTS = [[0, 3], [], [2], [1, 2, 3], [3]]


def test_lists_arrow_and_dataset_give_the_same_rows():
    expected = np.array([[1, 0, 0, 1], [0, 0, 0, 0], [0, 0, 1, 0], [0, 1, 1, 1], [0, 0, 0, 1]], np.uint8)
    np.testing.assert_array_equal(multi_hot(LISTS, 4), expected)
    chunked = pa.chunked_array([pa.array(LISTS[:2], pa.list_(pa.int64())), pa.array(LISTS[2:], pa.list_(pa.int64()))])
    np.testing.assert_array_equal(multi_hot(chunked, 4), expected)
    features = datasets.Features({"labels": datasets.Sequence(datasets.ClassLabel(names=list("abcd")))})
    ds = datasets.Dataset.from_dict({"labels": LISTS}, features=features)
    as_float = multi_hot(ds, dtype=np.float32)  # class count from the dataset's class names
    assert as_float.dtype == np.float32
    np.testing.assert_array_equal(as_float, expected)
    np.testing.assert_array_equal(multi_hot(expected, 4), expected)  # multi-hot passes through
    assert label_lists(expected) == [sorted(x) for x in LISTS]
    assert class_names_of(ds) == list("abcd") and num_classes_of(LISTS) == 4


def test_out_of_range_ids_name_the_item_on_every_path():
    with pytest.raises(ValueError, match=r"item 3: class id\(s\) \[1, 7\] outside 0..3"):
        multi_hot([[0], [1], [2], [1, 7]], 4)
    with pytest.raises(ValueError, match=r"item 3: class id\(s\) \[1, 7\] outside 0..3"):
        multi_hot(pa.array([[0], [1], [2], [1, 7]]), 4)
    with pytest.raises(ValueError, match="3 columns, expected 4"):
        multi_hot(np.zeros((2, 3)), 4)
