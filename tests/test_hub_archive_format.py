"""crjepa/hub/archive/format.py: nothing in a downloaded archive is trusted: ids, the info's fields and the vector
columns' type are checked before the archive is used, each problem one EmbeddingsError naming the file or column."""

from __future__ import annotations

import json
import re
import shutil
from pathlib import Path

import pytest

from crjepa.hub.archive import EmbeddingsError, load_embeddings


def _rewrite(folder: Path, change) -> None:
    """Rewrite the archive's one Parquet file with ``change(table) -> table``."""
    import pyarrow.parquet as pq

    parquet = next((folder / "data").glob("*.parquet"))
    pq.write_table(change(pq.read_table(parquet)), parquet)


def test_a_downloaded_archive_is_checked_before_it_is_used(tmp_path, archive_dir):
    """Duplicate or null ids were accepted (search by id then showed every hit as the duplicated id), a tampered
    num_rows went into the card `crjepa index` rewrites, format_version 99 was read, and a variable-length vector
    column ended in an AttributeError: each is now one EmbeddingsError naming the file or column."""
    import pyarrow as pa

    from crjepa.cli import main
    from crjepa.hub.archive import add_indices

    def with_ids(values):
        def change(table):
            return table.set_column(0, table.schema.field("id"), pa.array(values, pa.string()))

        return change

    ids = load_embeddings(archive_dir, load_indices=False).ids
    cases = {
        "duplicate": (with_ids([ids[0], ids[0], *ids[2:]]), "1 id(s) on more than one row"),
        "null": (with_ids([None, *ids[1:]]), "1 row(s) without an id"),
        "empty": (with_ids(["", *ids[1:]]), "with an empty id"),
    }
    for case, (change, message) in cases.items():
        folder = Path(shutil.copytree(archive_dir, tmp_path / case))
        _rewrite(folder, change)
        with pytest.raises(EmbeddingsError, match=re.escape(message)):
            load_embeddings(folder)
        with pytest.raises(EmbeddingsError, match=re.escape(message)):
            add_indices(folder, kind="exact")  # `crjepa index` refuses it too
    for field, value, message in (
        ("num_rows", 10**12, "num_rows is 1000000000000 but the Parquet files"),
        ("format_version", 99, "format_version 99 is newer than this crjepa reads"),
        ("repo_id", "x/y\nimport os", "repo_id must be a Hub repo id"),
        ("metadata_columns", ["a|b"], "metadata_columns must be a list"),
    ):
        folder = Path(shutil.copytree(archive_dir, tmp_path / field))
        info = json.loads((folder / "embeddings_info.json").read_text())
        (folder / "embeddings_info.json").write_text(json.dumps({**info, field: value}))
        with pytest.raises(EmbeddingsError, match=re.escape(message)):
            add_indices(folder, kind="exact")
        assert "1T<n" not in (folder / "README.md").read_text() and "1B<n<10B" not in (folder / "README.md").read_text()
    folder = Path(shutil.copytree(archive_dir, tmp_path / "ragged"))

    def ragged(table):
        column = table["s1_cross"].to_pylist()
        column[0] = column[0][:5]
        at = table.schema.get_field_index("s1_cross")
        ragged_type = pa.list_(pa.float32())
        return table.set_column(at, pa.field("s1_cross", ragged_type), pa.array(column, ragged_type))

    _rewrite(folder, ragged)
    assert main(["index", str(folder), "--kind", "exact", "--columns", "s1_cross"]) == 2
    with pytest.raises(EmbeddingsError, match=r"Column 's1_cross' of .* is list<element: float>, not fixed-size"):
        load_embeddings(folder)
