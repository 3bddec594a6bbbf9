"""crjepa/cli/index.py: `crjepa index` prints and records the recall calibration, and a full disk keeps the archive."""

from __future__ import annotations

import json
import shutil

from crjepa.cli import main

from helpers import folder_files, one_error_line


def test_index_recall_prints_and_records_the_calibration(cli_workdir, tmp_path, capsys):
    folder = tmp_path / "emb"
    shutil.copytree(cli_workdir / "emb", folder)
    assert main(["index", str(folder), "--kind", "hnsw", "--recall", "0.9", "--columns", "s2_cross"]) == 0
    out = capsys.readouterr().out
    assert "s2_cross: hnsw recall@10 " in out and "for target 0.9, measured on 4 held-out archive vectors" in out
    assert " q/s on " in out and "efSearch" in out and "calibration " in out
    info = json.loads((folder / "embeddings_info.json").read_text())
    cal = info["index_calibration"]["s2_cross"]
    assert cal["target"] == 0.9 and cal["queries"] == 4 and cal["qps"] > 0
    card = (folder / "README.md").read_text()
    assert f"calibrated for recall@10 >= 0.9: measured {cal['recall']:.3f}" in card
    assert "on 4 held-out archive vectors" in card


def test_crjepa_index_on_a_real_full_disk_keeps_the_archive(cli_workdir, small_disk, capsys):
    """faiss reported the full disk as a RuntimeError traceback (and the indices written before it replaced the old
    ones while the info still listed those); now: one line, and the archive's indices, info and card as before."""
    from helpers import fill_disk

    disk = small_disk("8m")
    archive = disk / "emb"
    shutil.copytree(cli_workdir / "emb", archive, ignore=shutil.ignore_patterns("faiss"))  # an archive without indices
    info = json.loads((archive / "embeddings_info.json").read_text())
    (archive / "embeddings_info.json").write_text(json.dumps({**info, "indices": {}, "index_calibration": {}}))
    before = folder_files(archive)
    filler = fill_disk(disk, leave=8 << 10)  # less than one exact index: faiss' own write fails
    assert main(["index", str(archive), "--kind", "exact"]) == 2
    assert "No space left on device" in one_error_line(capsys.readouterr().err)
    assert folder_files(archive) == before
    assert not [p for p in archive.rglob("*") if ".tmp-" in p.name or p.name.endswith(".lock")]
    filler.unlink()
    assert main(["index", str(archive), "--kind", "exact"]) == 0
    assert json.loads((archive / "embeddings_info.json").read_text())["indices"] == dict.fromkeys(
        ["s1_unified", "s1_cross", "s2_unified", "s2_cross"], "exact"
    )
