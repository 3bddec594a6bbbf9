"""The scores behind the app's plot (crjepa/app/scores.py): a training run's results.json beside the archive when
it is the archive's model's, else the model card's model-index."""

from __future__ import annotations

import json

from crjepa.app.scores import load_scores
from crjepa.eval.retrieval import evaluate_retrieval
from crjepa.hub.archive import load_embeddings


def test_scores_come_from_the_runs_results_json_or_the_model_card(archive_dir, model, archive_pairs, tmp_path):
    from crjepa.hub.cards import render_model_card
    from crjepa.train.config import load_run_config

    archive = load_embeddings(archive_dir)
    assert load_scores(archive) is None
    trained = evaluate_retrieval(model, archive_pairs, k=5)
    results = {"model_fingerprint": archive.fingerprint, "trained": trained.as_dict(), "random_init": None}
    run = archive_dir.parent / "results.json"
    run.write_text(json.dumps(results))
    try:
        scores = load_scores(archive)
        assert scores["metric"] == trained.headline_metric
        assert {r["direction"]: r["score"] for r in scores["rows"]} == {
            d.upper(): round(100 * v, 2) for d, v in trained.metrics[trained.headline_metric].items()
        }
        run.write_text(json.dumps({**results, "model_fingerprint": "0123456789abcdef"}))  # another model's run
        assert load_scores(archive) is None
    finally:
        run.unlink()
    folder = tmp_path / "model"
    folder.mkdir()
    run_config = load_run_config(None, [])  # the CPU default run's configuration, as training renders the card
    render_model_card(model.config, run_config, trained).save(folder / "README.md")
    scores = load_scores(archive, str(folder))
    assert {r["direction"]: r["score"] for r in scores["rows"]} == {
        d.upper(): round(100 * v, 2) for d, v in trained.metrics[trained.headline_metric].items()
    }
