"""The one base of the errors crjepa raises for a person to act on.

A `CRJepaError` is a problem the person running a command can fix: bad input (a file, a value, a data set), a
refused write, an occupied output folder, an unreachable Hub. The entry points (`crjepa`, `train_accelerate.py`,
`python -m datasets_scripts`, `crjepa app`) print it as one ``error:`` line and exit with status 2; every other
exception is a bug and keeps its traceback.

Each concern keeps its own subclass, defined where the concern lives (`crjepa.data.schema.DataError`,
`crjepa.hub.archive.EmbeddingsError`, ...); a subclass may also derive from the built-in exception it has always
been (ValueError, RuntimeError, ...), so code that catches that keeps working. The model package
(modeling_crjepa/, remote code) cannot import crjepa: its input errors are ValueError / TypeError, which the entry
points name explicitly where a model is built from a user's configuration.
"""

from __future__ import annotations


class CRJepaError(Exception):
    """Base of every error crjepa raises for a person to act on (see the module docstring)."""


__all__ = ["CRJepaError"]
