"""Does training on rows that lack a sensor help? Paired-only vs everything, by pairing rate.

    python benchmarks/pairing.py                          # rates 1 / 0.5 / 0.25 / 0.1 x (a), (b) x seeds 0 1 2
    python benchmarks/pairing.py --rates 0.25 --seeds 0   # one cell
    python benchmarks/pairing.py --three-sensors          # also S1 + S2 + an RGB view, partially present
    python benchmarks/pairing.py --real data/reben        # also a tiny run on real patches (an export folder)

The built-in synthetic S1/S2 generator with ``pairing_rate`` r: of the 2,000 training rows a share r keeps both
sensors, the rest keep S1 only or S2 only (half each); the 500 test pairs stay paired and are scored on the four
directions (F1@5, test split as queries and gallery). The CR-JEPA model at the CPU budget of benchmarks/quality.py
(tiny preset, batch 64), trained with the same schedule shape (warm-up = the first sixth of the steps):
- (a) paired only: the 2,000 r paired rows (the unpaired ones dropped, as the paper's pipeline would), 186 steps
  (the quality table's 6 epochs of 2,000 pairs: (a) repeats its pairs for 6 / r epochs);
- (b) everything: all 2,000 rows, each loss term on the rows that have its sensors, for as many epochs as (a), so
  each pair is seen as often as in (a); that takes 186 / r steps (more compute: the steps are in the table);
- at 25 % also (a) for (b)'s steps (same compute, pairs only), and (b) with the pairs drawn as half of every epoch
  (``data.pair_share: 0.5``), for (b)'s steps, to separate data from compute and from batch composition.
Writes <out>/pairing.md and <out>/pairing.json (after every run; ``--resume`` keeps finished runs).
"""

from __future__ import annotations

import argparse
import datetime
import json
import sys
import time
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np
import torch

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))
sys.path.insert(0, str(ROOT / "benchmarks"))

import quality  # noqa: E402  (the same training budget, runner and machine line as the quality table)

NUM_TRAIN, NUM_TEST, STEPS, BATCH = 2000, 500, 186, 64
CONFIG = ROOT / "configs" / "ablations" / "loss_all.yaml"
MODES = {
    "a": "(a) paired only",
    "b": "(b) everything",
    "a_long": "(a) paired only, (b)'s steps",
    "b_mix": "(b) everything, pairs = half of each epoch",
}
EXTRA_MODES_AT = 0.25
"""The pairing rate at which the two control rows (same compute; pair-balanced mix) are run too."""


# ---------------------------------------------------------------------------------------------- data
def write_export(ds: Any, folder: Path, name: str) -> Path:
    """A minimal export folder (data/<split>-00000-of-00001.parquet + a card naming it) of a paired Dataset."""
    from crjepa.eval.retrieval import select_split

    (folder / "data").mkdir(parents=True, exist_ok=True)
    for split in sorted(set(ds["split"])):
        select_split(ds, split).to_parquet(str(folder / "data" / f"{split}-00000-of-00001.parquet"))
    (folder / "README.md").write_text(f"---\npretty_name: {name}\n---\n")
    return folder


def synthetic_exports(out: Path, rate: float, num_train: int = NUM_TRAIN) -> dict[str, Path]:
    """(a) and (b) exports of one pairing rate: the same rows, (a) without the rows that lack a sensor."""
    from crjepa.data.loading import load_paired_dataset, presence

    folders = {mode: out / "data" / f"rate-{rate:g}-n{num_train}" / mode for mode in ("a", "b", "single")}
    if all((f / "data").is_dir() for f in folders.values()):
        return folders
    ds = load_paired_dataset(
        "synthetic", num_train=num_train, num_validation=0, num_test=NUM_TEST, image_size=32, seed=0, pairing_rate=rate
    )
    have = presence(ds, ["s1", "s2"])
    write_export(ds, folders["b"], f"synthetic, pairing {rate:g}, everything")
    both = have["s1"] & have["s2"]
    write_export(ds.select(np.flatnonzero(both).tolist()), folders["a"], f"synthetic, pairing {rate:g}, paired only")
    if not both.all():
        write_export(
            ds.select(np.flatnonzero(~both).tolist()),
            folders["single"],
            f"synthetic, pairing {rate:g}, single-sensor rows",
        )
    return folders


def three_sensor_export(out: Path, rate: float = 0.5) -> Path:
    """S1 + S2 + an 8-bit RGB view of S2 (B04, B03, B02): rows of the pairing-rate data set, and RGB dropped from
    every third row that has it, so all three sensors come in several combinations."""
    import datasets

    from crjepa.data.loading import load_paired_dataset

    folder = out / "data" / f"three-sensors-{rate:g}"
    if (folder / "data").is_dir():
        return folder
    ds = load_paired_dataset(
        "synthetic", num_train=NUM_TRAIN, num_validation=0, num_test=NUM_TEST, image_size=32, seed=0, pairing_rate=rate
    )
    rgb = []
    for i, row in enumerate(ds.with_format("numpy")):
        keep = row["s2"] is not None and not (row["split"] == "train" and i % 3 == 0)
        rgb.append((np.asarray(row["s2"])[[3, 2, 1]] // 20).clip(0, 255).astype(np.uint8).tolist() if keep else None)
    feature = datasets.Array3D(shape=(3, 32, 32), dtype="uint8")
    return write_export(ds.add_column("rgb", rgb, feature=feature), folder, f"synthetic S1+S2+RGB, pairing {rate:g}")


def real_partial_export(source: Path, out: Path) -> Path:
    """A real export with S1 removed from every other training row (S2-only rows), for a path check."""
    import datasets

    from crjepa.data.loading import load_paired_dataset

    folder = out / "data" / f"real-{source.name}-partial"
    if (folder / "data").is_dir():
        return folder
    ds = load_paired_dataset(source)
    feature = ds.features["s1"]
    s1 = [
        None if split == "train" and i % 2 else value
        for i, (split, value) in enumerate(zip(ds["split"], ds.with_format("numpy")["s1"]))
    ]
    s1 = [None if v is None else np.asarray(v).tolist() for v in s1]
    features = ds.features.copy()
    ds = ds.remove_columns(["s1"]).add_column("s1", s1, feature=feature)
    ds = ds.cast(datasets.Features({name: features[name] for name in ds.column_names}))
    return write_export(ds, folder, f"{source.name}, S1 removed from half of train")


# ---------------------------------------------------------------------------------------------- runs
def budget(
    folder: Path, rows_per_epoch: int, steps: int = STEPS, extra: dict[str, Any] | None = None
) -> dict[str, Any]:
    """quality.CPU_BUDGET on an export folder, with epochs set so the run makes ``steps`` optimiser steps
    (warm-up: the first sixth of them, as in the quality table's 1 of 6 epochs)."""
    epochs = steps / (rows_per_epoch // BATCH)
    overrides = {k: v for k, v in quality.CPU_BUDGET.items() if not k.startswith("data.options.")}
    overrides.pop("data.name")  # the export's own name
    overrides.update(
        {
            "data.path": str(folder),
            "training.epochs": epochs,
            "training.warmup_epochs": epochs / 6,
            "data.batch_size": BATCH,
        }
    )
    overrides.update(extra or {})
    return overrides


def train_rows(folder: Path) -> int:
    from crjepa.data.loading import load_paired_dataset

    return len(load_paired_dataset(folder, split="train"))


def run(
    name: str,
    folder: Path,
    seed: int,
    out: Path,
    steps: int = STEPS,
    rows_per_epoch: int | None = None,
    extra: dict[str, Any] | None = None,
) -> dict[str, Any]:
    """Train and score one run (quality.run_one); adds each direction's query / gallery counts."""
    rows = rows_per_epoch or train_rows(folder)
    result = quality.run_one(CONFIG, seed, out / "runs" / f"{name}_seed{seed}", budget(folder, rows, steps, extra))
    summary = json.loads((out / "runs" / f"{name}_seed{seed}" / "results.json").read_text())
    result["rows_per_direction"] = summary["trained"].get("direction_counts")
    result["train_rows"] = rows
    return result


def mode_run(mode: str, rate: float, folders: dict[str, Path], seed: int, out: Path) -> dict[str, Any]:
    """One (mode, rate, seed) run as the module docstring describes."""
    pairs = train_rows(folders["a"])
    long_steps = round(STEPS / rate)
    name = f"rate{rate:g}_{mode}"
    if mode == "a":
        return run(name, folders["a"], seed, out, STEPS)
    if mode == "b":
        return run(name, folders["b"], seed, out, long_steps)
    if mode == "a_long":
        return run(name, folders["a"], seed, out, long_steps)
    singles = train_rows(folders["b"]) - pairs
    epoch_rows = int(max(pairs / 0.5, singles / 0.5))  # combine_datasets: no part subsampled
    result = run(name, folders["b"], seed, out, long_steps, epoch_rows, {"data.pair_share": 0.5})
    result["train_rows"] = pairs + singles
    return result


# ---------------------------------------------------------------------------------------------- report
def cell(values: Sequence[float]) -> str:
    mean, std = quality.mean_std([v * 100 for v in values])
    return f"{mean:.2f} ± {std:.2f}"


def to_markdown(report: dict[str, Any]) -> str:
    lines = [
        f"Machine: {report['machine']}. Date: {report['date']}. Seeds: {report['seeds']}. Each run: CR-JEPA "
        f"(configs/ablations/loss_all.yaml), tiny preset, batch {BATCH}, test split ({NUM_TEST} pairs) scored. "
        "F1@5 (%), mean ± std over seeds; the last column is the row minus (a) of the same rate.",
        "",
        "| pairing | run | training rows | steps | S1→S1 | S2→S2 | S1→S2 | S2→S1 | minus (a) |",
        "|---|---|---|---|---|---|---|---|---|",
    ]
    directions = ["s1->s1", "s2->s2", "s1->s2", "s2->s1"]
    for rate, modes in report["rates"].items():
        for mode in MODES:
            runs = modes.get(mode, [])
            if not runs:
                continue
            cells = [cell([r["scores"][d] for r in runs]) for d in directions]
            delta = ""
            if mode != "a" and modes.get("a"):
                diffs = [
                    np.mean([r["scores"][d] for r in runs]) - np.mean([r["scores"][d] for r in modes["a"]])
                    for d in directions
                ]
                delta = " / ".join(f"{x * 100:+.2f}" for x in diffs)
            lines.append(
                f"| {float(rate) * 100:g} % | {MODES[mode]} | {runs[0]['train_rows']:,} | {runs[0]['steps']} | "
                + " | ".join(cells)
                + f" | {delta} |"
            )
    for title, key in (("Three sensors (S1 + S2 + RGB view of S2)", "three"), ("Real patches", "real")):
        for label, runs in report.get(key, {}).items():
            scores = runs[0]["scores"]
            lines += [
                "",
                f"{title}, {label}, seed {runs[0]['seed']}, {runs[0]['steps']} steps: F1@5 (%) per direction"
                + (
                    f" (queries / gallery: {runs[0]['rows_per_direction']})"
                    if runs[0].get("rows_per_direction")
                    else ""
                ),
                "",
                "| " + " | ".join(d.upper() for d in scores) + " |",
                "|" + "---|" * len(scores),
                "| " + " | ".join("n/a" if v is None else f"{v * 100:.2f}" for v in scores.values()) + " |",
            ]
    return "\n".join(lines) + "\n"


def main(argv: Sequence[str] | None = None) -> dict[str, Any]:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rates", nargs="+", type=float, default=[1.0, 0.5, 0.25, 0.1])
    parser.add_argument("--seeds", nargs="+", type=int, default=[0, 1, 2])
    parser.add_argument("--three-sensors", action="store_true", help="also a three-sensor run (seed 0)")
    parser.add_argument("--real", type=Path, default=None, help="an export folder of real pairs for a tiny run")
    parser.add_argument("--output-dir", type=Path, default=Path("outputs/pairing"))
    parser.add_argument("--resume", action="store_true")
    parser.add_argument("--threads", type=int, default=1)
    args = parser.parse_args(argv)
    torch.set_num_threads(args.threads)
    out = args.output_dir
    out.mkdir(parents=True, exist_ok=True)
    json_path = out / "pairing.json"
    report = json.loads(json_path.read_text()) if args.resume and json_path.is_file() else {}
    report.update(date=datetime.date.today().isoformat(), machine=quality.machine(), seeds=args.seeds)
    report.setdefault("rates", {})
    started = time.perf_counter()

    def save() -> None:
        report["seconds"] = round(time.perf_counter() - started, 1)
        report["markdown"] = to_markdown(report)
        json_path.write_text(json.dumps(report, indent=2) + "\n")
        (out / "pairing.md").write_text(report["markdown"])

    for rate in args.rates:
        folders = synthetic_exports(out, rate)
        modes = report["rates"].setdefault(str(rate), {})
        wanted = ["a"] if rate == 1 else ["a", "b"] + (["a_long", "b_mix"] if rate == EXTRA_MODES_AT else [])
        for seed in args.seeds:
            for mode in wanted:  # at 100 % (a) and (b) are the same data and the same run
                done = modes.setdefault(mode, [])
                if any(r["seed"] == seed for r in done):
                    continue
                print(f"=== pairing {rate:g}, {MODES[mode]}, seed {seed}", flush=True)
                result = mode_run(mode, rate, folders, seed, out)
                done.append(result)
                print(
                    f"    {result['seconds']} s, {result['steps']} steps: "
                    + ", ".join(f"{d} {v * 100:.2f}" for d, v in result["scores"].items()),
                    flush=True,
                )
                save()
    if args.three_sensors and not report.get("three"):
        folder = three_sensor_export(out)
        from modeling_crjepa.configuration_crjepa import PRESETS

        preset = PRESETS["tiny"]
        extra = {
            "model.sensors": {**preset["sensors"], "rgb": 3},
            "model.band_names": {**preset["band_names"], "rgb": ["R", "G", "B"]},
            "model.band_mean": {**preset["band_mean"], "rgb": [100.0] * 3},
            "model.band_std": {**preset["band_std"], "rgb": [50.0] * 3},
        }
        print("=== three sensors, seed 0", flush=True)
        result = run("three_sensors", folder, 0, out, STEPS * 2, extra=extra)
        report["three"] = {"pairing 0.5, RGB dropped from every third train row": [result]}
        save()
    if args.real is not None and not report.get("real"):
        folder = real_partial_export(args.real.resolve(), out)
        extra = {
            "data.batch_size": 4,
            "training.epochs": 1,
            "training.max_steps": 4,
            "eval.k": 3,
            "eval.query_split": "train",
            "training.warmup_epochs": 0,
        }  # the fixture's splits hold 1-18 rows
        print(f"=== real patches ({args.real}), seed 0", flush=True)
        result = run("real", folder, 0, out, 4, rows_per_epoch=64, extra=extra)
        report["real"] = {f"{args.real.name}, S1 removed from every other train row": [result]}
        save()
    save()
    print("\n" + report["markdown"])
    return report


if __name__ == "__main__":
    main()
