"""crjepa.utils.atomic and crjepa.utils.locks: writers replace only their own output, one writer at a time,
readers never see a half-replaced folder, stale locks of killed processes are reported (issue 16, items 1, 3, 9)."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import textwrap
import threading
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import numpy as np
import pytest

from crjepa.search.index import RetrievalIndex, build_index
from crjepa.utils.atomic import MARKER_FILE, OutputExistsError, atomic_dir, lock_file_for
from crjepa.utils.locks import DirLock, LockedError

ROOT = Path(__file__).resolve().parent.parent


def _write(target: Path, kind: str = "faiss-index", overwrite: bool = False, text: str = "new") -> None:
    with atomic_dir(target, kind=kind, overwrite=overwrite) as tmp:
        (tmp / "payload.txt").write_text(text)


def test_unrelated_folder_or_file_is_never_replaced_without_overwrite(tmp_path):
    precious = tmp_path / "photos"
    precious.mkdir()
    (precious / "holiday.jpg").write_text("irreplaceable")
    with pytest.raises(OutputExistsError, match=r"photos exists, is not empty and is not a crjepa faiss-index .*--overwrite"):
        _write(precious)
    assert (precious / "holiday.jpg").read_text() == "irreplaceable"
    a_file = tmp_path / "notes.txt"
    a_file.write_text("keep me")
    with pytest.raises(OutputExistsError, match="exists and is not a folder"):
        _write(a_file)
    assert a_file.read_text() == "keep me"
    assert sorted(p.name for p in tmp_path.iterdir()) == ["notes.txt", "photos"]  # no hidden leftovers
    # another kind of our own output is not replaced either
    _write(tmp_path / "emb", kind="embeddings")
    with pytest.raises(OutputExistsError, match="holds a crjepa embeddings, not a faiss-index"):
        _write(tmp_path / "emb")
    # our own output of the same kind, or an empty folder, is replaced; --overwrite forces
    _write(tmp_path / "emb", kind="embeddings", text="second")
    assert (tmp_path / "emb" / "payload.txt").read_text() == "second"
    assert json.loads((tmp_path / "emb" / MARKER_FILE).read_text()) == {"kind": "embeddings", "version": 1}
    (tmp_path / "empty").mkdir()
    _write(tmp_path / "empty")
    _write(precious, overwrite=True)
    assert sorted(p.name for p in precious.iterdir()) == [MARKER_FILE, "payload.txt"]


def test_written_folder_follows_the_umask_not_0700(tmp_path):
    old = os.umask(0o022)
    try:
        _write(tmp_path / "out")
    finally:
        os.umask(old)
    assert (tmp_path / "out").stat().st_mode & 0o777 == 0o755


def test_a_second_writer_stops_at_once_naming_the_holder(tmp_path):
    target = tmp_path / "index"
    holder = subprocess.Popen(
        [sys.executable, "-c", "import sys; from crjepa.utils.locks import DirLock; "
         f"lock = DirLock({str(lock_file_for(target))!r}, what='writing faiss-index').acquire(); "
         "print('locked', flush=True); sys.stdin.readline()"],  # holds the lock until the test lets go
        cwd=ROOT, env={**os.environ, "PYTHONPATH": str(ROOT)}, stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True)
    try:
        assert holder.stdout.readline().strip() == "locked"
        # the holder keeps its lock for as long as this test runs: a writer that waited for it would never return
        with pytest.raises(LockedError, match=rf"in use by another crjepa process: pid {holder.pid} on host .*started"):
            _write(target)
        assert not target.exists()
    finally:
        holder.kill()
        holder.wait()
    # the holder was killed: its lock file is left behind; the next writer reports it and takes over
    assert lock_file_for(target).exists()
    messages = []
    with DirLock(lock_file_for(target), warn=messages.append, folder=target) as lock:
        assert lock.stale["pid"] == holder.pid
    assert len(messages) == 1 and f"stale lock of pid {holder.pid}" in messages[0] and "no longer running" in messages[0]
    assert not lock_file_for(target).exists()  # released


def test_lock_of_another_host_is_not_taken_over(tmp_path):
    lock_file = tmp_path / ".out.lock"
    lock_file.write_text(json.dumps({"pid": 1234, "host": "some-other-node", "started": 0, "what": "training run"}))
    with pytest.raises(LockedError, match=r"locked by pid 1234 on host some-other-node.*delete .*\.out\.lock"):
        DirLock(lock_file, folder=tmp_path / "out").acquire()


def test_concurrent_index_saves_and_readers_never_see_a_half_replaced_index(tmp_path):
    """The issue's probe, sized for seconds: 60 save calls from 8 threads into one folder while 3 readers load
    it in a loop. Every save either completes or stops with LockedError; every load sees one complete version
    (its ids, vectors and metadata agree); nothing is left beside the folder."""
    rng = np.random.default_rng(0)
    vectors = rng.standard_normal((200, 16)).astype(np.float32)
    target = tmp_path / "index"

    def version(v: int) -> RetrievalIndex:  # version v: ids "v<v>-<i>", metadata.sensor = "v<v>"
        return build_index(vectors, kind="exact", ids=[f"v{v}-{i}" for i in range(200)], sensor=f"v{v}")

    version(0).save(target)
    stop, loaded, problems, loads = threading.Event(), threading.Event(), [], [0]

    def reader() -> None:
        while not stop.is_set():
            try:
                index = RetrievalIndex.load(target)
            except Exception as err:  # noqa: BLE001 - any failure is a finding
                problems.append(f"load: {type(err).__name__}: {err}")
                loaded.set()
                continue
            tag = index.metadata.sensor
            _, ids = index.search(vectors[17], k=1)
            if not all(i.startswith(f"{tag}-") for i in index.ids) or ids[0, 0] != f"{tag}-17":
                problems.append(f"mixed versions: metadata {tag}, ids {index.ids[:2]}, hit {ids[0, 0]}")
            loads[0] += 1
            loaded.set()

    def save(v: int) -> str:
        try:
            version(v).save(target)
            return "saved"
        except LockedError:
            return "locked"

    readers = [threading.Thread(target=reader) for _ in range(3)]
    for t in readers:
        t.start()
    loaded.wait()  # the saves start once the readers read: under any load they overlap
    with ThreadPoolExecutor(8) as pool:
        outcomes = list(pool.map(save, range(1, 61)))
    stop.set()
    for t in readers:
        t.join()
    assert not problems, problems[:5]
    assert set(outcomes) <= {"saved", "locked"} and outcomes.count("saved") >= 1 and loads[0] > 0
    assert sorted(p.name for p in tmp_path.iterdir()) == ["index"]  # no .old-PID / .tmp / lock leftovers


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
    env = {**os.environ, "PYTHONPATH": str(ROOT)}
    holder = subprocess.Popen([sys.executable, "-c", holder_code], cwd=ROOT, env=env, stdout=subprocess.PIPE,
                              stderr=subprocess.PIPE, text=True)
    try:
        line = holder.stdout.readline().strip()
        assert line == "locked", holder.stderr.read()
        second = subprocess.run([sys.executable, "-c", WINDOWS_LIKE + textwrap.dedent(f"""
            from crjepa.utils.locks import DirLock, LockedError
            try:
                DirLock({str(lock)!r}).acquire()
            except LockedError as exc:
                print(exc)
        """)], cwd=ROOT, env=env, capture_output=True, text=True, timeout=120)
        assert f"in use by another crjepa process: pid {holder.pid}" in second.stdout, second.stderr
        assert "(writing embeddings)" in second.stdout
    finally:
        holder.kill()
        holder.wait()
    third = subprocess.run([sys.executable, "-c", WINDOWS_LIKE + textwrap.dedent(f"""
        from crjepa.utils.locks import DirLock
        with DirLock({str(lock)!r}) as taken:
            print(taken.stale["pid"])
    """)], cwd=ROOT, env=env, capture_output=True, text=True, timeout=120)
    assert third.stdout.split() == [str(holder.pid)] and "taking over the stale lock" in third.stderr, third.stderr
    assert not lock.exists()


# ---------------------------------------------------------------------------------------------- a real full disk
def test_a_full_disk_keeps_the_old_folder_and_raises_the_oserror_whatever_library_wrote(small_disk):
    """On a real full disk (a 24 MB tmpfs) each library reports in its own words: safetensors a SafetensorError,
    torch's zip writer a RuntimeError, faiss a RuntimeError. `atomic_dir` turns each into the OSError it is (so
    every command prints one line), removes its temp folder and keeps the old output."""
    import errno

    import faiss
    import torch
    from safetensors.torch import save_file

    from helpers import fill_disk

    disk = small_disk("24m")
    target = disk / "out"
    _write(target, kind="model", text="old")
    filler = fill_disk(disk, leave=256 << 10)
    tensor = torch.ones(1 << 20)  # 4 MiB: more than is left
    flat = faiss.IndexFlatIP(64)
    flat.add(np.ones((1 << 14, 64), np.float32))
    writers = {"safetensors": lambda tmp: save_file({"w": tensor}, str(tmp / "model.safetensors")),
               "torch": lambda tmp: torch.save({"w": tensor}, tmp / "optimizer.bin"),
               "faiss": lambda tmp: faiss.write_index(flat, str(tmp / "index.faiss"))}
    for name, write in writers.items():
        with pytest.raises(OSError) as raised:
            with atomic_dir(target, kind="model") as tmp:
                write(tmp)
        assert raised.value.errno == errno.ENOSPC and str(target) in str(raised.value.filename), (name, raised.value)
        assert (target / "payload.txt").read_text() == "old", name
        assert sorted(p.name for p in disk.iterdir()) == [".filler", "out"], name  # no temp folder, no lock left
    filler.unlink()
