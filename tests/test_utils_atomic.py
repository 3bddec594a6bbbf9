"""crjepa.utils.atomic: files and folders appear complete or not at all."""

from __future__ import annotations

import json

import pytest

from crjepa.utils.atomic import atomic_dir, atomic_write_json, atomic_write_text, replace_dir


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


def test_replace_dir_and_atomic_dir_replace_a_folder_whole(tmp_path):
    target = tmp_path / "ckpt"
    with atomic_dir(target) as tmp:
        (tmp / "old.txt").write_text("old")
    new = tmp_path / ".tmp-ckpt"
    new.mkdir()
    (new / "new.txt").write_text("new")
    replace_dir(new, target)
    assert [p.name for p in target.iterdir()] == ["new.txt"]
    assert [p.name for p in tmp_path.iterdir()] == ["ckpt"]
    with pytest.raises(ValueError):
        with atomic_dir(target) as tmp:
            (tmp / "half.txt").write_text("half")
            raise ValueError("stop")
    assert [p.name for p in target.iterdir()] == ["new.txt"] and [p.name for p in tmp_path.iterdir()] == ["ckpt"]
