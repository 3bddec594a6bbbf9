"""crjepa.utils.atomic: single files appear complete or not at all (folders, markers and locks: test_atomic.py)."""

from __future__ import annotations

import json

import pytest

from crjepa.utils.atomic import atomic_write_json, atomic_write_text


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
