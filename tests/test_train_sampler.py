"""crjepa/train/sampler.py: the epoch's order (seeded, sharded, resumable) and its rows (pairs at data.pair_share)."""

from __future__ import annotations

from crjepa.data.loading import load_paired_dataset, presence
from crjepa.train.sampler import ShardedEpochSampler, balance_pairs, distinct_rows


def test_two_processes_see_together_what_one_process_sees_and_a_resume_skips_what_was_seen():
    one = ShardedEpochSampler(100, 8, seed=3)
    two = [ShardedEpochSampler(100, 4, num_processes=2, process_index=rank, seed=3) for rank in (0, 1)]
    epochs = []
    for epoch in (0, 1):
        for sampler in (one, *two):
            sampler.set_epoch(epoch)
        order, halves = list(one), [list(s) for s in two]
        assert len(order) == len(one) == 96 and len(set(order)) == 96  # 12 whole batches, the last 4 rows dropped
        for batch in range(12):  # each global batch: rank 0 takes its first half, rank 1 the second
            rows = slice(batch * 4, (batch + 1) * 4)
            assert order[batch * 8 : (batch + 1) * 8] == halves[0][rows] + halves[1][rows]
        epochs.append(order)
    assert epochs[0] != epochs[1]  # a new permutation each epoch ...
    one.set_epoch(1)
    assert list(one) == epochs[1]  # ... that depends on (seed, epoch) only
    one.set_epoch(1, skip_batches=5)  # a run resumed after 5 batches of epoch 1 sees the rest of it
    assert list(one) == epochs[1][40:] and len(one) == 56
    assert ShardedEpochSampler(100, 8, accumulation=5).batches_per_epoch == 10  # no incomplete accumulation group


def test_pair_share_repeats_the_pairs_to_their_share_and_distinct_rows_counts_them_once():
    train = load_paired_dataset(
        "synthetic", "train", num_train=64, num_validation=0, num_test=0, image_size=8, seed=0, pairing_rate=0.25
    )
    have = presence(train, ["s1", "s2"])
    assert int((have["s1"] & have["s2"]).sum()) == 16
    balanced = balance_pairs(train, ["s1", "s2"], 0.5, seed=0, split="train", name="synthetic")
    have = presence(balanced, ["s1", "s2"])
    both = have["s1"] & have["s2"]
    assert int(both.sum()) == int((~both).sum()) == 48  # every single-sensor row once, the 16 pairs 3 times
    assert len(distinct_rows(balanced)) == 64 and distinct_rows(train) is train
    paired = load_paired_dataset("synthetic", "train", num_train=16, num_validation=0, num_test=0, image_size=8)
    assert balance_pairs(paired, ["s1", "s2"], 0.5, seed=0, split="train", name="synthetic") is paired
