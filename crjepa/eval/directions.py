"""Retrieval directions and vector-column names, without torch: what an embeddings archive needs to be searched by
id (`crjepa search --id`, `load_embeddings(...).search_by_id`) starts in a fraction of a second.

``SPACES`` names the model's two retrieval heads (``modeling_crjepa.modeling_crjepa.SPACES``: unified = phi_uni,
same-modal; cross = phi_cross, cross-modal); importing the model package would import torch, so the names are
repeated here and tests/test_eval_directions.py checks that both agree.
"""

from __future__ import annotations

from collections.abc import Sequence

from crjepa.errors import CRJepaError


class DirectionError(CRJepaError, ValueError):
    """A retrieval direction that is not 'a->b' over the archive's or model's sensors."""


SPACES = ("unified", "cross")


def column_name(sensor: str, space: str) -> str:
    """The name of a vector column / index: e.g. ``s1_unified``, ``s2_cross``."""
    return f"{sensor}_{space}"


def parse_direction(direction: str, sensors: Sequence[str]) -> tuple[str, str, str]:
    """'s1->s2' -> (query sensor, target sensor, space): unified for same-modal, cross for cross-modal."""
    parts = [p.strip() for p in direction.replace("→", "->").lower().split("->")]
    known = {s.lower(): s for s in sensors}
    if len(parts) != 2:
        raise DirectionError(f"A direction looks like 'a->b' with sensors {list(sensors)}; found {direction!r}")
    for part in parts:
        if part not in known:
            raise DirectionError(f"Unknown sensor {part!r} in direction {direction!r}; known sensors: {list(sensors)}")
    source, target = known[parts[0]], known[parts[1]]
    return source, target, ("unified" if source == target else "cross")


def directions_of(sensors: Sequence[str]) -> list[str]:
    """Every retrieval direction among the sensors: the same-modal ones in sensor order, then the cross-modal
    ones pair by pair (a->b, b->a, a->c, c->a, ...); N sensors give N^2. Two sensors: the paper's column order
    a->a, b->b, a->b, b->a; one sensor: a->a."""
    names = list(dict.fromkeys(sensors))
    directions = [f"{s}->{s}" for s in names]
    for i, source in enumerate(names):
        for target in names[i + 1 :]:
            directions += [f"{source}->{target}", f"{target}->{source}"]
    return directions


__all__ = ["SPACES", "DirectionError", "column_name", "directions_of", "parse_direction"]
