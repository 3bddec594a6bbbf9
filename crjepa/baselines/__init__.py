"""crjepa.baselines (see crjepa/__init__.py)."""
