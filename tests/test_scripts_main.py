"""`python -m datasets_scripts` (datasets_scripts/__main__.py): one subcommand per builder, a person's error as one
`error:` line with status 2, a bug with its traceback, and a builder whose optional reader is missing left out."""

from __future__ import annotations

import importlib

import pytest

from crjepa.data.schema import DataError
from datasets_scripts import __main__ as entry
from datasets_scripts import synthetic

from helpers import run_python


def test_cli_help_lists_the_builders(tmp_path):
    result = run_python(["-m", "datasets_scripts", "--help"], cwd=tmp_path)
    assert result.returncode == 0
    for name in ("synthetic", "bigearthnet", "dsrsid", "cbrsir_vs", "paired"):
        assert name in result.stdout


def test_a_persons_error_is_one_line_and_a_bug_keeps_its_traceback(tmp_path, monkeypatch, capsys):
    def fails(args):
        raise DataError(f"{args.output_dir}: a message a person can act on")

    monkeypatch.setattr(synthetic, "run_cli", fails)
    assert entry.main(["synthetic", "--output-dir", str(tmp_path / "out")]) == 2
    assert capsys.readouterr().err == f"error: {tmp_path / 'out'}: a message a person can act on\n"

    def bug(args):
        raise KeyError("a bug, not a message")  # was printed as one line when the entry point caught KeyError

    monkeypatch.setattr(synthetic, "run_cli", bug)
    with pytest.raises(KeyError, match="a bug, not a message"):
        entry.main(["synthetic", "--output-dir", str(tmp_path / "out")])


def test_a_builder_without_its_optional_reader_is_left_out_and_named(monkeypatch):
    real = importlib.import_module

    def without_h5py(name, *args):
        if name == "datasets_scripts.dsrsid":
            raise ModuleNotFoundError("No module named 'h5py'", name="h5py")
        if name == "datasets_scripts.paired":
            raise ModuleNotFoundError("No module named 'datasets_scripts.helpers'", name="datasets_scripts.helpers")
        return real(name, *args)

    monkeypatch.setattr(entry.importlib, "import_module", without_h5py)
    with pytest.raises(ModuleNotFoundError, match="datasets_scripts.helpers"):  # a broken import is a bug
        entry.build_parser()
    monkeypatch.delitem(entry.BUILDER_MODULES, "paired")
    parser, unavailable = entry.build_parser()
    assert list(unavailable) == ["dsrsid"] and "h5py" in unavailable["dsrsid"]
    assert "unavailable: dsrsid" in parser.format_help()
