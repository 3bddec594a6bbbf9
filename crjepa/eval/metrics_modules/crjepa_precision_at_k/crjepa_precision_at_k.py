"""CR-JEPA retrieval metric for `evaluate`: precision at k.

Load with `evaluate.load("path/to/crjepa_precision_at_k")`; the maths lives in `crjepa.eval.metrics` (installed with
crjepa), so this file only names the metric. Example::

    metric = evaluate.load("crjepa/eval/metrics_modules/crjepa_precision_at_k")
    metric.compute(similarity=sim, query_labels=query_multi_hot, gallery_labels=gallery_multi_hot)
"""

from crjepa.eval.metrics import evaluate_metric_class


class CrjepaPrecisionAtK(evaluate_metric_class("precision_at_k")):
    """precision at k; see crjepa.eval.metrics."""
