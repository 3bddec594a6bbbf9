"""crjepa/cli/__init__.py: the `crjepa` command's parser and `main`: help for every command, and a problem a person can
fix is one `error:` line with exit status 2, never a traceback or a usage block."""

from __future__ import annotations

import json
import shutil
import subprocess
from pathlib import Path

import pytest

from crjepa.cli import build_parser, main

from helpers import CLI_QUERY, one_error_line, run_python

SUBCOMMANDS = ["embed", "index", "search", "evaluate", "export-checkpoint", "push", "app"]


def test_help_of_the_command_and_every_subcommand(tmp_path, capsys):
    proc = run_python(["-m", "crjepa.cli", "--help"], tmp_path)
    assert proc.returncode == 0 and "usage: crjepa" in proc.stdout
    for name in SUBCOMMANDS:
        assert name in proc.stdout
    if shutil.which("crjepa"):  # the console script, when the package is installed
        assert subprocess.run(["crjepa", "--help"], capture_output=True).returncode == 0
    for name in SUBCOMMANDS:
        with pytest.raises(SystemExit) as exit_info:
            main([name, "--help"])
        assert exit_info.value.code == 0
        out = capsys.readouterr().out
        assert out.startswith(f"usage: crjepa {name}") and len(out.splitlines()) > 5


def test_errors_are_one_line_without_traceback(cli_workdir, capsys):
    assert main(["search", str(cli_workdir / "emb"), "--id", "missing-id"]) == 2
    err = capsys.readouterr().err
    assert err.startswith("crjepa search: error: No item with id 'missing-id'") and "Traceback" not in err
    assert main(["search", str(cli_workdir / "emb"), "--image", str(cli_workdir / "query.npy")]) == 2
    assert "needs --model" in capsys.readouterr().err


def test_help_quotes_every_direction(capsys):
    """Typed as shown, an unquoted s1->s2 makes the shell write a file named s2."""
    import re

    texts = [build_parser().format_help()]
    for name in SUBCOMMANDS:
        with pytest.raises(SystemExit):
            main([name, "--help"])
        texts.append(capsys.readouterr().out)
    arrows = [m for text in texts for m in re.finditer(r"\S*->\S*", text)]
    assert arrows, "the help shows directions"
    for match in arrows:
        assert match.group().lstrip("(").startswith("'"), match.group()


def test_user_errors_are_one_line_with_exit_2(tmp_path):
    proc = run_python(["-m", "crjepa.cli", "search", str(tmp_path), "--id", "x", "--direction", "s1->s9"], tmp_path)
    assert proc.returncode == 2 and "Traceback" not in proc.stderr
    assert len(proc.stderr.strip().splitlines()) == 1 and proc.stderr.startswith("crjepa search: error:")


def _run(argv: list[str]) -> int:
    try:
        return main(argv)
    except SystemExit as exit_:
        return int(exit_.code)


def test_arguments_out_of_range_are_one_line_before_any_work(cli_workdir, tmp_path, capsys):
    """`--batch-size 0` (ZeroDivisionError), `--image-size 100000` (a 74.5 TiB allocation), `search --tile 200000`
    (MemoryError) ended in tracebacks: every argument is now range-checked by the parser, one line, exit 2."""
    out, png = tmp_path / "out", tmp_path / "g.png"
    embed = ["embed", str(cli_workdir / "model"), "synthetic", "--num-pairs", "8", "-o", str(out)]
    search = ["search", str(cli_workdir / "emb"), "--id", CLI_QUERY]
    cases = [
        (embed + ["--batch-size", "0"], "--batch-size: must be an integer in [1, 65536], found 0"),
        (embed + ["--batch-size", "-5"], "--batch-size: must be an integer in [1, 65536], found -5"),
        (embed + ["--image-size", "100000"], "--image-size: must be an integer in [8, 512], found 100000"),
        (embed + ["--num-processes", "0"], "--num-processes: must be an integer in [1, 256]"),
        (embed + ["--shard-rows", "0"], "--shard-rows: must be an integer"),
        (embed + ["--recall", "1.5"], "--recall: must be a number in (0, 1]"),
        (embed + ["--num-workers", "-1"], "--num-workers: must be an integer in [0, 256]"),
        (embed + ["--device", "cuda:7"], "--device cuda:7: no such GPU here"),
        (
            search + ["--png", str(png), "--data", "synthetic", "--tile", "200000"],
            "--tile: must be an integer in [8, 1024]",
        ),
        (search + ["-k", "0"], "-k: must be an integer in [1, 100000], found 0"),
        (["evaluate", str(cli_workdir / "model"), "synthetic", "-k", "0"], "-k: must be an integer in [1, 100000]"),
        (["index", str(cli_workdir / "emb"), "--recall", "0"], "--recall: must be a number in (0, 1]"),
    ]
    for argv, message in cases:
        assert _run(argv) == 2, argv
        assert message in one_error_line(capsys.readouterr().err), argv
        assert not out.exists() and not png.exists()


def test_bad_files_give_one_error_line_naming_the_file(cli_workdir, tmp_path, capsys):
    """Truncated index.faiss, unknown key in index.json, corrupt PNG query, embed -o on a
    read-only file system."""
    broken = tmp_path / "emb"
    shutil.copytree(cli_workdir / "emb", broken)
    index_file = broken / "faiss" / "s1_cross" / "index.faiss"
    index_file.write_bytes(index_file.read_bytes()[:100])
    assert main(["search", str(broken), "--id", CLI_QUERY, "--direction", "s1->s2"]) == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and str(index_file) in err and "truncated or corrupt" in err, err
    shutil.rmtree(broken)
    shutil.copytree(cli_workdir / "emb", broken)
    meta_file = broken / "faiss" / "s2_cross" / "index.json"
    meta_file.write_text(json.dumps({**json.loads(meta_file.read_text()), "extra": 1}))
    assert main(["search", str(broken), "--id", CLI_QUERY, "--direction", "s1->s2"]) == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and str(meta_file) in err and "unknown key(s) ['extra']" in err, err

    png = tmp_path / "query.png"
    png.write_bytes(b"\x89PNG\r\n\x1a\n" + b"garbage" * 10)
    assert (
        main(
            [
                "search",
                str(cli_workdir / "emb"),
                "--image",
                str(png),
                "--sensor",
                "s2",
                "--model",
                str(cli_workdir / "model"),
                "--device",
                "cpu",
            ]
        )
        == 2
    )
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and str(png) in err and "not a readable image" in err, err

    readonly = Path("/proc/crjepa-emb")  # a file system nobody (not even root) may create folders in
    assert (
        main(["embed", str(cli_workdir / "model"), "synthetic", "--num-pairs", "8", "-o", str(readonly / "out")]) == 2
    )
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and str(readonly) in err and "choose a writable path" in err, err


def test_a_bug_keeps_its_traceback_while_a_user_error_is_one_line(monkeypatch, tmp_path, capsys):
    """`main` prints a `CRJepaError` (a problem the person can fix) as one line with exit 2; any other exception, a
    ValueError or KeyError included, is a bug and propagates with its traceback."""
    import crjepa.cli.search as search_command
    from crjepa.data.schema import DataError

    def raising(error: Exception):
        def command(args):
            raise error

        return command

    argv = ["search", str(tmp_path), "--id", "x"]
    for bug in (ValueError("a bug"), KeyError("a bug"), TypeError("a bug")):
        monkeypatch.setattr(search_command, "cmd_search", raising(bug))
        with pytest.raises(type(bug), match="a bug"):
            main(argv)
    monkeypatch.setattr(search_command, "cmd_search", raising(DataError("the file x.tif\nis bad")))
    assert main(argv) == 2
    assert capsys.readouterr().err == "crjepa search: error: the file x.tif is bad\n"
