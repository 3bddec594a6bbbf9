"""The embeddings archive format: the folder's names, ``embeddings_info.json`` checked field by field, and the
vector columns as `crjepa embed` writes them (fixed-size float32 lists, null where a row lacks the sensor).

An archive may come from the Hub, so nothing in it is trusted: the info file is size-capped before it is read and
every field is checked (types, bounds, names that cannot leave the folder); a vector column of another type is
refused; the Parquet footers' row counts must match the info before anything is allocated.
"""

from __future__ import annotations

import json
import re
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np

from crjepa.errors import CRJepaError
from crjepa.eval.directions import SPACES
from crjepa.hub.access import is_repo_id

if TYPE_CHECKING:
    import pyarrow as pa

INFO_FILE = "embeddings_info.json"
OUTPUT_KIND = "embeddings"
INDEX_DIR = "faiss"
DATA_DIR = "data"
FORMAT_VERSION = 1


class EmbeddingsError(CRJepaError, ValueError):
    """An embeddings archive, index or query does not fit (dimension, model, sensor, empty archive)."""


MAX_DIMENSION = 65_536
MAX_CLASSES = 100_000
_NAME = re.compile(r"[A-Za-z0-9][A-Za-z0-9_\-]{0,63}")
_LABEL = re.compile(r"[^\x00-\x1f\x7f`|]{1,256}")
"""Metadata column names: printable, no backtick or table bar (they appear in the card's table)."""
_CLASS = re.compile(r"[^\x00-\x1f\x7f]{1,1024}")
MAX_INFO_BYTES = 64 << 20
"""embeddings_info.json is read whole: a larger file is refused before it is read."""
_INDEX_KINDS = {"exact", "hnsw", "ivfpq"}


def read_info(folder: Path) -> dict[str, Any]:
    """The checked embeddings_info.json of an archive folder (`check_info`); EmbeddingsError when it is missing,
    larger than `MAX_INFO_BYTES`, not JSON or not as `crjepa embed` writes it."""
    path = folder / INFO_FILE
    if not path.is_file():
        raise EmbeddingsError(f"{folder} is not a CR-JEPA embeddings archive: {INFO_FILE} is missing")
    return check_info(_read_json(path), path)


def _read_json(path: Path, limit: int = MAX_INFO_BYTES) -> Any:
    size = path.stat().st_size
    if size > limit:
        raise EmbeddingsError(
            f"{path} is {size:,} bytes, more than the {limit:,} such a file can need; download or re-embed the archive"
        )
    try:
        return json.loads(path.read_text())
    except (ValueError, UnicodeDecodeError) as err:
        raise EmbeddingsError(f"{path} is not valid JSON ({err}); download or re-embed the archive") from None


def check_info(info: Any, path: Path) -> dict[str, Any]:
    """embeddings_info.json of a possibly downloaded archive, checked field by field (types, bounds, names that
    cannot leave the archive folder); raises EmbeddingsError naming the file and the field."""

    def bad(field: str, why: str) -> EmbeddingsError:
        return EmbeddingsError(
            f"{path}: {field} {why}; this archive was not written by `crjepa embed` as it is "
            "(download it again or re-embed it)"
        )

    if not isinstance(info, dict):
        raise bad("the file", "must hold a JSON object")
    version = info.get("format_version", 1)
    if not isinstance(version, int) or isinstance(version, bool) or version < 1:
        raise bad("format_version", f"must be a positive integer, found {version!r}")
    if version > FORMAT_VERSION:
        raise EmbeddingsError(
            f"{path}: format_version {version} is newer than this crjepa reads ({FORMAT_VERSION}); "
            "upgrade crjepa (pip install -U crjepa)"
        )
    rows = info.get("num_rows")
    if not isinstance(rows, int) or isinstance(rows, bool) or rows < 1:
        raise bad("num_rows", f"must be a positive integer, found {rows!r}")
    dim = info.get("dimension")
    if not isinstance(dim, int) or isinstance(dim, bool) or not 1 <= dim <= MAX_DIMENSION:
        raise bad("dimension", f"must be an integer in [1, {MAX_DIMENSION}], found {dim!r}")
    for field, limit in (("sensors", 64), ("vector_columns", 256), ("metadata_columns", 1024)):
        value = info.get(field, [] if field == "metadata_columns" else None)
        if (
            not isinstance(value, list)
            or not value
            and field != "metadata_columns"
            or len(value) > limit
            or not all(
                isinstance(v, str) and (_NAME.fullmatch(v) or field == "metadata_columns" and _LABEL.fullmatch(v))
                for v in value
            )
        ):
            raise bad(field, f"must be a list of at most {limit} plain names (letters, digits, _ -), found {value!r}")
    for name in info["vector_columns"]:
        sensor, _, space = name.rpartition("_")
        if sensor not in info["sensors"] or space not in SPACES:
            raise bad("vector_columns", f"has {name!r}, not <sensor>_<space> of sensors {info['sensors']}")
    names = info.get("class_names")
    if not isinstance(names, list) or not 0 < len(names) <= MAX_CLASSES or not all(isinstance(n, str) for n in names):
        raise bad("class_names", f"must be a list of 1 to {MAX_CLASSES} strings")
    indices = info.get("indices", {})
    if not isinstance(indices, dict) or not all(
        k in info["vector_columns"] and v in _INDEX_KINDS for k, v in indices.items()
    ):
        raise bad("indices", f"must map vector columns to {sorted(_INDEX_KINDS)}, found {indices!r}")
    fingerprint = info.get("model_fingerprint", "")
    if not isinstance(fingerprint, (str, type(None))) or (
        fingerprint and not re.fullmatch(r"[0-9a-f]{1,64}", fingerprint)
    ):
        raise bad("model_fingerprint", f"must be a hex string, found {fingerprint!r}")
    source = info.get("source", {})
    if not isinstance(source, dict) or not all(
        isinstance(v, (str, int, float, bool, type(None))) for v in source.values()
    ):
        raise bad("source", f"must be an object of scalars, found {source!r}")
    for field in ("model_repo_id", "repo_id"):
        value = info.get(field)
        if value is not None and not is_repo_id(value):
            raise bad(field, f"must be a Hub repo id like 'user/name', found {value!r}")
    if not isinstance(info.get("license"), (str, type(None))):
        raise bad("license", f"must be a string, found {info.get('license')!r}")
    if not all(_CLASS.fullmatch(n) for n in names):
        raise bad("class_names", "must be printable names of at most 1024 characters")
    return info


def vector_width(kind: pa.DataType, name: str, where: str | Path) -> int:
    """The width of a vector column: a fixed-size list of float32 (as `crjepa embed` writes it), else an error."""
    import pyarrow as pa

    if not pa.types.is_fixed_size_list(kind) or not pa.types.is_float32(kind.value_type):
        raise EmbeddingsError(
            f"Column {name!r} of {where} is {kind}, not fixed-size float32 vectors "
            "(fixed_size_list<float>); it was not written by `crjepa embed`: re-embed the archive"
        )
    return int(kind.list_size)


def vector_block(column: pa.FixedSizeListArray, width: int) -> tuple[np.ndarray, np.ndarray | None]:
    """A FixedSizeList column -> float32 (N, width) and its validity (None: no nulls). Null vectors (rows lacking
    the sensor) are zeros in the array; Arrow's flattened values skip them, so they are scattered back."""
    values = column.flatten().to_numpy().reshape(-1, width).astype(np.float32, copy=False)
    if not column.null_count:
        return values, None
    valid = column.is_valid().to_numpy(zero_copy_only=False)
    out = np.zeros((len(column), width), np.float32)
    out[valid] = values
    return out, valid


def read_vector_column(
    folder: str | Path, name: str, dimension: int | None = None, with_validity: bool = False, rows: int | None = None
) -> np.ndarray | tuple[np.ndarray, np.ndarray | None]:
    """One vector column of an archive as float32 (N, R), read Parquet file by file into one preallocated array
    (the peak is the column plus one row group, not the archive: other columns are never read). Null vectors
    (rows lacking the sensor) read as zeros; ``with_validity`` also returns their (N,) bool validity (None: no
    nulls). ``rows``: the archive's row count, which the files' footers must agree with before anything is
    allocated."""
    import pyarrow.parquet as pq

    files = sorted((Path(folder) / DATA_DIR).glob("*.parquet"))
    if not files:
        raise EmbeddingsError(f"The archive at {folder} has no Parquet files under {DATA_DIR}/")
    claimed = sum(pq.ParquetFile(f).metadata.num_rows for f in files)
    if rows is not None and claimed != rows:  # the footers' counts size the array: checked against the rows read
        raise EmbeddingsError(
            f"The Parquet footers of {folder} claim {claimed:,} rows, the archive has {rows:,}; "
            "download or re-embed the archive"
        )
    rows = claimed
    out: np.ndarray | None = None
    validity = np.ones(rows, bool)
    start = 0
    for file in files:
        reader = pq.ParquetFile(file)
        for group in range(reader.num_row_groups):
            column = reader.read_row_group(group, columns=[name])[name].combine_chunks()
            width = vector_width(column.type, name, file)
            if dimension is not None and width != dimension:
                raise EmbeddingsError(f"{file}: column {name!r} holds {width}-d vectors, expected {dimension}-d")
            if out is None:
                out = np.empty((rows, width), dtype=np.float32)
            block, valid = vector_block(column, width)
            out[start : start + len(block)] = block
            if valid is not None:
                validity[start : start + len(block)] = valid
            start += len(block)
    assert out is not None and start == rows
    if with_validity:
        return out, (None if validity.all() else validity)
    return out


__all__ = [
    "DATA_DIR",
    "FORMAT_VERSION",
    "INDEX_DIR",
    "INFO_FILE",
    "MAX_INFO_BYTES",
    "OUTPUT_KIND",
    "EmbeddingsError",
    "check_info",
    "read_info",
    "read_vector_column",
    "vector_block",
    "vector_width",
]
