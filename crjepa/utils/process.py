"""Leaving a command-line process: without the interpreter's teardown, and without the launcher's traceback.

Arrow (under `datasets`) keeps reader and I/O threads in C++ thread pools. When Python tears its objects down at
exit after a successful run, those threads can outlive what they use and the process aborts with "terminate
called without an active exception" (exit -6) although all its work is done and written (apache/arrow#34314,
apache/arrow#45214, huggingface/datasets#7566). It happened intermittently to `python -m datasets_scripts
bigearthnet` in CI, also after collecting garbage first. A command whose outputs are complete (written through
context managers, files closed) therefore leaves with `os._exit` after flushing the logs and standard streams.

`accelerate launch` (the documented launcher of train_accelerate.py) turns any non-zero exit of the script into a
launcher traceback that repeats the script's stderr (accelerate 1.x: a CalledProcessError from its single-process
launcher, a ChildFailedError report from torchrun's), so a one-line user error reached the user twice and under 15
lines of traceback. `stop_launcher` asks the launcher to stop as on Ctrl-C-like termination (SIGTERM, which both of
its launchers handle by stopping the workers and exiting quietly): the user sees the script's one line.
"""

from __future__ import annotations

import logging
import os
import signal
import sys
import time
from pathlib import Path
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


def launcher_pid() -> int | None:
    """The pid of the `accelerate launch` process that started this one (its single-process launcher or its
    torchrun agent), or None when this process was not started by it."""
    if "ACCELERATE_MIXED_PRECISION" not in os.environ:  # set by accelerate's launchers for the processes they start
        return None
    parent = os.getppid()
    try:
        args = Path(f"/proc/{parent}/cmdline").read_bytes().split(b"\0")
    except OSError:
        return None
    names = [Path(os.fsdecode(a)).name for a in args if a]
    launched = any(n == "accelerate" or n.startswith("accelerate-") for n in names[:2]) and "launch" in names[1:3]
    module = any(os.fsdecode(a) in ("accelerate.commands.launch", "accelerate.commands.accelerate_cli") for a in args)
    return parent if launched or module else None


def stop_launcher(wait_s: float = 30.0) -> bool:
    """Under `accelerate launch`: flush the standard streams, ask the launcher to stop (SIGTERM: it stops every
    process it started, this one included, and exits without a traceback) and wait to be stopped. Returns False
    (at once) when this process was not started by `accelerate launch`, True if the launcher did not stop it within
    ``wait_s`` seconds (the caller then exits as usual)."""
    parent = launcher_pid()
    if parent is None:
        return False
    for stream in (sys.stdout, sys.stderr):
        try:
            stream.flush()
        except (OSError, ValueError):
            pass
    if int(os.environ.get("RANK", "0")) == 0:  # one process asks; the launcher stops the others
        try:
            os.kill(parent, signal.SIGTERM)
        except OSError:
            return False
    deadline = time.monotonic() + wait_s
    while time.monotonic() < deadline and os.getppid() == parent:
        time.sleep(0.05)
    return True


def say_past_the_launcher(line: str) -> None:
    """Write ``line`` to the stderr of the `accelerate launch` process that started this one (the user's terminal or
    log), else to this process's stderr.

    accelerate's single-process launcher reads the script's stderr through a pipe and copies it out; the SIGTERM of
    `stop_launcher` interrupts that copy, and a chunk read just before the signal is dropped (seen under load: the
    error line never reached the user). Written to the launcher's own stderr, the line does not pass through the copy.
    """
    parent = launcher_pid()
    if parent is not None:
        try:
            with open(f"/proc/{parent}/fd/2", "a") as stream:  # the same pipe, terminal or file, opened anew
                stream.write(line + "\n")
            return
        except OSError:  # a socket, or no /proc: this process's stderr, through the launcher
            pass
    print(line, file=sys.stderr, flush=True)


def report_user_error(line: str) -> int:
    """Print a user error once (by the main process: every process of a multi-process run finds the same one) and
    return exit status 2; under `accelerate launch`, whose launcher would add a traceback repeating the line, the
    line goes to the launcher's stderr and the launcher is asked to stop instead (`stop_launcher`): it exits with its
    own status (143)."""
    if int(os.environ.get("RANK", "0")) == 0:
        say_past_the_launcher(line)
    stop_launcher()
    return 2


__all__ = ["exit_without_teardown", "launcher_pid", "report_user_error", "say_past_the_launcher", "stop_launcher"]
