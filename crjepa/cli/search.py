"""`crjepa search`: the top-k archive items for an archive id (its stored vector: no model needed) or an image (a
file or a BigEarthNet patch folder, embedded by the archive's model), printed as text or JSON, optionally as a grid
of pictures (``--png``); with ``--backend milvus``, searched in Milvus with label and metadata filters."""

from __future__ import annotations

import argparse
import json
from pathlib import Path
from typing import TYPE_CHECKING, Any

from crjepa.cli.common import SYNTHETIC_LIMITS, add_milvus_arguments, backend_of, load_data, load_model, milvus_token
from crjepa.data.schema import DataError
from crjepa.utils.arguments import UsageError, int_in

if TYPE_CHECKING:
    import numpy as np

    from crjepa.hub.archive.search import EmbeddingArchive, Hit


def cmd_search(args: argparse.Namespace) -> int:
    archive, where = _search_archive(args)
    if (args.id is None) == (args.image is None):
        raise UsageError("Give exactly one query: --id ARCHIVE_ID or --image FILE")
    query_labels = None
    if args.id is not None:
        from crjepa.eval.directions import directions_of, parse_direction

        position, named = archive.resolve(args.id)  # an archive id, or a sensor's patch name (S1 names)
        if args.direction:
            parse_direction(args.direction, archive.sensors)  # unknown sensor -> an error naming the accepted ones
        directions = (
            [args.direction]
            if args.direction
            else [d for d in directions_of(archive.sensors) if named is None or d.split("->")[0] == named]
        )
        results = {d: archive.search_by_id(args.id, d, args.k, **where) for d in directions}
        query_labels = archive.labels_of(position)
    else:
        if not args.model:
            raise UsageError("Searching by image needs --model (the model that embedded the archive)")
        sensor, image = _query_image(args, archive)  # a bad query fails before the model is loaded
        args.sensor = sensor
        model = load_model(args.model, args.device)
        targets = [args.target_sensor] if args.target_sensor else archive.sensors
        results = {f"{sensor}->{t}": archive.search_by_image(model, image, sensor, t, args.k, **where) for t in targets}
    if args.json:
        print(json.dumps({d: [vars(h) for h in hits] for d, hits in results.items()}, indent=2))
    else:
        _print_hits(args.id or args.image, query_labels, results)
    if args.png:
        _write_png(args, archive, results)
    return 0


def _search_archive(args: argparse.Namespace) -> tuple[EmbeddingArchive, dict[str, Any]]:
    """The archive to search and the filter keywords of its search calls ({} with faiss, which has none)."""
    from crjepa.hub.archive.loading import load_embeddings

    filters = bool(args.label or args.meta or args.range or args.where)
    if backend_of(args) == "faiss":
        if filters:
            raise UsageError(
                "filters (--label, --meta, --range, --where) run inside Milvus: search with --backend milvus --uri URI"
            )
        return load_embeddings(args.archive), {}
    if args.png:
        raise UsageError("--png needs the archive's labels in memory: search without --backend milvus for a grid")
    archive = load_embeddings(
        args.archive, milvus_uri=args.uri, milvus_token=milvus_token(args), milvus_prefix=args.prefix
    )
    ranges = {}
    for text in args.range:
        key, _, bounds = text.partition("=")
        if ".." not in bounds:
            raise UsageError(f"--range takes KEY=LOW..HIGH (either end may be empty), found {text!r}")
        ranges[key] = tuple(bounds.split("..", 1))
    equal = dict(text.split("=", 1) if "=" in text else (text, None) for text in args.meta)
    if None in equal.values():
        raise UsageError(f"--meta takes KEY=VALUE, found {[k for k, v in equal.items() if v is None]}")
    return archive, {"where": archive.filter(args.label, equal, ranges, args.where)}


def _query_image(args: argparse.Namespace, archive: EmbeddingArchive) -> tuple[str, np.ndarray]:
    """(sensor, (C, H, W) array) of an image query: a file (needs --sensor), or a BigEarthNet-style patch folder
    of per-band GeoTIFFs (`<patch>_B02.tif`, `<patch>_VV.tif`, ...) read in the band order the archive's model
    uses; the sensor of a folder is the one whose bands it holds when --sensor is not given."""
    from crjepa.data.images import band_folder_sensor, probe_image, read_image
    from crjepa.hub.archive.format import EmbeddingsError
    from crjepa.hub.archive.search import MAX_IMAGE_SIDE, check_query_image

    bands = dict((archive.info.get("config") or {}).get("band_names") or {})
    if Path(args.image).is_dir():
        sensor = args.sensor or band_folder_sensor(args.image, bands)
        if sensor not in bands:
            raise UsageError(f"--sensor {sensor!r}: the archive's model has sensors {sorted(bands)}")
        image = read_image(args.image, bands=bands[sensor])
    else:
        if not args.sensor:
            raise UsageError("Searching by an image file needs --sensor (the sensor of the image)")
        sensor = args.sensor
        shape = probe_image(args.image).shape  # the header's size, before the pixels are decoded
        if max(shape[1:]) > MAX_IMAGE_SIDE:
            raise EmbeddingsError(
                f"{args.image} is {shape[1]}x{shape[2]} pixels; a query image side is at most {MAX_IMAGE_SIDE}"
            )
        image = read_image(args.image)
    channels = (archive.info.get("config") or {}).get("sensors", {}).get(sensor)
    if isinstance(channels, int):
        check_query_image(image, sensor, channels)
    return sensor, image


def _print_hits(query: str, query_labels: list[str] | None, results: dict[str, list[Hit]]) -> None:
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


def _write_png(args: argparse.Namespace, archive: EmbeddingArchive, results: dict[str, list[Hit]]) -> None:
    """The result grid: images come from --data SOURCE, or with ``--data recorded`` from the data source the
    archive records (an archive may come from the Hub: its record is used only when asked, and checked)."""
    from crjepa.data.images import read_image
    from crjepa.eval.visualize import DatasetImages, image_grid, query_grid
    from crjepa.hub.archive.provenance import read_local_source

    recorded = dict(archive.info.get("source") or {})
    if not args.data:
        hint = f" (the archive records {json.dumps(recorded)}: pass --data recorded to use it)" if recorded else ""
        raise UsageError(f"--png needs the images: pass --data SOURCE{hint}")
    if args.data == "recorded":  # a local archive also knows its local folder by its absolute path
        local = read_local_source(archive.path) if Path(args.archive).is_dir() else None
        source = recorded_source(local or recorded, archive.path)
    else:
        source = {"dataset": args.data}
    split = source.pop("split", None)
    images = DatasetImages(load_data(source, split))
    if args.id is not None:
        row_id = archive.ids[archive.position(args.id)]  # an S1 patch name -> its item
        grid = query_grid(archive, images, row_id, list(results), args.k, tile=args.tile)
    else:
        grid = image_grid(
            archive,
            images,
            read_image(args.image),
            args.sensor,
            {d.split("->")[1]: hits for d, hits in results.items()},
            tile=args.tile,
        )
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
            raise DataError(f"{where} has unknown synthetic option(s) {sorted(unknown)}; pass --data SOURCE")
        for key, (low, high) in SYNTHETIC_LIMITS.items():
            value = source.get(key)
            if value is not None and (
                not isinstance(value, int) or isinstance(value, bool) or not low <= value <= high
            ):
                raise DataError(f"{where}: {key}={value!r} is outside [{low}, {high}]; pass --data SOURCE")
    elif not isinstance(dataset, str) or not dataset or not Path(dataset).is_dir():
        from crjepa.hub.access import is_repo_id

        if not isinstance(dataset, str) or not is_repo_id(dataset) or Path(dataset).exists():
            raise DataError(
                f"{where} ({dataset!r}) is not 'synthetic', a local folder here, nor a Hub data set "
                "id; pass --data SOURCE"
            )
    split = source.get("split")
    if split is not None and not isinstance(split, str):
        raise DataError(f"{where}: split {split!r} is not a split name; pass --data SOURCE")
    return dict(source)


def add_parser(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser(
        "search",
        help="search an archive by archive id or by an image file",
        description="Print the top-k archive items (id, cosine score, labels) for a query. By id: "
        "uses the stored embedding, no model needed. By image: embeds only the query.",
    )
    p.add_argument("archive", help="embeddings archive folder or Hub dataset repo id")
    p.add_argument(
        "--id",
        default=None,
        help="query by the id of an archive item, or by a sensor's patch name the archive records (an S1 "
        "patch name: the search then starts from s1)",
    )
    p.add_argument(
        "--image",
        default=None,
        help="query by an image file (.npy (C,H,W), .tif, .png) or a BigEarthNet patch folder of per-band "
        "GeoTIFFs (S1 or S2; its sensor is found from its bands)",
    )
    p.add_argument(
        "--direction",
        default=None,
        help="with --id: e.g. 's1->s2' (quoted: unquoted, the shell reads > as a redirection; default: "
        "every direction the archive's sensors allow: four for two sensors, 's2->s2' for S2 alone)",
    )
    p.add_argument("--sensor", default=None, help="with --image: the sensor of the image (a folder's is found)")
    p.add_argument("--target-sensor", default=None, help="with --image: sensor column to search (default: both)")
    p.add_argument("--model", default=None, help="with --image: the model folder that embedded the archive")
    p.add_argument("--device", default="auto", help="with --image: 'auto', 'cpu', 'cuda'...")
    p.add_argument("-k", type=int_in(1, 100_000), default=10, help="results per direction (default 10)")
    p.add_argument("--png", default=None, help="also write the result grid (green = relevant) to this PNG")
    p.add_argument(
        "--data",
        default=None,
        help="with --png: image source ('synthetic', a Parquet folder, or 'recorded': the source the "
        "archive records, checked first)",
    )
    p.add_argument(
        "--tile", type=int_in(8, 1024), default=96, help="with --png: tile size in pixels (8 to 1024, default 96)"
    )
    p.add_argument("--json", action="store_true", help="print JSON instead of a table")
    add_milvus_arguments(p)
    p.add_argument(
        "--label",
        action="append",
        default=[],
        metavar="CLASS",
        help="with --backend milvus: only items whose labels contain CLASS (repeatable: all of them)",
    )
    p.add_argument(
        "--meta",
        action="append",
        default=[],
        metavar="KEY=VALUE",
        help="with --backend milvus: only items whose metadata KEY equals VALUE, e.g. tile=33UVP",
    )
    p.add_argument(
        "--range",
        action="append",
        default=[],
        metavar="KEY=LOW..HIGH",
        help="with --backend milvus: metadata KEY within [LOW, HIGH] (string order: ISO dates work; "
        "an empty end is open), e.g. s2_date=2017-06-01..2017-08-31",
    )
    p.add_argument("--where", default=None, help="with --backend milvus: a raw Milvus filter expression")
    p.set_defaults(func=cmd_search)


__all__ = ["add_parser", "cmd_search", "recorded_source"]
