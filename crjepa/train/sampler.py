"""What one training epoch draws: the rows (the train split, extra sources in the shares of ``data.mix``, the
paired rows at ``data.pair_share``) and their order (`ShardedEpochSampler`, seeded by (seed, epoch)).

The order is a pure function of (seed, epoch): one process with batch 2B sees exactly the pairs that two processes
with batch B see together, and a resumed run sees what the uninterrupted one saw.
"""

from __future__ import annotations

from collections.abc import Iterator, Sequence
from pathlib import Path
from typing import TYPE_CHECKING

import torch

from crjepa.train.config import ConfigError, RunConfig
from crjepa.train.masks import hash32

if TYPE_CHECKING:
    from datasets import Dataset

    from modeling_crjepa.configuration_crjepa import CRJepaConfig

__all__ = ["ShardedEpochSampler", "balance_pairs", "distinct_rows", "training_rows"]


class ShardedEpochSampler(torch.utils.data.Sampler[int]):
    """This process's sample indices, in order, for one epoch: a permutation seeded by (seed, epoch), cut into
    global batches of ``batch_size * num_processes`` pairs, of which process r takes rows [r*B, (r+1)*B).

    The data order is a pure function of (seed, epoch): one process with batch 2B sees exactly the pairs that two
    processes with batch B see together, and a resumed run sees what the uninterrupted one saw (`set_epoch` with
    ``skip_batches``). Incomplete global batches (and an incomplete gradient-accumulation group) at the end of
    an epoch are dropped, so every optimiser step has the same global batch.
    """

    def __init__(
        self,
        num_items: int,
        batch_size: int,
        num_processes: int = 1,
        process_index: int = 0,
        seed: int = 0,
        accumulation: int = 1,
    ) -> None:
        self.num_items, self.batch_size, self.seed = int(num_items), int(batch_size), int(seed)
        self.num_processes, self.process_index = int(num_processes), int(process_index)
        global_batch = self.batch_size * self.num_processes
        self.batches_per_epoch = (self.num_items // global_batch) // accumulation * accumulation
        self.epoch, self.skip_batches = 0, 0

    def set_epoch(self, epoch: int, skip_batches: int = 0) -> None:
        """Select the epoch's permutation and how many of this epoch's batches were already consumed."""
        self.epoch, self.skip_batches = int(epoch), int(skip_batches)

    def __len__(self) -> int:
        return (self.batches_per_epoch - self.skip_batches) * self.batch_size

    def __iter__(self) -> Iterator[int]:
        generator = torch.Generator()
        generator.manual_seed(hash32(hash32(self.seed) ^ hash32(self.epoch + 0x51ED)))
        order = torch.randperm(self.num_items, generator=generator)
        global_batch = self.batch_size * self.num_processes
        for batch in range(self.skip_batches, self.batches_per_epoch):
            start = batch * global_batch + self.process_index * self.batch_size
            yield from order[start : start + self.batch_size].tolist()


def training_rows(config: RunConfig, dataset: Dataset, model_config: CRJepaConfig) -> Dataset:
    """The rows trained on: the train split of the data set, plus the train splits of ``data.extra_sources``
    (e.g. single-sensor exports) combined by `crjepa.data.loading.combine_datasets` in the shares of
    ``data.mix``. Extra sets add training rows only: evaluation and the embeddings archive keep the main data
    set's splits (a mix may repeat rows, which must not become duplicate archive items)."""
    from crjepa.data.loading import check_sensors, combine_datasets, load_paired_dataset
    from crjepa.eval.retrieval import select_split

    data = config["data"]
    name = data["name"] or data["path"] or data["source"]
    try:
        train = select_split(dataset, data["train_split"])
    except ValueError as exc:  # no such split / no rows in it
        raise ConfigError(
            f"The training split {data['train_split']!r} of {name} is unusable: {exc}; choose another "
            "data.train_split or check the exported data"
        ) from None
    if data["pair_share"] is not None:
        train = balance_pairs(
            train,
            model_config.sensor_names,
            float(data["pair_share"]),
            int(config["seed"]),
            data["train_split"],
            str(name),
        )
    if not data["extra_sources"]:
        return train
    parts, where = {"paired": train}, {"paired": str(name)}
    for part, source in data["extra_sources"].items():
        folder = Path(str(source)).expanduser()
        if not folder.is_dir():
            raise ConfigError(
                f"data.extra_sources.{part}: {str(source)!r} is not a folder: pass a folder "
                "`python -m datasets_scripts <dataset> ... --output-dir DIR` wrote"
            )
        data["extra_sources"][part] = str(folder.resolve())
        parts[part], where[part] = load_paired_dataset(folder, split=data["train_split"]), str(folder)
    combined = combine_datasets(
        parts, mix=data["mix"], seed=int(config["seed"]), where=where, mix_split=data["train_split"]
    )
    check_sensors(combined, model_config.sensors, exact=True, where=" + ".join(where.values()))
    return combined


def balance_pairs(train: Dataset, sensors: Sequence[str], share: float, seed: int, split: str, name: str) -> Dataset:
    """The training rows with the rows that have every sensor drawn as ``share`` of each epoch (data.pair_share):
    `combine_datasets` of the paired and the other rows with that mix (the smaller part repeated, none
    subsampled). Unchanged when every row, or no row, is paired."""
    import numpy as np

    from crjepa.data.loading import combine_datasets, presence

    have = presence(train, sensors)
    both = np.logical_and.reduce([have[s] for s in sensors])
    if both.all() or not both.any():
        return train
    parts = {
        "paired": train.select(np.flatnonzero(both).tolist()),
        "single": train.select(np.flatnonzero(~both).tolist()),
    }
    return combine_datasets(
        parts,
        mix={"paired": share, "single": 1 - share},
        seed=seed,
        where={"paired": f"{name} (rows with {' + '.join(sensors)})", "single": f"{name} (the other rows)"},
        mix_split=split,
    )


def distinct_rows(ds: Dataset) -> Dataset:
    """The rows of a data set view once each: a mix (`combine_datasets`, data.pair_share) repeats rows of the
    smaller parts, which must not be counted as more rows than there are."""
    import numpy as np

    mapping = getattr(ds, "_indices", None)
    if mapping is None:
        return ds
    _, first = np.unique(mapping.column(0).to_numpy(), return_index=True)
    return ds if len(first) == len(ds) else ds.select(np.sort(first).tolist())
