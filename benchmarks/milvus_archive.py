"""An archive in Milvus Lite beside faiss, on the same vectors in the same run: load time, q/s, recall@10.

For each ``--n`` (default 100,000 and 1,000,000) x ``--dim`` (256): unit vectors around ``--clusters`` (default n / 100)
random centres with Gaussian noise of norm ``--spread`` (1.0): at 1M the default archive of benchmarks/faiss_archive.py,
written as an embeddings archive (one vector column, a ``tile`` metadata column, Parquet shards of 65,536 rows);
``--queries`` (1,000) fresh vectors drawn the same way; their exact top-10 (faiss.knn) is the truth.

Rows, each in its own process (so the peak RSS is the engine's):
  faiss        `crjepa index ARCHIVE` as the CLI runs it (`add_indices`, kind auto, recall 0.95), then
               `RetrievalIndex.search` of all queries in one call;
  milvus-T     `crjepa index ARCHIVE --backend milvus --uri X.db --index-type T` (`index_archive`, recall 0.95:
               streamed insert, index build, calibration, held-out rows) into Milvus Lite, then
               `MilvusIndex.search` of all queries in one call (the calibrated search params).
Load = the whole command (faiss: build + calibration; Milvus: insert + index + load + calibration); insert = the
streamed insert alone. q/s: the fastest of repeated batched calls (`crjepa.search.calibration.timed_qps`).

    python benchmarks/milvus_archive.py                              # 1e5 and 1e6 x 256: ~30 min on 2 cores
    python benchmarks/milvus_archive.py --n 100000 --types IVF_FLAT  # one size, one index type
"""

from __future__ import annotations

import argparse
import datetime
import json
import platform
import resource
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path

# isort: off
import crjepa.search  # noqa: F401 -- before faiss: picks OpenBLAS's kernels (crjepa/search/blas.py)

# isort: on
import faiss
import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent))
from faiss_archive import clustered_unit_vectors  # noqa: E402


def make_archive(folder: Path, n: int, dim: int, clusters: int, spread: float, queries: int, seed: int) -> None:
    """The archive folder, the fresh queries (queries.npy) and their exact top-10 ids (truth.npy)."""
    from crjepa.hub.archive import write_embeddings_dataset

    rng = np.random.default_rng(seed)
    centres = rng.standard_normal((clusters, dim), dtype=np.float32)
    centres /= np.linalg.norm(centres, axis=1, keepdims=True)
    x = clustered_unit_vectors(rng, centres, n, spread)
    q = clustered_unit_vectors(rng, centres, queries, spread)
    ids = [f"p{i:08d}" for i in range(n)]
    write_embeddings_dataset(
        folder / "archive",
        ids,
        [[i % 19] for i in range(n)],
        [f"class{c}" for c in range(19)],
        {"s2_unified": x},
        {"tile": [f"T{i % 97:02d}" for i in range(n)]},
        model_fingerprint="0123abcd",
        rows_per_shard=65_536,
    )
    truth = faiss.knn(q, x, 10, metric=faiss.METRIC_INNER_PRODUCT)[1]
    np.save(folder / "queries.npy", q)
    np.save(folder / "truth.npy", np.asarray(ids)[truth])


def recall_at_10(found: np.ndarray, truth: np.ndarray) -> float:
    return float((found[:, :10, None] == truth[:, None, :]).any(axis=2).sum(axis=1).mean() / 10)


def run_part(folder: Path, engine: str) -> dict:
    """One row: load the archive with ``engine`` ("faiss" or "milvus-<TYPE>"), then search the fresh queries."""
    from crjepa.search.calibration import timed_qps

    q, truth = np.load(folder / "queries.npy"), np.load(folder / "truth.npy")
    archive = folder / "archive"
    row: dict = {"engine": engine}
    if engine == "faiss":
        from crjepa.hub.archive import add_indices, load_embeddings

        t0 = time.perf_counter()
        add_indices(archive, kind="auto", recall=0.95)
        row["load_s"] = round(time.perf_counter() - t0, 1)
        index = load_embeddings(archive, vectors=False).indices["s2_unified"]
        row.update(
            index=index.metadata.kind,
            params=index.metadata.params,
            calibrated_recall=index.metadata.calibration.get("recall"),
        )
        search = lambda: index.search(q, 10)[1]  # noqa: E731
    else:
        from crjepa.search.milvus import index_archive, open_archive

        kind = engine.split("-", 1)[1]
        uri = str(folder / f"{kind}.db")
        shutil.rmtree(uri, ignore_errors=True)
        marks: list[float] = []
        t0 = time.perf_counter()
        record = index_archive(
            archive,
            uri,
            index_type=kind,
            recall=0.95,
            batch_rows=8192,
            progress=lambda column, done, rows: marks.append(time.perf_counter()),
        )
        row["load_s"] = round(time.perf_counter() - t0, 1)
        row["insert_s"] = round(marks[-1] - t0, 1)
        record = record["s2_unified"]
        row.update(
            index=record["index_type"],
            params={**record["build"], **record["search"]},
            calibrated_recall=record["calibration"].get("recall"),
            calibration_s=record["calibration"].get("seconds"),
        )
        index = open_archive(archive, uri).index("s2_unified")
        search = lambda: index.search(q, 10)[1]  # noqa: E731
    row["recall@10"] = round(recall_at_10(search(), truth), 4)
    row["qps"] = round(timed_qps(search, len(q), min_s=1.0, max_s=5.0))
    row["peak_rss_mib"] = round(resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024)
    return row


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--n", type=int, nargs="+", default=[100_000, 1_000_000])
    parser.add_argument("--dim", type=int, default=256)
    parser.add_argument("--clusters", type=int, default=None, help="default: n / 100 (100 points per cluster)")
    parser.add_argument("--spread", type=float, default=1.0)
    parser.add_argument("--queries", type=int, default=1000)
    parser.add_argument("--types", nargs="+", default=["IVF_FLAT", "HNSW"], help="Milvus Lite index types")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--output", default=None, help="also write the rows as JSON here")
    parser.add_argument("--part", nargs=2, metavar=("FOLDER", "ENGINE"), help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.part:
        print(json.dumps(run_part(Path(args.part[0]), args.part[1])), flush=True)
        return
    import pymilvus

    from crjepa.search.index import available_cpus

    header = {
        "date": datetime.datetime.now().isoformat(timespec="minutes"),
        "machine": platform.platform(),
        "cpus": available_cpus(),
        "faiss": faiss.__version__,
        "pymilvus": pymilvus.__version__,
        "milvus_lite": _version("milvus_lite"),
    }
    print(json.dumps(header), flush=True)
    rows = []
    for n in args.n:
        with tempfile.TemporaryDirectory() as tmp:
            folder = Path(tmp)
            t0 = time.perf_counter()
            make_archive(folder, n, args.dim, args.clusters or n // 100, args.spread, args.queries, args.seed)
            print(f"# n={n}: archive written in {time.perf_counter() - t0:.0f} s", flush=True)
            for engine in ["faiss", *(f"milvus-{t}" for t in args.types)]:
                done = subprocess.run(
                    [sys.executable, __file__, "--part", str(folder), engine], capture_output=True, text=True
                )
                if done.returncode:
                    print(f"# {engine} failed:\n{done.stderr[-3000:]}", flush=True)
                    continue
                row = {"n": n, **json.loads(done.stdout.strip().splitlines()[-1])}
                rows.append(row)
                print(json.dumps(row), flush=True)
    if args.output:
        Path(args.output).write_text(json.dumps({"header": header, "rows": rows}, indent=2))
    print("\n| n | engine | index (search params) | load s (insert s) | q/s | recall@10 | peak RSS MiB |")
    print("|---|---|---|---|---|---|---|")
    for r in rows:
        insert = f" ({r['insert_s']})" if "insert_s" in r else ""
        print(
            f"| {r['n']:,} | {r['engine']} | {r['index']} {r['params']} | {r['load_s']}{insert} | {r['qps']:,} | "
            f"{r['recall@10']} | {r['peak_rss_mib']:,} |"
        )


def _version(module: str) -> str:
    try:
        return __import__(module).__version__
    except (ImportError, AttributeError):
        return "?"


if __name__ == "__main__":
    main()
