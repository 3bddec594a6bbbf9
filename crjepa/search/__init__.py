"""crjepa.search (see crjepa/__init__.py)."""
