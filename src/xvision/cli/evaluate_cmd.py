"""``xvision evaluate``: metrics.json, predictions.csv and plots for one split."""

from __future__ import annotations

from pathlib import Path

import click

from xvision.evaluation.bootstrap import DEFAULT_RESAMPLES, BootstrapConfig
from xvision.evaluation.evaluate import evaluate_run
from xvision.evaluation.operating import describe_threshold


def _with_ci(metrics: dict, name: str) -> str:
    value = metrics.get(name)
    if value is None:
        return "n/a"
    ci = metrics.get("intervals", {}).get(name) or {}
    if ci.get("ci_low") is None:
        return f"{value:.3f}"
    return f"{value:.3f} [{ci['ci_low']:.3f}, {ci['ci_high']:.3f}]"


def format_metrics(metrics: dict) -> str:
    """A short human summary of metrics.json (95% intervals in brackets when present)."""
    where = f"split {metrics['split']}"
    if metrics.get("kind") == "cross-validation":
        cv = metrics["cv"]
        repeats = f" x {cv['repeats']} repeats" if cv["repeats"] > 1 else ""
        where = f"cross-validation ({cv['folds']} folds{repeats}, pooled out-of-fold)"
    lines = [
        f"{where}: n={metrics['n']}, accuracy {_with_ci(metrics, 'accuracy')}"
        + (f", ROC AUC {_with_ci(metrics, 'roc_auc')}" if metrics.get("roc_auc") is not None else "")
    ]
    if "sensitivity" in metrics:
        lines.append(
            f"{metrics['positive']} positive: sensitivity {_with_ci(metrics, 'sensitivity')}, "
            f"specificity {_with_ci(metrics, 'specificity')}"
        )
    if "threshold_rule" in metrics:
        lines.append("decision: " + describe_threshold(metrics["threshold_rule"], metrics.get("positive")))
    if "ece" in metrics:
        lines.append(f"calibration: ECE {metrics['ece']:.3f}, Brier {metrics['brier']:.3f}")
    if "bootstrap" in metrics:
        b = metrics["bootstrap"]
        lines.append(
            f"[intervals: {100 * b['level']:.0f}% percentile bootstrap, {b['n_resamples']} resamples of "
            f"{b['n_units']} {b['unit']}s, stratified by class, seed {b['seed']}]"
        )
    classes = metrics["classes"]
    width = max(len(c) for c in classes)
    lines.append(f"{'':{width}}  precision  recall  f1     n")
    for c in classes:
        lines.append(
            f"{c:{width}}  {metrics['precision'][c]:9.3f}  {metrics['recall'][c]:6.3f}  "
            f"{metrics['f1'][c]:.3f}  {metrics['support'][c]}"
        )
    lines.append("confusion matrix (rows true, columns predicted): " + str(metrics["confusion_matrix"]))
    if metrics.get("warning"):
        lines.append(f"{metrics['warning']}: features from random weights; these numbers mean nothing.")
    return "\n".join(lines)


@click.command("evaluate")
@click.argument("run_dir", type=click.Path(file_okay=False, path_type=Path))
@click.option(
    "--features",
    "features_dir",
    type=click.Path(file_okay=False, path_type=Path),
    required=True,
    help="FEATURES_DIR extracted with the run's backbone.",
)
@click.option("--split", default="test", show_default=True, help="Split to score, or 'all'.")
@click.option(
    "-o",
    "--output",
    "out_dir",
    type=click.Path(file_okay=False, path_type=Path),
    default=None,
    help="Where to write metrics.json and plots/ [default: RUN_DIR].",
)
@click.option(
    "--bootstrap",
    "n_resamples",
    default=DEFAULT_RESAMPLES,
    show_default=True,
    type=click.IntRange(0),
    help="Bootstrap resamples for the 95% intervals (0: no intervals).",
)
@click.option("--seed", default=0, show_default=True, type=int, help="Seed of the bootstrap.")
def evaluate(run_dir: Path, features_dir: Path, split: str, out_dir: Path | None, n_resamples: int, seed: int) -> None:
    """Score RUN_DIR on a split of FEATURES_DIR: metrics.json, predictions.csv, plots/*.png.

    Decisions use the threshold the run chose on its validation split; every main figure gets a 95%
    bootstrap interval (whole groups resampled, stratified by class).
    """
    bootstrap = BootstrapConfig(n_resamples=n_resamples, seed=seed) if n_resamples else None
    metrics = evaluate_run(
        run_dir, features_dir, split=None if split == "all" else split, out_dir=out_dir, bootstrap=bootstrap
    )
    out = out_dir or run_dir
    click.echo(format_metrics(metrics))
    click.echo(f"metrics: {out / 'metrics.json'}; plots: {out / 'plots'}")
