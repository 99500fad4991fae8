"""Everything metrics.json says about one set of predictions, and the plots drawn from it.

:func:`score_predictions` is shared by ``evaluate`` (a run on a split) and ``cv`` (pooled out-of-fold
predictions): the plain figures of :func:`compute_metrics`, calibration (ECE, Brier, reliability bins), and
bootstrap intervals with a ROC band. See docs/evaluation.md for every field.
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np

from xvision.evaluation.bootstrap import (
    BootstrapConfig,
    bootstrap_samples,
    group_codes,
    metric_intervals,
    resampled_unit,
    roc_band,
    small_sample_caution,
)
from xvision.evaluation.calibration import calibration_summary
from xvision.evaluation.metrics import compute_metrics
from xvision.evaluation.plots import plot_confusion_matrix, plot_reliability, plot_roc
from xvision.evaluation.threshold import decide

#: FPR values at which the ROC band is stored.
ROC_BAND_POINTS = 51
DEFAULT_BOOTSTRAP = BootstrapConfig()


def score_predictions(
    y: np.ndarray,
    proba: np.ndarray,
    classes: Sequence[str],
    *,
    positive: str | None = None,
    threshold: float | None = None,
    groups: Sequence[str | None] | None = None,
    bootstrap: BootstrapConfig | None = DEFAULT_BOOTSTRAP,
    y_pred: np.ndarray | None = None,
) -> dict[str, Any]:
    """Metrics, calibration and (unless ``bootstrap`` is None) intervals for class indices ``y``.

    ``positive``, ``threshold`` and ``y_pred`` are as in :func:`compute_metrics`; ``groups`` (one id per
    image, None/"" for none) makes the bootstrap draw whole groups.
    """
    classes = list(classes)
    binary = len(classes) == 2
    metrics = compute_metrics(y, proba, classes, positive=positive, threshold=threshold, y_pred=y_pred)
    pos = classes.index(metrics["positive"]) if binary else None
    if y_pred is None:
        y_pred = decide(proba, positive=pos, threshold=threshold)
    calibration = calibration_summary(y, proba, classes, positive=pos)
    metrics["ece"] = calibration["ece"]
    metrics["brier"] = calibration["brier"]
    metrics["calibration"] = calibration
    if bootstrap is None:
        return metrics
    codes = group_codes(groups, len(y))
    grid = np.linspace(0.0, 1.0, ROC_BAND_POINTS)
    samples = bootstrap_samples(
        np.asarray(y),
        np.asarray(proba, dtype=np.float64),
        np.asarray(y_pred),
        positive=pos,
        groups=codes,
        config=bootstrap,
        fpr_grid=grid if binary and metrics.get("roc_auc") is not None else None,
    )
    metrics["intervals"] = metric_intervals(metrics, samples, classes, bootstrap.level)
    n_units = len(np.unique(codes))
    metrics["bootstrap"] = {
        "method": "percentile",
        "level": bootstrap.level,
        "n_resamples": bootstrap.n_resamples,
        "seed": bootstrap.seed,
        "stratified_by": "class",
        "unit": resampled_unit(codes),
        "n_units": int(n_units),
    }
    caution = small_sample_caution(np.asarray(y), codes, classes)
    if caution:
        metrics["bootstrap"]["caution"] = caution
    band = roc_band(samples, grid, bootstrap.level)
    if band is not None:
        metrics["roc_band"] = band
    return metrics


def draw_plots(
    metrics: dict[str, Any],
    y: np.ndarray,
    proba: np.ndarray,
    plots_dir: str | Path,
    *,
    label: str,
    watermark: str | None = None,
) -> list[Path]:
    """Draw ``confusion_matrix.png``, ``roc.png`` (two classes) and ``reliability.png`` into ``plots_dir``."""
    plots = Path(plots_dir)
    classes = metrics["classes"]
    drawn = [
        plot_confusion_matrix(
            np.rint(np.asarray(metrics["confusion_matrix"], dtype=float)).astype(int),
            classes,
            plots / "confusion_matrix.png",
            title=f"Confusion matrix ({label})",
            watermark=watermark,
        )
    ]
    if len(classes) == 2 and metrics.get("roc_auc") is not None:
        pos = classes.index(metrics["positive"])
        auc_ci = metrics.get("intervals", {}).get("roc_auc", {})
        interval = (auc_ci["ci_low"], auc_ci["ci_high"]) if auc_ci.get("ci_low") is not None else None
        point = None
        if metrics.get("sensitivity") is not None and metrics.get("specificity") is not None:
            point = (1.0 - metrics["specificity"], metrics["sensitivity"])
        drawn.append(
            plot_roc(
                (np.asarray(y) == pos).astype(int),
                np.asarray(proba)[:, pos],
                plots / "roc.png",
                auc=metrics["roc_auc"],
                positive_name=classes[pos],
                title=f"ROC: {classes[pos]} ({label})",
                watermark=watermark,
                band=metrics.get("roc_band"),
                auc_interval=interval,
                operating_point=point,
            )
        )
    calibration = metrics["calibration"]
    xlabel = f"predicted p({metrics['positive']})" if len(classes) == 2 else "top-label confidence"
    ylabel = f"observed fraction {metrics['positive']}" if len(classes) == 2 else "fraction correct"
    drawn.append(
        plot_reliability(
            calibration["bins"],
            plots / "reliability.png",
            xlabel=xlabel,
            ylabel=ylabel,
            ece=calibration["ece"],
            brier=calibration["brier"],
            title=f"Reliability ({label})",
            watermark=watermark,
        )
    )
    return drawn
