"""Metrics, plots and reports: how good a head's predictions are, in numbers and pictures."""

from xvision.evaluation.bootstrap import BootstrapConfig
from xvision.evaluation.calibration import apply_temperature, brier_score, expected_calibration_error, fit_temperature
from xvision.evaluation.metrics import compute_metrics, roc_points
from xvision.evaluation.plots import (
    plot_confusion_matrix,
    plot_prediction_grid,
    plot_reliability,
    plot_roc,
    plot_training_curve,
)
from xvision.evaluation.scoring import score_predictions
from xvision.evaluation.threshold import ThresholdRule, choose_threshold

__all__ = [
    "BootstrapConfig",
    "ThresholdRule",
    "apply_temperature",
    "brier_score",
    "choose_threshold",
    "compute_metrics",
    "expected_calibration_error",
    "fit_temperature",
    "plot_confusion_matrix",
    "plot_prediction_grid",
    "plot_reliability",
    "plot_roc",
    "plot_training_curve",
    "roc_points",
    "score_predictions",
]
