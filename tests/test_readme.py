"""README.md's commands run, at tiny scale, on real BigEarthNet patches: a documented command that breaks fails CI.

Every code block of README.md is extracted (4-space indented blocks; `\\` continuations joined, `&&` chains
split, trailing `# comments` dropped). Each command is either RUN in README order in one working folder, or
listed in NOT_RUN with the reason (installs, interactive set-up, the Hub, GPUs, data sets with no public sample);
a README command in neither list fails the test, and so does a NOT_RUN entry the README no longer has. Commands
quoted inline in the text must be (part of) a block command or listed in INLINE_NOT_RUN.

What is adapted to make the commands tiny and offline (nothing else is changed):
- the working folder holds the real data under the README's names: BigEarthNet-S1-v1.0 / BigEarthNet-v1.0 (the 6
  real v1 pairs of bigearthnet-common), BigEarthNet-S1 / BigEarthNet-S2 + metadata.parquet (configilm's 24 real
  reBEN pairs as GeoTIFF folders), BENv2/ (the same pairs as configilm ships them: the LMDB + metadata.parquet),
  query.npy (a real S2 patch);
- `--subset ben14k` -> `--subset all` for the conversion (the 6 real v1 pairs are not in BEN-14K; the BEN-14K list
  itself is run with --list-only); `[--push-to-hub ...]` optional groups are dropped (no Hub offline);
- `accelerate launch [-q] -m train_accelerate ARGS` runs `train_accelerate.main(ARGS + TINY)` in this process (the
  launcher itself is exercised by tests/test_realdata.py); `crjepa ARGS` runs `crjepa.cli.main(ARGS)`;
  `python -m datasets_scripts ARGS` runs its `main(ARGS)`, `python -m train_accelerate --help` its help;
- the Python blocks run with `s2_image_chw_uint16` bound to a real S2 patch.
Runs write where the README says; nothing overwrites an earlier run's folder, so two documented runs that collide
fail here as they would for a user.
"""

from __future__ import annotations

import re
import shlex
import textwrap
from pathlib import Path

import numpy as np
import pytest

from helpers import REPO

TINY = [
    "--model.preset",
    "tiny",
    "--data.batch_size",
    "4",
    "--data.num_workers",
    "0",
    "--training.max_steps",
    "2",
    "--training.compile",
    "none",
    "--eval.batch_size",
    "64",
    "--logging.report_to",
    "none",
    "--logging.progress_bar",
    "false",
    "--eval.query_split",
    "train",
    "--eval.k",
    "3",
    "--embeddings.split",
    "train",
    "--embeddings.index",
    "exact",
    "--data.options",
    "{num_train: 64, num_validation: 0, num_test: 32, image_size: 32}",
]
"""Appended to every training command: the tiny model, 2 steps, small evaluations (the real exports have 1-6
pairs per split, so scores and the archive use the train split and k=3)."""

NOT_RUN = {
    "python -m venv .venv": "environment set-up (.ci/run runs the README's set-up and test command)",
    ". .venv/bin/activate": "environment set-up",
    "pip install torch==2.13.0": "install",
    "pip install -e .": "install",
    "pip install -q torch==2.13.0": "install",
    'pip install -q -e ".[dev]"': "install",
    "HF_HUB_OFFLINE=1 python -m pytest -q tests": "the test suite itself (.ci/run)",
    'HF_HUB_OFFLINE=1 python -m pytest -q -m "not slow" tests': "the fast tier of the test suite itself",
    "ruff check .": "a code gate (.ci/run runs the README's gate line after the tests)",
    "ruff format --check .": "a code gate (.ci/run)",
    "mypy": "a code gate (.ci/run)",
    'pip install -e ".[bigearthnet]"': "install",
    'pip install -e ".[milvus]"': "install (the dev extra installs pymilvus and Milvus Lite for the tests)",
    "accelerate config": "interactive set-up of the launcher",
    "python -m datasets_scripts dsrsid /data/DSRSID --output-dir data/dsrsid": (
        "DSRSID has no public sample to test on (its builder is tested on generated files)"
    ),
    "python -m datasets_scripts cbrsir_vs <root> --output-dir data/cbrsir_vs": "CBRSIR_VS has no public layout",
    "python -m datasets_scripts paired pairs.csv --output-dir data/mine [--push-to-hub you/mine]": (
        "needs the user's own files (the paired builder: tests/test_scripts_paired.py)"
    ),
    "python -m datasets_scripts paired pairs.csv --keep-unpaired --split-by tile --output-dir data/mine-partial": (
        "needs the user's own files (--keep-unpaired / --split-by: tests/test_scripts_paired.py)"
    ),
    "accelerate launch -q -m train_accelerate --config paper_ben14k.yaml --data.path data/ben14k --push_to_hub "
    "--hub_model_id user/crjepa-ben14k --push_embeddings --hub_embeddings_id user/crjepa-ben14k-embeddings": (
        "the Hugging Face Hub (tests are offline; uploads are tested with a stand-in Hub: tests/test_hub_access.py)"
    ),
    "crjepa push outputs/crjepa-reben/model user/crjepa-reben": "the Hugging Face Hub (tests/test_hub_encoder.py)",
    "crjepa push emb user/crjepa-reben-embeddings": "the Hugging Face Hub (tests/test_hub_access.py)",
    "accelerate launch -q --multi_gpu --num_processes 8 -m train_accelerate --config paper_ben14k.yaml --data.path "
    "data/ben14k": "8 GPUs (the same launcher with 2 CPU processes: tests/test_train_loop.py::"
    "test_two_processes_reach_the_loss_of_one_process_with_the_same_global_batch)",
    "accelerate launch -q --multi_gpu --num_processes 8 -m crjepa.cli embed outputs/crjepa-ben14k/model data/ben14k -o "
    "emb-ben14k": "8 GPUs (2 CPU processes: "
    "tests/test_hub_embedding.py::test_accelerate_launch_two_processes_give_the_embeddings_of_one)",
    'pip install -e ".[app]"': "install",
    "crjepa app outputs/crjepa-cpu-default/embeddings --model outputs/crjepa-cpu-default/model --data recorded": (
        "serves until stopped: tests/test_app_ui.py runs it as written after the quick start, in a real browser"
    ),
}

INLINE_NOT_RUN = {
    "accelerate launch train_accelerate.py": "the checkout-root form of `-m train_accelerate` (the script file is "
    "launched by tests/test_realdata.py)",
    "pip install .": "install (the wheel: tests/test_packaging.py)",
    "hf auth login": "the Hugging Face Hub",
    "crjepa app --help": "help text (tests/test_cli.py::test_help_of_the_command_and_every_subcommand)",
}
"""Commands quoted inline in README.md's text that are not (part of) a block command."""


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


INLINE_COMMAND = re.compile(r"`((?:crjepa|accelerate|python|pip|hf|pytest) [^`]*)`")


def inline_commands(text: str) -> list[str]:
    """Commands quoted inline in the text (outside the code blocks)."""
    prose = "\n".join(line for line in text.splitlines() if not line.startswith("    "))
    return INLINE_COMMAND.findall(prose)


@pytest.fixture
def workdir(tmp_path: Path, ben_v1_dirs, reben_dirs, reben_lmdb) -> Path:
    """A folder holding the real data under the names the README uses."""
    (tmp_path / "BigEarthNet-S1-v1.0").symlink_to(ben_v1_dirs[0])
    (tmp_path / "BigEarthNet-v1.0").symlink_to(ben_v1_dirs[1])
    (tmp_path / "BigEarthNet-S1").symlink_to(reben_dirs["s1"])
    (tmp_path / "BigEarthNet-S2").symlink_to(reben_dirs["s2"])
    (tmp_path / "metadata.parquet").symlink_to(reben_dirs["metadata"])
    (tmp_path / "BENv2").symlink_to(reben_lmdb.parent)
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
    argv = shlex.split(command)
    if argv[:2] == ["accelerate", "launch"] and argv[argv.index("-m") + 1] == "train_accelerate":
        import train_accelerate

        args = argv[argv.index("-m") + 2 :]  # what follows the launcher's own options (-q)
        return train_accelerate.main(args + TINY)
    if argv[:3] == ["python", "-m", "train_accelerate"]:
        import train_accelerate

        return train_accelerate.main(argv[3:])
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
    raise AssertionError(
        f"README command the test does not know how to run: {command!r} (add it to NOT_RUN "
        "with a reason, or teach run_command)"
    )


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
    assert len(ran) >= 25 and any(c.startswith("crjepa export-checkpoint") for c in ran)
    namespace = {"s2_image_chw_uint16": _s2_patch(reben_dirs)}
    for code in python:
        exec(compile(code, "README.md", "exec"), namespace)  # noqa: S102 - the README's own example
        for line in code.splitlines():  # a documented result (`call(...)   # ... e.g. {...}`) is the real one
            if "# " in line and " e.g. {" in line:
                call, shown = line.split("#", 1)[0].strip(), line.split("e.g. ", 1)[1]
                assert eval(call, namespace) == eval(shown), line  # noqa: S307 - the README's own example
    assert tuple(namespace["e"].shape) == (1, 32)
    assert np.allclose(namespace["v"], namespace["e"][0].numpy(), atol=1e-6)  # the pipeline's one call, same vector
    assert (workdir / "data" / "reben-s2" / "README.md").is_file() and (workdir / "eval").is_dir()
    assert (workdir / "grid.png").is_file() and (workdir / "data" / "reben-lmdb" / "README.md").is_file()


def test_every_inline_command_is_a_documented_block_command_or_listed():
    text = (REPO / "README.md").read_text()
    shell, _ = readme_commands(text)
    inline = inline_commands(text)
    assert inline, "no inline command found: the pattern is wrong"
    for command in inline:
        if command in INLINE_NOT_RUN:
            continue
        pieces = [piece.strip() for piece in command.split("...") if piece.strip()]
        assert all(any(piece in block for block in shell) for piece in pieces), (
            f"README.md quotes {command!r} inline, but no code block runs it: add it to a block, or to INLINE_NOT_RUN "
            "with the reason"
        )
    assert not [c for c in INLINE_NOT_RUN if c not in inline], "INLINE_NOT_RUN lists commands the README no longer has"


def test_the_two_quick_starts():
    """The main job is one command; the test quick start is, byte for byte, what .ci/run runs; the quick-start
    model is said not to be a retrieval model for real imagery."""
    text = (REPO / "README.md").read_text()
    main_job = text.split("## Quick start: the main job", 1)[1].split("\n## ", 1)[0]
    tests = text.split("## Quick start: the tests", 1)[1].split("\n## ", 1)[0]
    assert len(readme_blocks(main_job)) == 1 and len(readme_blocks(main_job)[0]) == 1
    assert readme_blocks(main_job)[0][0].endswith("accelerate launch -q -m train_accelerate")
    ci = [part.splitlines()[0] for part in (REPO / ".ci" / "run").read_text().split("(keep identical) ---\n")[1:]]
    assert len(ci) == 2 and readme_blocks(tests)[0] == [ci[0]]  # then the fast tier, for the inner loop
    gates = [block for block in readme_blocks(tests) if block[0].startswith("ruff")]
    assert gates == [[ci[1]]]  # the code gates: the same line, run after the tests
    assert "not a retrieval model for real imagery" in " ".join(main_job.replace("*", "").split())


def test_pre_commit_runs_the_code_gates_of_the_readme():
    """.pre-commit-config.yaml runs, before each commit, the tools of the README's gate line (which .ci/run runs),
    as local hooks: the versions the dev extra pins, nothing downloaded."""
    import yaml

    text = (REPO / "README.md").read_text().split("## Quick start: the tests", 1)[1].split("\n## ", 1)[0]
    gate_line = next(block[0] for block in readme_blocks(text) if block[0].startswith("ruff"))
    hooks = [
        hook
        for repo in yaml.safe_load((REPO / ".pre-commit-config.yaml").read_text())["repos"]
        for hook in repo["hooks"]
    ]
    assert all(hook["language"] == "system" for hook in hooks)
    ran = [hook["entry"].replace(" --fix", "") for hook in hooks]
    assert ran == [gate.replace(" --check", "").replace(" .", "") for gate in gate_line.split(" && ")]
