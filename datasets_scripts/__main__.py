"""``python -m datasets_scripts <name> ... --output-dir OUT [--push-to-hub user/repo]``: build a data set and export
it as Parquet + a dataset card (optionally pushed to the Hub). Each builder module registers its own subcommand
with ``add_cli(subparsers)``; a module that cannot be imported (e.g. missing optional dependencies) is skipped."""

from __future__ import annotations

import argparse
import importlib
import logging

from . import BUILDER_MODULES


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
            module.add_cli(subparsers)
        except Exception as exc:  # an optional builder must not break the others
            unavailable[name] = f"{type(exc).__name__}: {exc}"
    if unavailable:
        parser.epilog = "unavailable: " + "; ".join(f"{k} ({v})" for k, v in unavailable.items())
    return parser, unavailable


def main(argv: list[str] | None = None) -> int:
    """Parse arguments and run the chosen builder's ``run_cli``."""
    logging.basicConfig(level=logging.INFO, format="%(message)s")
    parser, _ = build_parser()
    args = parser.parse_args(argv)
    status = int(args.func(args) or 0)
    import gc

    gc.collect()  # Arrow objects go before the interpreter's teardown (see common.run_export)
    return status


if __name__ == "__main__":
    from crjepa.utils.process import exit_without_teardown

    exit_without_teardown(main())  # an Arrow thread must not abort a finished export at exit (crjepa.utils.process)
