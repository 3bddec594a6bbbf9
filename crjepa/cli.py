"""The ``crjepa`` command: embed an archive, index it, search it, evaluate a model, push to the Hub.

    crjepa embed MODEL DATA -o EMB          model folder + data source -> embeddings archive folder
    crjepa index EMB [--kind hnsw]          faiss indices for an archive folder
    crjepa search EMB --id ID [--png g.png] search by archive id (no model needed) or --image FILE --model M
    crjepa evaluate MODEL DATA              the paper's four-direction table (markdown + JSON)
    crjepa export-checkpoint RUN -o DIR     a training checkpoint -> from_pretrained folder (+ card with scores)
    crjepa push FOLDER user/repo            embeddings folder (dataset repo) or model folder (model repo)
    crjepa app EMB [--model M] [--data D]   the search app in the browser (Gradio); --export-space DIR: a Space

Directions are written 's1->s2': quote them, or the shell reads '>' as a redirection. One-sensor archives (e.g.
S2 patches alone) are embedded, searched and evaluated in their one same-sensor direction.

DATA is ``synthetic`` (built in), a folder of Parquet exported by ``python -m datasets_scripts``, or the id of such
an export on the Hugging Face Hub (``user/name``, streamed). A search query is an archive id, a sensor's patch name
the archive records (an S1 patch name), or an image: a file or a BigEarthNet patch folder of per-band GeoTIFFs.
Heavy imports happen inside the commands so ``--help`` stays instant. Errors print one sentence, no traceback.
"""

from __future__ import annotations

import argparse
import json
import sys
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from crjepa.data.schema import SYNTHETIC_OPTIONS  # light: no torch, no datasets (--help stays instant)
from crjepa.utils.arguments import OneLineParser, fraction, int_in, repo_id


# ---------------------------------------------------------------------------------------------- shared helpers
SYNTHETIC_LIMITS = {"num_pairs": (1, 100_000), "num_train": (0, 100_000), "num_validation": (0, 100_000),
                    "num_test": (0, 100_000), "image_size": tuple(map(int, SYNTHETIC_OPTIONS["image_size"][1:])),
                    "seed": tuple(map(int, SYNTHETIC_OPTIONS["seed"][1:]))}
"""Bounds on the synthetic-data options (the command line's and those an archive records: a crafted size must not
allocate gigabytes): ``num_pairs`` (`crjepa embed`) or the per-split sizes a training run records (its
``data.options``)."""


def _add_data_arguments(parser: argparse.ArgumentParser, split_help: str) -> None:
    parser.add_argument("data", help="data source: 'synthetic' (built in), a folder of Parquet exported by "
                                     "`python -m datasets_scripts`, or such an export's Hub data set id (user/name)")
    parser.add_argument("--split", default=None, help=split_help)
    parser.add_argument("--num-pairs", type=int_in(*SYNTHETIC_LIMITS["num_pairs"]), default=None,
                        help="synthetic data: pairs per split (default: the generator's sizes)")
    parser.add_argument("--seed", type=int_in(*SYNTHETIC_LIMITS["seed"]), default=0,
                        help="synthetic data: seed (default 0)")
    parser.add_argument("--image-size", type=int_in(*SYNTHETIC_LIMITS["image_size"]), default=None,
                        help="synthetic data: native image side in pixels (8 to 512)")


def _source_options(args: argparse.Namespace) -> dict[str, Any]:
    """What identifies the data (stored in the archive so `search --png` can find the images again)."""
    options: dict[str, Any] = {"dataset": args.data}
    if args.data == "synthetic":
        options["seed"] = args.seed
        if args.num_pairs is not None:
            options["num_pairs"] = args.num_pairs
        if args.image_size is not None:
            options["image_size"] = args.image_size
    elif not Path(args.data).is_dir():
        from crjepa.hub.access import is_repo_id

        if not is_repo_id(args.data):
            raise FileNotFoundError(f"Data source {args.data!r} is neither 'synthetic', a folder of Parquet files, nor "
                                    "a Hub data set id (user/name)")
    return options


def _load_data(options: dict[str, Any], split: str | None) -> Any:
    """The paired datasets.Dataset of a source (`crjepa.data.loading.load_paired_dataset`), optionally one
    split. The synthetic data is deterministic from its options, so `search --png` regenerates the same images."""
    from crjepa.data.loading import load_paired_dataset

    kwargs = {k: v for k, v in options.items() if k != "dataset"}
    if "num_pairs" in kwargs:  # one size for every synthetic split
        n = kwargs.pop("num_pairs")
        kwargs.update(num_train=n, num_validation=n, num_test=n)
    return load_paired_dataset(options["dataset"], split=split, **kwargs)


def _device(name: str) -> Any:
    import torch

    if name == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    try:
        device = torch.device(name)
    except RuntimeError:
        raise ValueError(f"--device {name!r} is not a device: use auto, cpu, cuda or cuda:N") from None
    if device.type == "cuda" and (not torch.cuda.is_available() or (device.index or 0) >= torch.cuda.device_count()):
        raise ValueError(f"--device {name}: no such GPU here ({torch.cuda.device_count()} visible); use auto or cpu")
    return device


def _load_model(path: str, device: str = "auto") -> Any:
    """A CR-JEPA model from a saved folder (or Hub repo), in eval mode on the chosen device."""
    from modeling_crjepa.modeling_crjepa import CRJepaModel

    from crjepa.utils.files import check_safetensors_in

    if Path(path).is_dir():
        check_safetensors_in(path)  # a crafted header: one line naming the file, before any allocation
    try:
        model = CRJepaModel.from_pretrained(path)
    except OSError as err:
        raise FileNotFoundError(f"Cannot load a CR-JEPA model from {path!r}: {str(err).splitlines()[0]}") from err
    except Exception as err:
        if type(err).__name__ != "SafetensorError":
            raise
        raise ValueError(f"Cannot load a CR-JEPA model from {path!r}: {str(err).splitlines()[0]}") from None
    return model.to(_device(device)).eval()


def _add_model_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("model", help="saved model folder (save_pretrained) or Hub model repo id")
    parser.add_argument("--batch-size", type=int_in(1, 65_536), default=64, help="images per forward pass (default 64)")
    parser.add_argument("--device", default="auto", help="'auto' (GPU if available), 'cpu', 'cuda', 'cuda:1'...")
    parser.add_argument("--num-workers", type=int_in(0, 256), default=0,
                        help="data loader worker processes (default 0)")


# ---------------------------------------------------------------------------------------------- commands
RANK_ENV, WORLD_ENV = "CRJEPA_EMBED_RANK", "CRJEPA_EMBED_WORLD"


def cmd_embed(args: argparse.Namespace) -> int:
    """Streamed, sharded, resumable embedding (`crjepa.hub.embedding`) under the output's writer lock. Nothing
    that exists is deleted before the new archive is complete: a new run into an empty or absent folder writes
    there (a rerun of the same command resumes it); a run that replaces an earlier archive (or anything, with
    --overwrite) writes beside it (`crjepa.hub.embedding.staging_folder`, resumable too) and swaps the finished
    archive in at the end. Workers (started by --num-processes, or accelerate ranks > 0) run under the
    launcher's lock and find the folder it chose."""
    import os

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
        raise ValueError(f"{output.parent}: cannot create the output folder ({err.strerror}); choose a writable "
                         "path with -o") from None
    with DirLock(lock_file_for(output), what="crjepa embed", folder=output):  # a second writer stops at once
        return _embed(args)


def _embed(args: argparse.Namespace) -> int:
    import os

    from crjepa.hub.archive import config_summary, model_fingerprint
    from crjepa.hub.embedding import (
        claim_folder, embed_shards, finish_archive, run_signature, source_rows, stream_source, work_folder,
    )
    from crjepa.eval.retrieval import SPACES, class_names_of, column_name, present_sensors
    from crjepa.utils.atomic import publish_dir

    source = _source_options(args)
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
    model = _load_model(args.model, args.device if state is None else str(state.device))
    fingerprint = model_fingerprint(model)
    stream = stream_source(source, args.split)
    unknown = sorted(set(args.sensors or []) - set(model.config.sensor_names))
    if unknown:
        raise ValueError(f"--sensors {unknown}: the model has the sensors {list(model.config.sensor_names)}")
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
        stats = embed_shards(model, stream, work, class_names=class_names, metadata_columns=metadata_columns,
                             sensors=sensors, spaces=args.spaces, batch_size=args.batch_size, shard_rows=shard_rows,
                             rank=rank, world=world, progress=True,
                             total_rows=source_rows(source, args.split, stream))
        print(f"process {rank + 1}/{world}: {stats['written']} shards written, {stats['skipped']} already done "
              f"(of {stats['shards']}, {stats['rows']} rows)", flush=True)
        if worker:
            return 0
        if state is not None:
            state.wait_for_everyone()
            if not state.is_main_process:
                return 0
    columns = [column_name(s, sp) for s in sensors for sp in SPACES if sp in args.spaces]
    info = finish_archive(work, world, class_names=class_names, metadata_columns=metadata_columns,
                          vector_columns=columns, dimension=model.config.retrieval_dim, model_fingerprint=fingerprint,
                          config_summary=config_summary(model.config), source={**source, "split": args.split},
                          model_repo_id=args.model_repo_id, repo_id=args.repo_id, index=args.index, recall=args.recall)
    if work != output:  # the complete new archive replaces the earlier one in one step
        publish_dir(work, output)
    print(f"Wrote {info['num_rows']} items x {len(columns)} columns ({', '.join(columns)}) to {output}")
    return 0


def _run_workers(args: argparse.Namespace, world: int) -> None:
    """Start ``world`` worker processes of this same command (same argv), split the CPU threads between them,
    wait for all; a failed worker is an error (its finished shards stay: rerun to resume)."""
    import os
    import subprocess

    from crjepa.search.index import available_cpus

    threads = max(1, available_cpus() // world)
    procs = []
    for rank in range(world):
        env = {**os.environ, RANK_ENV: str(rank), WORLD_ENV: str(world), "CRJEPA_EMBED_THREADS": str(threads),
               "OMP_NUM_THREADS": str(threads)}
        procs.append(subprocess.Popen([sys.executable, "-m", "crjepa.cli", *args.argv], env=env))
    failed = [rank for rank, proc in enumerate(procs) if proc.wait() != 0]
    if failed:
        raise ValueError(f"embedding processes {failed} failed (see above); rerun the same command to resume: "
                         "finished shards are kept")


def _is_scalar(feature: Any) -> bool:
    return type(feature).__name__ == "Value"


def cmd_index(args: argparse.Namespace) -> int:
    if _backend(args) == "milvus":
        return _index_milvus(args)
    if args.index_type != "AUTO" or args.overwrite or args.prefix:
        raise ValueError("--index-type, --overwrite and --prefix are for --backend milvus (faiss: --kind)")
    from tqdm.auto import tqdm

    from crjepa.hub.archive import add_indices, load_embeddings
    from crjepa.hub.archive.format import INDEX_DIR
    from crjepa.search.faiss_files import META_FILE, IndexMetadata
    from crjepa.search.index import describe_calibration

    params = dict(_parse_param(p) for p in args.param)
    columns = args.columns or load_embeddings(args.archive, load_indices=False, vectors=False).info["vector_columns"]
    with tqdm(total=len(columns), desc="indexing", unit="column") as bar:
        add_indices(args.archive, kind=args.kind, columns=columns, progress=lambda name: bar.update(1),
                    recall=args.recall, **params)
    for name in columns:
        metadata = IndexMetadata(**json.loads((Path(args.archive) / INDEX_DIR / name / META_FILE).read_text()))
        print(f"{name}: {describe_calibration(metadata)}")
    return 0


def _parse_param(text: str) -> tuple[str, Any]:
    """'M=32' -> ('M', 32); numbers become numbers, everything else stays a string."""
    if "=" not in text:
        raise ValueError(f"--param takes key=value, found {text!r}")
    key, value = text.split("=", 1)
    for cast in (int, float):
        try:
            return key, cast(value)
        except ValueError:
            pass
    return key, value


def cmd_search(args: argparse.Namespace) -> int:
    archive, where = _search_archive(args)
    if (args.id is None) == (args.image is None):
        raise ValueError("Give exactly one query: --id ARCHIVE_ID or --image FILE")
    query_labels = None
    if args.id is not None:
        from crjepa.eval.directions import directions_of, parse_direction

        position, named = archive.resolve(args.id)  # an archive id, or a sensor's patch name (S1 names)
        if args.direction:
            parse_direction(args.direction, archive.sensors)  # unknown sensor -> an error naming the accepted ones
        directions = [args.direction] if args.direction else [
            d for d in directions_of(archive.sensors) if named is None or d.split("->")[0] == named]
        results = {d: archive.search_by_id(args.id, d, args.k, **where) for d in directions}
        query_labels = archive.labels_of(position)
    else:
        if not args.model:
            raise ValueError("Searching by image needs --model (the model that embedded the archive)")
        sensor, image = _query_image(args, archive)  # a bad query fails before the model is loaded
        args.sensor = sensor
        model = _load_model(args.model, args.device)
        targets = [args.target_sensor] if args.target_sensor else archive.sensors
        results = {f"{sensor}->{t}": archive.search_by_image(model, image, sensor, t, args.k, **where)
                   for t in targets}
    if args.json:
        print(json.dumps({d: [vars(h) for h in hits] for d, hits in results.items()}, indent=2))
    else:
        _print_hits(args.id or args.image, query_labels, results)
    if args.png:
        _write_png(args, archive, results)
    return 0


def _backend(args: argparse.Namespace) -> str:
    """faiss (in-process, the default) or milvus (needs --uri); Milvus options without it are errors."""
    if args.backend == "milvus" and not args.uri:
        raise ValueError("--backend milvus needs --uri: a Milvus Lite file (e.g. emb.db) or a server "
                         "(http://host:19530)")
    if args.backend == "faiss" and args.uri:
        raise ValueError("--uri is for --backend milvus (faiss indices live in the archive folder)")
    return args.backend


def _milvus_token(args: argparse.Namespace) -> str | None:
    import os

    return args.token or os.environ.get("MILVUS_TOKEN") or None


def _index_milvus(args: argparse.Namespace) -> int:
    """`crjepa index --backend milvus`: one collection per vector column, streamed from the archive's Parquet
    shards, resumable (`crjepa.search.milvus.index_archive`)."""
    from crjepa.hub.archive.loading import resolve_folder
    from crjepa.search.calibration import DEFAULT_RECALL
    from crjepa.search.milvus import describe, index_archive

    if args.kind != "auto":
        raise ValueError("--kind picks a faiss index; with --backend milvus use --index-type")
    params = dict(_parse_param(p) for p in args.param)
    folder = resolve_folder(args.archive, None, None, None)

    def progress(column: str, done: int, rows: int) -> None:
        print(f"{column}: {done}/{rows} rows loaded", flush=True)

    records = index_archive(folder, args.uri, token=_milvus_token(args), columns=args.columns,
                            index_type=args.index_type, recall=DEFAULT_RECALL if args.recall is None else args.recall,
                            prefix=args.prefix, name=args.archive, batch_rows=args.batch_rows,
                            overwrite=args.overwrite, progress=progress, **params)
    for column, record in records.items():
        print(f"{column}: {describe(record)}")
    return 0


def _search_archive(args: argparse.Namespace) -> tuple[Any, dict[str, Any]]:
    """The archive to search and the filter keywords of its search calls ({} with faiss, which has none)."""
    from crjepa.hub.archive import load_embeddings

    filters = bool(args.label or args.meta or args.range or args.where)
    if _backend(args) == "faiss":
        if filters:
            raise ValueError("filters (--label, --meta, --range, --where) run inside Milvus: search with "
                             "--backend milvus --uri URI")
        return load_embeddings(args.archive), {}
    if args.png:
        raise ValueError("--png needs the archive's labels in memory: search without --backend milvus for a grid")
    archive = load_embeddings(args.archive, milvus_uri=args.uri, milvus_token=_milvus_token(args),
                              milvus_prefix=args.prefix)
    ranges = {}
    for text in args.range:
        key, _, bounds = text.partition("=")
        if ".." not in bounds:
            raise ValueError(f"--range takes KEY=LOW..HIGH (either end may be empty), found {text!r}")
        ranges[key] = tuple(bounds.split("..", 1))
    equal = dict(text.split("=", 1) if "=" in text else (text, None) for text in args.meta)
    if None in equal.values():
        raise ValueError(f"--meta takes KEY=VALUE, found {[k for k, v in equal.items() if v is None]}")
    return archive, {"where": archive.filter(args.label, equal, ranges, args.where)}


def _add_milvus_arguments(parser: argparse.ArgumentParser) -> None:
    group = parser.add_argument_group("Milvus (archives past one machine; pip install \"crjepa[milvus]\")")
    group.add_argument("--backend", default="faiss", choices=["faiss", "milvus"],
                       help="faiss in this process (default) or a Milvus collection per vector column")
    group.add_argument("--uri", default=None,
                       help="Milvus Lite file (path ending in .db) or server/cluster address (http://host:19530)")
    group.add_argument("--token", default=None, help="Milvus server token, e.g. user:password (default $MILVUS_TOKEN)")
    group.add_argument("--prefix", default=None,
                       help="collection names <prefix>_<column> (default crjepa_<archive folder name>)")


def _query_image(args: argparse.Namespace, archive: Any) -> tuple[str, Any]:
    """(sensor, (C, H, W) array) of an image query: a file (needs --sensor), or a BigEarthNet-style patch folder
    of per-band GeoTIFFs (`<patch>_B02.tif`, `<patch>_VV.tif`, ...) read in the band order the archive's model
    uses; the sensor of a folder is the one whose bands it holds when --sensor is not given."""
    from crjepa.data.images import band_folder_sensor, probe_image, read_image
    from crjepa.hub.archive.search import MAX_IMAGE_SIDE, check_query_image

    bands = dict((archive.info.get("config") or {}).get("band_names") or {})
    if Path(args.image).is_dir():
        sensor = args.sensor or band_folder_sensor(args.image, bands)
        if sensor not in bands:
            raise ValueError(f"--sensor {sensor!r}: the archive's model has sensors {sorted(bands)}")
        image = read_image(args.image, bands=bands[sensor])
    else:
        if not args.sensor:
            raise ValueError("Searching by an image file needs --sensor (the sensor of the image)")
        sensor = args.sensor
        shape = probe_image(args.image).shape  # the header's size, before the pixels are decoded
        if max(shape[1:]) > MAX_IMAGE_SIDE:
            raise ValueError(f"{args.image} is {shape[1]}x{shape[2]} pixels; a query image side is at most "
                             f"{MAX_IMAGE_SIDE}")
        image = read_image(args.image)
    channels = (archive.info.get("config") or {}).get("sensors", {}).get(sensor)
    if isinstance(channels, int):
        check_query_image(image, sensor, channels)
    return sensor, image


def _print_hits(query: str, query_labels: list[str] | None, results: dict[str, Any]) -> None:
    """The text results: per direction the query (and its labels), then rank, score, the hit's name (its patch
    name in the searched sensor when the archive records one), the labels it shares with the query (relevance:
    any shared label) and its labels."""
    about = f"; labels: {', '.join(query_labels)}" if query_labels is not None else ""
    for direction, hits in results.items():
        print(f"{direction.upper()}  (query: {query}{about})")
        for hit in hits:
            name = f"{hit.name} (item {hit.id})" if hit.name and hit.name != hit.id else hit.id
            shared = ""
            if query_labels is not None:
                common = len(set(hit.labels) & set(query_labels))
                shared = f"  {'relevant' if common else 'not relevant'}, {common}/{len(query_labels)} labels shared"
            print(f"  {hit.rank:>3}  {hit.score:+.4f}  {name}{shared}  [{', '.join(hit.labels)}]")


def _write_png(args: argparse.Namespace, archive: Any, results: dict[str, Any]) -> None:
    """The result grid: images come from --data SOURCE, or with ``--data recorded`` from the data source the
    archive records (an archive may come from the Hub: its record is used only when asked, and checked)."""
    from crjepa.data.images import read_image
    from crjepa.eval.visualize import DatasetImages, image_grid, query_grid

    from crjepa.hub.archive.provenance import read_local_source

    recorded = dict(archive.info.get("source") or {})
    if not args.data:
        hint = f" (the archive records {json.dumps(recorded)}: pass --data recorded to use it)" if recorded else ""
        raise ValueError(f"--png needs the images: pass --data SOURCE{hint}")
    if args.data == "recorded":  # a local archive also knows its local folder by its absolute path
        local = read_local_source(archive.path) if Path(args.archive).is_dir() else None
        source = recorded_source(local or recorded, archive.path)
    else:
        source = {"dataset": args.data}
    split = source.pop("split", None)
    images = DatasetImages(_load_data(source, split))
    if args.id is not None:
        row_id = archive.ids[archive.position(args.id)]  # an S1 patch name -> its item
        grid = query_grid(archive, images, row_id, list(results), args.k, tile=args.tile)
    else:
        grid = image_grid(archive, images, read_image(args.image), args.sensor,
                          {d.split("->")[1]: hits for d, hits in results.items()}, tile=args.tile)
    import io

    from crjepa.utils.atomic import atomic_write_bytes

    buffer = io.BytesIO()
    grid.save(buffer, format="PNG")
    atomic_write_bytes(args.png, buffer.getvalue())  # an earlier grid stays until the new one is whole
    print(f"Wrote {args.png} ({grid.width}x{grid.height})")




def recorded_source(source: dict[str, Any], archive_path: Path) -> dict[str, Any]:
    """The data source an archive records, checked before anything is generated or read from it."""
    where = f"the data source recorded in {archive_path}"
    dataset = source.get("dataset")
    if dataset == "synthetic":
        unknown = set(source) - {"dataset", "split", *SYNTHETIC_LIMITS}
        if unknown:
            raise ValueError(f"{where} has unknown synthetic option(s) {sorted(unknown)}; pass --data SOURCE")
        for key, (low, high) in SYNTHETIC_LIMITS.items():
            value = source.get(key)
            if value is not None and (not isinstance(value, int) or isinstance(value, bool) or not low <= value <= high):
                raise ValueError(f"{where}: {key}={value!r} is outside [{low}, {high}]; pass --data SOURCE")
    elif not isinstance(dataset, str) or not dataset or not Path(dataset).is_dir():
        from crjepa.hub.access import is_repo_id

        if not isinstance(dataset, str) or not is_repo_id(dataset) or Path(dataset).exists():
            raise ValueError(f"{where} ({dataset!r}) is not 'synthetic', a local folder here, nor a Hub data set "
                             "id; pass --data SOURCE")
    split = source.get("split")
    if split is not None and not isinstance(split, str):
        raise ValueError(f"{where}: split {split!r} is not a split name; pass --data SOURCE")
    return dict(source)


def cmd_evaluate(args: argparse.Namespace) -> int:
    from crjepa.eval.retrieval import evaluate_retrieval

    source = _source_options(args)
    dataset = _load_data(source, args.split)
    model = _load_model(args.model, args.device)
    from crjepa.data.loading import export_name

    name = args.dataset_name or (export_name(args.data) if Path(args.data).is_dir() else args.data)
    results = evaluate_retrieval(model, dataset, query_split=args.query_split, gallery_split=args.gallery_split,
                                 k=args.k, batch_size=args.batch_size, num_workers=args.num_workers,
                                 dataset_name=name, progress=True)
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


def cmd_export_checkpoint(args: argparse.Namespace) -> int:
    from crjepa.train.export import export_checkpoint

    done = export_checkpoint(args.run, args.output, step=args.step, evaluate=not args.no_evaluate,
                             device=str(_device(args.device)))
    print(f"Wrote {done['output']} from {done['checkpoint']} (step {done['step']}); load it with "
          f"AutoModel.from_pretrained({done['output']!r}, trust_remote_code=True)")
    if done["results"] is not None:
        print(done["results"].to_markdown())
    return 0


def cmd_push(args: argparse.Namespace) -> int:
    from crjepa.hub.access import push_folder
    from crjepa.hub.archive.format import INFO_FILE

    folder = Path(args.folder)
    repo_type = args.repo_type
    if repo_type == "auto":
        repo_type = "dataset" if (folder / INFO_FILE).is_file() else "model"
    url = push_folder(folder, args.repo_id, repo_type=repo_type, token=args.token, private=args.private,
                      commit_message=args.message)
    print(f"Pushed {folder} to {url}")
    return 0


def cmd_app(args: argparse.Namespace) -> int:
    """The search app (crjepa.app): serve it, or write a Hugging Face Space folder that serves it."""
    from crjepa.app import require_gradio

    if args.export_space:
        from crjepa.app.space import export_space

        folder = export_space(args.export_space, args.archive, model=args.model, data=args.data,
                              requirement=args.requirement, overwrite=args.overwrite)
        print(f"Wrote the Space folder {folder}: push it with `hf upload USER/SPACE {folder} --repo-type space` "
              f"(or run it here: cd {folder} && python app.py)")
        return 0
    require_gradio()  # before the archive and model are loaded
    from crjepa.app.ui import serve

    serve(args.archive, model=args.model, data=args.data, host=args.host, port=args.port)
    return 0


# ---------------------------------------------------------------------------------------------- parser
def build_parser() -> argparse.ArgumentParser:
    parser = OneLineParser(
        prog="crjepa", description="CR-JEPA cross-modal remote-sensing retrieval: embed, index, search, "
                                   "evaluate, push, and look at the results in the browser (app).",
        epilog="Example: crjepa embed ./model synthetic -o ./emb && crjepa search ./emb --id ID --direction 's1->s2'"
               " (quote directions: the shell reads > as a redirection)")
    sub = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")

    p = sub.add_parser("embed", help="embed a dataset into an embeddings archive (Parquet + card + faiss)",
                       description="Embed every item with each sensor in the unified and cross spaces and write "
                                   "an embeddings archive folder (pushable as a Hub dataset).")
    _add_model_arguments(p)
    _add_data_arguments(p, "embed only this split (default: all rows)")
    p.add_argument("-o", "--output", required=True,
                   help="archive folder to write: shards appear as they finish and rerunning the same command "
                        "resumes; an existing folder is replaced only if it is an earlier archive or empty")
    p.add_argument("--overwrite", action="store_true",
                   help="replace OUTPUT even if it is not an embeddings archive, or restart a run (contents deleted)")
    p.add_argument("--sensors", nargs="+", default=None, help="sensors to embed (default: the model's two)")
    p.add_argument("--spaces", nargs="+", default=["unified", "cross"], choices=["unified", "cross"],
                   help="embedding spaces (default: both)")
    p.add_argument("--index", default="none", choices=["none", "auto", "exact", "hnsw", "ivfpq"],
                   help="also build faiss indices of this kind (default: none; see `crjepa index`)")
    p.add_argument("--recall", type=fraction, default=None, help="with --index: recall@10 target (default 0.95)")
    p.add_argument("--num-processes", type=int_in(1, 256), default=1,
                   help="worker processes sharing the input (default 1; or run under `accelerate launch -m "
                        "crjepa.cli embed ...`, one process per GPU)")
    p.add_argument("--shard-rows", type=int_in(1, 10_000_000), default=8192,
                   help="rows per Parquet shard (rounded up to a multiple of --batch-size); finished shards are "
                        "kept and skipped when the same command is rerun (default 8192)")
    p.add_argument("--model-repo-id", type=repo_id, default=None, help="Hub repo of the model, recorded in the card")
    p.add_argument("--repo-id", type=repo_id, default=None,
                   help="Hub dataset repo the archive will be pushed to (for the card)")
    p.set_defaults(func=cmd_embed)

    p = sub.add_parser("index", help="build faiss indices for an embeddings archive folder",
                       description="Build one faiss index per vector column and store it under faiss/.")
    p.add_argument("archive", help="embeddings archive folder")
    p.add_argument("--kind", default="auto", choices=["auto", "exact", "hnsw", "ivfpq"],
                   help="index kind (default auto: exact for small archives, ANN for large ones)")
    p.add_argument("--columns", nargs="+", default=None, help="vector columns to index (default: all)")
    p.add_argument("--param", action="append", default=[], metavar="KEY=VALUE",
                   help="index parameter, e.g. --param M=32 (repeatable); fixing a search knob (nprobe, "
                        "k_factor, efSearch) turns the recall calibration off")
    p.add_argument("--recall", type=fraction, default=None,
                   help="recall@10 the ANN kinds calibrate to on held-out archive vectors (default 0.95); the "
                        "measured recall, #queries, q/s and calibration time are printed and stored")
    _add_milvus_arguments(p)
    p.add_argument("--index-type", default="auto", type=str.upper,
                   help="with --backend milvus: AUTO (FLAT below 50k rows, else IVF_FLAT on Milvus Lite, HNSW on a "
                        "server, DISKANN from 10M rows), FLAT, IVF_FLAT, IVF_SQ8, HNSW, HNSW_SQ; servers also "
                        "IVF_PQ, DISKANN")
    p.add_argument("--batch-rows", type=int, default=8192,
                   help="with --backend milvus: rows per insert; progress is recorded after each (default 8192)")
    p.add_argument("--overwrite", action="store_true",
                   help="with --backend milvus: drop the collections first (another archive, or another index type)")
    p.set_defaults(func=cmd_index)

    p = sub.add_parser("search", help="search an archive by archive id or by an image file",
                       description="Print the top-k archive items (id, cosine score, labels) for a query. By id: "
                                   "uses the stored embedding, no model needed. By image: embeds only the query.")
    p.add_argument("archive", help="embeddings archive folder or Hub dataset repo id")
    p.add_argument("--id", default=None,
                   help="query by the id of an archive item, or by a sensor's patch name the archive records (an S1 "
                        "patch name: the search then starts from s1)")
    p.add_argument("--image", default=None,
                   help="query by an image file (.npy (C,H,W), .tif, .png) or a BigEarthNet patch folder of per-band "
                        "GeoTIFFs (S1 or S2; its sensor is found from its bands)")
    p.add_argument("--direction", default=None,
                   help="with --id: e.g. 's1->s2' (quoted: unquoted, the shell reads > as a redirection; default: "
                        "every direction the archive's sensors allow: four for two sensors, 's2->s2' for S2 alone)")
    p.add_argument("--sensor", default=None, help="with --image: the sensor of the image (a folder's is found)")
    p.add_argument("--target-sensor", default=None, help="with --image: sensor column to search (default: both)")
    p.add_argument("--model", default=None, help="with --image: the model folder that embedded the archive")
    p.add_argument("--device", default="auto", help="with --image: 'auto', 'cpu', 'cuda'...")
    p.add_argument("-k", type=int_in(1, 100_000), default=10, help="results per direction (default 10)")
    p.add_argument("--png", default=None, help="also write the result grid (green = relevant) to this PNG")
    p.add_argument("--data", default=None,
                   help="with --png: image source ('synthetic', a Parquet folder, or 'recorded': the source the "
                        "archive records, checked first)")
    p.add_argument("--tile", type=int_in(8, 1024), default=96, help="with --png: tile size in pixels (8 to 1024, "
                                                                 "default 96)")
    p.add_argument("--json", action="store_true", help="print JSON instead of a table")
    _add_milvus_arguments(p)
    p.add_argument("--label", action="append", default=[], metavar="CLASS",
                   help="with --backend milvus: only items whose labels contain CLASS (repeatable: all of them)")
    p.add_argument("--meta", action="append", default=[], metavar="KEY=VALUE",
                   help="with --backend milvus: only items whose metadata KEY equals VALUE, e.g. tile=33UVP")
    p.add_argument("--range", action="append", default=[], metavar="KEY=LOW..HIGH",
                   help="with --backend milvus: metadata KEY within [LOW, HIGH] (string order: ISO dates work; "
                        "an empty end is open), e.g. s2_date=2017-06-01..2017-08-31")
    p.add_argument("--where", default=None, help="with --backend milvus: a raw Milvus filter expression")
    p.set_defaults(func=cmd_search)

    p = sub.add_parser("evaluate", help="score the paper's four retrieval directions",
                       description="'s1->s1', 's2->s2' (unified head, self-matches removed), 's1->s2', 's2->s1' "
                                   "(cross head): F1@k for multi-label sets, mAP and P@k for single-label sets. Data "
                                   "with one of the model's sensors (e.g. S2 alone) is scored in its same-sensor "
                                   "direction.")
    _add_model_arguments(p)
    _add_data_arguments(p, "load only this split before evaluating (default: all rows)")
    p.add_argument("--query-split", default=None, help="queries from this split (default: all rows)")
    p.add_argument("--gallery-split", default=None,
                   help="archive from another split (CSMAE protocol: --query-split validation --gallery-split test)")
    p.add_argument("-k", type=int_in(1, 100_000), default=5, help="cut-off for F1@k / P@k (default 5, the paper's)")
    p.add_argument("--dataset-name", default=None, help="name used in the results and model-index")
    p.add_argument("--output-dir", default=None, help="write retrieval_results.md and retrieval_results.json here")
    p.set_defaults(func=cmd_evaluate)

    p = sub.add_parser("export-checkpoint", help="turn a training checkpoint into a from_pretrained folder",
                       description="Load the latest (or --step N) checkpoint of a run's output_dir/checkpoints, "
                                   "score it on the run's data as the run's eval section says, and write model + "
                                   "image processor + model card to -o DIR (ready for evaluate, embed or push).")
    p.add_argument("run", help="a training run's output_dir, or one of its checkpoints/step_N folders")
    p.add_argument("-o", "--output", required=True, help="folder to write (replaced atomically)")
    p.add_argument("--step", type=int_in(0, 2**62), default=None,
                   help="the checkpoint of this step (default: the latest)")
    p.add_argument("--no-evaluate", action="store_true", help="skip the scores (and so the model card)")
    p.add_argument("--device", default="auto", help="'auto' (GPU if available), 'cpu', 'cuda'...")
    p.set_defaults(func=cmd_export_checkpoint)

    p = sub.add_parser("push", help="upload an embeddings or model folder to the Hugging Face Hub",
                       description="Create the repo if needed and upload the folder (needs a token: "
                                   "`hf auth login` or HF_TOKEN).")
    p.add_argument("folder", help="embeddings archive folder or saved model folder")
    p.add_argument("repo_id", help="Hub repo, e.g. user/crjepa-ben14k-embeddings")
    p.add_argument("--repo-type", default="auto", choices=["auto", "dataset", "model"],
                   help="default auto: dataset for an embeddings archive, model otherwise")
    p.add_argument("--private", action="store_true", help="create the repo as private")
    p.add_argument("--token", default=None, help="Hub token (default: the logged-in one)")
    p.add_argument("--message", default=None, help="commit message")
    p.set_defaults(func=cmd_push)

    p = sub.add_parser("app", help="search an archive in the browser (Gradio), or export that app as a Space",
                       description="Serve a search page for an embeddings archive: query by archive id (search as "
                                   "you type) or, with --model, by an uploaded image (.npy, GeoTIFF, PNG, a "
                                   "BigEarthNet patch folder as .zip); choose the direction, k and label / metadata "
                                   "filters; see the top-k as pictures with ids, scores, labels and relevance, and "
                                   "the archive's card facts and scores. Needs `pip install \"crjepa[app]\"`.")
    p.add_argument("archive", help="embeddings archive folder or Hub dataset repo id")
    p.add_argument("--model", default=None, help="the model that embedded the archive (folder or Hub repo): enables "
                                                  "search by image")
    p.add_argument("--data", default=None,
                   help="where the pictures come from: 'synthetic', a Parquet export folder, a Hub dataset id, or "
                        "'recorded' (the source the archive records, checked first); default: no pictures")
    p.add_argument("--port", type=int, default=None, help="port (default: 7860 or GRADIO_SERVER_PORT)")
    p.add_argument("--host", default=None,
                   help="address to listen on (default: 127.0.0.1 or GRADIO_SERVER_NAME; 0.0.0.0 for all)")
    p.add_argument("--export-space", default=None, metavar="DIR",
                   help="write a Hugging Face Space folder (app.py, requirements.txt, README.md) that serves this "
                        "app for ARCHIVE, --model and --data (Hub ids), instead of serving it here")
    p.add_argument("--requirement", default=None,
                   help="with --export-space: how the Space installs crjepa (a pip requirement, e.g. \"crjepa[app] @ "
                        "git+https://github.com/you/crjepa\"); default: the crjepa code is copied into the folder")
    p.add_argument("--overwrite", action="store_true", help="with --export-space: replace DIR whatever it holds")
    p.set_defaults(func=cmd_app)
    return parser


EXTRA_MODULES = ("rasterio", "h5py", "bigearthnet_common")
"""Modules of the `bigearthnet` extra (GeoTIFF, HDF5 .mat, BigEarthNet metadata)."""


def main(argv: Sequence[str] | None = None) -> int:
    """Entry point of the ``crjepa`` console script; returns the exit code."""
    parser = build_parser()
    args = parser.parse_args(argv)
    args.argv = list(sys.argv[1:] if argv is None else argv)
    from crjepa.hub.access import HubError
    from crjepa.hub.archive import EmbeddingsError
    from crjepa.utils.locks import LockedError
    from crjepa.utils.process import report_user_error

    try:
        if getattr(args, "device", "auto") != "auto":
            _device(args.device)  # a device that does not exist: before any work
        return int(args.func(args) or 0)
    except (HubError, EmbeddingsError, ValueError, FileNotFoundError, FileExistsError, KeyError, ImportError,
            LockedError) as err:
        message = err.args[0] if isinstance(err, KeyError) and err.args else str(err)
        if isinstance(err, ImportError) and getattr(err, "name", None) in EXTRA_MODULES:
            message = f"{message}: this needs the bigearthnet extra: pip install \"crjepa[bigearthnet]\""
        return report_user_error(f"crjepa {args.command}: error: {' '.join(message.split())}")
    except OSError as err:  # read-only file system, disk full, permissions: name the file and what to do
        where = f"{err.filename}: " if err.filename else ""
        return report_user_error(f"crjepa {args.command}: error: {where}{err.strerror or err}; check that the path is "
                                 "writable and the disk has space, or choose another path")
    except KeyboardInterrupt:
        print("crjepa: interrupted", file=sys.stderr)
        return 130
    finally:
        # streamed Parquet readers (embed) hold Arrow threads: collect them now, while Arrow is alive, not in the
        # interpreter's teardown where they can abort a finished run (apache/arrow#34314, datasets#7566)
        import gc

        gc.collect()


def entry() -> None:
    """The ``crjepa`` console script: `main`, then leave without the interpreter's teardown, where Arrow's reader
    threads can abort a finished run (crjepa.utils.process)."""
    from crjepa.utils.process import exit_without_teardown

    exit_without_teardown(main())


if __name__ == "__main__":
    entry()
