"""Atomic folder writes: the one mechanism behind exported data sets, embedding archives, faiss indices and
saved models.

Promises (docs/RELIABILITY.md):
- nothing lost: a writer replaces only a folder that is recognisably our own output of the same kind (a
  marker file ``.crjepa-output.json`` with the kind and a version, written into every folder we create) or an
  empty folder; anything else (an unrelated folder, a file) stops with `OutputExistsError` unless the caller
  passes ``overwrite=True`` (the CLI's ``--overwrite``);
- one writer at a time: the write holds a lock beside the target (`crjepa.utils.locks.DirLock`); a second
  writer stops at once with `LockedError` naming the holder;
- readers never see a half-written or half-replaced folder: the new folder is complete (files and folder
  fsynced) before it is swapped in with one atomic ``renameat2(RENAME_EXCHANGE)`` (Linux), so the target path
  always names a complete folder (elsewhere: two renames, and readers retry, see `read_consistently`);
- the folder gets the user's umask (not mkdtemp's 0700);
- a write that fails because the disk is full or read-only surfaces as the `OSError` it is (`write_failure`), even
  when a library reports it as its own exception (torch's zip writer, safetensors, faiss, pyarrow), so every
  command prints one line naming the file instead of a traceback, and the old output stays;
- an output never lies in the data it is made from (`check_not_inside`): replacing it would delete the input.

Not imported by the model (remote code); imports only the standard library.
"""

from __future__ import annotations

import ctypes
import ctypes.util
import errno
import json
import os
import shutil
import tempfile
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any, TypeVar

from crjepa.errors import CRJepaError
from crjepa.utils.locks import DirLock, LockedError

MARKER_FILE = ".crjepa-output.json"
MARKER_VERSION = 1
T = TypeVar("T")

__all__ = [
    "MARKER_FILE",
    "LockedError",
    "OutputExistsError",
    "atomic_dir",
    "atomic_write_bytes",
    "atomic_write_json",
    "atomic_write_text",
    "check_not_inside",
    "check_replaceable",
    "fsync_tree",
    "publish_dir",
    "read_consistently",
    "read_marker",
    "write_failure",
    "write_marker",
]


class OutputExistsError(CRJepaError, FileExistsError):
    """The target of a writer exists and is not our output of the same kind; the message says what to do."""


def write_marker(folder: str | os.PathLike[str], kind: str) -> None:
    (Path(folder) / MARKER_FILE).write_text(json.dumps({"kind": kind, "version": MARKER_VERSION}) + "\n")


def read_marker(folder: str | os.PathLike[str]) -> dict[str, Any] | None:
    """The marker of a folder we wrote, or None (no marker, unreadable, not ours)."""
    try:
        data = json.loads((Path(folder) / MARKER_FILE).read_text())
    except (OSError, ValueError):
        return None
    return data if isinstance(data, dict) and isinstance(data.get("kind"), str) else None


def check_replaceable(target: str | os.PathLike[str], kind: str, overwrite: bool = False) -> None:
    """Raise `OutputExistsError` unless ``target`` is absent, an empty folder, or our output of ``kind``."""
    target = Path(target)
    if overwrite or not (target.exists() or target.is_symlink()):
        return
    flag = "pass --overwrite (overwrite=True) to replace it, or choose another output path"
    if not target.is_dir() or target.is_symlink():
        raise OutputExistsError(f"{target} exists and is not a folder; {flag}")
    marker = read_marker(target)
    if marker is None:
        if any(target.iterdir()):
            raise OutputExistsError(
                f"{target} exists, is not empty and is not a crjepa {kind} folder (no "
                f"{MARKER_FILE}); refusing to replace it: {flag}"
            )
        return
    if marker["kind"] != kind:
        raise OutputExistsError(
            f"{target} holds a crjepa {marker['kind']}, not a {kind}; refusing to replace it: {flag}"
        )


def check_not_inside(
    output: str | os.PathLike[str], source: str | os.PathLike[str], what: str = "output", contains: bool = True
) -> None:
    """Raise `OutputExistsError` when ``output`` is ``source`` or lies inside it (or, with ``contains``, holds it):
    writing or replacing the output would change or delete the data it is made from. Symlinks are resolved."""
    out, src = Path(output).expanduser().resolve(), Path(source).expanduser().resolve()
    if out == src or src in out.parents or (contains and out in src.parents):
        relation = "is" if out == src else "lies inside" if src in out.parents else "contains"
        raise OutputExistsError(
            f"The {what} {output} {relation} the input {source}: writing it would change or delete "
            "the input; choose an output folder outside the input"
        )


DISK_FULL_TEXT = ("No space left on device", "os error 28", "Errno 28", "errno 28", "Disk quota exceeded")
READ_ONLY_TEXT = ("Read-only file system", "os error 30", "Errno 30", "errno 30")
LOW_SPACE_BYTES = 1 << 20
"""Free space below which a failed write is taken for a full disk (the library said only "write failed")."""


WRITE_ERRNOS = {errno.ENOSPC, errno.EROFS, errno.EDQUOT, errno.EIO, errno.EFBIG}
"""errno values of a failed write: disk full, read-only file system, quota, I/O error, file too large."""


def write_failure(exc: BaseException, path: str | os.PathLike[str]) -> OSError | None:
    """The `OSError` behind an exception raised while writing under ``path``, or None when it is not a write failure.

    Libraries report a full or read-only disk in their own words: torch's zip writer raises RuntimeError ("file write
    failed", "unexpected pos"), safetensors a SafetensorError ("os error 28"), faiss a RuntimeError ("No space left on
    device"), datasets a DatasetGenerationError around the OSError. Found: ``exc`` itself when it is an OSError, an
    OSError with a write errno in its chain of causes, the errno's text in the message, or, for a library's bare
    "write failed" (RuntimeError, safetensors, datasets, pyarrow), less than 1 MiB left on the file system of
    ``path`` (measured before the caller removes its partial files). A new OSError names ``path``."""
    if isinstance(exc, OSError):  # named after the folder being written when the OS did not name the file
        return exc if exc.filename or exc.errno not in WRITE_ERRNOS else OSError(exc.errno, exc.strerror, str(path))
    seen: set[int] = set()
    cause: BaseException | None = exc
    while cause is not None and id(cause) not in seen:
        seen.add(id(cause))
        if isinstance(cause, OSError) and cause.errno in WRITE_ERRNOS:
            return cause if cause.filename else OSError(cause.errno, os.strerror(cause.errno), str(path))
        cause = cause.__cause__ or (None if cause.__suppress_context__ else cause.__context__)
    text = str(exc)
    for markers, code in ((DISK_FULL_TEXT, errno.ENOSPC), (READ_ONLY_TEXT, errno.EROFS)):
        if any(marker in text for marker in markers):
            return OSError(code, os.strerror(code), str(path))
    library = type(exc).__module__.split(".")[0] in ("safetensors", "datasets", "pyarrow")
    if isinstance(exc, RuntimeError) or library:
        probe = Path(path)
        while not probe.exists() and probe != probe.parent:
            probe = probe.parent
        try:
            stat = os.statvfs(probe)
        except OSError:
            return None
        if stat.f_bavail * stat.f_frsize < LOW_SPACE_BYTES:
            return OSError(errno.ENOSPC, os.strerror(errno.ENOSPC), str(path))
    return None


def _umask() -> int:
    try:
        for line in Path("/proc/self/status").read_text().splitlines():
            if line.startswith("Umask:"):
                return int(line.split()[1], 8)
    except (OSError, ValueError):
        pass
    mask = os.umask(0o022)  # not thread-safe, hence the /proc read first
    os.umask(mask)
    return mask


def fsync_tree(folder: str | os.PathLike[str]) -> None:
    """fsync every file and folder under ``folder`` (and itself): durable before a rename publishes it."""
    for root, _dirs, files in os.walk(folder):
        for name in files:
            fd = os.open(os.path.join(root, name), os.O_RDONLY)
            try:
                os.fsync(fd)
            finally:
                os.close(fd)
        fsync_dir(root)


def fsync_dir(folder: str | os.PathLike[str]) -> None:
    fd = os.open(folder, os.O_RDONLY | os.O_DIRECTORY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


_RENAME_EXCHANGE = 2
_libc: Any = None


def _exchange(a: Path, b: Path) -> bool:
    """Atomically swap two paths (Linux renameat2 RENAME_EXCHANGE); False where unsupported."""
    global _libc
    if _libc is None:
        try:
            _libc = ctypes.CDLL(ctypes.util.find_library("c") or "libc.so.6", use_errno=True)
            _libc.renameat2  # noqa: B018  (glibc >= 2.28)
        except (OSError, AttributeError):
            _libc = False
    if not _libc:
        return False
    at_fdcwd = -100
    if _libc.renameat2(at_fdcwd, os.fsencode(a), at_fdcwd, os.fsencode(b), _RENAME_EXCHANGE) == 0:
        return True
    err = ctypes.get_errno()
    if err in (errno.EINVAL, errno.ENOSYS, errno.EOPNOTSUPP, errno.ENOENT):
        return False
    raise OSError(err, os.strerror(err), str(b))


def lock_file_for(target: str | os.PathLike[str]) -> Path:
    """The lock of a writer of ``target``: ``.<name>.lock`` beside it."""
    target = Path(target)
    return target.with_name(f".{target.name}.lock")


def publish_dir(new: str | os.PathLike[str], target: str | os.PathLike[str]) -> None:
    """Make the complete folder ``new`` appear at ``target`` (replacing whatever is there) in one step: its files and
    folders are fsynced, then it is swapped in with ``renameat2(RENAME_EXCHANGE)`` (Linux; elsewhere: remove, then
    rename) and the old content is removed; ``new`` and ``target`` share a parent folder. The caller holds the
    writer's lock and has decided that ``target`` may be replaced."""
    new, target = Path(new), Path(target)
    fsync_tree(new)
    if target.is_dir() and not target.is_symlink() and _exchange(new, target):
        shutil.rmtree(new, ignore_errors=True)  # new now holds the old folder
    else:
        if target.is_dir() and not target.is_symlink():
            shutil.rmtree(target)
        elif target.exists() or target.is_symlink():
            target.unlink()
        new.rename(target)
    fsync_dir(target.parent)


@contextmanager
def atomic_dir(target: str | os.PathLike[str], kind: str, overwrite: bool = False) -> Iterator[Path]:
    """Yield a temp folder beside ``target``; on success it replaces ``target`` atomically, on error it is
    removed, so a failed write never leaves a half-written folder.

    ``kind`` ("embeddings", "faiss-index", "dataset-export", "model", ...) is written as the folder's marker.
    Before any work (and again before the swap): `check_replaceable` (``overwrite`` forces), and the writer's
    lock (`LockedError` when another writer holds it). A write that fails for lack of space (or a read-only disk)
    raises that `OSError` (`write_failure`), whatever the library that wrote called it.
    """
    target = Path(target)
    check_replaceable(target, kind, overwrite)
    target.parent.mkdir(parents=True, exist_ok=True)
    with DirLock(lock_file_for(target), what=f"writing {kind}", folder=target):
        tmp = Path(tempfile.mkdtemp(prefix=f".{target.name}.tmp-", dir=target.parent))
        try:
            os.chmod(tmp, 0o777 & ~_umask())
            yield tmp
            write_marker(tmp, kind)
            check_replaceable(target, kind, overwrite)
            publish_dir(tmp, target)
        except BaseException as exc:
            failure = write_failure(exc, target) if not isinstance(exc, (OutputExistsError, LockedError)) else None
            shutil.rmtree(tmp, ignore_errors=True)
            if failure is not None and failure is not exc:
                raise failure from exc
            raise


def read_consistently(folder: str | os.PathLike[str], read: Callable[[Path], T], attempts: int = 50) -> T:
    """``read(folder)`` such that all its files come from one version of the folder: the read is repeated if
    the folder was replaced meanwhile (its inode changed) or vanished for an instant (non-Linux replace)."""
    folder = Path(folder)
    for attempt in range(attempts):
        try:
            before = os.stat(folder).st_ino
        except FileNotFoundError:
            if attempt + 1 < attempts and lock_file_for(folder).exists():
                time.sleep(0.02)
                continue
            raise
        try:
            result = read(folder)
        except (FileNotFoundError, ValueError, RuntimeError):
            if _changed(folder, before) and attempt + 1 < attempts:
                continue
            raise
        if not _changed(folder, before):
            return result
    raise RuntimeError(f"{folder} kept changing while it was read")


def _changed(folder: Path, inode: int) -> bool:
    try:
        return os.stat(folder).st_ino != inode
    except FileNotFoundError:
        return True


def atomic_write_text(path: str | os.PathLike[str], text: str, encoding: str = "utf-8") -> Path:
    """One file, atomically: ``text`` goes to a temp file beside ``path`` (fsynced), which is then renamed over
    ``path``, so readers see the old or the new content, never half; on error the temp file is removed."""
    return atomic_write_bytes(path, text.encode(encoding))


def atomic_write_bytes(path: str | os.PathLike[str], data: bytes) -> Path:
    """`atomic_write_text` for bytes (an image, a list file)."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    handle, name = tempfile.mkstemp(prefix=f".{path.name}.tmp-", dir=path.parent)
    try:
        with os.fdopen(handle, "wb") as f:
            f.write(data)
            f.flush()
            os.fsync(f.fileno())
        os.chmod(name, 0o666 & ~_umask())
        os.replace(name, path)
    except BaseException:
        Path(name).unlink(missing_ok=True)
        raise
    return path


def atomic_write_json(path: str | os.PathLike[str], data: object, indent: int | None = 2) -> Path:
    """`atomic_write_text` of ``data`` as JSON (with a final newline)."""
    return atomic_write_text(path, json.dumps(data, indent=indent) + "\n")
