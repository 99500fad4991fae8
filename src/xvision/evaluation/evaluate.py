"""`xvision evaluate`: score a run on one split of a feature store; write metrics.json and plots."""

from __future__ import annotations

import csv
import io
import logging
from pathlib import Path
from typing import Any

import numpy as np

from xvision._fileio import atomic_write_json, atomic_write_text
from xvision.errors import FeatureStoreError
from xvision.evaluation.metrics import compute_metrics
from xvision.evaluation.plots import plot_confusion_matrix, plot_roc, plot_training_curve
from xvision.features.dataset import load_split
from xvision.inference.bundle import UNTRAINED_WARNING, check_same_backbone, load_bundle

log = logging.getLogger(__name__)


def evaluate_run(
    run_dir: str | Path,
    features_dir: str | Path,
    *,
    split: str | None = "test",
    out_dir: str | Path | None = None,
) -> dict[str, Any]:
    """Score the run's head on ``split`` (None: every image) and write metrics, predictions and plots.

    Outputs go to ``out_dir`` (default: the run folder): ``metrics.json``, ``predictions.csv`` and
    ``plots/confusion_matrix.png``, ``plots/training_curve.png``, ``plots/roc.png`` (two classes).
    """
    bundle = load_bundle(run_dir)
    data = load_split(features_dir, split)
    check_same_backbone(bundle.backbone, data.meta["backbone"], f"{features_dir}")
    classes = bundle.classes
    unknown = sorted(set(data.labels) - set(classes))
    if unknown:
        raise FeatureStoreError(f"{features_dir}: labels {unknown} are not classes of the run ({', '.join(classes)})")
    out = Path(out_dir) if out_dir is not None else Path(run_dir)
    plots = out / "plots"
    watermark = UNTRAINED_WARNING if bundle.untrained_backbone else None

    overlap = len(set(data.keys) & bundle.train_keys())
    if overlap:
        log.warning("%d evaluated images were used in training: these figures are optimistic", overlap)

    proba = bundle.head.predict_proba(data.X)
    y = np.array([classes.index(label) for label in data.labels])
    metrics = compute_metrics(y, proba, classes)
    metrics = {
        "split": split or "all",
        "run": str(Path(run_dir)),
        "features": str(Path(features_dir)),
        "backbone": bundle.backbone["name"],
        "weights": bundle.backbone["weights"],
        "warning": watermark,
        "overlap_with_training": overlap,
        **metrics,
    }
    atomic_write_json(out / "metrics.json", metrics)
    atomic_write_text(out / "predictions.csv", _predictions_csv(data.rows, proba, classes))

    label = f"{split or 'all'} split, n={metrics['n']}"
    plot_confusion_matrix(
        metrics["confusion_matrix"],
        classes,
        plots / "confusion_matrix.png",
        title=f"Confusion matrix ({label})",
        watermark=watermark,
    )
    history = Path(run_dir) / "history.csv"
    if history.is_file():
        plot_training_curve(
            history,
            plots / "training_curve.png",
            best_epoch=bundle.info.get("best_epoch"),
            watermark=watermark,
        )
    if len(classes) == 2 and metrics.get("roc_auc") is not None:
        plot_roc(
            y,
            proba[:, 1],
            plots / "roc.png",
            auc=metrics["roc_auc"],
            positive_name=classes[1],
            title=f"ROC ({label})",
            watermark=watermark,
        )
    return metrics


def _predictions_csv(rows: list[Any], proba: np.ndarray, classes: list[str]) -> str:
    buffer = io.StringIO()
    writer = csv.writer(buffer, lineterminator="\n")
    writer.writerow(["path", "label", "predicted", *[f"p_{c}" for c in classes]])
    for row, p in zip(rows, proba, strict=True):
        writer.writerow([row.path, row.label, classes[int(np.argmax(p))], *[f"{v:.6f}" for v in p]])
    return buffer.getvalue()
