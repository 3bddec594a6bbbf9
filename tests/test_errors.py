"""crjepa/errors.py: every error class the application and the converters define derives from `CRJepaError`, the
one base the entry points print as one line (anything else is a bug and keeps its traceback)."""

from __future__ import annotations

import importlib
import inspect
import pkgutil

import crjepa
import datasets_scripts
from crjepa.errors import CRJepaError

OPTIONAL = {"crjepa.app.ui"}
"""Modules that import an optional dependency at import time (Gradio)."""


def defined_errors() -> dict[str, type[BaseException]]:
    found = {}
    for package in (crjepa, datasets_scripts):
        for module_info in pkgutil.walk_packages(package.__path__, package.__name__ + "."):
            if module_info.name in OPTIONAL or module_info.name.endswith("__main__"):
                continue
            module = importlib.import_module(module_info.name)
            for name, value in vars(module).items():
                if inspect.isclass(value) and issubclass(value, BaseException) and value.__module__ == module.__name__:
                    found[f"{module.__name__}.{name}"] = value
    return found


def test_every_error_class_derives_from_the_one_base():
    errors = defined_errors()
    assert len(errors) >= 10, sorted(errors)  # the walk found the package's errors
    assert not [name for name, cls in errors.items() if cls is not CRJepaError and not issubclass(cls, CRJepaError)]
