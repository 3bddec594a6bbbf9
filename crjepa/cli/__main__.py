"""``python -m crjepa.cli`` (and ``accelerate launch -m crjepa.cli embed ...``): the ``crjepa`` command."""

from crjepa.cli import entry

entry()
