"""datasets_scripts/ben_metadata.py: the BEN-14K list of the paper (md5), the official subsets and the 43 -> 19 class
table, from bigearthnet-common's metadata files alone (no imagery)."""

from __future__ import annotations

import hashlib

import pytest

from datasets_scripts import ben_metadata as meta


def test_ben14k_list_reproduces_paper_md5():
    rows = meta.ben14k_pairs()
    assert len(rows) == 14_832
    counts = {s: sum(r[2] == s for r in rows) for s in ("train", "validation", "test")}
    assert counts == {"train": 7_761, "validation": 3_508, "test": 3_563}
    data = meta.pair_list_bytes(rows)
    assert len(data) == 1_228_273 and data.count(b"\n") == 14_832
    assert hashlib.md5(data).hexdigest() == "0fcce0ed1b79a7432f9e9ea5f9888b90"
    assert b",val\n" in data and b",validation" not in data  # official CSV split names in the list file
    assert all(meta.s2_date(s2).isoformat() <= "2017-08-31" for s2, _, _ in rows)


def test_official_subset_sizes():
    assert len(meta.subset_pairs("recommended")) == 519_284
    assert len(meta.subset_pairs("all")) == 590_326
    with pytest.raises(ValueError, match="unknown BigEarthNet subset"):
        meta.subset_pairs("ben15k")


def test_43_to_19_mapping_table():
    table = meta.CLC43_TO_BEN19
    assert len(table) == 43
    dropped = {k for k, v in table.items() if v is None}
    assert dropped == {
        "Road and rail networks and associated land", "Port areas", "Airports", "Mineral extraction sites",
        "Dump sites", "Construction sites", "Green urban areas", "Sport and leisure facilities", "Bare rock",
        "Burnt areas", "Intertidal flats",
    }  # fmt: skip
    assert {v for v in table.values() if v} == set(meta.BEN19_CLASSES) and len(meta.BEN19_CLASSES) == 19
    assert meta.to_ben19(["Peatbogs", "Inland marshes", "Airports", "Sea and ocean"]) == [
        "Inland wetlands", "Marine waters"
    ]  # fmt: skip
    with pytest.raises(ValueError, match="Lava fields"):
        meta.to_ben19(["Lava fields"], where="patch X")
