"""`crjepa embed`: a model and a data source -> an embeddings archive, streamed, sharded and resumable
(`crjepa.hub.embedding`), in one process, in ``--num-processes`` workers of itself, or one per rank under
`accelerate launch -m crjepa.cli embed ...`."""

from __future__ import annotations

import argparse
import os
import sys
from pathlib import Path
from typing import Any

from crjepa.cli.common import add_data_arguments, add_model_arguments, load_model, source_options
from crjepa.utils.arguments import UsageError, fraction, int_in, repo_id

RANK_ENV, WORLD_ENV = "CRJEPA_EMBED_RANK", "CRJEPA_EMBED_WORLD"


def cmd_embed(args: argparse.Namespace) -> int:
    """Streamed, sharded, resumable embedding (`crjepa.hub.embedding`) under the output's writer lock. Nothing
    that exists is deleted before the new archive is complete: a new run into an empty or absent folder writes
    there (a rerun of the same command resumes it); a run that replaces an earlier archive (or anything, with
    --overwrite) writes beside it (`crjepa.hub.embedding.staging_folder`, resumable too) and swaps the finished
    archive in at the end. Workers (started by --num-processes, or accelerate ranks > 0) run under the
    launcher's lock and find the folder it chose."""
    from crjepa.hub.archive.format import OUTPUT_KIND
    from crjepa.hub.embedding import RUN_DIR, RUN_FILE
    from crjepa.utils.atomic import check_not_inside, check_replaceable, lock_file_for
    from crjepa.utils.locks import DirLock

    output = Path(args.output)
    if RANK_ENV in os.environ or int(os.environ.get("RANK", "0")) > 0:
        return _embed(args)
    if args.data != "synthetic" and Path(args.data).exists():
        check_not_inside(output, args.data, what="-o folder")  # replacing it would delete the input
    if not (output / RUN_DIR / RUN_FILE).is_file() or args.overwrite:
        check_replaceable(output, OUTPUT_KIND, args.overwrite)  # before any work: never replace what is not ours
    try:
        output.parent.mkdir(parents=True, exist_ok=True)
    except OSError as err:
        raise UsageError(
            f"{output.parent}: cannot create the output folder ({err.strerror}); choose a writable path with -o"
        ) from None
    with DirLock(lock_file_for(output), what="crjepa embed", folder=output):  # a second writer stops at once
        return _embed(args)


def _embed(args: argparse.Namespace) -> int:
    from crjepa.eval.retrieval import SPACES, class_names_of, column_name, present_sensors
    from crjepa.hub.archive.provenance import config_summary, model_fingerprint
    from crjepa.hub.embedding import (
        claim_folder,
        embed_shards,
        finish_archive,
        run_signature,
        source_rows,
        stream_source,
        work_folder,
    )
    from crjepa.utils.atomic import publish_dir

    source = source_options(args)
    output = Path(args.output)
    worker = RANK_ENV in os.environ
    state = None
    if worker:
        rank, world = int(os.environ[RANK_ENV]), int(os.environ[WORLD_ENV])
    elif int(os.environ.get("WORLD_SIZE", "1")) > 1:  # accelerate launch / torchrun
        # Accelerator, not PartialState(): under `accelerate launch --multi_gpu` with ACCELERATE_USE_CPU a bare
        # PartialState reports one process per rank (every rank would write every shard), Accelerator sees them all
        from accelerate import Accelerator

        state = Accelerator()
        rank, world = state.process_index, state.num_processes
    else:
        rank, world = 0, 1
    model = load_model(args.model, args.device if state is None else str(state.device))
    fingerprint = model_fingerprint(model)
    stream = stream_source(source, args.split)
    unknown = sorted(set(args.sensors or []) - set(model.config.sensor_names))
    if unknown:
        raise UsageError(f"--sensors {unknown}: the model has the sensors {list(model.config.sensor_names)}")
    sensors = list(args.sensors or present_sensors(model.config.sensor_names, stream))  # S2-only data: just s2
    shard_rows = max(1, -(-args.shard_rows // args.batch_size)) * args.batch_size
    signature = run_signature(fingerprint, {**source, "split": args.split}, sensors, args.spaces, shard_rows)
    main_process = rank == 0 and not worker
    work = work_folder(output, signature, overwrite=args.overwrite, decide=main_process)
    if main_process:
        claim_folder(work, signature)
    if state is not None:
        state.wait_for_everyone()
        work = work_folder(output, signature, overwrite=args.overwrite, decide=main_process)
    claim_folder(work, signature)  # every process checks it resumes the same run
    features = stream.features or {}
    class_names = class_names_of(stream) or []
    skip = {"id", "labels", *model.config.sensors}
    metadata_columns = [name for name, feature in features.items() if name not in skip and _is_scalar(feature)]
    if args.num_processes > 1 and not worker and state is None:
        _run_workers(args, world=args.num_processes)
        world = args.num_processes
    else:
        import torch

        if worker:
            torch.set_num_threads(max(1, int(os.environ.get("CRJEPA_EMBED_THREADS", "1"))))
        stats = embed_shards(
            model,
            stream,
            work,
            class_names=class_names,
            metadata_columns=metadata_columns,
            sensors=sensors,
            spaces=args.spaces,
            batch_size=args.batch_size,
            shard_rows=shard_rows,
            rank=rank,
            world=world,
            progress=True,
            total_rows=source_rows(source, args.split, stream),
        )
        print(
            f"process {rank + 1}/{world}: {stats['written']} shards written, {stats['skipped']} already done "
            f"(of {stats['shards']}, {stats['rows']} rows)",
            flush=True,
        )
        if worker:
            return 0
        if state is not None:
            state.wait_for_everyone()
            if not state.is_main_process:
                return 0
    columns = [column_name(s, sp) for s in sensors for sp in SPACES if sp in args.spaces]
    info = finish_archive(
        work,
        world,
        class_names=class_names,
        metadata_columns=metadata_columns,
        vector_columns=columns,
        dimension=model.config.retrieval_dim,
        model_fingerprint=fingerprint,
        config_summary=config_summary(model.config),
        source={**source, "split": args.split},
        model_repo_id=args.model_repo_id,
        repo_id=args.repo_id,
        index=args.index,
        recall=args.recall,
    )
    if work != output:  # the complete new archive replaces the earlier one in one step
        publish_dir(work, output)
    print(f"Wrote {info['num_rows']} items x {len(columns)} columns ({', '.join(columns)}) to {output}")
    return 0


def _run_workers(args: argparse.Namespace, world: int) -> None:
    """Start ``world`` worker processes of this same command (same argv), split the CPU threads between them,
    wait for all; a failed worker is an error (its finished shards stay: rerun to resume)."""
    import subprocess

    from crjepa.hub.archive.format import EmbeddingsError
    from crjepa.search.index import available_cpus

    threads = max(1, available_cpus() // world)
    procs = []
    for rank in range(world):
        env = {
            **os.environ,
            RANK_ENV: str(rank),
            WORLD_ENV: str(world),
            "CRJEPA_EMBED_THREADS": str(threads),
            "OMP_NUM_THREADS": str(threads),
        }
        procs.append(subprocess.Popen([sys.executable, "-m", "crjepa.cli", *args.argv], env=env))
    failed = [rank for rank, proc in enumerate(procs) if proc.wait() != 0]
    if failed:
        raise EmbeddingsError(
            f"embedding processes {failed} failed (see above); rerun the same command to "
            "resume: finished shards are kept"
        )


def _is_scalar(feature: Any) -> bool:
    return type(feature).__name__ == "Value"


def add_parser(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser(
        "embed",
        help="embed a dataset into an embeddings archive (Parquet + card + faiss)",
        description="Embed every item with each sensor in the unified and cross spaces and write "
        "an embeddings archive folder (pushable as a Hub dataset).",
    )
    add_model_arguments(p)
    add_data_arguments(p, "embed only this split (default: all rows)")
    p.add_argument(
        "-o",
        "--output",
        required=True,
        help="archive folder to write: shards appear as they finish and rerunning the same command "
        "resumes; an existing folder is replaced only if it is an earlier archive or empty",
    )
    p.add_argument(
        "--overwrite",
        action="store_true",
        help="replace OUTPUT even if it is not an embeddings archive, or restart a run (contents deleted)",
    )
    p.add_argument("--sensors", nargs="+", default=None, help="sensors to embed (default: the model's two)")
    p.add_argument(
        "--spaces",
        nargs="+",
        default=["unified", "cross"],
        choices=["unified", "cross"],
        help="embedding spaces (default: both)",
    )
    p.add_argument(
        "--index",
        default="none",
        choices=["none", "auto", "exact", "hnsw", "ivfpq"],
        help="also build faiss indices of this kind (default: none; see `crjepa index`)",
    )
    p.add_argument("--recall", type=fraction, default=None, help="with --index: recall@10 target (default 0.95)")
    p.add_argument(
        "--num-processes",
        type=int_in(1, 256),
        default=1,
        help="worker processes sharing the input (default 1; or run under `accelerate launch -m "
        "crjepa.cli embed ...`, one process per GPU)",
    )
    p.add_argument(
        "--shard-rows",
        type=int_in(1, 10_000_000),
        default=8192,
        help="rows per Parquet shard (rounded up to a multiple of --batch-size); finished shards are "
        "kept and skipped when the same command is rerun (default 8192)",
    )
    p.add_argument("--model-repo-id", type=repo_id, default=None, help="Hub repo of the model, recorded in the card")
    p.add_argument(
        "--repo-id", type=repo_id, default=None, help="Hub dataset repo the archive will be pushed to (for the card)"
    )
    p.set_defaults(func=cmd_embed)


__all__ = ["RANK_ENV", "WORLD_ENV", "add_parser", "cmd_embed"]
