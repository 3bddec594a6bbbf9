"""crjepa/train/data.py: the run's data set, checked before anything trains."""

from __future__ import annotations

import sys

import pytest

import train_accelerate


@pytest.mark.slow
def test_a_builder_missing_an_extra_is_one_line_naming_the_install_command(ben_v1_dirs, tmp_path, capsys, monkeypatch):
    """Training straight from raw BigEarthNet folders without rasterio: the builder's ImportError reached the user
    wrapped in a DatasetGenerationError traceback; now it is one line naming the extra, before any folder exists."""
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    monkeypatch.setitem(sys.modules, "rasterio", None)  # as if the bigearthnet extra were not installed
    out = tmp_path / "out"
    options = f"{{s1_dir: {ben_v1_dirs[0]}, s2_dir: {ben_v1_dirs[1]}, config_name: all, cache_dir: {tmp_path / 'c'}}}"
    code = train_accelerate.main(
        [
            "--data.source",
            "bigearthnet",
            "--data.options",
            options,
            "--output_dir",
            str(out),
            "--logging.report_to",
            "none",
        ]
    )
    err = capsys.readouterr().err
    assert code == 2 and "Traceback" not in err and err.count("error: ") == 1, err[-3000:]
    assert "rasterio" in err and 'this data needs the bigearthnet extra: pip install "crjepa[bigearthnet]"' in err
    assert not out.exists()
