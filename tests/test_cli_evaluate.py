"""crjepa/cli/evaluate.py: `crjepa evaluate` writes and prints the four-direction table, saying what it scored."""

from __future__ import annotations

import json

from helpers import cli_section


def test_evaluate_writes_the_four_direction_table(cli_workdir):
    table = (cli_workdir / "eval" / "retrieval_results.md").read_text().splitlines()
    assert table[0] == "| metric | S1->S1 | S2->S2 | S1->S2 | S2->S1 |"
    data = json.loads((cli_workdir / "eval" / "retrieval_results.json").read_text())
    assert (data["query_split"], data["gallery_split"]) == ("validation", "test")
    assert (data["num_queries"], data["num_gallery"]) == (48, 48)
    assert all(0 <= v <= 1 for values in data["metrics"].values() for v in values.values())
    assert table[2] in cli_section(cli_workdir, "evaluate")
    # the printed table says what it scored: data set, splits and counts
    assert (
        "synthetic, queries from the validation split, gallery from the test split: 48 queries x 48 gallery "
        "items (in %):\n| metric |"
    ) in cli_section(cli_workdir, "evaluate")
