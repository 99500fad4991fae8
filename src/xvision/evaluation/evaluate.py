"""`xvision evaluate`: score a run on one split of a feature store; write metrics.json and plots."""

from __future__ import annotations

import csv
import io
import json
import logging
from pathlib import Path
from typing import Any

import numpy as np

from xvision._fileio import atomic_write_json, atomic_write_text, csv_float
from xvision._outputs import check_not_linked, check_writable
from xvision.errors import FeatureStoreError, RunError
from xvision.evaluation.bootstrap import BootstrapConfig, check_bootstrap, scoring_groups
from xvision.evaluation.plots import plot_training_curve
from xvision.evaluation.report import report_after_evaluate
from xvision.evaluation.scoring import DEFAULT_BOOTSTRAP, draw_plots, score_predictions
from xvision.features.dataset import load_split, unreadable_images
from xvision.inference.bundle import (
    UNTRAINED_WARNING,
    RunBundle,
    check_same_backbone,
    environment_versions,
    load_bundle,
    model_sha256,
)

log = logging.getLogger(__name__)


def evaluate_run(
    run_dir: str | Path,
    features_dir: str | Path,
    *,
    split: str | None = "test",
    out_dir: str | Path | None = None,
    bootstrap: BootstrapConfig | None = DEFAULT_BOOTSTRAP,
    manifest: str | Path | None = None,
) -> dict[str, Any]:
    """Score the run's head on ``split`` (None: every image) and write metrics, predictions and plots.

    Decisions use the run's threshold and probabilities its temperature, both fitted on validation at
    training time. Intervals come from a ``bootstrap`` over the split's images (whole groups when the
    index has them); None skips them. Outputs go to ``out_dir`` (default: the run folder):
    ``metrics.json``, ``predictions.csv`` and ``plots/confusion_matrix.png``, ``plots/training_curve.png``,
    ``plots/roc.png`` (two classes), ``plots/reliability.png`` and ``report.html`` (see
    xvision.evaluation.report). docs/evaluation.md lists every field. ``manifest`` (what `evaluate --manifest`
    scored) and the SHA-256 of the head scored are recorded with them, so neither a second manifest of the same
    name nor a retrained head can pass these results off as its own.
    """
    check_bootstrap(bootstrap)
    bundle = load_bundle(run_dir)
    data = load_split(features_dir, split)
    check_same_backbone(bundle.backbone, data.meta["backbone"], f"{features_dir}")
    classes = bundle.classes
    unknown = sorted(set(data.labels) - set(classes))
    if unknown:
        raise FeatureStoreError(f"{features_dir}: labels {unknown} are not classes of the run ({', '.join(classes)})")
    out = Path(out_dir) if out_dir is not None else Path(run_dir)
    check_results_folder(out, manifest)
    plots = out / "plots"
    watermark = UNTRAINED_WARNING if bundle.untrained_backbone else None

    overlap, seen_in_val = warn_seen_images(set(data.keys), bundle, "evaluated images", "the run")
    unreadable = unreadable_images(features_dir, split)

    proba = bundle.predict_proba(data.X)
    y = np.array([classes.index(label) for label in data.labels])
    metrics = score_predictions(
        y,
        proba,
        classes,
        positive=bundle.positive,
        threshold=bundle.threshold,
        groups=scoring_groups([row.sha256 for row in data.rows], [row.group for row in data.rows], "evaluated images"),
        bootstrap=bootstrap,
    )
    metrics["threshold_rule"] = bundle.threshold_info or {"value": None, "rule": "not recorded (older run)"}
    metrics["calibration"]["applied"] = bundle.info.get("calibration") or {"method": "none"}
    metrics = {
        "split": split or "all",
        "run": str(Path(run_dir)),
        "features": str(Path(features_dir)),
        "manifest": None if manifest is None else str(Path(manifest).resolve()),
        "model_sha256": model_sha256(run_dir),
        "backbone": bundle.backbone["name"],
        "weights": bundle.backbone["weights"],
        "warning": watermark,
        "overlap_with_training": overlap,
        "overlap_with_validation": seen_in_val,
        "unreadable": unreadable,
        **metrics,
        "versions": environment_versions(),
    }
    for stale in plots.glob(".*.part"):  # what a killed evaluation left half-written
        stale.unlink(missing_ok=True)
    # An earlier evaluation's metrics.json (and report) beside the new predictions, after an interruption or a full
    # disk, made one that `report` showed as finished: its figures, this run's mistakes under them.
    for earlier in ("metrics.json", "report.html"):
        (out / earlier).unlink(missing_ok=True)
    atomic_write_text(out / "predictions.csv", _predictions_csv(data.rows, proba, bundle.decide(proba), classes))
    label = f"{split or 'all'} split, n={metrics['n']}"
    draw_plots(metrics, y, proba, plots, label=label, watermark=watermark)
    history = Path(run_dir) / "history.csv"
    if history.is_file():
        plot_training_curve(
            history,
            plots / "training_curve.png",
            best_epoch=bundle.info.get("best_epoch"),
            watermark=watermark,
        )
    # Written last: metrics.json present means the evaluation finished (predictions and plots with it), which
    # is what `fit` and recipe `cv` take it to mean when they are run again after an interruption.
    atomic_write_json(out / "metrics.json", metrics)
    report_after_evaluate(Path(run_dir), out, Path(features_dir))
    return metrics


def _predictions_csv(rows: list[Any], proba: np.ndarray, decisions: np.ndarray, classes: list[str]) -> str:
    buffer = io.StringIO()
    writer = csv.writer(buffer, lineterminator="\n")
    # sha256: which image each row scored (the report shows a thumbnail only of a file with that content)
    writer.writerow(["path", "label", "predicted", *[f"p_{c}" for c in classes], "sha256"])
    for row, p, d in zip(rows, proba, decisions, strict=True):
        writer.writerow([row.path, row.label, classes[int(d)], *[csv_float(v) for v in p], row.sha256])
    return buffer.getvalue()


def warn_seen_images(keys: set[str], bundle: RunBundle, what: str, run: str) -> tuple[int | None, int | None]:
    """Warn when scored images (content ``keys``) trained the run or were its validation images, which chose
    its epoch, threshold and calibration; return both counts (None, with a warning, where the run folder lacks
    the list to check against)."""
    train_keys, val_keys = bundle.train_keys(), bundle.val_keys()
    for kind, listed in (("train", train_keys), ("val", val_keys)):
        if listed is None:
            log.warning(
                "%s has no %s_keys.json: whether any of the %s were its %s images cannot be checked, and figures "
                "on them would be optimistic (copy the file with the run; runs trained before it was written have "
                "none)",
                run,
                kind,
                what,
                "training" if kind == "train" else "validation",
            )
    trained = None if train_keys is None else len(keys & train_keys)
    if trained:
        log.warning("%d %s were used to train %s: its figures are optimistic", trained, what, run)
    validated = None if val_keys is None else len(keys & val_keys)
    if validated:
        log.warning(
            "%d %s were the validation images of %s, which chose its epoch, threshold and calibration: its "
            "figures are optimistic; judge it on test",
            validated,
            what,
            run,
        )
    return trained, validated


def check_results_folder(out: Path, manifest: str | Path | None) -> None:
    """Refuse to write over the evaluation of a manifest (`evaluate --manifest`) with that of another one, or of
    a feature store: two sealed lists named alike in two folders, or `-o` given twice, lose the first silently.
    Refuse a linked ``plots/`` (see check_not_linked), and a folder that cannot be written, before any work."""
    check_not_linked(out / "plots")
    check_writable(out)
    try:
        earlier = json.loads((out / "metrics.json").read_text(encoding="utf-8")).get("manifest")
    except (OSError, ValueError, AttributeError):
        return  # nothing there yet, or nothing to compare with
    now = None if manifest is None else str(Path(manifest).resolve())
    if earlier and earlier != now:
        this = manifest if manifest is not None else "a feature store"
        raise RunError(
            f"{out}: holds the evaluation of {earlier}, not {this}; give this one its own folder with -o "
            "(or delete that folder)"
        )
