"""Every file of the repository that cites a repository path (docs, docstrings, comments, configs, scripts) cites
one that exists, a cited test (`tests/test_x.py::test_name`) exists, and no file holds an absolute path of a local
machine (a home, temporary or working folder of whoever ran something)."""

from __future__ import annotations

import ast
import re
from pathlib import Path

import pytest

from helpers import repository_files

REPO = Path(__file__).resolve().parent.parent

CITING_SUFFIXES = {".py", ".md", ".yaml", ".yml", ".toml", ".sh", ".cfg", ".txt"}
"""Files whose text may cite repository paths (raw logs and data files are only checked for local paths)."""

PRODUCED_NAMES = {
    "retrieval_results.md": "written by `crjepa evaluate --output-dir`",
    "quality.md": "written by benchmarks/quality.py into its --output-dir",
    "pairing.md": "written by benchmarks/pairing.py into its --output-dir",
    "app.py": "written by `crjepa app --export-space DIR` into the Space folder",
    "modeling_ijepa.py": "a file of huggingface/transformers (a style anchor)",
    "modeling_vit.py": "a file of huggingface/transformers (a style anchor)",
    "modeling_siglip.py": "a file of huggingface/transformers (a style anchor)",
    "configuration_ijepa.py": "a file of huggingface/transformers (a style anchor)",
}
"""File names cited that are not in the repository on purpose: outputs of crjepa's commands, other projects' files."""

REPOSITORY_KINDS = {".md", ".py", ".yaml", ".yml", ".sh", ".toml"}
"""Kinds of file a bare name (no folder) is checked for: the repository's own; other bare names are outputs."""

LOCAL_ROOTS = ("root", "home", "Users", "tmp", "var/tmp", "var/folders", "private/var", "private/tmp", "work", "mnt")
"""Top folders of local machines (homes, temporary and working folders). Written without their leading slash, so
that this file does not match its own pattern."""
LOCAL_PATH = re.compile(
    "(?<![\\w.~-])/(?:" + "|".join(re.escape(r) for r in LOCAL_ROOTS) + r")(?=/|\b)"
    r"|\b[A-Za-z]:\\\\?Users\\\\?"
)


def top_level_names(files: list[Path]) -> set[str]:
    return {f.relative_to(REPO).parts[0] for f in files}


PATH = re.compile(
    r"(?<![\w./<{*-])((?:[\w.-]+/)*[\w.-]*[\w-]\.(?:py|md|yaml|yml|toml|sh|json|log|txt))"
    r"(?:::(\w+))?(?![\w/])"
)
DIR_PATH = re.compile(r"(?<![\w./<{*-])((?:[\w.-]+/)+)(?![\w.<*{-])")


def cited_paths(text: str, code: bool = False) -> list[tuple[str, str | None]]:
    """(path, test name or None) of every file path the text cites (``x/y.md``, ``y.py``, ``tests/t.py::test_a``).
    In code (``code=True``) a quoted string literal is data (a file a test writes, a path inside a wheel), not a
    citation; comments and docstrings cite without quotes."""
    found = []
    for m in PATH.finditer(text):
        quoted = m.start() > 0 and text[m.start() - 1] in "'\"" and text[m.end() : m.end() + 1] in ("'", '"')
        if not (code and quoted):
            found.append((m.group(1), m.group(2)))
    return found


def _resolves(path: str, citing: Path, files: list[Path], tops: set[str]) -> Path | None:
    """The file a citation names: relative to the citing file's folder or to the repository root; a bare name may
    be any file of the repository of that name; a path under a top folder must exist as written."""
    for base in (citing.parent, REPO):
        candidate = (base / path).resolve()
        if candidate.exists():
            return candidate
    if "/" not in path:
        return next((f for f in files if f.name == path), None)
    return None


def test_every_cited_repository_path_exists():
    files = repository_files()
    tops = top_level_names(files)
    problems = []
    for file in files:
        rel = file.relative_to(REPO)
        if (
            file.suffix not in CITING_SUFFIXES
            and rel != Path(".ci/run")
            or rel.parts[:2] == ("benchmarks", "results")
            or rel == Path(__file__).relative_to(REPO)
        ):  # this file's examples are missing on purpose
            continue
        text = file.read_text(encoding="utf-8", errors="replace")
        for number, line in enumerate(text.splitlines(), start=1):
            for path, test in cited_paths(line, code=file.suffix == ".py"):
                first = path.split("/")[0]
                if first == ".." and file.suffix != ".md":
                    continue  # a relative path in an example (``extends: ../paper_ben14k.yaml``)
                if "/" in path and first not in tops and not (file.parent / first).exists():
                    continue  # not a repository path (a produced file, another project's, a URL's)
                if "/" not in path and (Path(path).suffix not in REPOSITORY_KINDS or rel.parts[0] == "tests"):
                    continue  # a bare .json / .log / .txt name: files crjepa writes (config.json, results.json), or
                    # a file a test writes (bad.yaml)
                if path in PRODUCED_NAMES or path.rsplit("/", 1)[-1] in PRODUCED_NAMES and "/" not in path:
                    continue
                target = _resolves(path, file, files, tops)
                if target is None:
                    problems.append(f"{rel}:{number}: {path} does not exist")
                elif test and not re.search(
                    rf"^\s*def {re.escape(test)}\(|^def {re.escape(test)}\b|"
                    rf"^@pytest.fixture[^\n]*\n(?:@[^\n]*\n)*def {re.escape(test)}\(",
                    target.read_text(encoding="utf-8"),
                    re.MULTILINE,
                ):
                    problems.append(f"{rel}:{number}: {path} has no test or fixture {test!r}")
            for folder in DIR_PATH.findall(line):
                if folder.split("/")[0] in tops and "/" in folder.rstrip("/") and not (REPO / folder).is_dir():
                    problems.append(f"{rel}:{number}: folder {folder} does not exist")
    assert not problems, "cited repository paths that do not exist:\n" + "\n".join(problems)


def test_no_file_holds_an_absolute_path_of_a_local_machine():
    problems = []
    for file in repository_files():
        try:
            text = file.read_text(encoding="utf-8")
        except UnicodeDecodeError:
            continue  # a binary file
        for number, line in enumerate(text.splitlines(), start=1):
            if LOCAL_PATH.search(line):
                problems.append(f"{file.relative_to(REPO)}:{number}: {line.strip()[:120]}")
    assert not problems, "absolute local paths in repository files:\n" + "\n".join(problems[:50])


def test_the_checks_catch_what_they_are_for(tmp_path):
    """The patterns find a missing cited file, a missing test and local paths (so the two tests above can fail)."""
    assert cited_paths("see docs/NOPE.md and tests/test_cli.py::test_nothing_here.") == [
        ("docs/NOPE.md", None),
        ("tests/test_cli.py", "test_nothing_here"),
    ]
    assert _resolves("docs/NOPE.md", REPO / "README.md", [], {"docs"}) is None
    assert _resolves("ARCHITECTURE.md", REPO / "docs" / "DESIGN.md", [], {"docs"}) == REPO / "docs" / "ARCHITECTURE.md"
    for line in (
        "/" + "root/.cache/x",
        "cd /" + "tmp/crjepa",
        'File "/' + 'home/ann/p.py"',
        "/" + "work/main/x",
        "C:\\" + "Users\\ann",
    ):
        assert LOCAL_PATH.search(line), line
    for line in ("https://huggingface.co/datasets/x", "data/tmp/x", "~/.cache/crjepa-test-wheels", "/data/DSRSID"):
        assert not LOCAL_PATH.search(line), line


# ---------------------------------------------------------------------------------------------- tests the docs cite
# docs/RELIABILITY.md once cited tests/test_index.py, tests/test_train.py and tests/test_remote_code.py after the
# tests were renamed, and nothing noticed: each promise names its test, and the test must exist.
DOCS = sorted((REPO / "docs").glob("*.md"))
CITE = re.compile(r"(tests/[\w/]+\.py)?::(\w+)|(tests/[\w/]+\.py)")


def citations(text: str) -> list[tuple[str, str | None]]:
    """(test file, test name or None) cited in a Markdown text; a bare ``::name`` belongs to the last file cited
    before it (the docs write ``tests/x.py::a``, ``::b``)."""
    found = []
    last = None
    for line in text.splitlines():
        for match in CITE.finditer(line):
            path, name, bare = match.groups()
            if bare:
                last = bare
                found.append((bare, None))
                continue
            last = path or last
            assert last is not None, f"'::{name}' cites no test file: {line.strip()}"
            found.append((last, name))
    return found


def defined_tests(path: Path) -> set[str]:
    tree = ast.parse(path.read_text())
    return {node.name for node in ast.walk(tree) if isinstance(node, (ast.FunctionDef, ast.AsyncFunctionDef))}


@pytest.mark.parametrize("doc", DOCS, ids=[d.name for d in DOCS])
def test_every_test_the_docs_cite_exists(doc):
    cited = citations(doc.read_text())
    missing = []
    for file, name in cited:
        path = REPO / file
        if not path.is_file():
            missing.append(file)
        elif name is not None and name not in defined_tests(path):
            missing.append(f"{file}::{name}")
    assert not missing, f"{doc.name} cites tests that do not exist: {sorted(set(missing))}"
    if doc.name == "RELIABILITY.md":
        assert len({name for _, name in cited if name}) >= 20  # each promise names its test


def test_the_citation_reader_follows_the_docs_shorthand():
    text = "| a | `tests/test_x.py::test_a`, `::test_b` |\n| `tests/test_y.py` |"
    assert citations(text) == [("tests/test_x.py", "test_a"), ("tests/test_x.py", "test_b"), ("tests/test_y.py", None)]
