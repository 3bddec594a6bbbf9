"""Side-by-side retrieval quality of CR-JEPA, its ablations and the baselines, in the paper's table layout.

    python benchmarks/quality.py                                   # 7 variants x 3 seeds, synthetic data, tiny
    python benchmarks/quality.py --variants cr-jepa head_single --seeds 0 1 2 3 4
    python benchmarks/quality.py --data /data/ben14k_parquet --set model.preset=ben14k --set training.epochs=400

Every variant is a training YAML (configs/ablations/*.yaml, configs/baselines/*.yaml, or any path) trained by
`train_accelerate.train` itself -- the same loop, data, budget and seeds for all -- and scored on the four
directions (rows = variants, columns S1->S1, S2->S2, S1->S2, S2->S1, headline metric, mean +- std over seeds).
On the built-in synthetic data the budget is the CPU one (`CPU_BUDGET`: tiny preset, a few epochs); `--set
key=value` changes any training key for every run. Per run it also records the last logged loss terms and
statistics of the evaluated embeddings (paired cosine, cosine to other items, effective rank), so a table that
breaks the paper's shape can be explained. Writes <out>/quality.md and <out>/quality.json (updated after every
run; `--resume` skips runs already there).
"""

from __future__ import annotations

import argparse
import datetime
import json
import os
import platform
import statistics
import sys
import time
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np
import torch

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

import train_accelerate  # noqa: E402  (the training script is the one source of the training loop)

VARIANTS: dict[str, str] = {
    "CR-JEPA": "configs/ablations/loss_all.yaml",
    "single head": "configs/ablations/head_single.yaml",
    "pred+cross": "configs/ablations/loss_pred_cross.yaml",
    "without SIGReg": "configs/ablations/loss_no_sigreg.yaml",
    "dual encoder (separate trunks)": "configs/ablations/trunk_separate.yaml",
    "X-JEPA-style": "configs/baselines/xjepa.yaml",
    "contrastive": "configs/baselines/contrastive.yaml",
}
"""The default rows: the paper's full model, the ablations that matter most, and the two baselines."""

CPU_BUDGET: dict[str, Any] = {
    "model.preset": "tiny",
    "data.source": "synthetic",
    "data.path": None,
    "data.batch_size": 64,
    "data.num_workers": 0,
    "data.name": "synthetic-s1s2",
    "data.options.num_train": 2000,
    "data.options.num_validation": 0,
    "data.options.num_test": 500,
    "data.options.image_size": 32,
    "data.options.seed": 0,
    "training.epochs": 6,
    "training.lr_start": 1.0e-4,
    "training.lr": 2.0e-3,
    "training.lr_end": 1.0e-6,
    "training.warmup_epochs": 1,
    "training.mixed_precision": "no",
    "eval.query_split": "test",
    "eval.gallery_split": None,
    "eval.before_training": False,
    "eval.every_epochs": None,
    "eval.every_steps": None,
    "eval.batch_size": 250,
    "embeddings.write": False,
    "embeddings.split": "test",
    "checkpoint.every_steps": 0,
    "checkpoint.keep_last": 1,
    "logging.report_to": "none",
    "logging.progress_bar": False,
    "logging.every_steps": 10,
}
"""Overrides of every run on the built-in synthetic data: configs/cpu_default.yaml's data, schedule and size (the
tiny preset, 2,000 training pairs, batch 64, 6 epochs = 186 steps, peak lr 2e-3), test split (500 pairs) scored."""

DATA_BUDGET: dict[str, Any] = {
    key: CPU_BUDGET[key]
    for key in (
        "eval.before_training",
        "embeddings.write",
        "checkpoint.every_steps",
        "checkpoint.keep_last",
        "logging.report_to",
        "logging.progress_bar",
    )
}
"""Overrides of every run on a given data folder: the variant's own sizes and schedule, no extras."""


# ---------------------------------------------------------------------------------------------- runs
def variant_path(name_or_path: str) -> tuple[str, Path]:
    """(row name, YAML path) of a variant: a VARIANTS name, an ablation/baseline file stem, or a path."""
    lowered = {k.lower(): k for k in VARIANTS}
    if name_or_path.lower() in lowered:
        name = lowered[name_or_path.lower()]
        return name, ROOT / VARIANTS[name]
    for folder in ("ablations", "baselines"):
        candidate = ROOT / "configs" / folder / f"{name_or_path}.yaml"
        if candidate.is_file():
            return name_or_path, candidate
    path = Path(name_or_path)
    if path.is_file():
        return path.stem, path
    raise SystemExit(
        f"Unknown variant {name_or_path!r}: give one of {list(VARIANTS)}, a file stem under "
        "configs/ablations or configs/baselines, or a YAML path"
    )


def run_argv(config: Path, seed: int, output_dir: Path, overrides: dict[str, Any]) -> list[str]:
    """The training script's command line for one run (values as JSON, which parses as the same YAML scalar:
    the string "no" stays a string)."""
    argv = ["--config", str(config), "--seed", str(seed), "--output_dir", str(output_dir)]
    for key, value in overrides.items():
        argv += [f"--{key}", json.dumps(value)]
    return argv


def last_losses(output_dir: Path) -> dict[str, float]:
    """The last logged training loss terms of a run (train_log.jsonl)."""
    log = output_dir / train_accelerate.TRAIN_LOG_FILE
    if not log.is_file():
        return {}
    lines = [line for line in log.read_text().splitlines() if line.strip()]
    last = json.loads(lines[-1]) if lines else {}
    return {
        k.removeprefix("train/"): round(float(v), 4)
        for k, v in last.items()
        if k.removeprefix("train/").split("/")[0] in LOSS_TERMS
    }


LOSS_TERMS = ("loss", "pred", "cross", "uni", "sigreg", "mahalanobis", "variance", "covariance", "contrastive")
"""The logged loss terms (train/<term> and train/<term>/<route or pair>, from the model's loss_terms())."""


def effective_rank(x: np.ndarray) -> float:
    """exp(entropy) of the normalised singular values of the centred embeddings: how many dimensions are used."""
    s = np.linalg.svd(x - x.mean(0), compute_uv=False)
    p = s / max(s.sum(), 1e-12)
    p = p[p > 0]
    return float(np.exp(-(p * np.log(p)).sum()))


def embedding_stats(
    vectors: dict[str, np.ndarray], sensors: Sequence[str], present: dict[str, np.ndarray] | None = None
) -> dict[str, float]:
    """Per space: cosine of the co-registered pair (the first two sensors, on the rows that have both), cosine
    to other items (of the other sensor), the pair's top-1 cross-modal hit rate, and each sensor's effective rank
    (on its own rows). Vectors are unit length."""
    a, b = sensors[:2]
    present = present or {}
    rows = {s: present.get(s, np.ones(len(vectors[f"{s}_cross"]), bool)) for s in sensors}
    both = rows[a] & rows[b]
    stats: dict[str, float] = {}
    for space in ("unified", "cross"):
        va, vb = vectors[f"{a}_{space}"][both], vectors[f"{b}_{space}"][both]
        sim = va @ vb.T
        n = len(sim)
        stats[f"{space}/pair_cos"] = float(np.diag(sim).mean())
        stats[f"{space}/other_cos"] = float((sim.sum() - np.trace(sim)) / max(n * (n - 1), 1))
        stats[f"{space}/pair_top1"] = float((sim.argmax(1) == np.arange(n)).mean())
        for sensor in sensors:
            stats[f"{space}/{sensor}_rank"] = effective_rank(vectors[f"{sensor}_{space}"][rows[sensor]])
    return {k: round(v, 4) for k, v in stats.items()}


def measure_embeddings(model_dir: Path, config: dict[str, Any]) -> dict[str, float]:
    """Embed the evaluation split with the saved model and summarise the embeddings (see embedding_stats)."""
    from transformers import AutoModel

    import crjepa.baselines.models  # noqa: F401  (registers the baseline classes with AutoModel)
    from crjepa.eval.retrieval import compute_embeddings, select_split

    model = AutoModel.from_pretrained(model_dir).eval()
    dataset = train_accelerate.load_data(config, model.config)
    embeddings = compute_embeddings(
        model, select_split(dataset, config["eval"]["query_split"]), batch_size=config["eval"]["batch_size"]
    )
    return embedding_stats(embeddings.vectors, model.config.sensor_names, embeddings.present)


def run_one(config: Path, seed: int, output_dir: Path, overrides: dict[str, Any]) -> dict[str, Any]:
    """Train and score one (variant, seed) with the training script; returns its scores and diagnostics."""
    from crjepa.train.config import load_run_config, parse_cli

    argv = run_argv(config, seed, output_dir, overrides)
    start = time.perf_counter()
    summary = train_accelerate.train(argv)
    seconds = time.perf_counter() - start
    trained = summary["trained"]
    metric = next(iter(trained["metrics"]))
    run_config = load_run_config(*parse_cli(argv))
    return {
        "seed": seed,
        "seconds": round(seconds, 1),
        "train_seconds": round(summary["train_seconds"], 1),
        "steps": summary["steps"],
        "metric": metric,
        "scores": trained["metrics"][metric],
        "losses": last_losses(output_dir),
        "embeddings": measure_embeddings(Path(summary["model_dir"]), run_config),
    }


# ---------------------------------------------------------------------------------------------- table
def mean_std(values: Sequence[float]) -> tuple[float, float]:
    """Mean and sample standard deviation (0 for a single value)."""
    return statistics.fmean(values), statistics.stdev(values) if len(values) > 1 else 0.0


def summarise(runs: dict[str, list[dict[str, Any]]]) -> dict[str, dict[str, list[float]]]:
    """{variant: {direction: [mean, std] in %}} over the runs of each variant."""
    table = {}
    for variant, results in runs.items():
        if not results:
            continue
        directions = list(results[0]["scores"])
        table[variant] = {
            d: [round(x * 100, 2) for x in mean_std([r["scores"][d] for r in results])] for d in directions
        }
    return table


def to_markdown(table: dict[str, dict[str, list[float]]], metric: str, runs: dict[str, list[dict[str, Any]]]) -> str:
    """Rows = variants, columns = the four directions (a->a, b->b, a->b, b->a), mean ± std in %."""
    if not table:
        return "(no runs)"
    directions = list(next(iter(table.values())))
    header = "| variant | seeds | " + " | ".join(d.upper().replace("->", "→") for d in directions) + " |"
    lines = [f"{metric} (%), mean ± std over seeds", "", header, "|---|---|" + "---|" * len(directions)]
    for variant, scores in table.items():
        cells = " | ".join(f"{m:.2f} ± {s:.2f}" for m, s in (scores[d] for d in directions))
        lines.append(f"| {variant} | {len(runs[variant])} | {cells} |")
    return "\n".join(lines)


def diagnostics_markdown(runs: dict[str, list[dict[str, Any]]]) -> str:
    """Mean over seeds of the final loss terms and of the embedding statistics, one row per variant."""
    lines = []
    for key, title in (("losses", "Last logged loss terms"), ("embeddings", "Embedding statistics (test split)")):
        names = sorted({n for results in runs.values() for r in results for n in r.get(key, {})})
        if not names:
            continue
        lines += [
            "",
            f"{title}, mean over seeds",
            "",
            "| variant | " + " | ".join(names) + " |",
            "|---|" + "---|" * len(names),
        ]
        for variant, results in runs.items():
            cells = []
            for name in names:
                values = [r[key][name] for r in results if name in r.get(key, {})]
                cells.append(f"{statistics.fmean(values):.3f}" if values else "-")
            lines.append(f"| {variant} | " + " | ".join(cells) + " |")
    return "\n".join(lines)


def machine() -> str:
    return (
        f"{platform.processor() or platform.machine()}, {os.cpu_count()} CPU cores, torch {torch.__version__}, "
        f"load {os.getloadavg()[0]:.1f}"
    )


def parse_set(pairs: Sequence[str]) -> dict[str, Any]:
    """``key=value`` strings -> {key: YAML scalar}."""
    from crjepa.train.config import parse_scalar

    out = {}
    for pair in pairs:
        key, sep, value = pair.partition("=")
        if not sep:
            raise SystemExit(f"--set expects key=value, found {pair!r}")
        out[key.strip()] = parse_scalar(value)
    return out


def main(argv: Sequence[str] | None = None) -> dict[str, Any]:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument(
        "--variants",
        nargs="+",
        default=list(VARIANTS),
        help="VARIANTS names, configs/ablations|baselines file stems, or YAML paths",
    )
    parser.add_argument("--seeds", nargs="+", type=int, default=[0, 1, 2])
    parser.add_argument(
        "--data",
        default=None,
        help="a Parquet folder (e.g. BEN-14K); default: the built-in synthetic pairs at CPU budget",
    )
    parser.add_argument(
        "--set",
        nargs="*",
        default=[],
        metavar="KEY=VALUE",
        help="training keys for every run, e.g. training.epochs=4 data.options.train=4000",
    )
    parser.add_argument("--output-dir", default="outputs/quality")
    parser.add_argument("--resume", action="store_true", help="keep the runs already in quality.json")
    parser.add_argument(
        "--threads",
        type=int,
        default=1,
        help="torch CPU threads (default 1: on a shared 2-core machine 2 threads ran the tiny step "
        "25x slower than 1; 0 keeps torch's default)",
    )
    args = parser.parse_args(argv)
    if args.threads:
        torch.set_num_threads(args.threads)

    overrides = dict(CPU_BUDGET) if args.data is None else {**DATA_BUDGET, "data.source": args.data, "data.path": None}
    overrides.update(parse_set(args.set))
    out = Path(args.output_dir)
    out.mkdir(parents=True, exist_ok=True)
    json_path = out / "quality.json"
    variants = [variant_path(v) for v in args.variants]
    previous = json.loads(json_path.read_text()) if args.resume and json_path.is_file() else {}
    runs: dict[str, list[dict[str, Any]]] = {
        name: [r for r in previous.get("runs", {}).get(name, []) if r["seed"] in args.seeds] for name, _ in variants
    }
    report: dict[str, Any] = {}
    started = time.perf_counter()
    for name, config in variants:
        for seed in args.seeds:
            if any(r["seed"] == seed for r in runs[name]):
                continue
            print(
                f"=== {name} ({config.relative_to(ROOT) if config.is_relative_to(ROOT) else config}), seed {seed}",
                flush=True,
            )
            slug = "".join(c if c.isalnum() else "_" for c in name.lower())
            result = run_one(config, seed, out / "runs" / f"{slug}_seed{seed}", overrides)
            runs[name].append(result)
            print(
                f"    {result['seconds']} s, {result['metric']}: "
                + ", ".join(f"{d} {v * 100:.2f}" for d, v in result["scores"].items()),
                flush=True,
            )
            report = write_report(out, runs, variants, overrides, args.seeds, time.perf_counter() - started)
    report = write_report(out, runs, variants, overrides, args.seeds, time.perf_counter() - started)
    print("\n" + report["markdown"])
    return report


def write_report(
    out: Path,
    runs: dict[str, list[dict[str, Any]]],
    variants: list[tuple[str, Path]],
    overrides: dict[str, Any],
    seeds: Sequence[int],
    seconds: float,
) -> dict[str, Any]:
    """Write quality.json and quality.md from the runs so far (called after every run)."""
    table = summarise(runs)
    metric = next((r["metric"] for results in runs.values() for r in results), "F1@5")
    header = (
        f"Machine: {machine()}. Date: {datetime.date.today().isoformat()}. Seeds: {list(seeds)}. "
        f"Budget (every run): " + ", ".join(f"{k}={v}" for k, v in overrides.items()) + "."
    )
    markdown = header + "\n\n" + to_markdown(table, metric, runs) + "\n" + diagnostics_markdown(runs) + "\n"
    report = {
        "date": datetime.date.today().isoformat(),
        "machine": machine(),
        "seeds": list(seeds),
        "overrides": overrides,
        "metric": metric,
        "seconds": round(seconds, 1),
        "variants": {name: str(path) for name, path in variants},
        "table": table,
        "runs": runs,
        "markdown": markdown,
    }
    (out / "quality.json").write_text(json.dumps(report, indent=2) + "\n")
    (out / "quality.md").write_text(markdown)
    return report


if __name__ == "__main__":
    main()
