"""CR-JEPA retrieval metric for `evaluate`: precision at k.

Standalone: `evaluate.load("path/to/crjepa_precision_at_k")` needs numpy, datasets and evaluate, not crjepa. The maths
is in retrieval_metrics.py beside this file, a link to crjepa/eval/metrics.py (its one home; `evaluate` copies the
file with this script, and wheels hold it as a plain file). Example::

    metric = evaluate.load("crjepa/eval/metrics_modules/crjepa_precision_at_k")
    metric.compute(similarity=sim, query_labels=query_multi_hot, gallery_labels=gallery_multi_hot)
"""

from .retrieval_metrics import evaluate_metric_class


class CrjepaPrecisionAtK(evaluate_metric_class("precision_at_k")):
    """Precision at k; see README.md beside this file."""
