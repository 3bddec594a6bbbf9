"""`crjepa app`: the search page in the browser (`crjepa.app`, Gradio), or a Hugging Face Space folder serving it."""

from __future__ import annotations

import argparse


def cmd_app(args: argparse.Namespace) -> int:
    """The search app (crjepa.app): serve it, or write a Hugging Face Space folder that serves it."""
    from crjepa.app import require_gradio

    if args.export_space:
        from crjepa.app.space import export_space

        folder = export_space(
            args.export_space,
            args.archive,
            model=args.model,
            data=args.data,
            requirement=args.requirement,
            overwrite=args.overwrite,
        )
        print(
            f"Wrote the Space folder {folder}: push it with `hf upload USER/SPACE {folder} --repo-type space` "
            f"(or run it here: cd {folder} && python app.py)"
        )
        return 0
    require_gradio()  # before the archive and model are loaded
    from crjepa.app.ui import serve

    serve(args.archive, model=args.model, data=args.data, host=args.host, port=args.port)
    return 0


def add_parser(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser(
        "app",
        help="search an archive in the browser (Gradio), or export that app as a Space",
        description="Serve a search page for an embeddings archive: query by archive id (search as "
        "you type) or, with --model, by an uploaded image (.npy, GeoTIFF, PNG, a "
        "BigEarthNet patch folder as .zip); choose the direction, k and label / metadata "
        "filters; see the top-k as pictures with ids, scores, labels and relevance, and "
        'the archive\'s card facts and scores. Needs `pip install "crjepa[app]"`.',
    )
    p.add_argument("archive", help="embeddings archive folder or Hub dataset repo id")
    p.add_argument(
        "--model",
        default=None,
        help="the model that embedded the archive (folder or Hub repo): enables search by image",
    )
    p.add_argument(
        "--data",
        default=None,
        help="where the pictures come from: 'synthetic', a Parquet export folder, a Hub dataset id, or "
        "'recorded' (the source the archive records, checked first); default: no pictures",
    )
    p.add_argument("--port", type=int, default=None, help="port (default: 7860 or GRADIO_SERVER_PORT)")
    p.add_argument(
        "--host", default=None, help="address to listen on (default: 127.0.0.1 or GRADIO_SERVER_NAME; 0.0.0.0 for all)"
    )
    p.add_argument(
        "--export-space",
        default=None,
        metavar="DIR",
        help="write a Hugging Face Space folder (app.py, requirements.txt, README.md) that serves this "
        "app for ARCHIVE, --model and --data (Hub ids), instead of serving it here",
    )
    p.add_argument(
        "--requirement",
        default=None,
        help='with --export-space: how the Space installs crjepa (a pip requirement, e.g. "crjepa[app] @ '
        'git+https://github.com/you/crjepa"); default: the crjepa code is copied into the folder',
    )
    p.add_argument("--overwrite", action="store_true", help="with --export-space: replace DIR whatever it holds")
    p.set_defaults(func=cmd_app)


__all__ = ["add_parser", "cmd_app"]
