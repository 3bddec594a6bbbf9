"""The package boundaries of docs/ARCHITECTURE.md, checked on the source (ast) and in fresh processes.

- modeling_crjepa/ is exactly the remote-code model: its files import only the standard library, torch,
  transformers (with numpy, a dependency of both, and huggingface_hub's strict dataclass used by the config) and
  each other through relative ``from .x import Y`` imports, since only those siblings travel into a checkpoint.
- No import cycles among the modules of crjepa/, datasets_scripts/ and modeling_crjepa/ at module level.
- Dependencies point one way: model <- application (crjepa) <- scripts (datasets_scripts, train_accelerate.py);
  crjepa reaches the builders only through the registry's module names, never by an import statement.
- Small helpers import no torch (fresh interpreter, ``sys.modules`` checked).
"""

from __future__ import annotations

import ast
import subprocess
import sys
from pathlib import Path

import pytest

from helpers import repository_files

ROOT = Path(__file__).resolve().parent.parent
MODEL_FILES = {
    "__init__.py",
    "configuration_crjepa.py",
    "modeling_crjepa.py",
    "losses.py",
    "devices.py",
    "image_processing_crjepa.py",
    "pipeline_crjepa.py",
}
MODEL_ALLOWED = {"torch", "transformers", "numpy", "huggingface_hub", "PIL"}  # huggingface_hub: a dependency of
# transformers (the strict config dataclass; HfApi inside push_to_hub), so it is wherever the model loads; PIL:
# transformers' AutoImageProcessor requires Pillow, so it is wherever the image processor loads
PACKAGES = ("crjepa", "datasets_scripts", "modeling_crjepa")
LIGHT_MODULES = (
    "crjepa",
    "crjepa.utils.atomic",
    "crjepa.utils.resources",
    "crjepa.data.schema",
    "crjepa.data.images",
    "crjepa.data.labels",
    "crjepa.eval.metrics",
    "crjepa.hub.cards",
    "crjepa.hub.access",
    "datasets_scripts.common",
    "datasets_scripts.ben_metadata",
)


def _module_name(path: Path) -> str:
    parts = path.relative_to(ROOT).with_suffix("").parts
    return ".".join(parts[:-1] if parts[-1] == "__init__" else parts)


def _sources() -> dict[str, Path]:
    """Every module of the three packages (the evaluate scripts under metrics_modules/ are loaded by path, by
    `evaluate`, and count too) plus the training entry point."""
    files = [p for package in PACKAGES for p in (ROOT / package).rglob("*.py")] + [ROOT / "train_accelerate.py"]
    return {_module_name(p): p for p in files}


def _imports(path: Path, module: str, top_level_only: bool) -> list[tuple[str, int, int]]:
    """(absolute module, relative level, line) of each import statement; with ``top_level_only`` only those
    that run when the module is imported (not inside functions, classes' methods or ``if TYPE_CHECKING``)."""
    tree = ast.parse(path.read_text(), filename=str(path))
    package = module if path.name == "__init__.py" else module.rpartition(".")[0]
    found: list[tuple[str, int, int]] = []

    def visit(node: ast.AST) -> None:
        for child in ast.iter_child_nodes(node):
            if top_level_only and isinstance(child, (ast.FunctionDef, ast.AsyncFunctionDef, ast.Lambda)):
                continue
            if top_level_only and isinstance(child, ast.If) and "TYPE_CHECKING" in ast.unparse(child.test):
                continue
            if isinstance(child, ast.Import):
                found.extend((alias.name, 0, child.lineno) for alias in child.names)
            elif isinstance(child, ast.ImportFrom):
                base = package.split(".")[: len(package.split(".")) - (child.level - 1)] if child.level else []
                target = ".".join(base + ([child.module] if child.module else []))
                found.append((target, child.level, child.lineno))
                for alias in child.names:  # `from a import b` may import the module a.b
                    found.append((f"{target}.{alias.name}", child.level, child.lineno))
            visit(child)

    visit(tree)
    return found


def test_model_package_holds_only_the_remote_code_files():
    folder = ROOT / "modeling_crjepa"
    found = {p.name for p in folder.iterdir() if p.name != "__pycache__"}
    assert found == MODEL_FILES, f"modeling_crjepa/ must hold exactly {sorted(MODEL_FILES)}; found {sorted(found)}"


@pytest.mark.parametrize("name", sorted(MODEL_FILES))
def test_model_files_import_only_torch_transformers_and_siblings(name):
    path = ROOT / "modeling_crjepa" / name
    tree = ast.parse(path.read_text(), filename=str(path))
    siblings = {Path(f).stem for f in MODEL_FILES} - {"__init__"}
    problems = []
    for node in ast.walk(tree):  # every import, also those inside functions: they run in the checkpoint too
        if isinstance(node, ast.Import):
            names = [alias.name for alias in node.names]
        elif isinstance(node, ast.ImportFrom) and node.level == 0:
            names = [node.module or ""]
        elif isinstance(node, ast.ImportFrom):
            if node.level != 1 or node.module not in siblings:  # `from . import x` and `..` do not travel
                problems.append(f"line {node.lineno}: relative import must be `from .<sibling> import Y`")
            continue
        else:
            continue
        for module in names:
            top = module.split(".")[0]
            allowed = (
                top in sys.stdlib_module_names
                or top in {"torch", "transformers", "numpy"}
                or module in MODEL_ALLOWED
                or module.startswith("huggingface_hub.")
            )
            if not allowed:
                problems.append(f"line {node.lineno}: imports {module}")
    assert not problems, f"modeling_crjepa/{name} travels into checkpoints; " + "; ".join(problems)


def test_no_import_cycles_at_module_level():
    sources = _sources()
    graph: dict[str, set[str]] = {}
    for module, path in sources.items():
        edges = set()
        for target, _, _ in _imports(path, module, top_level_only=True):
            parts = target.split(".")
            # importing a.b.c runs a/__init__, a/b/__init__ and a/b/c: each is an edge when it is ours
            edges |= {".".join(parts[:i]) for i in range(1, len(parts) + 1) if ".".join(parts[:i]) in sources}
        # a module's own parent packages are initialised before it (and their __init__ may import it): no cycle
        ancestors = {".".join(module.split(".")[:i]) for i in range(1, module.count(".") + 2)}
        graph[module] = edges - ancestors

    cycles = _cycles(graph)
    assert not cycles, "import cycles at module level: " + "; ".join(" -> ".join(c) for c in cycles)


def _cycles(graph: dict[str, set[str]]) -> list[list[str]]:
    """Strongly connected components with more than one module (Tarjan), as sorted lists."""
    index: dict[str, int] = {}
    low: dict[str, int] = {}
    stack: list[str] = []
    on_stack: set[str] = set()
    out: list[list[str]] = []

    def strong(v: str) -> None:
        index[v] = low[v] = len(index)
        stack.append(v)
        on_stack.add(v)
        for w in graph.get(v, ()):
            if w not in index:
                strong(w)
                low[v] = min(low[v], low[w])
            elif w in on_stack:
                low[v] = min(low[v], index[w])
        if low[v] == index[v]:
            component = []
            while True:
                w = stack.pop()
                on_stack.discard(w)
                component.append(w)
                if w == v:
                    break
            if len(component) > 1:
                out.append(sorted(component))

    sys.setrecursionlimit(max(sys.getrecursionlimit(), 10_000))
    for v in sorted(graph):
        if v not in index:
            strong(v)
    return out


def test_dependencies_point_one_way():
    """model <- crjepa <- datasets_scripts / train_accelerate.py, counting imports inside functions too."""
    problems = []
    for module, path in _sources().items():
        for target, _, line in _imports(path, module, top_level_only=False):
            top = target.split(".")[0]
            if module.startswith("modeling_crjepa") and top in {"crjepa", "datasets_scripts", "train_accelerate"}:
                problems.append(f"{module}:{line} (the model) imports {target}")
            if module.startswith("crjepa") and top in {"datasets_scripts", "train_accelerate"}:
                problems.append(f"{module}:{line} (the application) imports {target}")
    assert not problems, "; ".join(problems)


def test_small_helpers_do_not_import_torch():
    code = (
        "import importlib, sys\n"
        f"for name in {LIGHT_MODULES!r}:\n"
        "    importlib.import_module(name)\n"
        "    heavy = sorted(m for m in ('torch', 'transformers') if m in sys.modules)\n"
        "    assert not heavy, f'import {name} loads {heavy}'\n"
        "print('ok')\n"
    )
    run = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, cwd=ROOT, timeout=300)
    assert run.returncode == 0 and run.stdout.strip() == "ok", run.stderr[-2000:]


MAX_MODULE_LINES = 600
"""One concern per file: a module past this many lines holds several jobs and is split along its seams. The model
file, which remote code loads as one unit with the paper's components side by side, is the one exception."""


def test_no_module_is_longer_than_600_lines():
    files = [p for p in repository_files() if p.suffix == ".py"]  # tracked or new: tests and benchmarks too
    long = {str(p.relative_to(ROOT)): n for p in files if (n := len(p.read_text().splitlines())) > MAX_MODULE_LINES}
    assert long.keys() <= {"modeling_crjepa/modeling_crjepa.py"}, long
