"""Opening an embeddings archive (`load_embeddings`): a local folder or a Hub dataset repo, every file checked before
it is used (the info field by field, the Parquet files' schema and row count, unique ids, the labels against the
classes, each stored index against the archive's model and ids), all from one version of the folder."""

from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING

import numpy as np

from crjepa.data.labels import LabelRows
from crjepa.hub.access import HubError, reason
from crjepa.hub.archive.format import DATA_DIR, INFO_FILE, EmbeddingsError, read_info, vector_block, vector_width
from crjepa.hub.archive.indices import load_index
from crjepa.hub.archive.search import EmbeddingArchive

if TYPE_CHECKING:
    import pyarrow as pa
    from huggingface_hub import HfApi
    from torch import nn


def resolve_folder(
    repo_or_folder: str | Path,
    api: HfApi | None,
    revision: str | None,
    token: str | None,
    patterns: list[str] | None = None,
) -> Path:
    """A local folder as is; otherwise download the Hub dataset repo (snapshot_download, injectable api; only the
    files matching ``patterns`` when given)."""
    path = Path(repo_or_folder).expanduser()
    if path.is_dir():
        return path
    text = str(repo_or_folder)
    if path.exists() or text.count("/") != 1 or text.startswith((".", "/", "~")):
        raise FileNotFoundError(f"No embeddings folder at {text} (and it is not a Hub repo id like 'user/name')")
    if api is None:
        from huggingface_hub import HfApi

        api = HfApi(token=token)
    try:
        extra = {"allow_patterns": patterns} if patterns else {}
        return Path(api.snapshot_download(text, repo_type="dataset", revision=revision, token=token, **extra))
    except Exception as err:
        raise HubError(f"Cannot download embeddings {text} from the Hub ({reason(err)}).") from err


def load_embeddings(
    repo_or_folder: str | Path,
    api: HfApi | None = None,
    *,
    revision: str | None = None,
    token: str | None = None,
    model: nn.Module | None = None,
    load_indices: bool = True,
    vectors: bool = True,
    milvus_uri: str | None = None,
    milvus_token: str | None = None,
    milvus_prefix: str | None = None,
) -> EmbeddingArchive:
    """Open an embeddings archive from a local folder or a Hub dataset repo.

    Stored faiss indices are loaded and checked against the archive's model fingerprint; missing ones are built
    on first search. With ``model``, the archive must have been embedded by that model. ``vectors=False``
    reads ids, labels and metadata only (``archive.vectors`` is then empty; see `read_vector_column`).
    ``milvus_uri`` (a Milvus Lite ``.db`` path or ``http://host:19530``, with ``milvus_token``): search the
    collections `crjepa index --backend milvus` loaded instead (`crjepa.search.milvus.MilvusArchive`: the same
    search methods and hits, plus filters; only embeddings_info.json is read here).
    """
    from crjepa.utils.atomic import read_consistently

    folder = resolve_folder(repo_or_folder, api, revision, token, [INFO_FILE] if milvus_uri else None)
    if milvus_uri is not None:
        from crjepa.search.milvus import open_archive

        return open_archive(
            folder, milvus_uri, token=milvus_token, prefix=milvus_prefix, model=model, name=str(repo_or_folder)
        )
    # every file from one version of the folder, even while `crjepa embed` replaces it
    return read_consistently(folder, lambda path: _open_archive(path, model, load_indices, vectors))


def _open_archive(folder: Path, model: nn.Module | None, load_indices: bool, vectors: bool = True) -> EmbeddingArchive:
    import pyarrow as pa
    import pyarrow.parquet as pq

    info_path = folder / INFO_FILE
    info = read_info(folder)
    files = sorted((folder / DATA_DIR).glob("*.parquet"))
    if not files:
        raise EmbeddingsError(f"The archive at {folder} has no Parquet files under {DATA_DIR}/")
    wanted = None if vectors else ["id", "labels", *info.get("metadata_columns", [])]
    tables = []
    for file in files:
        try:
            tables.append(pq.read_table(file, columns=wanted))
        except (OSError, pa.ArrowException) as err:
            raise EmbeddingsError(
                f"{file} is not a readable Parquet file ({reason(err)}); download or re-embed the archive"
            ) from None
    try:
        table = pa.concat_tables(tables)
    except pa.ArrowException as err:
        raise EmbeddingsError(f"The Parquet files of {folder} do not share one schema ({reason(err)})") from None
    if table.num_rows == 0:
        raise EmbeddingsError(f"The archive at {folder} is empty (0 rows)")
    needed = ["id", "labels", *(info["vector_columns"] if vectors else []), *info.get("metadata_columns", [])]
    absent = [name for name in needed if name not in table.column_names]
    if absent:
        raise EmbeddingsError(f"The Parquet files of {folder} lack the column(s) {absent} that {INFO_FILE} lists")
    if table.num_rows != info["num_rows"]:
        raise EmbeddingsError(
            f"{info_path}: num_rows is {info['num_rows']} but the Parquet files of {folder} hold "
            f"{table.num_rows} rows; download or re-embed the archive"
        )
    ids = _check_ids(table["id"], folder)
    read_vectors, vectors = vectors, {}
    present: dict[str, np.ndarray] = {}
    for name in info["vector_columns"] if read_vectors else []:
        column = table[name].combine_chunks()
        width = vector_width(column.type, name, folder)
        if width != info["dimension"]:
            raise EmbeddingsError(f"Column {name!r} holds {width}-d vectors but {INFO_FILE} says {info['dimension']}-d")
        vectors[name], valid = vector_block(column, width)
        if valid is not None:
            present[name.rsplit("_", 1)[0]] = valid
    try:
        labels = LabelRows.from_arrow(table["labels"], len(info["class_names"]))
    except (TypeError, ValueError, IndexError, AttributeError, pa.ArrowException) as err:
        raise EmbeddingsError(
            f"The labels of the archive at {folder} do not fit its {len(info['class_names'])} classes ({err})"
        ) from None
    metadata = {name: table[name].to_pylist() for name in info.get("metadata_columns", [])}
    archive = EmbeddingArchive(folder, info, ids, labels, vectors, metadata, {})
    archive.present = present
    if model is not None:
        archive.check_model(model)
    if load_indices:
        for name in info.get("indices", {}):
            rows = present.get(name.rsplit("_", 1)[0]) if read_vectors else None
            ids = archive.ids if rows is None else [i for i, keep in zip(archive.ids, rows) if keep]
            archive.indices[name] = load_index(folder, name, archive.fingerprint, ids, archive.dimension)
    return archive


def _check_ids(column: pa.ChunkedArray, folder: Path) -> list[str]:
    """The archive's ids: strings, none null or empty, none twice (search by id returns one item per id)."""
    from collections import Counter

    if column.null_count:
        raise EmbeddingsError(
            f"The archive at {folder} has {column.null_count} row(s) without an id (null); every "
            "item needs a unique id: re-embed the data with ids"
        )
    ids = [str(i) for i in column.to_pylist()]
    if "" in ids:
        raise EmbeddingsError(f"The archive at {folder} has row(s) with an empty id; every item needs a unique id")
    if len(set(ids)) != len(ids):
        dupes = [i for i, n in Counter(ids).items() if n > 1]
        raise EmbeddingsError(
            f"The archive at {folder} has {len(dupes)} id(s) on more than one row (e.g. "
            f"{dupes[:3]}): search by id would mix those items; re-embed data with unique ids"
        )
    return ids


__all__ = ["load_embeddings", "resolve_folder"]
