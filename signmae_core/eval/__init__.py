"""Evaluation of a finetuned classifier: metrics (metrics.py) and the report (report.py)."""

from .metrics import average_views, classification_metrics

__all__ = ["average_views", "classification_metrics"]
