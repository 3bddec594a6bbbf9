"""Sharded embedding on the CPU: images/s against processes, and peak memory against archive size.

Input: a Parquet folder of ``--rows`` synthetic pairs (tiny preset, 32 px model input; the synthetic export's
``--base`` rows copied with new ids, so building the input costs no image generation), read by `crjepa embed`
through `datasets`' streaming Parquet reader. Each run is one `crjepa embed` process tree timed from outside;
peak RSS is the largest resident set of any process of the tree (sampled every 50 ms from /proc).

    python benchmarks/embed_scale.py --rows 10000 --processes 1 2
    python benchmarks/embed_scale.py --rows 10000 100000 1000000 --processes 1
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import pyarrow as pa
import pyarrow.parquet as pq

REPO = Path(__file__).resolve().parents[1]


def make_input(folder: Path, rows: int, base: Path) -> Path:
    """``rows`` pairs as Parquet files of the base export's size, ids made unique per copy."""
    table = pq.read_table(next(base.glob("data/test-*.parquet")))
    (folder / "data").mkdir(parents=True)
    copies = -(-rows // table.num_rows)
    for c in range(copies):
        part = table.slice(0, min(table.num_rows, rows - c * table.num_rows))
        ids = pa.array([f"{i}-{c}" for i in part["id"].to_pylist()])
        part = part.set_column(part.schema.get_field_index("id"), part.schema.field("id"), ids)
        pq.write_table(part, folder / "data" / f"test-{c:05d}-of-{copies:05d}.parquet")
    return folder


def tree_rss_kib(pid: int) -> int:
    """Largest VmRSS among ``pid`` and its descendants."""
    best, todo = 0, [pid]
    while todo:
        p = todo.pop()
        try:
            for line in Path(f"/proc/{p}/status").read_text().splitlines():
                if line.startswith("VmRSS:"):
                    best = max(best, int(line.split()[1]))
            for t in Path(f"/proc/{p}/task").iterdir():
                todo += [int(c) for c in (t / "children").read_text().split()]
        except (OSError, ValueError):
            pass
    return best


def run(model: Path, data: Path, out: Path, processes: int, batch: int) -> dict:
    command = [
        sys.executable,
        "-m",
        "crjepa.cli",
        "embed",
        str(model),
        str(data),
        "--split",
        "test",
        "-o",
        str(out),
        "--device",
        "cpu",
        "--batch-size",
        str(batch),
        "--shard-rows",
        "4096",
        "--num-processes",
        str(processes),
    ]
    env = {**os.environ, "PYTHONPATH": str(REPO), "HF_HUB_OFFLINE": "1"}
    t0 = time.perf_counter()
    proc = subprocess.Popen(command, env=env, stdout=subprocess.PIPE, stderr=subprocess.DEVNULL, text=True)
    peak = 0
    while proc.poll() is None:
        peak = max(peak, tree_rss_kib(proc.pid))
        time.sleep(0.05)
    wall = time.perf_counter() - t0
    if proc.returncode:
        raise SystemExit(f"embed failed: {proc.stdout.read()}")
    return {"wall_s": round(wall, 1), "peak_rss_mib": round(peak / 1024)}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--rows", type=int, nargs="+", default=[10_000])
    parser.add_argument("--processes", type=int, nargs="+", default=[1, 2])
    parser.add_argument("--batch", type=int, default=64)
    parser.add_argument("--base", type=int, default=1000, help="rows of the synthetic export that are copied")
    args = parser.parse_args()
    import torch

    from modeling_crjepa import CRJepaConfig, CRJepaModel

    with tempfile.TemporaryDirectory() as tmp:
        root = Path(tmp)
        torch.manual_seed(0)
        CRJepaModel(CRJepaConfig.from_preset("tiny")).save_pretrained(root / "model")
        subprocess.run(
            [
                sys.executable,
                "-m",
                "datasets_scripts",
                "synthetic",
                "--num-train",
                "0",
                "--num-validation",
                "0",
                "--num-test",
                str(args.base),
                "--image-size",
                "32",
                "--output-dir",
                str(root / "base"),
            ],
            check=True,
            capture_output=True,
            env={**os.environ, "PYTHONPATH": str(REPO)},
        )
        rows_out = []
        for rows in args.rows:
            data = make_input(root / f"in-{rows}", rows, root / "base")
            for processes in args.processes:
                res = run(root / "model", data, root / f"out-{rows}-{processes}", processes, args.batch)
                res |= {
                    "rows": rows,
                    "processes": processes,
                    "images_per_s": round(2 * rows / res["wall_s"], 1),
                    "load": round(os.getloadavg()[0], 2),
                }
                print(json.dumps(res), flush=True)
                rows_out.append(res)
                shutil.rmtree(root / f"out-{rows}-{processes}")
            shutil.rmtree(data)
    print("| rows | processes | wall s (incl. start-up) | images/s | peak RSS MiB | load |")
    print("|---|---|---|---|---|---|")
    for r in rows_out:
        cells = (f"{r['rows']:,}", r["processes"], r["wall_s"], r["images_per_s"], r["peak_rss_mib"], r["load"])
        print("| " + " | ".join(map(str, cells)) + " |")


if __name__ == "__main__":
    main()
