"""Embedding an archive too big for one process: streamed input, Parquet shards written as they finish, resume.

The input is read as a stream of Arrow batches (`stream_source`: a local Parquet export through `datasets`'
streaming Parquet reader, a Hub data set id with ``streaming=True``, or the built-in synthetic set), never
materialised. Rows are cut into shards of ``shard_rows`` consecutive rows (a multiple of the batch size, so the
batches, and hence the vectors, are the same for any number of processes); shard ``s`` belongs to process
``s % world``. Each shard is written batch by batch to a temp file and renamed to ``data/<split>-NNNNN.parquet``
(the source's split, `archive_split`) when complete, so memory is bounded by one batch and a finished shard is
never half-written. A rerun with the
same run (model fingerprint, source, sensors, spaces, shard size: ``.embed/run.json``) skips the shards that
exist: a crash loses at most the shards in flight and duplicates nothing. Each process records the rows it saw
in ``.embed/rank-R-of-W.json``; `finish_archive` (one process, after all) checks every shard is there and writes
``embeddings_info.json`` and the card, which makes the folder a normal embeddings archive (`crjepa.hub.archive`).

Nothing is lost: a run that would replace an earlier archive (or anything, with ``--overwrite``) writes into
``.<name>.embed-new`` beside it (`work_folder`), resumable the same way, and the finished archive is swapped in at
the end (`crjepa.utils.atomic.publish_dir`). A shard is fsynced before the rename that makes it finished; a
finished shard that no longer reads (truncated, damaged) is embedded again, with a warning; the temp files of a
killed or failed run are removed by the run that finishes.

Processes: ``crjepa embed --num-processes N`` starts N workers of itself (CPU threads split between them);
``accelerate launch -m crjepa.cli embed ...`` runs one worker per launched process (one per GPU).
"""

from __future__ import annotations

import json
import logging
import math
import os
import shutil
from collections.abc import Callable, Iterator, Mapping, Sequence
from pathlib import Path
from typing import Any

import numpy as np

from crjepa.hub.archive.format import DATA_DIR, FORMAT_VERSION, INFO_FILE, OUTPUT_KIND, EmbeddingsError
from crjepa.hub.archive.indices import add_indices
from crjepa.hub.archive.provenance import archive_split, public_source, source_license, write_local_source
from crjepa.hub.archive.writer import vector_table
from crjepa.hub.cards import render_embeddings_card
from crjepa.utils.atomic import atomic_write_json, atomic_write_text, fsync_dir, write_marker

logger = logging.getLogger(__name__)

RUN_DIR = ".embed"
RUN_FILE = "run.json"
SHARD_PATTERN = "{split}-{shard:05d}.parquet"
TMP_GLOB = ".*.tmp-*"
"""Shards being written (``.test-NNNNN.parquet.tmp-PID``): removed when they fail and when the run finishes."""
STAGING_SUFFIX = ".embed-new"


# ---------------------------------------------------------------------------------------------- input
def stream_source(options: Mapping[str, Any], split: str | None) -> Any:
    """A `datasets.IterableDataset` over the rows of a data source, in Arrow format (nothing materialised).

    options: ``{"dataset": "synthetic", ...}`` (built in memory, then iterated), a local folder of exported Parquet
    (``data/<split>-*.parquet``, read by `datasets`' streaming Parquet reader), or a Hub data set id (streamed by
    `crjepa.data.loading.load_hub_dataset`; every split when ``split`` is None, as for a local folder).
    """
    import datasets

    from crjepa.data.schema import SPLITS, DataError

    source = str(options["dataset"])
    if source == "synthetic":
        from crjepa.data.loading import load_paired_dataset

        kwargs = {k: v for k, v in options.items() if k != "dataset"}
        if "num_pairs" in kwargs:
            n = kwargs.pop("num_pairs")
            kwargs.update(num_train=n, num_validation=n, num_test=n)
        stream = load_paired_dataset("synthetic", split=split, **kwargs).to_iterable_dataset()
    elif Path(source).is_dir():
        base = Path(source) / "data" if (Path(source) / "data").is_dir() else Path(source)
        wanted = [split] if split else list(SPLITS)
        files = [str(p) for s in wanted for p in sorted(base.glob(f"{s}-*.parquet"))]
        if not files:
            raise DataError(f"No exported Parquet shards ({split or '<split>'}-NNNNN-of-NNNNN.parquet) in {base}")
        stream = datasets.load_dataset("parquet", data_files={"all": files}, split="all", streaming=True)
    else:
        from crjepa.data.loading import load_hub_dataset

        stream = load_hub_dataset(source, split, streaming=True)
    return stream.with_format("arrow")


def source_rows(options: Mapping[str, Any], split: str | None, stream: Any = None) -> int | None:
    """How many rows a source streams (for the progress bar's total and ETA), without reading a row: the synthetic
    set's sizes, the row counts in the Parquet footers of a local export, or the split sizes a Hub data set's
    card records (``stream.info``); None when unknown."""
    import importlib

    from crjepa.data.schema import BUILDER_MODULES, SPLITS

    source = str(options["dataset"])
    wanted = [split] if split else list(SPLITS)
    if source == "synthetic":
        sizes = importlib.import_module(BUILDER_MODULES["synthetic"]).DEFAULT_SIZES
        return sum(int(options.get("num_pairs") or options.get(f"num_{s}") or sizes.get(s, 0)) for s in wanted)
    if Path(source).is_dir():
        import pyarrow.parquet as pq

        base = Path(source) / "data" if (Path(source) / "data").is_dir() else Path(source)
        return sum(pq.read_metadata(p).num_rows for s in wanted for p in sorted(base.glob(f"{s}-*.parquet")))
    splits = getattr(getattr(stream, "info", None), "splits", None) or {}
    counts = [splits[s].num_examples for s in wanted if s in splits]
    return sum(counts) if counts and all(counts) else None


def own_rows(total: int, shard_rows: int, rank: int, world: int) -> list[tuple[int, int]]:
    """(shard, rows) of the shards process ``rank`` of ``world`` embeds out of ``total`` rows."""
    shards = math.ceil(total / shard_rows)
    return [(s, min(shard_rows, total - s * shard_rows)) for s in range(rank, shards, world)]


def _batches(stream: Any, batch_size: int) -> Iterator[Any]:
    """The stream as pyarrow Tables of ``batch_size`` rows (the last one shorter)."""
    yield from stream.iter(batch_size=batch_size)


# ---------------------------------------------------------------------------------------------- run bookkeeping
def run_signature(
    fingerprint: str, source: Mapping[str, Any], sensors: Sequence[str], spaces: Sequence[str], shard_rows: int
) -> dict[str, Any]:
    """What makes two runs' shards interchangeable (stored in ``.embed/run.json``)."""
    return {
        "model_fingerprint": fingerprint,
        "source": dict(source),
        "sensors": list(sensors),
        "spaces": list(spaces),
        "shard_rows": int(shard_rows),
    }


def _read_run(path: Path) -> Any:
    try:
        return json.loads(path.read_text())
    except (OSError, ValueError):
        return None


def staging_folder(output: Path) -> Path:
    """Where a run that replaces ``output`` writes until it is complete: ``.<name>.embed-new`` beside it."""
    output = Path(output)
    return output.with_name(f".{output.name}{STAGING_SUFFIX}")


def work_folder(output: Path, signature: Mapping[str, Any], overwrite: bool = False, decide: bool = True) -> Path:
    """The folder a run writes its shards into: ``output`` itself when it is absent, empty, or holds this run
    (resumed) or an unfinished other run (`claim_folder` then refuses it); else, so that nothing is lost before the
    new archive is complete, `staging_folder` (an earlier staging of the same run is resumed, one of another run is
    dropped: it is our own scratch). ``decide=False`` (worker processes): the folder the main process chose."""
    output = Path(output)
    staging = staging_folder(output)
    if not decide:
        return staging if (staging / RUN_DIR / RUN_FILE).is_file() else output
    run = output / RUN_DIR / RUN_FILE
    if overwrite:
        in_place = False
    elif run.is_file():
        in_place = _read_run(run) == dict(signature) or not (output / INFO_FILE).is_file()
    else:
        in_place = not output.exists() or (output.is_dir() and not output.is_symlink() and not any(output.iterdir()))
    if in_place:
        if staging.exists():
            shutil.rmtree(staging)  # a replacement abandoned earlier
        return output
    if staging.exists() and _read_run(staging / RUN_DIR / RUN_FILE) != dict(signature):
        shutil.rmtree(staging)
    return staging


def claim_folder(output: Path, signature: Mapping[str, Any]) -> None:
    """Start or resume a run in ``output``: refuse a folder that holds anything else or another run's shards."""
    run = output / RUN_DIR / RUN_FILE
    if run.is_file():
        found = _read_run(run)
        if found != dict(signature):
            diff = sorted(
                k
                for k in {**(found or {}), **signature}
                if not isinstance(found, dict) or found.get(k) != signature.get(k)
            )
            raise EmbeddingsError(
                f"{output} holds shards of another embedding run (different {', '.join(diff)}); "
                "use another --output folder, or pass --overwrite to replace it"
            )
        return
    if output.exists() and any(output.iterdir()):
        raise EmbeddingsError(
            f"{output} exists and is not a resumable embedding run (no {RUN_DIR}/{RUN_FILE}); "
            "use another --output folder or delete this one"
        )
    (output / RUN_DIR).mkdir(parents=True, exist_ok=True)
    (output / DATA_DIR).mkdir(exist_ok=True)
    atomic_write_json(run, signature)


def run_split(output: Path) -> str:
    """The split a run's shards are named after: that of the source its run.json records (`archive_split`)."""
    run = output / RUN_DIR / RUN_FILE
    return archive_split(json.loads(run.read_text()).get("source") if run.is_file() else None)


def shard_path(output: Path, shard: int, split: str = "train") -> Path:
    return output / DATA_DIR / SHARD_PATTERN.format(split=split, shard=shard)


# ---------------------------------------------------------------------------------------------- the worker
def _table_batch(table: Any, sensors: Sequence[str], config: Any = None) -> dict[str, Any]:
    """A pyarrow batch -> {"id": [...], sensor: tensor (B, C, H, W) in its stored dtype, "present": {sensor: (B,)
    bool}}. A row lacking a sensor (null value) gets zeros there and False in "present" (as `PairBatches`); a
    batch where no row has the sensor gets zeros at the model's size (``config``)."""
    import torch

    ids = table["id"].to_pylist()
    if any(i is None or str(i) == "" for i in ids):
        bad = [n for n, i in enumerate(ids) if i is None or str(i) == ""][:5]
        raise EmbeddingsError(
            f"The input has rows without an id (null or empty; rows {bad} of a batch of "
            f"{len(ids)}): archive items are found by id; give every row a unique id"
        )
    batch: dict[str, Any] = {"id": [str(i) for i in ids], "present": {}}
    for sensor in sensors:
        if sensor not in table.column_names:
            raise EmbeddingsError(
                f"The data has no column {sensor!r} for sensor {sensor!r}; its columns are {table.column_names}"
            )
        column = table[sensor].combine_chunks()
        valid = column.is_valid().to_numpy(zero_copy_only=False) if column.null_count else np.ones(len(column), bool)
        if not valid.any():
            channels, size = (config.sensors[sensor], config.image_size) if config is not None else (1, 1)
            batch[sensor] = torch.zeros(len(column), channels, size, size)
            batch["present"][sensor] = torch.from_numpy(valid)
            continue
        array = _image_array(column.filter(column.is_valid()) if column.null_count else column)
        if column.null_count:  # scatter the present rows back, zeros elsewhere
            full = np.zeros((len(column), *array.shape[1:]), array.dtype)
            full[valid] = array
            array = full
        batch[sensor] = torch.from_numpy(np.array(array, copy=True))
        batch["present"][sensor] = torch.from_numpy(valid)
    return batch


def _image_array(column: Any) -> np.ndarray:
    """An image column without nulls (Array3D, or nested lists from a Hub stream) -> (N, C, H, W) numpy."""
    try:
        array = column.to_numpy()
    except (TypeError, NotImplementedError, AttributeError):  # nested lists rather than Array3D
        array = np.asarray(column.to_pylist())
    if array.dtype == object:
        array = np.stack([np.asarray(a.tolist() if hasattr(a, "tolist") else a) for a in array])
    return array


def embed_shards(
    model: Any,
    stream: Any,
    output: str | Path,
    *,
    class_names: Sequence[str],
    metadata_columns: Sequence[str] = (),
    sensors: Sequence[str] | None = None,
    spaces: Sequence[str] = ("unified", "cross"),
    batch_size: int = 64,
    shard_rows: int = 8192,
    rank: int = 0,
    world: int = 1,
    progress: bool = False,
    on_shard: Callable[[int], None] | None = None,
    total_rows: int | None = None,
) -> dict[str, int]:
    """Embed this process's shards of ``stream`` into ``output/data/`` (see the module docstring).

    ``total_rows`` (`source_rows`): the stream's length, so the progress bar shows this process's total and an ETA
    (shards finished by an earlier run count as done).

    Returns {"rows": rows in the stream, "shards": shards in the stream, "written": shards written now,
    "skipped": own shards found finished}. ``on_shard`` is called with each shard number once it is renamed.
    """
    from crjepa.eval.retrieval import compute_embeddings

    output = Path(output)
    split = run_split(output)
    sensors = list(sensors or model.config.sensor_names)
    if shard_rows % batch_size:
        raise EmbeddingsError(f"shard_rows ({shard_rows}) must be a multiple of the batch size ({batch_size})")
    bar = None
    if progress:
        from tqdm.auto import tqdm

        total = initial = None
        if total_rows:
            mine = own_rows(total_rows, shard_rows, rank, world)
            total = sum(n for _, n in mine) * len(sensors)
            initial = sum(n for s, n in mine if shard_path(output, s, split).is_file()) * len(sensors)
        bar = tqdm(
            desc=f"embedding (process {rank + 1}/{world})",
            unit="img",
            unit_scale=True,
            position=rank,
            total=total,
            initial=initial or 0,
        )
    writer, current, tmp = None, -1, None
    rows = written = skipped = 0
    seen_own: set[int] = set()

    def close() -> None:
        nonlocal writer, written
        if writer is not None:
            writer.close()
            writer = None
            _fsync_file(tmp)  # durable before the rename that makes it a finished shard
            os.replace(tmp, shard_path(output, current, split))
            fsync_dir(output / DATA_DIR)
            written += 1
            if on_shard:
                on_shard(current)

    import pyarrow.parquet as pq

    try:
        for number, table in enumerate(_batches(stream, batch_size)):
            shard = number * batch_size // shard_rows
            rows += table.num_rows
            if shard != current:
                close()
                current = shard
            if shard % world != rank:
                continue
            if shard not in seen_own:
                seen_own.add(shard)
                if shard_path(output, shard, split).is_file() and _finished(shard_path(output, shard, split)):
                    skipped += 1
            if shard_path(output, shard, split).is_file():
                continue
            batch = _table_batch(table, sensors, model.config)
            emb = compute_embeddings(model, [batch], sensors=sensors, spaces=spaces, batch_size=batch_size)
            labels = table["labels"].to_pylist() if "labels" in table.column_names else [[] for _ in batch["id"]]
            metadata = {name: table[name].to_pylist() for name in metadata_columns}
            part = vector_table(batch["id"], labels, class_names, emb.vectors, metadata, emb.present)
            if writer is None:
                tmp = output / DATA_DIR / f".{SHARD_PATTERN.format(split=split, shard=shard)}.tmp-{os.getpid()}"
                writer = pq.ParquetWriter(tmp, part.schema)
            writer.write_table(part)
            if bar is not None:
                bar.update(table.num_rows * len(sensors))
        close()
    except BaseException:
        if writer is not None:  # the shard in flight: never left half-written (a rerun embeds it again)
            try:
                writer.close()
            except Exception:
                pass
        if tmp is not None:
            Path(tmp).unlink(missing_ok=True)
        raise
    if bar is not None:
        bar.close()
    shards = math.ceil(rows / shard_rows)
    atomic_write_json(output / RUN_DIR / f"rank-{rank}-of-{world}.json", {"rows": rows, "shards": shards})
    return {"rows": rows, "shards": shards, "written": written, "skipped": skipped}


def _fsync_file(path: Path) -> None:
    fd = os.open(path, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def _finished(path: Path) -> bool:
    """Whether a finished shard still reads (its Parquet footer and row count); a damaged one (truncated by a full
    disk or a bad copy) is removed, with a warning, so that this run embeds it again."""
    import pyarrow as pa
    import pyarrow.parquet as pq

    try:
        if pq.ParquetFile(path).metadata.num_rows > 0:
            return True
        problem = "it holds no rows"
    except (OSError, pa.ArrowException) as err:
        problem = str(err).strip().splitlines()[0] if str(err).strip() else type(err).__name__
    logger.warning("the finished shard %s does not read (%s); embedding it again", path, problem)
    path.unlink(missing_ok=True)
    return False


# ---------------------------------------------------------------------------------------------- finishing
def finish_archive(
    output: str | Path,
    world: int,
    *,
    class_names: Sequence[str],
    metadata_columns: Sequence[str],
    vector_columns: Sequence[str],
    dimension: int,
    model_fingerprint: str,
    config_summary: Mapping[str, Any],
    source: Mapping[str, Any],
    model_repo_id: str | None = None,
    repo_id: str | None = None,
    index: str = "none",
    recall: float | None = None,
) -> dict[str, Any]:
    """Check every shard of a finished run is there and reads, then write embeddings_info.json + card (and indices,
    built column by column from the shards); returns the info."""
    import pyarrow as pa
    import pyarrow.parquet as pq

    output = Path(output)
    done = [output / RUN_DIR / f"rank-{r}-of-{world}.json" for r in range(world)]
    missing = [p.name for p in done if not p.is_file()]
    if missing:
        raise EmbeddingsError(f"{output}: processes {missing} did not finish; rerun the same command to resume")
    shards = {json.loads(p.read_text())["shards"] for p in done}
    if len(shards) != 1:
        raise EmbeddingsError(
            f"{output}: the processes saw different numbers of shards {sorted(shards)}; the input "
            "changed during the run"
        )
    split = archive_split(source)
    expected = [shard_path(output, s, split) for s in range(shards.pop())]
    absent = [p.name for p in expected if not p.is_file()]
    extra = sorted(set((output / DATA_DIR).glob("*.parquet")) - set(expected))
    if absent or extra:
        raise EmbeddingsError(
            f"{output}: shards missing {absent[:5]} or unexpected {[p.name for p in extra[:5]]}; "
            "rerun the same command to resume, or start in an empty folder"
        )
    if not expected:
        raise EmbeddingsError("Refusing to finish an empty embeddings archive (0 rows); check the data source or split")
    total = sum(json.loads(p.read_text())["rows"] for p in done[:1])
    shard_rows = (_read_run(output / RUN_DIR / RUN_FILE) or {}).get("shard_rows") or total
    ids: list[str] = []
    for number, path in enumerate(expected):
        want = min(shard_rows, total - number * shard_rows)
        try:
            found = pq.read_table(path, columns=["id"])["id"].to_pylist()
        except (OSError, pa.ArrowException) as err:
            found, why = None, str(err).strip().splitlines()[0]
        else:
            why = f"it holds {len(found)} rows, not {want}"
        if found is None or len(found) != want:
            raise EmbeddingsError(
                f"The finished shard {path} does not read ({why}); delete it and rerun the same "
                "command: the run embeds the missing shard again"
            )
        ids += found
    if len(set(ids)) != len(ids):
        raise EmbeddingsError(
            f"Archive ids must be unique (search by id needs it); {len(ids) - len(set(ids))} duplicates in the input"
        )
    for stale in (output / DATA_DIR).glob(TMP_GLOB):  # shards of killed or failed processes: every process is done
        stale.unlink(missing_ok=True)
    vector_columns = list(vector_columns)
    info = {
        "format_version": FORMAT_VERSION,
        "num_rows": len(ids),
        "dimension": int(dimension),
        "model_fingerprint": model_fingerprint,
        "model_repo_id": model_repo_id,
        "sensors": list(dict.fromkeys(name.rsplit("_", 1)[0] for name in vector_columns)),
        "spaces": list(dict.fromkeys(name.rsplit("_", 1)[1] for name in vector_columns)),
        "vector_columns": vector_columns,
        "metadata_columns": list(metadata_columns),
        "class_names": list(class_names),
        "indices": {},
        "config": dict(config_summary),
        "source": public_source(source),
        "license": source_license(source),
        "repo_id": repo_id,
    }
    atomic_write_json(output / INFO_FILE, info)
    write_local_source(output, source)
    atomic_write_text(output / "README.md", str(render_embeddings_card(info, ids[0])))
    write_marker(output, OUTPUT_KIND)  # a finished archive: a later `embed -o` here may replace it
    if index != "none":
        add_indices(output, kind=index, recall=recall)
        info = json.loads((output / INFO_FILE).read_text())
    return info


__all__ = [
    "claim_folder",
    "embed_shards",
    "finish_archive",
    "own_rows",
    "run_signature",
    "shard_path",
    "source_rows",
    "staging_folder",
    "stream_source",
    "work_folder",
]
