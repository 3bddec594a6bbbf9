"""crjepa.eval (see crjepa/__init__.py)."""
