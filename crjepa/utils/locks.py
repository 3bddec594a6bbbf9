"""Advisory locks on output folders: one writer at a time, the second stops at once naming the holder.

A lock is a small JSON file (pid, host, start time, what) held with an OS file lock for the writer's lifetime
(``fcntl.flock`` on POSIX, ``msvcrt.locking`` on Windows: `_try_lock`). The kernel drops the lock when the holder
dies, so a lock file whose lock can be taken was left by a process
that is gone (a kill, a crash): that *stale* lock is reported (a warning naming the dead holder) and then taken
over, never silently. A live holder (flock held, or a pid still running on this host) makes `acquire` raise
`LockedError` with the holder's pid, host and start time and what to do. A lock file written by another host
cannot be checked: it is refused, and the message says to delete it if that run is gone.

flock locks belong to an open file, so two threads of one process also exclude each other.
Imports only the standard library (no torch), and imports on every platform (no module-level ``fcntl``).

Why not ``filelock`` (a dependency): the holder's details live in the locked file itself, and filelock's Windows
lock covers the file's first byte, which Windows enforces on reads, so a second writer could not read them to
name the holder. `_try_lock` locks one byte far past the details instead.
"""

from __future__ import annotations

import errno
import json
import logging
import os
import socket
import sys
import threading
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

from crjepa.errors import CRJepaError

logger = logging.getLogger(__name__)

try:  # POSIX
    import fcntl
except ImportError:  # Windows
    fcntl = None  # type: ignore[assignment]
try:
    import msvcrt
except ImportError:  # POSIX
    msvcrt = None  # type: ignore[assignment]

__all__ = ["DirLock", "LockedError", "pid_alive"]

_WINDOWS_LOCK_OFFSET = 1 << 40
"""Windows byte-range locks are enforced on reads: the lock covers one byte here, far past the holder's details."""


def _try_lock(fd: int) -> bool:
    """Take the exclusive OS lock of an open file without waiting: True, or False when another holder has it."""
    if fcntl is not None:
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except OSError as err:
            if err.errno in (errno.EAGAIN, errno.EACCES):
                return False
            raise
        return True
    if msvcrt is not None:
        position = os.lseek(fd, 0, os.SEEK_CUR)
        os.lseek(fd, _WINDOWS_LOCK_OFFSET, os.SEEK_SET)
        try:
            msvcrt.locking(fd, msvcrt.LK_NBLCK, 1)
        except OSError:
            return False
        finally:
            os.lseek(fd, position, os.SEEK_SET)
        return True
    raise OSError(errno.ENOSYS, "this platform has neither fcntl nor msvcrt file locks; crjepa cannot lock folders")


def _unlock(fd: int) -> None:
    """Drop the lock `_try_lock` took (closing the file drops it too)."""
    if fcntl is not None:
        fcntl.flock(fd, fcntl.LOCK_UN)
    elif msvcrt is not None:
        position = os.lseek(fd, 0, os.SEEK_CUR)
        os.lseek(fd, _WINDOWS_LOCK_OFFSET, os.SEEK_SET)
        try:
            msvcrt.locking(fd, msvcrt.LK_UNLCK, 1)
        finally:
            os.lseek(fd, position, os.SEEK_SET)


_HELD: dict[str, tuple[int, int]] = {}  # lock file -> (thread id, depth): re-entrant within one thread only
_HELD_GUARD = threading.Lock()


class LockedError(CRJepaError, RuntimeError):
    """Another live process holds the lock of an output folder; the message names it and what to do."""


def pid_alive(pid: int) -> bool:
    """Whether a process with this pid runs on this host (signal 0: permission errors mean it exists)."""
    if pid <= 0:
        return False
    if sys.platform == "win32":  # os.kill(pid, 0) would terminate the process there; ask the process table
        import ctypes

        handle = ctypes.windll.kernel32.OpenProcess(0x1000, False, pid)  # PROCESS_QUERY_LIMITED_INFORMATION
        if handle:
            ctypes.windll.kernel32.CloseHandle(handle)
        return bool(handle)
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True


def _read_holder(path: Path) -> dict[str, Any]:
    for _ in range(20):  # the holder writes its details just after taking the lock
        try:
            text = path.read_text()
        except OSError:
            return {}
        if text.strip():
            try:
                data = json.loads(text)
                return data if isinstance(data, dict) else {}
            except json.JSONDecodeError:
                pass
        time.sleep(0.01)
    return {}


def _describe(holder: dict[str, Any]) -> str:
    if not holder:
        return "an unidentified process"
    started = holder.get("started")
    when = time.strftime("%Y-%m-%d %H:%M:%S UTC", time.gmtime(started)) if isinstance(started, (int, float)) else "?"
    what = f" ({holder['what']})" if holder.get("what") else ""
    return f"pid {holder.get('pid', '?')} on host {holder.get('host', '?')}, started {when}{what}"


class DirLock:
    """An exclusive lock for writing ``folder``, held in ``lock_file``.

    ``with DirLock(lock_file, what="training run"):`` or ``acquire()`` / ``release()``. ``warn`` receives the
    one-line report of a stale lock taken over (default: this module's logger, a warning).
    """

    def __init__(
        self,
        lock_file: str | os.PathLike[str],
        what: str = "",
        folder: str | os.PathLike[str] | None = None,
        warn: Callable[[str], None] | None = None,
    ) -> None:
        self.path = Path(lock_file)
        self.folder = Path(folder) if folder is not None else self.path.parent
        self.what = what
        self.warn = warn or logger.warning
        self._fd: int | None = None
        self._nested = False
        self.stale: dict[str, Any] | None = None  # the dead holder whose lock was taken over, if any

    @property
    def held(self) -> bool:
        return self._fd is not None or self._nested

    def acquire(self) -> DirLock:
        """Take the lock or raise `LockedError`; reports (and takes over) a stale lock of a dead process."""
        if self._fd is not None or self._nested:
            return self
        key = str(self.path.absolute())
        with _HELD_GUARD:
            owner = _HELD.get(key)
            if owner is not None and owner[0] == threading.get_ident():  # this thread holds it already (outer writer)
                _HELD[key] = (owner[0], owner[1] + 1)
                self._nested = True
                return self
        self._take()
        with _HELD_GUARD:
            _HELD[key] = (threading.get_ident(), 1)
        return self

    def _take(self) -> None:
        self.path.parent.mkdir(parents=True, exist_ok=True)
        for _ in range(50):
            fd = os.open(self.path, os.O_RDWR | os.O_CREAT, 0o644)
            try:
                locked = _try_lock(fd)
            except OSError:
                os.close(fd)
                raise
            if not locked:
                os.close(fd)
                raise LockedError(
                    f"{self.folder} is in use by another crjepa process: {_describe(_read_holder(self.path))}. "
                    f"Wait for it to finish or choose another output folder (lock file {self.path})."
                ) from None
            try:
                same_file = os.fstat(fd).st_ino == os.stat(self.path).st_ino
            except FileNotFoundError:
                same_file = False
            if not same_file:  # the previous holder removed the file between our open and flock: retry
                os.close(fd)
                continue
            previous = os.read(fd, 65536).decode(errors="replace")
            if previous.strip():
                try:
                    holder = json.loads(previous)
                except json.JSONDecodeError:
                    holder = {}
                holder = holder if isinstance(holder, dict) else {}
                if not self._may_take_over(fd, holder):
                    os.close(fd)
                    raise LockedError(
                        f"{self.folder} is locked by {_describe(holder)}, which this host cannot check. If that "
                        f"run is gone, delete {self.path}; otherwise wait or choose another output folder."
                    )
                self.stale = holder
                self.warn(
                    f"{self.folder}: taking over the stale lock of {_describe(holder)}: that process "
                    "is no longer running (it was interrupted); its partial output is replaced or resumed"
                )
            os.lseek(fd, 0, os.SEEK_SET)
            os.ftruncate(fd, 0)
            os.write(
                fd,
                json.dumps(
                    {"pid": os.getpid(), "host": socket.gethostname(), "started": time.time(), "what": self.what}
                ).encode(),
            )
            os.fsync(fd)
            self._fd = fd
            return
        raise LockedError(f"{self.folder}: could not take the lock {self.path} (it keeps being replaced)")

    @staticmethod
    def _may_take_over(fd: int, holder: dict[str, Any]) -> bool:
        """We hold the flock, so on this host the writer of the file is gone (the kernel released its lock; its
        pid may even be reused). A writer on another host (a shared file system) cannot be checked."""
        host = holder.get("host")
        return not (host and host != socket.gethostname())

    def release(self) -> None:
        """Remove the lock file and drop the lock (idempotent)."""
        key = str(self.path.absolute())
        if self._nested:
            with _HELD_GUARD:
                owner = _HELD.get(key)
                if owner is not None:
                    _HELD[key] = (owner[0], owner[1] - 1)
            self._nested = False
            return
        if self._fd is None:
            return
        with _HELD_GUARD:
            _HELD.pop(key, None)
        ours = False
        try:
            try:
                ours = os.fstat(self._fd).st_ino == os.stat(self.path).st_ino
                if ours and os.name != "nt":  # POSIX: remove while locked, so no waiter takes a removed file
                    os.unlink(self.path)
            except FileNotFoundError:
                pass
        finally:
            _unlock(self._fd)
            os.close(self._fd)
            self._fd = None
        if ours and os.name == "nt":  # Windows removes no open file: after closing (a waiter then finds none)
            try:
                os.unlink(self.path)
            except OSError:
                pass

    def __enter__(self) -> DirLock:
        return self.acquire()

    def __exit__(self, *exc: Any) -> None:
        self.release()

    def __del__(self) -> None:  # a forgotten lock is released with its object (the kernel does it at exit anyway)
        try:
            self.release()
        except Exception:
            pass
