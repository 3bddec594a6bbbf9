"""Time and peak memory of one forward+backward of a CR-JEPA preset on the CPU (BENCHMARKS.md, model step on the CPU).

    python benchmarks/cpu_step.py --preset ben14k --batch 8 --steps 3

Prints a markdown row and a JSON line. Peak memory is the process's max RSS (includes the Python runtime and
the model; the baseline RSS before the first step is reported beside it).
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import resource
import time

import torch

from modeling_crjepa import CRJepaConfig, CRJepaForPreTraining


def max_rss_gb() -> float:
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024**2


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--preset", default="ben14k")
    parser.add_argument("--batch", type=int, default=8)
    parser.add_argument("--steps", type=int, default=3)
    parser.add_argument("--threads", type=int, default=os.cpu_count())
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    torch.manual_seed(0)
    config = CRJepaConfig.from_preset(args.preset)
    model = CRJepaForPreTraining(config).train()
    size = config.image_size
    pixels = {s: torch.randn(args.batch, c, size, size) for s, c in config.sensors.items()}
    rss_before = max_rss_gb()
    times = []
    for step in range(args.steps + 1):  # the first step warms up allocators and is not timed
        start = time.perf_counter()
        out = model(pixels, sigreg_step=step, check_finite=False)
        out.loss.backward()
        model.zero_grad(set_to_none=True)
        times.append(time.perf_counter() - start)
    step_s = sum(times[1:]) / args.steps
    result = {
        "preset": args.preset,
        "batch": args.batch,
        "threads": args.threads,
        "step_s": round(step_s, 3),
        "pairs_per_s": round(args.batch / step_s, 2),
        "peak_rss_gb": round(max_rss_gb(), 2),
        "rss_before_step_gb": round(rss_before, 2),
        "torch": torch.__version__,
        "cpu": platform.processor() or platform.machine(),
        "load": os.getloadavg()[0],
    }
    print(
        f"| {args.preset} | {args.batch} | {step_s:.2f} s | {result['pairs_per_s']} | "
        f"{result['peak_rss_gb']} GB (before: {result['rss_before_step_gb']} GB) |"
    )
    print(json.dumps(result))


if __name__ == "__main__":
    main()
