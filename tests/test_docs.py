"""The docs name the tests that prove their promises: every cited test file and test function must exist
(docs/RELIABILITY.md cited tests/test_index.py, tests/test_train.py and tests/test_remote_code.py after the tests
were renamed, and nothing noticed)."""

from __future__ import annotations

import ast
import re
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent
DOCS = sorted((ROOT / "docs").glob("*.md"))
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
        path = ROOT / file
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
