"""The per-direction retrieval scores behind an archive, for the app's plot: a training run's results.json beside the
archive (trained and random-init scores, matched by model fingerprint), else the model card's model-index."""

from __future__ import annotations

import json
import logging
from pathlib import Path
from typing import Any

from crjepa.hub.archive import EmbeddingArchive

logger = logging.getLogger(__name__)

RESULTS_FILE = "results.json"  # a training run's scores (crjepa.train.checkpoints.RESULTS_FILE), beside embeddings/


def load_scores(archive: EmbeddingArchive, model: str | None = None) -> dict[str, Any] | None:
    """The per-direction retrieval scores behind the archive, for the plot: {"metric": name, "rows": [{"direction",
    "model", "score" (%)}]}. From the training run's results.json beside (or in) the archive folder when its model
    fingerprint is the archive's (trained and random-init scores), else from the model card's model-index (local
    folder or Hub repo); None when neither is there."""
    for folder in (archive.path, archive.path.parent):
        file = folder / RESULTS_FILE
        if file.is_file():
            try:
                results = json.loads(file.read_text())
            except (OSError, ValueError):
                continue
            if isinstance(results, dict) and results.get("model_fingerprint") == archive.fingerprint:
                table = _scores_of_results(results)
                if table:
                    return table
    return _scores_of_card(model) if model else None


def _scores_of_results(results: dict[str, Any]) -> dict[str, Any] | None:
    rows, metric = [], None
    for key, label in (("trained", "trained"), ("random_init", "random init")):
        part = results.get(key)
        if not isinstance(part, dict) or not isinstance(part.get("metrics"), dict):
            continue
        metric = metric or part.get("headline_metric") or next(iter(part["metrics"]), None)
        values = part["metrics"].get(metric) or {}
        rows += [
            {"direction": d.upper(), "model": label, "score": round(100 * float(v), 2)}
            for d, v in values.items()
            if isinstance(v, (int, float))
        ]
    return {"metric": metric, "rows": rows} if rows else None


def _scores_of_card(model: str) -> dict[str, Any] | None:
    """The model-index of a model card (values already in %), headline metric = the first one listed."""
    try:
        from huggingface_hub import ModelCard

        path = Path(model).expanduser()
        card = ModelCard.load(path / "README.md" if path.is_dir() else model)
        results = card.data.eval_results or []
    except Exception as err:  # no card, offline, not a repo: the plot is optional
        logger.info("no model card scores for %s: %s", model, err)
        return None
    if not results:
        return None
    metric = results[0].metric_name.rsplit(" ", 1)[0]
    rows = [
        {
            "direction": (r.metric_config or r.metric_name.rsplit(" ", 1)[-1]).upper(),
            "model": "trained",
            "score": round(float(r.metric_value), 2),
        }
        for r in results
        if r.metric_name.rsplit(" ", 1)[0] == metric
    ]
    return {"metric": metric, "rows": rows} if rows else None


__all__ = ["RESULTS_FILE", "load_scores"]
