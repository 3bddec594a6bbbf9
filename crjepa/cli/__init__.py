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
Heavy imports happen inside the commands so ``--help`` stays instant. A problem the person can fix (a
`crjepa.errors.CRJepaError`, a missing file, a full disk) prints one ``error:`` line and exits with status 2; any
other exception is a bug and keeps its traceback.

    crjepa.cli.common    arguments and loading shared by the commands (data source, model, device, Milvus)
    crjepa.cli.embed     crjepa embed
    crjepa.cli.index     crjepa index
    crjepa.cli.search    crjepa search
    crjepa.cli.evaluate  crjepa evaluate
    crjepa.cli.publish   crjepa export-checkpoint, crjepa push
    crjepa.cli.app       crjepa app
"""

from __future__ import annotations

import argparse
import sys
from collections.abc import Sequence

from crjepa.cli import app, embed, evaluate, index, publish, search
from crjepa.cli.common import pick_device
from crjepa.errors import CRJepaError
from crjepa.utils.arguments import OneLineParser

EXTRA_MODULES = ("rasterio", "h5py", "bigearthnet_common")
"""Modules of the `bigearthnet` extra (GeoTIFF, HDF5 .mat, BigEarthNet metadata): importing one that is not
installed is a missing install, said in one line with the install command; any other ImportError is a bug."""


def build_parser() -> argparse.ArgumentParser:
    """The ``crjepa`` parser: one sub-command per command, each defined by its module's ``add_parser``."""
    parser = OneLineParser(
        prog="crjepa",
        description="CR-JEPA cross-modal remote-sensing retrieval: embed, index, search, "
        "evaluate, push, and look at the results in the browser (app).",
        epilog="Example: crjepa embed ./model synthetic -o ./emb && crjepa search ./emb --id ID --direction 's1->s2'"
        " (quote directions: the shell reads > as a redirection)",
    )
    sub = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")
    embed.add_parser(sub)
    index.add_parser(sub)
    search.add_parser(sub)
    evaluate.add_parser(sub)
    publish.add_parsers(sub)
    app.add_parser(sub)
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    """Entry point of the ``crjepa`` console script; returns the exit code."""
    from crjepa.utils.logs import show_messages
    from crjepa.utils.process import report_user_error

    parser = build_parser()
    args = parser.parse_args(argv)
    args.argv = list(sys.argv[1:] if argv is None else argv)
    show_messages()

    def user_error(message: str) -> int:
        return report_user_error(f"crjepa {args.command}: error: {message}")

    try:
        if getattr(args, "device", "auto") != "auto":
            pick_device(args.device)  # a device that does not exist: before any work
        return int(args.func(args) or 0)
    except (CRJepaError, FileNotFoundError, FileExistsError) as err:  # a person can fix it: one line
        return user_error(" ".join(str(err).split()))
    except ImportError as err:
        if err.name not in EXTRA_MODULES:
            raise
        hint = 'this needs the bigearthnet extra: pip install "crjepa[bigearthnet]"'
        return user_error(" ".join(f"{err}: {hint}".split()))
    except OSError as err:  # read-only file system, disk full, permissions: name the file and what to do
        where = f"{err.filename}: " if err.filename else ""
        return user_error(
            f"{where}{err.strerror or err}; check that the path is writable and the disk has space, "
            "or choose another path"
        )
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


__all__ = ["EXTRA_MODULES", "build_parser", "entry", "main"]
