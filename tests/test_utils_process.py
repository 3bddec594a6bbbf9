"""crjepa/utils/process.py: a user error reaches the user once, past `accelerate launch`'s copy of the script's
stderr (the launcher's own end-to-end test: tests/test_train_reliability.py)."""

from __future__ import annotations

import subprocess
import sys

from crjepa.utils import process


def test_an_error_line_goes_to_the_launchers_own_stderr(tmp_path, monkeypatch, capsys):
    """accelerate's launcher drops a chunk of the script's stderr it read just before the SIGTERM that stops it, so
    the line is written to the launcher's stderr (its fd 2, opened anew), not through its copy."""
    log = tmp_path / "launcher-stderr.txt"
    with open(log, "w") as err:  # a stand-in launcher: a process whose stderr is that file, waiting on its stdin
        launcher = subprocess.Popen(
            [sys.executable, "-c", "import sys; sys.stdin.read()"], stdin=subprocess.PIPE, stderr=err
        )
    try:
        monkeypatch.setattr(process, "launcher_pid", lambda: launcher.pid)
        process.say_past_the_launcher("error: data.batch_size must be >= 1")
    finally:
        launcher.communicate(b"")
    assert log.read_text() == "error: data.batch_size must be >= 1\n"
    assert capsys.readouterr().err == ""  # not also through this process's stderr


def test_without_a_launcher_the_line_is_this_processs_stderr(monkeypatch, capsys):
    monkeypatch.setattr(process, "launcher_pid", lambda: None)
    assert process.report_user_error("error: bad value") == 2
    assert capsys.readouterr().err == "error: bad value\n"
