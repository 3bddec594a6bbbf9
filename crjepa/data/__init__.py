"""crjepa.data (see crjepa/__init__.py)."""
