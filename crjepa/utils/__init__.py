"""crjepa.utils (see crjepa/__init__.py)."""
