"""`crjepa index`: faiss indices for an archive folder, calibrated to a recall target, or (``--backend milvus``) one
Milvus collection per vector column, streamed and resumable."""

from __future__ import annotations

import argparse
import json
from pathlib import Path

from crjepa.cli.common import add_milvus_arguments, backend_of, milvus_token, parse_param
from crjepa.utils.arguments import UsageError, fraction


def cmd_index(args: argparse.Namespace) -> int:
    if backend_of(args) == "milvus":
        return _index_milvus(args)
    if args.index_type != "AUTO" or args.overwrite or args.prefix:
        raise UsageError("--index-type, --overwrite and --prefix are for --backend milvus (faiss: --kind)")
    from tqdm.auto import tqdm

    from crjepa.hub.archive.format import INDEX_DIR
    from crjepa.hub.archive.indices import add_indices
    from crjepa.hub.archive.loading import load_embeddings
    from crjepa.search.faiss_files import META_FILE, IndexMetadata
    from crjepa.search.index import describe_calibration

    params = dict(parse_param(p) for p in args.param)
    columns = args.columns or load_embeddings(args.archive, load_indices=False, vectors=False).info["vector_columns"]
    with tqdm(total=len(columns), desc="indexing", unit="column") as bar:
        add_indices(
            args.archive,
            kind=args.kind,
            columns=columns,
            progress=lambda name: bar.update(1),
            recall=args.recall,
            **params,
        )
    for name in columns:
        metadata = IndexMetadata(**json.loads((Path(args.archive) / INDEX_DIR / name / META_FILE).read_text()))
        print(f"{name}: {describe_calibration(metadata)}")
    return 0


def _index_milvus(args: argparse.Namespace) -> int:
    """`crjepa index --backend milvus`: one collection per vector column, streamed from the archive's Parquet
    shards, resumable (`crjepa.search.milvus.index_archive`)."""
    from crjepa.hub.archive.loading import resolve_folder
    from crjepa.search.calibration import DEFAULT_RECALL
    from crjepa.search.milvus import describe, index_archive

    if args.kind != "auto":
        raise UsageError("--kind picks a faiss index; with --backend milvus use --index-type")
    params = dict(parse_param(p) for p in args.param)
    folder = resolve_folder(args.archive, None, None, None)

    def progress(column: str, done: int, rows: int) -> None:
        print(f"{column}: {done}/{rows} rows loaded", flush=True)

    records = index_archive(
        folder,
        args.uri,
        token=milvus_token(args),
        columns=args.columns,
        index_type=args.index_type,
        recall=DEFAULT_RECALL if args.recall is None else args.recall,
        prefix=args.prefix,
        name=args.archive,
        batch_rows=args.batch_rows,
        overwrite=args.overwrite,
        progress=progress,
        **params,
    )
    for column, record in records.items():
        print(f"{column}: {describe(record)}")
    return 0


def add_parser(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser(
        "index",
        help="build faiss indices for an embeddings archive folder",
        description="Build one faiss index per vector column and store it under faiss/.",
    )
    p.add_argument("archive", help="embeddings archive folder")
    p.add_argument(
        "--kind",
        default="auto",
        choices=["auto", "exact", "hnsw", "ivfpq"],
        help="index kind (default auto: exact for small archives, ANN for large ones)",
    )
    p.add_argument("--columns", nargs="+", default=None, help="vector columns to index (default: all)")
    p.add_argument(
        "--param",
        action="append",
        default=[],
        metavar="KEY=VALUE",
        help="index parameter, e.g. --param M=32 (repeatable); fixing a search knob (nprobe, "
        "k_factor, efSearch) turns the recall calibration off",
    )
    p.add_argument(
        "--recall",
        type=fraction,
        default=None,
        help="recall@10 the ANN kinds calibrate to on held-out archive vectors (default 0.95); the "
        "measured recall, #queries, q/s and calibration time are printed and stored",
    )
    add_milvus_arguments(p)
    p.add_argument(
        "--index-type",
        default="auto",
        type=str.upper,
        help="with --backend milvus: AUTO (FLAT below 50k rows, else IVF_FLAT on Milvus Lite, HNSW on a "
        "server, DISKANN from 10M rows), FLAT, IVF_FLAT, IVF_SQ8, HNSW, HNSW_SQ; servers also "
        "IVF_PQ, DISKANN",
    )
    p.add_argument(
        "--batch-rows",
        type=int,
        default=8192,
        help="with --backend milvus: rows per insert; progress is recorded after each (default 8192)",
    )
    p.add_argument(
        "--overwrite",
        action="store_true",
        help="with --backend milvus: drop the collections first (another archive, or another index type)",
    )
    p.set_defaults(func=cmd_index)


__all__ = ["add_parser", "cmd_index"]
