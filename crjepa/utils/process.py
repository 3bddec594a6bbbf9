"""Leaving a finished command-line process without the interpreter's teardown.

Arrow (under `datasets`) keeps reader and I/O threads in C++ thread pools. When Python tears its objects down at
exit after a successful run, those threads can outlive what they use and the process aborts with "terminate
called without an active exception" (exit -6) although all its work is done and written (apache/arrow#34314,
apache/arrow#45214, huggingface/datasets#7566). It happened intermittently to `python -m datasets_scripts
bigearthnet` in CI, also after collecting garbage first. A command whose outputs are complete (written through
context managers, files closed) therefore leaves with `os._exit` after flushing the logs and standard streams.
"""

from __future__ import annotations

import logging
import os
import sys
from typing import NoReturn


def exit_without_teardown(status: int) -> NoReturn:
    """Flush logging, stdout and stderr, then end the process with ``status`` without running the interpreter's
    teardown (atexit handlers, object finalisers). For the entry points of finished commands only."""
    logging.shutdown()
    for stream in (sys.stdout, sys.stderr):
        try:
            stream.flush()
        except (OSError, ValueError):  # a closed or broken pipe: nothing more can be said
            pass
    os._exit(int(status))


__all__ = ["exit_without_teardown"]
