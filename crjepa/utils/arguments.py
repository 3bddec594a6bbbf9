"""Command-line argument types and parser, defined once for `crjepa` and `python -m datasets_scripts`: every value is
type- and range-checked by the parser, before any work, and a bad one is one ``error:`` line with exit status 2
(no usage block; under `accelerate launch` once, without the launcher's traceback: `crjepa.utils.process`).
Imports only the standard library and `crjepa.errors`."""

from __future__ import annotations

import argparse
import math
import re
import sys
from collections.abc import Callable
from typing import Any

from crjepa.errors import CRJepaError

__all__ = ["OneLineParser", "UsageError", "fraction", "int_in", "number_in", "repo_id"]

_REPO_ID = re.compile(r"[A-Za-z0-9][A-Za-z0-9_.\-]{0,95}/[A-Za-z0-9][A-Za-z0-9_.\-]{0,95}")  # = crjepa.hub.access


class UsageError(CRJepaError, ValueError):
    """Command-line arguments that do not fit together (the parser checks each value alone): the command prints it
    as its one ``error:`` line."""


class OneLineParser(argparse.ArgumentParser):
    """argparse with one line per user error: ``<prog>: error: ...`` and exit status 2."""

    def error(self, message: str) -> Any:
        from crjepa.utils.process import report_user_error

        sys.exit(report_user_error(f"{self.prog}: error: {message} (see {self.prog} --help)"))


def int_in(low: int, high: int) -> Callable[[str], int]:
    """An argparse type: an integer in [low, high]."""

    def parse(text: str) -> int:
        try:
            value = int(text)
        except ValueError:
            raise argparse.ArgumentTypeError(f"must be an integer in [{low}, {high}], found {text!r}") from None
        if not low <= value <= high:
            raise argparse.ArgumentTypeError(f"must be an integer in [{low}, {high}], found {value}")
        return value

    parse.__name__ = "integer"
    return parse


def number_in(low: float, high: float, low_open: bool = False) -> Callable[[str], float]:
    """An argparse type: a finite number in [low, high] (``low_open``: in (low, high])."""
    shown = f"{'(' if low_open else '['}{low:g}, {high:g}]"

    def parse(text: str) -> float:
        try:
            value = float(text)
        except ValueError:
            value = math.nan
        if not (math.isfinite(value) and (low < value if low_open else low <= value) and value <= high):
            raise argparse.ArgumentTypeError(f"must be a number in {shown}, found {text!r}")
        return value

    parse.__name__ = "number"
    return parse


fraction = number_in(0, 1, low_open=True)
"""An argparse type: a number in (0, 1] (a recall target, a share)."""


def repo_id(text: str) -> str:
    """An argparse type: a Hub repo id ``user-or-org/name`` (cards paste it into code)."""
    if not _REPO_ID.fullmatch(text):
        raise argparse.ArgumentTypeError(f"must be a Hub repo id like user/name, found {text!r}")
    return text
