"""Training masks as a pure function of (seed, step, sample id, sensor), and the hashing they are drawn with.

A resumed run and a run on any number of processes draw exactly the masks of the uninterrupted one-process run:
nothing depends on a random generator's state, on a row's position in its batch or on the process that reads it.
The counts come from the model (`modeling_crjepa.modeling_crjepa.num_masked`), the same static counts as its own
`random_masks`.
"""

from __future__ import annotations

import hashlib
from collections.abc import Sequence
from typing import TypeVar

import torch

from modeling_crjepa.configuration_crjepa import CRJepaConfig
from modeling_crjepa.losses import host_to_device
from modeling_crjepa.modeling_crjepa import num_masked

__all__ = ["draw_masks", "hash32", "sample_keys"]

_M32 = 0xFFFFFFFF
Integers = TypeVar("Integers", int, torch.Tensor)


def hash32(x: Integers) -> Integers:
    """A 32-bit integer mixing function (xor-shift-multiply) on Python ints or int64 tensors alike.

    Every intermediate stays below 2**59, so int64 arithmetic never overflows and CPU and GPU agree.
    """
    x = x & _M32
    x = ((x >> 16) ^ x) * 0x45D9F3B & _M32
    x = ((x >> 16) ^ x) * 0x45D9F3B & _M32
    return (x >> 16) ^ x


def sample_keys(ids: Sequence[str]) -> list[int]:
    """A stable 32-bit key per sample id (blake2b; Python's hash() is salted per process)."""
    return [int.from_bytes(hashlib.blake2b(str(i).encode(), digest_size=4).digest(), "little") for i in ids]


def draw_masks(
    config: CRJepaConfig, ids: Sequence[str], step: int, seed: int, device: torch.device | str
) -> dict[str, tuple[torch.Tensor, torch.Tensor]]:
    """{sensor: (visible_index, masked_index)} for a batch, as a pure function of (seed, step, sample id, sensor).

    Each token gets a hashed 32-bit score from (seed, step, sample id, sensor, token); the lowest-scoring
    `num_masked`(N, mask_ratio) tokens are masked (the split `random_masks` makes, with the same static counts). A
    pair's mask therefore does not depend on where it sits in the batch, on the number of processes, or on
    whether the run was resumed: a run on 2 processes or a resumed run draws exactly the masks of the
    uninterrupted 1-process run (the loader sorts rows inside a batch, so row positions are not comparable).
    """
    num_patches = config.num_patches
    masked = num_masked(num_patches, config.mask_ratio)
    step_key = hash32(hash32(int(seed)) ^ hash32(int(step) + 0x9E3779B9))
    keys = host_to_device(torch.tensor(sample_keys(ids), dtype=torch.int64), device)  # no host sync on GPUs
    tokens = torch.arange(num_patches, dtype=torch.int64, device=device) * 0x85EBCA6B & _M32
    masks = {}
    for index, sensor in enumerate(config.sensor_names):
        row = hash32(hash32(keys ^ step_key) + 0x27D4EB2F * (index + 1))
        order = hash32(row[:, None] ^ tokens[None, :]).argsort(dim=1, stable=True)
        masks[sensor] = (order[:, masked:], order[:, :masked])
    return masks
