"""crjepa.utils.atomic: single files appear complete or not at all; an output folder is replaced only when it is
this kind of output (or with overwrite), follows the umask, is never seen half-replaced by readers, and on a full
disk keeps the old folder and raises the OSError it is."""

from __future__ import annotations

import json
import os
import threading
from concurrent.futures import ThreadPoolExecutor

import numpy as np
import pytest

from crjepa.search.index import RetrievalIndex, build_index
from crjepa.utils.atomic import MARKER_FILE, OutputExistsError, atomic_dir, atomic_write_json, atomic_write_text
from crjepa.utils.locks import LockedError

from helpers import write_marked_folder


def test_atomic_write_text_keeps_the_old_file_when_writing_fails(tmp_path, monkeypatch):
    target = tmp_path / "info.json"
    atomic_write_json(target, {"a": 1})
    assert json.loads(target.read_text()) == {"a": 1} and target.read_text().endswith("\n")
    import os

    def broken_replace(src, dst):
        raise OSError("no space left")

    monkeypatch.setattr(os, "replace", broken_replace)
    with pytest.raises(OSError, match="no space left"):
        atomic_write_text(target, "new content")
    assert json.loads(target.read_text()) == {"a": 1}
    assert [p.name for p in tmp_path.iterdir()] == ["info.json"]  # no temp file left behind


def test_unrelated_folder_or_file_is_never_replaced_without_overwrite(tmp_path):
    precious = tmp_path / "photos"
    precious.mkdir()
    (precious / "holiday.jpg").write_text("irreplaceable")
    refused = r"photos exists, is not empty and is not a crjepa faiss-index .*--overwrite"
    with pytest.raises(OutputExistsError, match=refused):
        write_marked_folder(precious)
    assert (precious / "holiday.jpg").read_text() == "irreplaceable"
    a_file = tmp_path / "notes.txt"
    a_file.write_text("keep me")
    with pytest.raises(OutputExistsError, match="exists and is not a folder"):
        write_marked_folder(a_file)
    assert a_file.read_text() == "keep me"
    assert sorted(p.name for p in tmp_path.iterdir()) == ["notes.txt", "photos"]  # no hidden leftovers
    # another kind of our own output is not replaced either
    write_marked_folder(tmp_path / "emb", kind="embeddings")
    with pytest.raises(OutputExistsError, match="holds a crjepa embeddings, not a faiss-index"):
        write_marked_folder(tmp_path / "emb")
    # our own output of the same kind, or an empty folder, is replaced; --overwrite forces
    write_marked_folder(tmp_path / "emb", kind="embeddings", text="second")
    assert (tmp_path / "emb" / "payload.txt").read_text() == "second"
    assert json.loads((tmp_path / "emb" / MARKER_FILE).read_text()) == {"kind": "embeddings", "version": 1}
    (tmp_path / "empty").mkdir()
    write_marked_folder(tmp_path / "empty")
    write_marked_folder(precious, overwrite=True)
    assert sorted(p.name for p in precious.iterdir()) == [MARKER_FILE, "payload.txt"]


def test_written_folder_follows_the_umask_not_0700(tmp_path):
    old = os.umask(0o022)
    try:
        write_marked_folder(tmp_path / "out")
    finally:
        os.umask(old)
    assert (tmp_path / "out").stat().st_mode & 0o777 == 0o755


def test_concurrent_index_saves_and_readers_never_see_a_half_replaced_index(tmp_path):
    """A race probe sized for seconds: 60 save calls from 8 threads into one folder while 3 readers load
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
    write_marked_folder(target, kind="model", text="old")
    filler = fill_disk(disk, leave=256 << 10)
    tensor = torch.ones(1 << 20)  # 4 MiB: more than is left
    flat = faiss.IndexFlatIP(64)
    flat.add(np.ones((1 << 14, 64), np.float32))
    writers = {
        "safetensors": lambda tmp: save_file({"w": tensor}, str(tmp / "model.safetensors")),
        "torch": lambda tmp: torch.save({"w": tensor}, tmp / "optimizer.bin"),
        "faiss": lambda tmp: faiss.write_index(flat, str(tmp / "index.faiss")),
    }
    for name, write in writers.items():
        with pytest.raises(OSError) as raised:
            with atomic_dir(target, kind="model") as tmp:
                write(tmp)
        assert raised.value.errno == errno.ENOSPC and str(target) in str(raised.value.filename), (name, raised.value)
        assert (target / "payload.txt").read_text() == "old", name
        assert sorted(p.name for p in disk.iterdir()) == [".filler", "out"], name  # no temp folder, no lock left
    filler.unlink()
