"""Files that travel with the package: run configurations (configs/) and card templates (model_cards/).

In a source checkout they are the repository's top-level folders; in an installed wheel they are the packages
``crjepa.configs`` and ``crjepa.model_cards`` (pyproject.toml maps one onto the other), so a user who ran
``pip install crjepa`` gets the same files. Imports no torch.
"""

from __future__ import annotations

from pathlib import Path

_PACKAGE = Path(__file__).resolve().parent.parent  # crjepa/
_CHECKOUT = _PACKAGE.parent  # the repository root in a source checkout


def resource_dir(kind: str) -> Path:
    """The folder of `kind` ("configs" or "model_cards"): the installed package's copy, else the checkout's."""
    for folder in (_PACKAGE / kind, _CHECKOUT / kind):
        if folder.is_dir():
            return folder
    raise FileNotFoundError(
        f"crjepa's {kind}/ folder was found neither in {_PACKAGE / kind} nor in "
        f"{_CHECKOUT / kind}; reinstall crjepa (`pip install .` from the repository)"
    )


def resource_file(kind: str, name: str) -> Path:
    """`kind`/`name` (e.g. resource_file("configs", "paper_ben14k.yaml")); a clear error when it is missing."""
    path = resource_dir(kind) / name
    if not path.is_file():
        available = sorted(
            str(p.relative_to(path.parents[len(Path(name).parts) - 1]))
            for p in resource_dir(kind).rglob("*")
            if p.is_file() and p.suffix in (".yaml", ".md")
        )
        raise FileNotFoundError(f"{kind}/{name} is not part of crjepa; available: {', '.join(available)}")
    return path
