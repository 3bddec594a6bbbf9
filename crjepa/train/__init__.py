"""crjepa.train (see crjepa/__init__.py)."""
