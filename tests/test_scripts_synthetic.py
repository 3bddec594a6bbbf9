"""The built-in synthetic S1/S2 pairs: deterministic, plausible physics per sensor, valid multi-labels."""

from __future__ import annotations

import numpy as np
import pytest

from datasets_scripts import synthetic as S

WATER = (17, 18)  # inland waters, marine waters
BROADLEAF, ARABLE, URBAN = 8, 2, 0


@pytest.fixture(scope="module")
def pairs() -> dict[str, np.ndarray]:
    return S.generate(300, seed=3, image_size=32)


def test_same_seed_same_arrays_different_seed_or_split_different():
    a, b = S.generate(20, seed=1, image_size=16), S.generate(20, seed=1, image_size=16)
    for key in ("s1", "s2", "labels", "land_cover", "id"):
        np.testing.assert_array_equal(a[key], b[key])
    c = S.generate(20, seed=2, image_size=16)
    assert not np.array_equal(a["s2"], c["s2"]) and not np.array_equal(a["s1"], c["s1"])
    t = S.generate(20, seed=1, image_size=16, split="test")
    assert not np.array_equal(a["s2"], t["s2"])
    assert set(a["id"]).isdisjoint(t["id"])


def test_fewer_pairs_are_a_prefix_of_more_pairs():
    small, large = S.generate(7, seed=5, image_size=16), S.generate(300, seed=5, image_size=16)
    np.testing.assert_array_equal(small["s1"], large["s1"][:7])
    np.testing.assert_array_equal(small["s2"], large["s2"][:7])
    assert len(large["id"]) == len(set(large["id"])) == 300


def test_shapes_dtypes_and_ranges(pairs):
    assert pairs["s1"].shape == (300, 2, 32, 32) and pairs["s1"].dtype == np.float32
    assert pairs["s2"].shape == (300, 12, 32, 32) and pairs["s2"].dtype == np.uint16
    assert np.isfinite(pairs["s1"]).all()
    assert -50 <= pairs["s1"].min() and pairs["s1"].max() < 40  # dB
    assert -20 < pairs["s1"][:, 0].mean() < -5  # VV: a typical land mean in dB
    assert pairs["s1"][:, 1].mean() < pairs["s1"][:, 0].mean()  # VH below VV
    assert 300 < pairs["s2"].mean() < 4000 and pairs["s2"].max() < 10000  # reflectance x 10,000


def test_labels_are_the_classes_covering_more_than_min_fraction(pairs):
    labels, lc = pairs["labels"], pairs["land_cover"]
    assert labels.shape == (300, 19) and labels.dtype == bool
    assert labels.sum(1).min() >= 1 and labels.sum(1).max() <= 5
    fractions = np.stack([(lc == c).mean(axis=(1, 2)) for c in range(19)], axis=1)
    np.testing.assert_array_equal(labels, fractions > S.MIN_FRACTION)
    assert labels.any(0).sum() >= 17  # nearly every class occurs
    assert len(S.CLASS_NAMES) == 19 and S.CLASS_NAMES[2] == "Arable land"


def _class_means(pairs, values: np.ndarray) -> np.ndarray:
    lc = pairs["land_cover"]
    return np.array([values[lc == c].mean() if (lc == c).any() else np.nan for c in range(19)])


def test_sar_physics_water_darkest_urban_double_bounce_forest_volume(pairs):
    vv = _class_means(pairs, pairs["s1"][:, 0])
    vh = _class_means(pairs, pairs["s1"][:, 1])
    assert np.nanargmin(vv) in WATER and np.nanargmin(vh) in WATER
    assert vv[URBAN] > vv[BROADLEAF] > vv[ARABLE]  # double bounce > volume > surface
    assert vh[BROADLEAF] - vh[ARABLE] > 3  # volume scattering raises cross-pol


def test_optical_physics_water_dark_in_nir_vegetation_red_edge(pairs):
    nir = _class_means(pairs, pairs["s2"][:, 7].astype(np.float32))  # B08
    red = _class_means(pairs, pairs["s2"][:, 3].astype(np.float32))  # B04
    swir = _class_means(pairs, pairs["s2"][:, 10].astype(np.float32))  # B11
    assert nir[17] < 500 and nir[18] < 500 and nir[BROADLEAF] > 2500
    assert nir[BROADLEAF] / red[BROADLEAF] > 5  # red edge
    assert swir[18] < 200


def test_sar_has_speckle_optical_does_not(pairs):
    """Coefficient of variation inside one land-cover region: Gamma speckle (4.5 looks) gives ~0.5 in linear
    SAR power; the optical image varies by texture and ~1 % noise only."""
    lc, cv_sar, cv_opt = pairs["land_cover"], [], []
    for i in range(len(lc)):
        for c in np.unique(lc[i]):
            m = lc[i] == c
            if m.sum() >= 100:
                power = 10 ** (pairs["s1"][i, 0][m] / 10)
                nir = pairs["s2"][i, 7][m].astype(np.float64)
                cv_sar.append(power.std() / power.mean())
                cv_opt.append(nir.std() / nir.mean())
    assert np.median(cv_sar) > 0.4 and np.median(cv_opt) < 0.2
    assert np.median(cv_sar) > 2.5 * np.median(cv_opt)


def test_builder_rows_equal_generate(tmp_path):
    builder = S.SyntheticPairs(
        cache_dir=str(tmp_path), num_train=5, num_validation=3, num_test=0, image_size=16, seed=4
    )
    builder.download_and_prepare()
    dd = builder.as_dataset()
    assert set(dd) == {"train", "validation"}
    ref = S.generate(3, seed=4, image_size=16, split="validation")
    rows = dd["validation"].with_format("numpy")[:]
    np.testing.assert_array_equal(rows["s1"], ref["s1"])
    np.testing.assert_array_equal(rows["s2"].astype(np.uint16), ref["s2"])
    assert list(rows["id"]) == list(ref["id"])
    assert [list(x) for x in rows["labels"]] == [np.flatnonzero(r).tolist() for r in ref["labels"]]
    assert dd["train"].features["labels"].feature.names == list(S.CLASS_NAMES)


def test_pairing_rate_keeps_unpaired_train_rows_as_single_sensor_rows_half_each(tmp_path, capsys):
    from crjepa.data.loading import load_paired_dataset, pairing_summary
    from datasets_scripts.__main__ import main

    for rate, paired in ((1.0, 400), (0.5, 200), (0.25, 100), (0.1, 40), (0.0, 0)):
        has = S.pairing_masks(400, 0, "train", rate)
        assert int((has["s1"] & has["s2"]).sum()) == paired
        assert int((has["s1"] & ~has["s2"]).sum()) == (400 - paired) // 2 == int((~has["s1"] & has["s2"]).sum())
    a, b = S.generate(300, seed=1, image_size=8, pairing_rate=0.25), S.generate(300, seed=1, image_size=8)
    np.testing.assert_array_equal(a["s2"], b["s2"])  # the rate never changes the images of a row
    assert b["has_s1"].all() and b["has_s2"].all()
    out = tmp_path / "synthetic-25"  # the README's command, at test size
    assert (
        main(
            [
                "synthetic",
                "--pairing-rate",
                "0.25",
                "--num-train",
                "40",
                "--num-validation",
                "0",
                "--num-test",
                "8",
                "--image-size",
                "8",
                "--output-dir",
                str(out),
                "--num-proc",
                "1",
            ]
        )
        == 0
    )
    train = load_paired_dataset(out, split="train", cache_dir=str(tmp_path / "hf"))
    assert pairing_summary(train) == {"s1+s2": 10, "s1": 15, "s2": 15}
    assert pairing_summary(load_paired_dataset(out, split="test", cache_dir=str(tmp_path / "hf"))) == {"s1+s2": 8}
    ref = S.generate(40, seed=0, image_size=8, pairing_rate=0.25)
    for row in train:  # python format: a missing sensor is None (the numpy format would give NaN / garbage)
        i = int(row["id"].rsplit("-", 1)[1])
        assert (row["s1"] is not None, row["s2"] is not None) == (ref["has_s1"][i], ref["has_s2"][i])
        if row["s2"] is not None:
            np.testing.assert_array_equal(np.asarray(row["s2"]), ref["s2"][i])
    with pytest.raises(ValueError, match="pairing_rate must be in"):
        S.pairing_masks(4, 0, "train", 1.5)
