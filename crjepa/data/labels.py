"""Class labels, defined once: lists of class ids (the row schema's ``labels``) <-> multi-hot rows.

The training batches, the evaluation, the metrics and the embeddings archives all use multi-hot (N, C) arrays;
`multi_hot` is the one place label lists become them (vectorised over an Arrow column, so a whole data set's
labels cost one pass), `label_lists` the way back. `LabelRows` holds the labels of a loaded embeddings archive as
lists (memory in the labels, not N x C: a downloaded archive may declare 100,000 classes) and gives multi-hot
rows on request. Imports no torch; pyarrow only when given Arrow data.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import numpy as np

from crjepa.data.schema import DataError


def class_names_of(dataset: Any) -> list[str] | None:
    """Class names from a datasets.Dataset's ``labels`` feature (Sequence/List of ClassLabel), if present."""
    feature = getattr(dataset, "features", {}).get("labels") if hasattr(dataset, "features") else None
    inner = getattr(feature, "feature", feature)
    return list(inner.names) if hasattr(inner, "names") else None


def multi_hot(labels: Any, num_classes: int | None = None, dtype: Any = np.uint8) -> np.ndarray:
    """Class ids per item -> multi-hot (N, num_classes) of ``dtype`` (1 where the item has the class).

    labels: lists of class ids (one list per item), an Arrow list column (read without per-row Python), a
        datasets.Dataset (its ``labels`` column; ``num_classes`` defaults to its class names), or a 2-D array
        that is already multi-hot (checked and passed through).
    Raises ValueError naming the item when a class id lies outside 0..num_classes-1.
    """
    if hasattr(labels, "features") and hasattr(labels, "with_format"):  # a datasets.Dataset
        if num_classes is None:
            names = class_names_of(labels)
            if names is None:
                raise ValueError("The dataset's labels feature has no class names; pass num_classes")
            num_classes = len(names)
        labels = labels.with_format("arrow")[:]["labels"]
    if num_classes is None:
        raise TypeError("multi_hot needs num_classes (or a datasets.Dataset with class names)")
    if isinstance(labels, np.ndarray) and labels.ndim == 2:
        if labels.shape[1] != num_classes:
            raise ValueError(f"multi-hot labels have {labels.shape[1]} columns, expected {num_classes} classes")
        return (labels != 0).astype(dtype)
    if type(labels).__module__.startswith("pyarrow"):
        return _from_arrow(labels, num_classes, dtype)
    out = np.zeros((len(labels), num_classes), dtype=dtype)
    for row, ids in enumerate(labels):
        ids = np.atleast_1d(np.asarray(ids, dtype=np.int64))
        _check_range(ids, num_classes, row)
        out[row, ids] = 1
    return out


def _from_arrow(column: Any, num_classes: int, dtype: Any) -> np.ndarray:
    """An Arrow list<int> column -> multi-hot, vectorised (one flatten, one scatter)."""
    if hasattr(column, "combine_chunks"):
        column = column.combine_chunks()
    lengths = column.value_lengths().fill_null(0).to_numpy(zero_copy_only=False).astype(np.int64)
    rows = np.repeat(np.arange(len(column)), lengths)
    ids = column.flatten().to_numpy(zero_copy_only=False).astype(np.int64)
    bad = (ids < 0) | (ids >= num_classes)
    if bad.any():
        row = int(rows[np.flatnonzero(bad)[0]])
        _check_range(ids[rows == row], num_classes, row)
    out = np.zeros((len(column), num_classes), dtype=dtype)
    out[rows, ids] = 1
    return out


def _check_range(ids: np.ndarray, num_classes: int, row: int) -> None:
    if ids.size and (ids.min() < 0 or ids.max() >= num_classes):
        raise DataError(f"item {row}: class id(s) {ids.tolist()} outside 0..{num_classes - 1}")


class LabelRows:
    """The label lists of N items as one array of class ids with row offsets, read like a multi-hot (N, C) uint8
    array: ``rows[i]`` (or a slice / index array) is multi-hot, built for the rows asked for only; ``classes(i)``
    the class ids of item i; ``np.asarray(rows)`` the whole matrix (N x C bytes: only when asked)."""

    dtype = np.dtype(np.uint8)
    ndim = 2

    def __init__(self, offsets: np.ndarray, ids: np.ndarray, num_classes: int) -> None:
        self.offsets, self.ids, self.num_classes = offsets, ids, int(num_classes)

    @classmethod
    def from_arrow(cls, column: Any, num_classes: int) -> LabelRows:
        """An Arrow list<int> column (null = no labels); ValueError naming the item for a class id out of range."""
        if hasattr(column, "combine_chunks"):
            column = column.combine_chunks()
        lengths = column.value_lengths().fill_null(0).to_numpy(zero_copy_only=False).astype(np.int64)
        ids = column.flatten().to_numpy(zero_copy_only=False).astype(np.int64)
        offsets = np.concatenate([[0], np.cumsum(lengths)])
        bad = (ids < 0) | (ids >= num_classes)
        if bad.any():
            row = int(np.searchsorted(offsets, np.flatnonzero(bad)[0], side="right") - 1)
            _check_range(ids[offsets[row] : offsets[row + 1]], num_classes, row)
        return cls(offsets, ids, num_classes)

    @property
    def shape(self) -> tuple[int, int]:
        return len(self.offsets) - 1, self.num_classes

    def __len__(self) -> int:
        return len(self.offsets) - 1

    def classes(self, row: int) -> np.ndarray:
        """The class ids of item ``row``."""
        row = range(len(self))[row]
        return self.ids[self.offsets[row] : self.offsets[row + 1]]

    def __getitem__(self, index: Any) -> np.ndarray:
        if isinstance(index, tuple):  # rows[r, c]: the multi-hot rows asked for, then numpy's column indexing
            rows, *columns = index
            return self[rows][(slice(None), *columns) if not isinstance(rows, (int, np.integer)) else tuple(columns)]
        if isinstance(index, (int, np.integer)):
            out = np.zeros(self.num_classes, np.uint8)
            out[self.classes(int(index))] = 1
            return out
        rows = np.arange(len(self))[index]
        out = np.zeros((len(rows), self.num_classes), np.uint8)
        for position, row in enumerate(rows):
            out[position, self.classes(int(row))] = 1
        return out

    def __array__(self, dtype: Any = None, copy: Any = None) -> np.ndarray:
        out = self[:]
        return out if dtype is None else out.astype(dtype)


def num_classes_of(labels: Sequence[Sequence[int]]) -> int:
    """Number of classes implied by label lists without class names: the largest id + 1."""
    return max((int(max(row)) for row in labels if len(row)), default=-1) + 1


def label_lists(labels: np.ndarray) -> list[list[int]]:
    """Multi-hot (N, C) -> one sorted list of class ids per item (the inverse of `multi_hot`)."""
    return [np.flatnonzero(row).tolist() for row in np.asarray(labels)]


__all__ = ["LabelRows", "class_names_of", "label_lists", "multi_hot", "num_classes_of"]
