"""CR-JEPA retrieval metric for `evaluate`: precision at k.

Load with `evaluate.load("path/to/crjepa_precision_at_k")`; the maths lives in `modeling_crjepa.metrics` (installed with
crjepa), so this file only names the metric. Example::

    metric = evaluate.load("modeling_crjepa/metrics_modules/crjepa_precision_at_k")
    metric.compute(similarity=sim, query_labels=query_multi_hot, gallery_labels=gallery_multi_hot)
"""

from modeling_crjepa.metrics import evaluate_metric_class


class CrjepaPrecisionAtK(evaluate_metric_class("precision_at_k")):
    """precision at k; see modeling_crjepa.metrics."""
