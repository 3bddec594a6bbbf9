"""crjepa.utils.locks: one writer at a time (a second stops at once, naming the holder), a killed holder's stale lock
is reported and taken over, another host's lock never is, and the Windows (msvcrt) path excludes the same way."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import textwrap

import pytest

from crjepa.utils.atomic import lock_file_for
from crjepa.utils.locks import DirLock, LockedError

from helpers import REPO, write_marked_folder


def test_a_second_writer_stops_at_once_naming_the_holder(tmp_path):
    target = tmp_path / "index"
    holder = subprocess.Popen(
        [
            sys.executable,
            "-c",
            "import sys; from crjepa.utils.locks import DirLock; "
            f"lock = DirLock({str(lock_file_for(target))!r}, what='writing faiss-index').acquire(); "
            "print('locked', flush=True); sys.stdin.readline()",
        ],  # holds the lock until the test lets go
        cwd=REPO,
        env={**os.environ, "PYTHONPATH": str(REPO)},
        stdin=subprocess.PIPE,
        stdout=subprocess.PIPE,
        text=True,
    )
    try:
        assert holder.stdout.readline().strip() == "locked"
        # the holder keeps its lock for as long as this test runs: a writer that waited for it would never return
        with pytest.raises(LockedError, match=rf"in use by another crjepa process: pid {holder.pid} on host .*started"):
            write_marked_folder(target)
        assert not target.exists()
    finally:
        holder.kill()
        holder.wait()
    # the holder was killed: its lock file is left behind; the next writer reports it and takes over
    assert lock_file_for(target).exists()
    messages = []
    with DirLock(lock_file_for(target), warn=messages.append, folder=target) as lock:
        assert lock.stale["pid"] == holder.pid
    assert len(messages) == 1 and f"stale lock of pid {holder.pid}" in messages[0]
    assert "no longer running" in messages[0]
    assert not lock_file_for(target).exists()  # released


def test_lock_of_another_host_is_not_taken_over(tmp_path):
    lock_file = tmp_path / ".out.lock"
    lock_file.write_text(json.dumps({"pid": 1234, "host": "some-other-node", "started": 0, "what": "training run"}))
    with pytest.raises(LockedError, match=r"locked by pid 1234 on host some-other-node.*delete .*\.out\.lock"):
        DirLock(lock_file, folder=tmp_path / "out").acquire()


WINDOWS_LIKE = textwrap.dedent("""
    # A Windows-like interpreter: `import fcntl` raises ImportError, then crjepa.utils.locks gets an msvcrt whose
    # locking() is simulated with POSIX byte-range locks (same calls, same offsets, one lock per process), so its
    # Windows branch runs for real (msvcrt is not put in sys.modules: the standard library would take us for Windows)
    import fcntl as _fcntl, os, sys, types
    sys.modules["fcntl"] = None
    import crjepa.search, crjepa.search.index, crjepa.hub.archive, crjepa.utils.locks as locks
    assert locks.fcntl is None
    msvcrt = types.ModuleType("msvcrt")
    msvcrt.LK_UNLCK, msvcrt.LK_NBLCK = 0, 2
    def locking(fd, mode, nbytes):
        start = os.lseek(fd, 0, os.SEEK_CUR)
        _fcntl.lockf(fd, _fcntl.LOCK_UN if mode == msvcrt.LK_UNLCK else _fcntl.LOCK_EX | _fcntl.LOCK_NB, nbytes, start)
    msvcrt.locking = locking
    locks.msvcrt = msvcrt
""")


@pytest.mark.slow
def test_search_and_archives_import_without_fcntl_and_locks_still_exclude(tmp_path):
    """crjepa.search and crjepa.hub.archive import where fcntl does not exist (Windows); the lock then takes the
    msvcrt path: a second writer stops naming the holder, a killed holder's lock is reported and taken over."""
    lock = tmp_path / ".out.lock"
    holder_code = WINDOWS_LIKE + textwrap.dedent(f"""
        import time
        from crjepa.utils.locks import DirLock
        held = DirLock({str(lock)!r}, what="writing embeddings").acquire()
        print("locked", flush=True)
        time.sleep(60)
    """)
    env = {**os.environ, "PYTHONPATH": str(REPO)}
    holder = subprocess.Popen(
        [sys.executable, "-c", holder_code],
        cwd=REPO,
        env=env,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )
    try:
        line = holder.stdout.readline().strip()
        assert line == "locked", holder.stderr.read()
        second = subprocess.run(
            [
                sys.executable,
                "-c",
                WINDOWS_LIKE
                + textwrap.dedent(f"""
            from crjepa.utils.locks import DirLock, LockedError
            try:
                DirLock({str(lock)!r}).acquire()
            except LockedError as exc:
                print(exc)
        """),
            ],
            cwd=REPO,
            env=env,
            capture_output=True,
            text=True,
            timeout=120,
        )
        assert f"in use by another crjepa process: pid {holder.pid}" in second.stdout, second.stderr
        assert "(writing embeddings)" in second.stdout
    finally:
        holder.kill()
        holder.wait()
    third = subprocess.run(
        [
            sys.executable,
            "-c",
            WINDOWS_LIKE
            + textwrap.dedent(f"""
        from crjepa.utils.locks import DirLock
        with DirLock({str(lock)!r}) as taken:
            print(taken.stale["pid"])
    """),
        ],
        cwd=REPO,
        env=env,
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert third.stdout.split() == [str(holder.pid)] and "taking over the stale lock" in third.stderr, third.stderr
    assert not lock.exists()
