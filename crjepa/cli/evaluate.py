"""`crjepa evaluate`: the paper's retrieval scores of a model on a data source, every direction its sensors allow
(markdown and JSON)."""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

from crjepa.cli.common import add_data_arguments, add_model_arguments, load_data, load_model, source_options
from crjepa.utils.arguments import int_in


def cmd_evaluate(args: argparse.Namespace) -> int:
    from crjepa.eval.retrieval import evaluate_retrieval

    source = source_options(args)
    dataset = load_data(source, args.split)
    model = load_model(args.model, args.device)
    from crjepa.data.loading import export_name

    name = args.dataset_name or (export_name(args.data) if Path(args.data).is_dir() else args.data)
    results = evaluate_retrieval(
        model,
        dataset,
        query_split=args.query_split,
        gallery_split=args.gallery_split,
        k=args.k,
        batch_size=args.batch_size,
        num_workers=args.num_workers,
        dataset_name=name,
        progress=True,
    )
    table = results.to_markdown()
    print(f"{results.describe()} (in %):")
    print(table)
    for note in results.notes:
        print(f"note: {note}", file=sys.stderr)
    if args.output_dir:
        out = Path(args.output_dir)
        out.mkdir(parents=True, exist_ok=True)
        from crjepa.utils.atomic import atomic_write_text

        atomic_write_text(out / "retrieval_results.md", table + "\n")
        results.to_json(out / "retrieval_results.json")
        print(f"Wrote {out / 'retrieval_results.md'} and {out / 'retrieval_results.json'}")
    return 0


def add_parser(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser(
        "evaluate",
        help="score the paper's four retrieval directions",
        description="'s1->s1', 's2->s2' (unified head, self-matches removed), 's1->s2', 's2->s1' "
        "(cross head): F1@k for multi-label sets, mAP and P@k for single-label sets. Data "
        "with one of the model's sensors (e.g. S2 alone) is scored in its same-sensor "
        "direction.",
    )
    add_model_arguments(p)
    add_data_arguments(p, "load only this split before evaluating (default: all rows)")
    p.add_argument("--query-split", default=None, help="queries from this split (default: all rows)")
    p.add_argument(
        "--gallery-split",
        default=None,
        help="archive from another split (CSMAE protocol: --query-split validation --gallery-split test)",
    )
    p.add_argument("-k", type=int_in(1, 100_000), default=5, help="cut-off for F1@k / P@k (default 5, the paper's)")
    p.add_argument("--dataset-name", default=None, help="name used in the results and model-index")
    p.add_argument("--output-dir", default=None, help="write retrieval_results.md and retrieval_results.json here")
    p.set_defaults(func=cmd_evaluate)


__all__ = ["add_parser", "cmd_evaluate"]
