"""Messages for people from library code: `logging`, shown by the entry points as ``warning: ...`` lines.

Library modules log through ``logging.getLogger(__name__)`` and never print to stderr themselves; an entry point
(`crjepa`, `train_accelerate.py`, `python -m datasets_scripts`, `crjepa app`) calls `show_messages()` once, which
sends the records of the ``crjepa`` and ``datasets_scripts`` loggers to the stderr of the moment as
``<level>: <message>`` (the form the commands have always printed; progress lines, where an entry point shows
them, plain). A program that imports crjepa as a library keeps Python's defaults: warnings reach stderr through
logging's last-resort handler, info stays quiet.
"""

from __future__ import annotations

import logging
import sys

PACKAGES = ("crjepa", "datasets_scripts")
"""The loggers `show_messages` configures (every module's logger is a child of one of them)."""


class _StderrHandler(logging.Handler):
    """Writes to ``sys.stderr`` as it is when the record arrives (tests and notebooks replace it)."""

    def emit(self, record: logging.LogRecord) -> None:
        try:
            sys.stderr.write(self.format(record) + "\n")
            sys.stderr.flush()
        except Exception:  # noqa: BLE001 - a message must never break the command
            self.handleError(record)


class _Format(logging.Formatter):
    """Warnings and errors as ``<level>: <message>``; progress (info and below, shown only where an entry point asks
    for it: ``python -m datasets_scripts``) as the plain line it always was."""

    def format(self, record: logging.LogRecord) -> str:
        """Warnings and errors as ``<level>: <message>`` (then the traceback of ``logger.exception`` records: a bug
        keeps its traceback); progress lines plain."""
        if record.levelno < logging.WARNING:
            return record.getMessage()
        text = f"{record.levelname.lower()}: {record.getMessage()}"
        if record.exc_info:
            text += "\n" + self.formatException(record.exc_info)
        return text


def show_messages(level: int = logging.WARNING) -> None:
    """Show the package loggers' records from ``level`` up on stderr, once per process (idempotent).

    The level is the handler's: the loggers keep their levels and still propagate, so whatever else listens (the
    root logger's handlers, pytest's caplog, a program that called an entry point in-process and then logs at INFO)
    hears them as before; a logger is only lowered to ``level`` when it would drop such records."""
    for name in PACKAGES:
        logger = logging.getLogger(name)
        handler = next((h for h in logger.handlers if isinstance(h, _StderrHandler)), None)
        if handler is None:
            handler = _StderrHandler()
            handler.setFormatter(_Format())
            logger.addHandler(handler)
        handler.setLevel(level)
        if logger.getEffectiveLevel() > level:
            logger.setLevel(level)


__all__ = ["PACKAGES", "show_messages"]
