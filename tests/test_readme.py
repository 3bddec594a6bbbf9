"""README.md's commands run, at tiny scale, on real BigEarthNet patches (issue 12): a documented command that
breaks fails CI.

Every code block of README.md is extracted (4-space indented blocks; `\\` continuations joined, `&&` chains
split, trailing `# comments` dropped). Each command is either RUN in README order in one working folder, or
listed in NOT_RUN with the reason (installs, interactive set-up, the Hub, data sets with no public sample, the
benchmark); a README command in neither list fails the test, and so does a NOT_RUN entry the README no longer has.

What is adapted to make the commands tiny and offline (nothing else is changed):
- the working folder holds the real data under the README's names: BigEarthNet-S1-v1.0 / BigEarthNet-v1.0 (the 6
  real v1 pairs of bigearthnet-common), BigEarthNet-S1 / BigEarthNet-S2 + metadata.parquet (configilm's 24 real
  reBEN pairs), query.npy (a real S2 patch);
- `--subset ben14k` -> `--subset all` for the conversion (the 6 real v1 pairs are not in BEN-14K; the BEN-14K list
  itself is run with --list-only); `[--push-to-hub ...]` optional groups are dropped (no Hub offline);
- `accelerate launch train_accelerate.py ARGS` runs `train_accelerate.main(ARGS + TINY)` in this process (the
  launcher itself is exercised by tests/test_realdata.py); `crjepa ARGS` runs `crjepa.cli.main(ARGS)`;
  `python -m datasets_scripts ARGS` runs its `main(ARGS)`; `<archive id>` becomes the archive's first id;
- the Python block runs with `s2_image_chw_uint16` bound to a real S2 patch.
"""

from __future__ import annotations

import re
import shlex
import textwrap
from pathlib import Path

import numpy as np
import pytest

from conftest import REPO


TINY = ["--model.preset", "tiny", "--data.batch_size", "4", "--data.num_workers", "0", "--training.max_steps", "2",
        "--training.compile", "none", "--eval.batch_size", "64", "--logging.report_to", "none",
        "--logging.progress_bar", "false", "--eval.query_split", "train", "--eval.k", "3",
        "--embeddings.split", "train", "--embeddings.index", "exact", "--overwrite_output_dir", "true",
        "--data.options", "{num_train: 64, num_validation: 0, num_test: 32, image_size: 32}"]
"""Appended to every training command: the tiny model, 2 steps, small evaluations (the real exports have 1-6
pairs per split, so scores use the train split and k=3)."""

NOT_RUN = {
    "python -m venv .venv": "environment set-up (.ci/run runs the README's set-up and test command)",
    ". .venv/bin/activate": "environment set-up",
    "pip install torch==2.13.0": "install",
    "pip install -e .": "install",
    "pip install -q torch==2.13.0": "install",
    'pip install -q -e ".[dev]"': "install",
    "HF_HUB_OFFLINE=1 python -m pytest -q tests": "the test suite itself (.ci/run)",
    'HF_HUB_OFFLINE=1 python -m pytest -q -m "not slow" tests': "the fast tier of the test suite itself",
    'pip install -e ".[bigearthnet]"': "install",
    "accelerate config": "interactive set-up of the launcher",
    "accelerate launch train_accelerate.py [--config configs/x.yaml] [--output_dir DIR] [--key value ...]":
        "the synopsis (its options are tested by the commands below and by --help)",
    "python -m datasets_scripts dsrsid /data/DSRSID --output-dir out/dsrsid":
        "DSRSID has no public sample to test on (its builder is tested on generated files)",
    "python -m datasets_scripts cbrsir_vs <root> --output-dir out/cbrsir_vs": "CBRSIR_VS has no public layout",
    "python -m datasets_scripts paired pairs.csv --output-dir out/mine [--push-to-hub you/mine]":
        "needs the user's own files (the paired builder is tested on generated files)",
    "python -m datasets_scripts paired pairs.csv --keep-unpaired --split-by tile --output-dir out/mine":
        "needs the user's own files (--keep-unpaired / --split-by on the paired builder: test_scripts_file_builders.py)",
    "accelerate launch train_accelerate.py --config configs/dsrsid.yaml --data.path out/dsrsid":
        "needs the DSRSID export above",
    "crjepa push emb user/crjepa-emb": "the Hugging Face Hub (tests are offline; push is tested with a fake Hub)",
    "python benchmarks/quality.py --output-dir outputs/quality": "a benchmark (minutes), never run by CI",
    'pip install -e ".[app]"': "install",
    "crjepa app outputs/crjepa-cpu-default/embeddings --model outputs/crjepa-cpu-default/model --data recorded":
        "serves until stopped: tests/test_app_ui.py runs it as written after the quick start, in a real browser",
}


def readme_blocks(text: str) -> list[list[str]]:
    """The 4-space indented code blocks of a Markdown text, as lists of logical lines."""
    blocks, current, previous_blank = [], None, True
    for line in text.splitlines():
        if line.startswith("    ") and (current is not None or previous_blank):
            current = current if current is not None else []
            if current and current[-1].endswith("\\"):
                current[-1] = current[-1][:-1].rstrip() + " " + line.strip()
            else:
                current.append(line[4:])
        elif current is not None and line.strip():
            blocks.append(current)
            current = None
        previous_blank = not line.strip()
    if current:
        blocks.append(current)
    return [b for b in blocks if b]


def strip_comment(line: str) -> str:
    """A shell line without its trailing `# comment` (the README's comments follow two or more spaces)."""
    return re.split(r"(?:^|\s)#\s", line, maxsplit=1)[0].rstrip()


def readme_commands(text: str) -> tuple[list[str], list[str]]:
    """(shell commands in README order, python blocks)."""
    shell, python = [], []
    for block in readme_blocks(text):
        if block[0].lstrip().startswith(("from ", "import ")):  # a block inside a list item is indented more
            python.append(textwrap.dedent("\n".join(block)))
            continue
        for line in block:
            shell.extend(part.strip() for part in strip_comment(line).split(" && ") if part.strip())
    return shell, python


@pytest.fixture
def workdir(tmp_path: Path, ben_v1_dirs, reben_dirs) -> Path:
    """A folder holding the real data under the names the README uses."""
    (tmp_path / "BigEarthNet-S1-v1.0").symlink_to(ben_v1_dirs[0])
    (tmp_path / "BigEarthNet-v1.0").symlink_to(ben_v1_dirs[1])
    (tmp_path / "BigEarthNet-S1").symlink_to(reben_dirs["s1"])
    (tmp_path / "BigEarthNet-S2").symlink_to(reben_dirs["s2"])
    (tmp_path / "metadata.parquet").symlink_to(reben_dirs["metadata"])
    return tmp_path


def _s2_patch(reben_dirs) -> np.ndarray:
    import rasterio

    from datasets_scripts.bigearthnet import read_s2

    folder = sorted(p for p in reben_dirs["s2"].glob("*/*") if p.is_dir())[0]
    assert rasterio  # the patch is read from its GeoTIFFs
    return read_s2(folder, folder.name)


def run_command(command: str, cwd: Path) -> int:
    """Run one README command as documented, adapted as the module docstring says."""
    command = re.sub(r"\s*\[--push-to-hub [^\]]*\]", "", command)
    if "<archive id>" in command:
        from crjepa.hub.archive import load_embeddings

        first = load_embeddings(str(cwd / command.split()[2]), load_indices=False).ids[0]
        command = command.replace("<archive id>", first)
    argv = shlex.split(command)
    if argv[:2] == ["accelerate", "launch"]:
        import train_accelerate

        script = next(i for i, arg in enumerate(argv) if arg.endswith("train_accelerate.py"))
        args = argv[script:]  # what follows the launcher's own options (--num_processes 1)
        return train_accelerate.main(args[1:] + TINY)
    if argv == ["python", "tests/fetch_real_data.py"]:  # the fixtures are cached: it checks their hashes
        import subprocess
        import sys

        return subprocess.run([sys.executable, "tests/fetch_real_data.py"], cwd=REPO).returncode
    if argv[0] == "crjepa":
        from crjepa.cli import main

        return main(argv[1:])
    if argv[:3] == ["python", "-m", "datasets_scripts"]:
        from datasets_scripts.__main__ import main

        args = argv[3:]
        if "--list-only" not in args and "--subset" in args and args[args.index("--subset") + 1] == "ben14k":
            args[args.index("--subset") + 1] = "all"  # the 6 real v1 pairs lie outside BEN-14K
        return main(args + ["--num-proc", "1"] if "--output-dir" in args else args)
    raise AssertionError(f"README command the test does not know how to run: {command!r} (add it to NOT_RUN "
                         "with a reason, or teach run_command)")


@pytest.mark.slow
def test_readme_commands_run_on_real_data(workdir, reben_dirs, monkeypatch):
    shell, python = readme_commands((REPO / "README.md").read_text())
    assert not [c for c in NOT_RUN if c not in shell], "NOT_RUN lists commands the README no longer has"
    monkeypatch.chdir(workdir)
    np.save(workdir / "query.npy", _s2_patch(reben_dirs))
    ran = []
    for command in shell:
        if command in NOT_RUN:
            continue
        assert run_command(command, workdir) == 0, command
        ran.append(command)
    assert len(ran) >= 15 and any(c.startswith("crjepa export-checkpoint") for c in ran)
    namespace = {"s2_image_chw_uint16": _s2_patch(reben_dirs)}
    for code in python:
        exec(compile(code, "README.md", "exec"), namespace)  # noqa: S102 - the README's own example
    assert tuple(namespace["e"].shape) == (1, 32)
    assert (workdir / "data" / "reben-s2" / "README.md").is_file() and (workdir / "eval").is_dir()


def test_readme_states_what_the_quick_start_model_is_for():
    text = (REPO / "README.md").read_text()
    quick_start = text.split("## Quick start", 1)[1].split("\n## ", 1)[0]
    assert "not** a retrieval model for\nreal imagery" in quick_start or "not a retrieval model for real imagery" \
        in " ".join(quick_start.replace("*", "").split())
    assert "P@5 0.762" in quick_start and "0.771" in quick_start


def test_ci_runs_exactly_the_readme_test_command():
    """`.ci/run` runs the README's test quick start verbatim: what CI checks is what a contributor runs."""
    text = (REPO / "README.md").read_text()
    command = next(line.strip() for block in readme_blocks(text) for line in block
                   if "python -m pytest" in line and line.strip().startswith("python -m venv"))
    ci = [line.strip() for line in (REPO / ".ci" / "run").read_text().splitlines()]
    assert command in ci, (command, ci)
