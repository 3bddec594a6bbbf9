"""Dataset -> torch batches: sources, batch shapes and native dtypes, multi-hot labels, seeded shuffling,
sensor checks."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from crjepa.data.loading import (
    check_sensors,
    label_names,
    load_paired_dataset,
    make_dataloader,
    multi_hot,
)
from datasets_scripts import synthetic as S
from datasets_scripts.common import DataError, export_builder

SIZES = {"num_train": 40, "num_validation": 10, "num_test": 6, "image_size": 16, "seed": 2}


@pytest.fixture(scope="module")
def train():
    return load_paired_dataset("synthetic", split="train", **SIZES)


def test_synthetic_source_splits_and_schema(train):
    assert len(train) == 40 and set(train["split"]) == {"train"}
    whole = load_paired_dataset("synthetic", **SIZES)
    assert len(whole) == 56 and sorted(set(whole["split"])) == ["test", "train", "validation"]
    assert label_names(train) == list(S.CLASS_NAMES)
    assert train.features["s2"].shape == (12, 16, 16) and train.features["s2"].dtype == "uint16"
    ref = S.generate(40, seed=2, image_size=16)
    np.testing.assert_array_equal(train.with_format("numpy")[:5]["s1"], ref["s1"][:5])
    with pytest.raises(TypeError, match="num_pairs"):
        load_paired_dataset("synthetic", num_pairs=3)


def test_batches_have_native_dtypes_shapes_and_matching_multi_hot(train):
    loader = make_dataloader(train, {"s1": 2, "s2": 12}, batch_size=16, seed=0)
    batches = list(loader)
    assert len(batches) == len(loader) == 2  # drop_last
    rows = {r["id"]: r for r in train.with_format("numpy")}
    ref = S.generate(40, seed=2, image_size=16)
    for batch in batches:
        assert batch["s1"].shape == (16, 2, 16, 16) and batch["s1"].dtype == torch.float32
        assert batch["s2"].shape == (16, 12, 16, 16) and batch["s2"].dtype == torch.uint16
        assert batch["labels"].shape == (16, 19) and batch["labels"].dtype == torch.float32
        assert len(batch["id"]) == 16
        for j, pair_id in enumerate(batch["id"]):
            i = int(pair_id.rsplit("-", 1)[1])
            np.testing.assert_array_equal(batch["s1"][j].numpy(), ref["s1"][i])
            np.testing.assert_array_equal(batch["s2"][j].numpy(), ref["s2"][i])
            assert batch["labels"][j].nonzero().ravel().tolist() == list(rows[pair_id]["labels"])
    assert set(batches[0]["id"]).isdisjoint(batches[1]["id"])


def test_shuffle_is_seeded_and_sequential_keeps_order(train):
    def order(seed: int) -> list:
        return [i for b in make_dataloader(train, ["s1", "s2"], 8, seed=seed) for i in b["id"]]

    assert order(1) == order(1) and order(1) != order(2)
    plain = make_dataloader(train, ["s1", "s2"], 8, shuffle=False, drop_last=False)
    assert [i for b in plain for i in b["id"]] == train["id"]
    loader = make_dataloader(train, ["s1", "s2"], 8, seed=3)
    first, second = [[i for b in loader for i in b["id"]] for _ in range(2)]
    assert first != second and sorted(first) == sorted(second)  # a new permutation each epoch


def test_worker_processes_give_the_same_batches(train):
    serial = [b["id"] for b in make_dataloader(train, ["s1", "s2"], 8, seed=4)]
    parallel = [b["id"] for b in make_dataloader(train, ["s1", "s2"], 8, seed=4, num_workers=1)]
    assert serial == parallel


def test_selected_filtered_shuffled_views_read_the_right_rows(train):
    view = train.select(range(5, 35)).shuffle(seed=1).filter(lambda r: len(r["labels"]) >= 2)
    assert 0 < len(view) < 30
    ref = S.generate(40, seed=2, image_size=16)
    batch = next(iter(make_dataloader(view, ["s1", "s2"], len(view), shuffle=False)))
    assert sorted(batch["id"]) == sorted(view["id"])
    for j, pair_id in enumerate(batch["id"]):
        i = int(pair_id.rsplit("-", 1)[1])
        np.testing.assert_array_equal(batch["s2"][j].numpy(), ref["s2"][i])
        assert batch["labels"][j].nonzero().ravel().tolist() == np.flatnonzero(ref["labels"][i]).tolist()


def test_reader_pickles_small_for_spawned_workers(tmp_path):
    import pickle

    from crjepa.data.loading import PairBatches

    builder = S.SyntheticPairs(
        cache_dir=str(tmp_path / "c"), num_train=300, num_validation=0, num_test=0, image_size=32
    )
    builder.download_and_prepare()
    reader = PairBatches(builder.as_dataset(split="train"), ["s1", "s2"])  # memory-mapped Arrow
    reader[[0, 1]]  # builds the column views
    blob = pickle.dumps(reader)
    assert len(blob) < 300 * 32 * 32 * 4  # far smaller than the 14 MB of pixels: the table travels as a path
    np.testing.assert_array_equal(pickle.loads(blob)[[3, 1]]["s2"].numpy(), reader[[1, 3]]["s2"].numpy())


def test_external_sampler_is_used(train):
    loader = make_dataloader(train, ["s1"], 4, sampler=list(range(8, 16)), drop_last=False)
    ids = [i for b in loader for i in b["id"]]
    assert ids == train["id"][8:16] and set(next(iter(loader))) == {"s1", "present", "labels", "id"}


def test_multi_hot_matches_label_lists(train):
    mh = multi_hot(train)
    assert mh.shape == (40, 19)
    for row, labels in zip(mh, train["labels"]):
        assert np.flatnonzero(row).tolist() == sorted(labels)


def test_check_sensors_names_missing_sensors_and_wrong_channels(train):
    check_sensors(train, {"s1": 2, "s2": 12})
    with pytest.raises(DataError, match=r"missing sensor column\(s\) \['pan'\]"):
        check_sensors(train, {"pan": 1, "s2": 12})
    with pytest.raises(DataError, match="'s2' has 12 channels, the model expects 4"):
        check_sensors(train, {"s1": 2, "s2": 4})
    with pytest.raises(DataError, match="pan"):
        make_dataloader(train, ["pan", "s1"], 4)


def test_parquet_folder_and_builder_sources(tmp_path):
    builder = S.SyntheticPairs(cache_dir=str(tmp_path / "c"), **SIZES)
    out = export_builder(builder, tmp_path / "export", num_proc=1)
    val = load_paired_dataset(out, split="validation", cache_dir=str(tmp_path / "hf"))
    assert val.features == builder.info.features and len(val) == 10
    ref = S.generate(10, seed=2, image_size=16, split="validation")
    batch = next(iter(make_dataloader(val, ["s1", "s2"], 10, shuffle=False)))
    np.testing.assert_array_equal(batch["s2"].numpy(), ref["s2"])
    assert len(load_paired_dataset(out, cache_dir=str(tmp_path / "hf"))) == 56
    with pytest.raises(DataError, match="no 'unassigned' split"):
        load_paired_dataset(out, split="unassigned", cache_dir=str(tmp_path / "hf"))
    test = load_paired_dataset("synthetic", split="test", **SIZES)
    assert len(test) == 6
    with pytest.raises(DataError, match="Unknown data source"):
        load_paired_dataset(tmp_path / "nowhere")


def test_builder_name_source(tmp_path):
    root = tmp_path / "own"
    root.mkdir()
    for i in range(3):
        np.save(root / f"a{i}.npy", np.full((1, 4, 4), i, np.float32))
        np.save(root / f"b{i}.npy", np.full((2, 4, 4), i, np.uint8))
    (root / "pairs.csv").write_text(
        "id,a,b,labels,split\n"
        + "".join(f"p{i},a{i}.npy,b{i}.npy,{'x' if i else 'y'},{'test' if i == 2 else 'train'}\n" for i in range(3))
    )
    ds = load_paired_dataset("paired", split="train", csv_path=str(root / "pairs.csv"), cache_dir=str(tmp_path / "c"))
    assert ds["id"] == ["p0", "p1"] and label_names(ds) == ["x", "y"]
    batch = next(iter(make_dataloader(ds, {"a": 1, "b": 2}, 2, shuffle=False)))
    assert batch["b"].dtype == torch.uint8 and batch["b"][1].unique().tolist() == [1]
    assert batch["labels"].tolist() == [[0.0, 1.0], [1.0, 0.0]]


def test_reader_in_order_returns_rows_as_asked_also_through_a_shuffled_mapping(train):
    from crjepa.data.loading import PairBatches

    shuffled = train.shuffle(seed=3)  # an indices mapping: dataset order differs from table order
    reader = PairBatches(shuffled, ["s1", "s2"], in_order=True)
    asked = [7, 2, 30, 2, 0]
    batch = reader[asked]
    rows = shuffled.with_format("numpy")[asked]
    assert batch["id"] == list(rows["id"])
    np.testing.assert_array_equal(batch["s1"].numpy(), rows["s1"])
    np.testing.assert_array_equal(batch["s2"].numpy(), rows["s2"])
    np.testing.assert_array_equal(batch["labels"].numpy(), multi_hot(shuffled, dtype=np.float32)[asked])
    sorted_batch = PairBatches(shuffled, ["s1"])[asked]  # training reads in table order
    assert sorted(sorted_batch["id"]) == sorted(batch["id"])


def test_reader_names_a_column_that_is_not_an_image(train):
    from crjepa.data.loading import PairBatches

    with pytest.raises(DataError, match="column 'split' is not an Array3D"):
        PairBatches(train, ["s1", "split"])


# ---------------------------------------------------------------------------------------- partially paired data
def _check_batches_against_generate(loader, ref) -> int:
    """Every row: presence masks equal generate's has_*; pixels equal where present, zero where absent."""
    seen = 0
    for batch in loader:
        assert set(batch["present"]) == {"s1", "s2"}
        for sensor in ("s1", "s2"):
            mask = batch["present"][sensor]
            assert mask.dtype == torch.bool and mask.shape == (len(batch["id"]),)
            for j, pair_id in enumerate(batch["id"]):
                i = int(pair_id.rsplit("-", 1)[1])
                assert bool(mask[j]) == bool(ref[f"has_{sensor}"][i])
                expected = ref[sensor][i] if ref[f"has_{sensor}"][i] else np.zeros_like(ref[sensor][i])
                np.testing.assert_array_equal(batch[sensor][j].numpy(), expected)
        seen += len(batch["id"])
    return seen


def test_unpaired_rows_give_presence_masks_and_zero_filled_images(tmp_path):
    ds = load_paired_dataset("synthetic", split="train", **{**SIZES, "pairing_rate": 0.5})
    ref = S.generate(40, seed=2, image_size=16, pairing_rate=0.5)
    assert (ref["has_s1"] & ref["has_s2"]).sum() == 20
    assert (ref["has_s1"] & ~ref["has_s2"]).sum() == 10 and (~ref["has_s1"] & ref["has_s2"]).sum() == 10
    from crjepa.data.loading import pairing_summary, presence

    assert pairing_summary(ds) == {"s1+s2": 20, "s1": 10, "s2": 10}
    view = ds.shuffle(seed=0).select(range(15))  # a view: presence read through its indices mapping
    ids = [int(i.rsplit("-", 1)[1]) for i in view["id"]]
    assert presence(view)["s1"].tolist() == ref["has_s1"][ids].tolist()
    assert presence(view)["s2"].tolist() == ref["has_s2"][ids].tolist()
    assert _check_batches_against_generate(make_dataloader(ds, ["s1", "s2"], 16, seed=1, drop_last=False), ref) == 40
    # the same through the builder, a Parquet export (memory-mapped), a worker process, and 3 Arrow chunks
    import datasets

    chunked = datasets.concatenate_datasets(
        [ds.select(r).flatten_indices() for r in (range(0, 7), range(7, 30), range(30, 40))]
    )
    assert chunked.data.table.column("s1").num_chunks == 3
    assert (
        _check_batches_against_generate(make_dataloader(chunked, ["s1", "s2"], 16, seed=2, drop_last=False), ref) == 40
    )
    builder = S.SyntheticPairs(cache_dir=str(tmp_path / "c"), **SIZES, pairing_rate=0.5)
    out = export_builder(builder, tmp_path / "export", num_proc=1)
    train = load_paired_dataset(out, split="train", cache_dir=str(tmp_path / "hf"))
    assert train.data.table.column("s1").null_count == 10
    loader = make_dataloader(train, ["s1", "s2"], 16, seed=1, drop_last=False, num_workers=1)
    assert _check_batches_against_generate(loader, ref) == 40
    test = load_paired_dataset(out, split="test", cache_dir=str(tmp_path / "hf"))
    assert pairing_summary(test) == {"s1+s2": 6}  # evaluation splits stay paired


def _s2_only_export(tmp_path, image_size: int = 16, n: int = 8):
    """An S2-only archive exported as Parquet (a data set without any S1 column)."""
    ds = load_paired_dataset(
        "synthetic", split="train", num_train=n, num_validation=0, num_test=0, image_size=image_size, seed=9
    ).remove_columns(["s1"])
    folder = tmp_path / f"s2-only-{image_size}"
    (folder / "data").mkdir(parents=True)
    ds.to_parquet(str(folder / "data" / "train-00000-of-00001.parquet"))
    return folder


def test_paired_set_combined_with_a_single_sensor_export_and_a_mix(tmp_path):
    s2_only = _s2_only_export(tmp_path)
    opts = {"num_train": 24, "num_validation": 0, "num_test": 0, "image_size": 16, "seed": 2}
    both = load_paired_dataset("synthetic", split="train", extra_sources={"s2_only": str(s2_only)}, **opts)
    assert len(both) == 32 and list(both.features)[:3] == ["id", "s1", "s2"]
    assert both["origin"] == ["paired"] * 24 + ["s2_only"] * 8
    batch = next(iter(make_dataloader(both, ["s1", "s2"], 32, shuffle=False)))
    assert batch["present"]["s1"].tolist() == [True] * 24 + [False] * 8
    assert batch["present"]["s2"].all() and not batch["s1"][24:].any()
    alone = load_paired_dataset(s2_only, split="train")
    np.testing.assert_array_equal(batch["s2"][24:].numpy(), np.stack(alone.with_format("numpy")["s2"]))
    assert batch["id"][24:] == alone["id"]
    # a 50/50 mix: the epoch is long enough to keep all 24 paired rows; the 8 S2-only rows appear 3 times each
    mixed = load_paired_dataset(
        "synthetic",
        split="train",
        extra_sources={"s2_only": {"source": str(s2_only)}},
        mix={"paired": 0.5, "s2_only": 0.5},
        **opts,
    )
    ids = [i for b in make_dataloader(mixed, ["s1", "s2"], 8, seed=0) for i in b["id"]]
    assert len(ids) == 48 and sorted(set(ids)) == sorted(both["id"])
    assert {ids.count(i) for i in alone["id"]} == {3} and {ids.count(i) for i in both["id"][:24]} == {1}
    # 3:1 with 24 and 8 rows: 24 paired + 8 S2-only, every row once
    assert (
        len(
            load_paired_dataset(
                "synthetic",
                split="train",
                extra_sources={"s2_only": str(s2_only)},
                mix={"paired": 3, "s2_only": 1},
                **opts,
            )
        )
        == 32
    )
    # all splits loaded (as training does): only the train rows are resampled, the test rows appear once
    whole = load_paired_dataset(
        "synthetic",
        extra_sources={"s2_only": str(s2_only)},
        mix={"paired": 0.5, "s2_only": 0.5},
        **{**opts, "num_test": 5},
    )
    assert sorted(whole["split"]) == ["test"] * 5 + ["train"] * 48 and len(set(whole["id"])) == 37
    with pytest.raises(DataError, match=r"unknown data set\(s\) \['s1_only'\]"):
        load_paired_dataset(
            "synthetic", split="train", extra_sources={"s2_only": str(s2_only)}, mix={"paired": 1, "s1_only": 1}, **opts
        )


def test_combining_sets_whose_sensor_shapes_differ_names_the_sensor_and_the_folder(tmp_path):
    small = _s2_only_export(tmp_path, image_size=8)
    with pytest.raises(DataError) as err:
        load_paired_dataset(
            "synthetic",
            split="train",
            extra_sources={"s2_only": str(small)},
            num_train=8,
            num_validation=0,
            num_test=0,
            image_size=16,
        )
    msg = str(err.value)
    assert "sensor 's2'" in msg and str(small) in msg and "(12, 8, 8)" in msg and "(12, 16, 16)" in msg


def test_check_sensors_both_directions_and_sensors_no_row_has(tmp_path):
    train = load_paired_dataset("synthetic", split="train", **SIZES)
    check_sensors(train, {"s1": 2}, exact=False)  # reading a subset of the sensors is fine
    with pytest.raises(DataError, match=r"sensor column\(s\) \['s2'\] not in the model's config"):
        check_sensors(train, {"s1": 2}, exact=True, where="my/folder")
    with pytest.raises(DataError, match=r"Dataset my/folder does not match"):
        check_sensors(train, {"s1": 2}, exact=True, where="my/folder")
    s2_only = _s2_only_export(tmp_path)
    stream = load_paired_dataset(s2_only, split="train").add_column("s1", [None] * 8, feature=train.features["s1"])
    with pytest.raises(DataError, match=r"no row has sensor\(s\) \['s1'\]"):
        check_sensors(stream, {"s1": 2, "s2": 12}, exact=True)
