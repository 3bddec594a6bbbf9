"""CR-JEPA retrieval metric for `evaluate`: F1@k with graded multi-label relevance (CR-JEPA paper or CSMAE aggregation).

Standalone: `evaluate.load("path/to/crjepa_f1_at_k")` needs numpy, datasets and evaluate, not crjepa. The maths is in
retrieval_metrics.py beside this file, a link to crjepa/eval/metrics.py (its one home; `evaluate` copies the linked
file with this script, and wheels hold it as a plain file). Example::

    metric = evaluate.load("crjepa/eval/metrics_modules/crjepa_f1_at_k")
    metric.compute(similarity=sim, query_labels=query_multi_hot, gallery_labels=gallery_multi_hot)
"""

from .retrieval_metrics import evaluate_metric_class


class CrjepaF1AtK(evaluate_metric_class("f1_at_k")):
    """F1@k with graded multi-label relevance (CR-JEPA paper or CSMAE aggregation); see README.md beside this file."""
