"""CR-JEPA retrieval metric for `evaluate`: F1@k with graded multi-label relevance (CR-JEPA paper or CSMAE aggregation).

Load with `evaluate.load("path/to/crjepa_f1_at_k")`; the maths lives in `crjepa.eval.metrics` (installed with
crjepa), so this file only names the metric. Example::

    metric = evaluate.load("crjepa/eval/metrics_modules/crjepa_f1_at_k")
    metric.compute(similarity=sim, query_labels=query_multi_hot, gallery_labels=gallery_multi_hot)
"""

from crjepa.eval.metrics import evaluate_metric_class


class CrjepaF1AtK(evaluate_metric_class("f1_at_k")):
    """F1@k with graded multi-label relevance (CR-JEPA paper or CSMAE aggregation); see crjepa.eval.metrics."""
