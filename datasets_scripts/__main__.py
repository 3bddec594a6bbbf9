"""``python -m datasets_scripts <name> ... --output-dir OUT [--push-to-hub user/repo]``: build a data set and export
it as Parquet + a dataset card (optionally pushed to the Hub). Each builder module registers its own subcommand
with ``add_cli(subparsers)``; a builder whose optional dependencies (the ``bigearthnet`` extra) are missing is
skipped and named in the help. An error a person can fix (`crjepa.errors.CRJepaError`) is one ``error:`` line and
exit status 2; anything else is a bug and keeps its traceback."""

from __future__ import annotations

import argparse
import gc
import importlib
import logging
import sys

from crjepa.errors import CRJepaError
from crjepa.utils.logs import show_messages

from . import BUILDER_MODULES

OPTIONAL_MODULES = ("rasterio", "h5py", "lmdb", "bigearthnet_common")
"""The modules of the ``bigearthnet`` extra: a builder that cannot import one of them is left out of the CLI."""


def build_parser() -> tuple[argparse.ArgumentParser, dict[str, str]]:
    """The CLI parser with one subcommand per importable builder module, and why others are missing."""
    from crjepa.utils.arguments import OneLineParser

    parser = OneLineParser(
        prog="python -m datasets_scripts",
        description="Build crjepa paired data sets and export them as Parquet + dataset card (Hub-ready).",
    )
    subparsers = parser.add_subparsers(dest="command", metavar="<dataset>", required=True)
    unavailable: dict[str, str] = {}
    for name, module_name in BUILDER_MODULES.items():
        try:
            module = importlib.import_module(module_name)
        except ImportError as exc:  # an optional builder must not break the others; a bug keeps its traceback
            if (exc.name or "").split(".")[0] not in OPTIONAL_MODULES:
                raise
            unavailable[name] = f"{type(exc).__name__}: {exc}"
            continue
        module.add_cli(subparsers)
    if unavailable:
        parser.epilog = "unavailable: " + "; ".join(f"{k} ({v})" for k, v in unavailable.items())
    return parser, unavailable


def main(argv: list[str] | None = None) -> int:
    """Parse arguments and run the chosen builder's ``run_cli``; a `CRJepaError` is one ``error:`` line, status 2."""
    show_messages(logging.INFO)  # the builders' progress lines and warnings, on stderr
    parser, _ = build_parser()
    args = parser.parse_args(argv)
    try:
        status = int(args.func(args) or 0)
    except CRJepaError as err:
        print(f"error: {err}", file=sys.stderr)
        return 2
    gc.collect()  # Arrow objects go before the interpreter's teardown (see common.run_export)
    return status


if __name__ == "__main__":
    from crjepa.utils.process import exit_without_teardown

    exit_without_teardown(main())  # an Arrow thread must not abort a finished export at exit (crjepa.utils.process)
