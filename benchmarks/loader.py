"""Arrow -> torch batch throughput of `crjepa.data.loading.make_dataloader` at BigEarthNet size.

    python benchmarks/loader.py [--pairs 2048] [--batch-size 256] [--workers 0 2] [--epochs 2] [--pairing-rate 1 0.25]

Builds synthetic S1/S2 pairs at 120x120 (S1 2 x float32, S2 12 x uint16: 461 KB per pair, as BEN-14K),
saves them as Arrow and reopens them memory-mapped (what `load_paired_dataset` gives for an exported
Parquet folder or a builder), then times full epochs of shuffled batches (one numpy gather per batch from
the mapped Arrow buffers -> torch, no per-row Python). The first epoch pays the page-cache warm-up; later
epochs show the steady state. Prints pairs/s and MB/s per epoch and worker setting. ``--pairing-rate`` times
partially paired sets too (rows lacking a sensor: null values, zero-filled in the batch, presence masks); MB/s
counts the full batch tensors. Never run by CI.
"""

from __future__ import annotations

import argparse
import os
import platform
import tempfile
import time

import datasets

from crjepa.data.loading import make_dataloader
from datasets_scripts import synthetic


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--pairs", type=int, default=2048)
    parser.add_argument("--image-size", type=int, default=120)
    parser.add_argument("--batch-size", type=int, default=256)
    parser.add_argument("--workers", type=int, nargs="+", default=[0, 2])
    parser.add_argument("--epochs", type=int, default=2)
    parser.add_argument("--pairing-rate", type=float, nargs="+", default=[1.0])
    args = parser.parse_args()
    for rate in args.pairing_rate:
        run(args, rate)


def run(args: argparse.Namespace, rate: float) -> None:
    with tempfile.TemporaryDirectory(prefix="crjepa-loader-bench-") as tmp:
        t0 = time.perf_counter()
        columns = synthetic.to_columns(synthetic.generate(args.pairs, 0, args.image_size, pairing_rate=rate))
        datasets.Dataset.from_dict(columns, features=synthetic.features(args.image_size)).save_to_disk(f"{tmp}/ds")
        del columns
        ds = datasets.load_from_disk(f"{tmp}/ds")  # memory-mapped
        print(
            f"built + saved + opened {len(ds)} rows at {args.image_size}px, pairing rate {rate:g}, in "
            f"{time.perf_counter() - t0:.1f} s"
        )
        pair_bytes = sum(ds.features[s].shape[0] * args.image_size**2 * (4 if s == "s1" else 2) for s in ("s1", "s2"))
        print(
            f"machine: {platform.processor() or platform.machine()}, {os.cpu_count()} cores; "
            f"batch {args.batch_size}; {pair_bytes / 1e3:.0f} KB per pair"
        )
        for workers in args.workers:
            loader = make_dataloader(ds, {"s1": 2, "s2": 12}, args.batch_size, seed=0, num_workers=workers)
            next(iter(loader))  # start workers
            for epoch in range(args.epochs):
                start, n = time.perf_counter(), 0
                for batch in loader:
                    n += batch["s1"].shape[0]
                dt = time.perf_counter() - start
                print(
                    f"num_workers={workers} epoch {epoch}: {n / dt:,.0f} pairs/s "
                    f"({n * pair_bytes / dt / 1e6:,.0f} MB/s)"
                )


if __name__ == "__main__":
    main()
