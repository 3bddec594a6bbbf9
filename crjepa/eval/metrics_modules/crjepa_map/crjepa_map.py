"""CR-JEPA retrieval metric for `evaluate`: mean average precision (global, or mAP@k).

Load with `evaluate.load("path/to/crjepa_map")`; the maths lives in `crjepa.eval.metrics` (installed with
crjepa), so this file only names the metric. Example::

    metric = evaluate.load("crjepa/eval/metrics_modules/crjepa_map")
    metric.compute(similarity=sim, query_labels=query_multi_hot, gallery_labels=gallery_multi_hot)
"""

from crjepa.eval.metrics import evaluate_metric_class


class CrjepaMap(evaluate_metric_class("map")):
    """mean average precision (global, or mAP@k); see crjepa.eval.metrics."""
