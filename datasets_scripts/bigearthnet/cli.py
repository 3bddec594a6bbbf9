"""`python -m datasets_scripts bigearthnet ...`: the subcommand's arguments, the pair list from metadata alone
(`--list-only`), and a conversion into a Parquet export (optionally pushed to the Hub) with its summary."""

from __future__ import annotations

import argparse
import logging
import os
import shutil
import sys
import tempfile
from collections import Counter
from pathlib import Path

import datasets

from crjepa.data.schema import DataError
from crjepa.errors import CRJepaError
from crjepa.utils.arguments import int_in
from datasets_scripts.ben_metadata import LIST_SPLIT_NAMES, SPLITS, UNASSIGNED, pair_list_bytes, pair_list_md5
from datasets_scripts.bigearthnet.builder import SUMMARY, BigEarthNetMM, dataset_card
from datasets_scripts.bigearthnet.layouts import ALL_SUBSETS, REBEN
from datasets_scripts.bigearthnet.plans import metadata_list
from datasets_scripts.bigearthnet.reading import S2_RESAMPLINGS, BigEarthNetError, require_extra
from datasets_scripts.bigearthnet.splits import SPLIT_PROTOCOLS
from datasets_scripts.common import add_split_arguments, export_builder

logger = logging.getLogger(__name__)


def add_cli(subparsers: argparse._SubParsersAction) -> argparse.ArgumentParser:
    """Register the `bigearthnet` subcommand on the `python -m datasets_scripts` parser."""
    p = subparsers.add_parser(
        "bigearthnet",
        help="BigEarthNet-MM S1/S2 pairs (BEN-14K, recommended, all; reBEN) -> Parquet / Hub",
        description=SUMMARY,
    )
    p.add_argument("--s1-dir", help="folder holding the BigEarthNet-S1 patch folders (omit for an S2-only archive)")
    p.add_argument("--s2-dir", help="folder holding the BigEarthNet-S2 patch folders")
    p.add_argument("--output-dir", help="where the Parquet export goes")
    p.add_argument(
        "--lmdb",
        metavar="DIR",
        help="BigEarthNet v2 as distributed for ConfigILM: the BigEarthNet-V2-LMDB folder (safetensors "
        "patches of both sensors; read without configilm), instead of --s1-dir / --s2-dir; "
        "subset reben, metadata.parquet found beside it",
    )
    p.add_argument(
        "--subset", choices=ALL_SUBSETS, default=None, help="which pairs (default: ben14k; reben with --lmdb)"
    )
    p.add_argument(
        "--reben-metadata",
        help="reBEN metadata.parquet (subset reben; default: a metadata.parquet beside or inside --s2-dir or --lmdb)",
    )
    p.add_argument("--push-to-hub", metavar="USER/REPO", help="also push the export to this Hub dataset repo")
    p.add_argument("--list-only", action="store_true", help="print the subset's pair list stats from metadata")
    p.add_argument("--list-out", help="with --list-only: also write the list (s2_name,s1_name,split) here")
    p.add_argument("--strict", action="store_true", help="stop at the first bad pair instead of skipping it")
    p.add_argument("--s2-resampling", choices=S2_RESAMPLINGS, default="nearest", help="20/60 m band upsampling")
    p.add_argument("--num-proc", type=int_in(1, 1024), default=None, help="worker processes (default: all cores)")
    p.add_argument("--cache-dir", help="build cache (default: a temporary folder, removed afterwards)")
    p.add_argument(
        "--keep-unpaired",
        action="store_true",
        help="keep an S1 patch without its S2 partner (or the reverse) as a single-sensor row",
    )
    add_split_arguments(p, choices=SPLIT_PROTOCOLS)
    p.set_defaults(func=run_cli)
    return p


def _run_list_only(args: argparse.Namespace) -> int:
    rows = metadata_list(args.subset, args.reben_metadata)
    counts = Counter(LIST_SPLIT_NAMES.get(split, split) for _, _, split in rows)
    order = [LIST_SPLIT_NAMES[s] for s in SPLITS] + [UNASSIGNED]
    per_split = ", ".join(f"{s} {counts[s]:,}" for s in order if counts[s])
    print(f"{args.subset}: {len(rows):,} pairs ({per_split})")
    print(f"md5 {pair_list_md5(rows)} of the list `s2_name,s1_name,split` (no header, LF, LC_ALL=C sorted)")
    if args.list_out:
        out = Path(args.list_out)
        tmp = out.with_name(out.name + ".tmp")
        tmp.write_bytes(pair_list_bytes(rows))
        tmp.replace(out)
        print(f"list written to {out}")
    return 0


def _exported_ids(output_dir: Path) -> set[str]:
    """`id` column of an export's Parquet shards."""
    import pyarrow.parquet as pq

    return {
        i for f in sorted(output_dir.glob("data/*.parquet")) for i in pq.read_table(f, columns=["id"])["id"].to_pylist()
    }


def run_cli(args: argparse.Namespace) -> int:
    """`python -m datasets_scripts bigearthnet ...`: list from metadata, or convert + export (+ push).

    User errors (bad folders, nothing of the subset present, missing extra, output not empty) raise a
    `CRJepaError`, which the entry point prints as one ``error:`` line (status 2); a full or read-only disk is
    one line here; a run that converted nothing returns 1 and leaves no export behind.
    """
    if args.subset is None:
        args.subset = REBEN if getattr(args, "lmdb", None) else "ben14k"
    try:
        return _run_cli(args)
    except datasets.exceptions.DatasetGenerationError as err:  # --strict: the bad pair, not the wrapper
        if isinstance(err.__cause__, BigEarthNetError):
            raise err.__cause__ from None
        raise
    except CRJepaError:  # a folder not found is an OSError too: the entry point's one line
        raise
    except OSError as err:  # a full or read-only disk
        print(f"error: {err}", file=sys.stderr)
        return 2


def _run_cli(args: argparse.Namespace) -> int:
    if args.list_only:
        return _run_list_only(args)
    lmdb = getattr(args, "lmdb", None)
    if lmdb and (args.s1_dir or args.s2_dir):
        raise DataError(
            "bigearthnet: give either --lmdb (the ConfigILM LMDB) or --s1-dir / --s2-dir (GeoTIFF folders), not both"
        )
    if not ((args.s2_dir or lmdb) and args.output_dir):
        raise DataError(
            "bigearthnet: --s2-dir and --output-dir are required (and --s1-dir for S1/S2 pairs; or "
            "--lmdb instead of both), or use --list-only"
        )
    require_extra("lmdb" if lmdb else "rasterio")
    output_existed = Path(args.output_dir).exists()
    cache_dir = args.cache_dir or tempfile.mkdtemp(prefix="crjepa-bigearthnet-")
    try:
        builder = BigEarthNetMM(
            s1_dir=args.s1_dir, s2_dir=args.s2_dir, subset=args.subset, reben_metadata=args.reben_metadata,
            lmdb=lmdb, strict=args.strict, s2_resampling=args.s2_resampling, cache_dir=cache_dir,
            keep_unpaired=getattr(args, "keep_unpaired", False), split_by=getattr(args, "split_by", None) or "official",
            block_km=getattr(args, "block_km", 50.0), split_seed=getattr(args, "split_seed", 0),
            split_fractions=tuple(getattr(args, "split_fractions", (0.8, 0.1, 0.1))),
        )  # fmt: skip
        plan = builder.plan()  # fail fast (no pair present, strict) before any worker starts
        num_proc = min(args.num_proc or os.cpu_count() or 1, max(1, len(plan.tasks) // 2))
        output_dir = Path(
            export_builder(
                builder,
                args.output_dir,
                push_to_hub=args.push_to_hub,
                card=dataset_card(builder.config),
                num_proc=num_proc,
                overwrite=bool(getattr(args, "overwrite", False)),
            )  # fmt: skip
            or args.output_dir
        )
        report = builder.conversion_report(written_ids=_exported_ids(output_dir))
    finally:
        if not args.cache_dir:
            shutil.rmtree(cache_dir, ignore_errors=True)
    print(report.summary())
    if not sum(report.converted.values()):
        if not output_existed:  # an empty export must not look like a result
            shutil.rmtree(output_dir, ignore_errors=True)
        for err in list(report.skipped.values())[:3]:
            logger.warning("skipped: %s", err)
        print(f"error: every pair was skipped; nothing written to {args.output_dir}", file=sys.stderr)
        return 1
    return 0
