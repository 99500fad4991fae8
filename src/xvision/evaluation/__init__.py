"""Metrics, plots and reports: how good a head's predictions are, in numbers and pictures."""

from xvision.evaluation.metrics import compute_metrics, roc_points
from xvision.evaluation.plots import (
    plot_confusion_matrix,
    plot_prediction_grid,
    plot_roc,
    plot_training_curve,
)

__all__ = [
    "compute_metrics",
    "plot_confusion_matrix",
    "plot_prediction_grid",
    "plot_roc",
    "plot_training_curve",
    "roc_points",
]
