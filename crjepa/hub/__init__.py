"""crjepa.hub (see crjepa/__init__.py)."""
