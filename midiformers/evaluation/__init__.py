"""Evaluation of midiformers models: musical metrics and model-level evaluations.

Submodules are imported on demand (``from midiformers.evaluation.conditioning import ...``)
so that ``import midiformers`` stays light.
"""

from .loading import METRIC_NAMES, PIECE_METRICS, MidiMetric, load_metric, metric_path

__all__ = ["METRIC_NAMES", "PIECE_METRICS", "MidiMetric", "load_metric", "metric_path"]
