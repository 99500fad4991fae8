"""``xvision evaluate``: metrics.json, predictions.csv and plots for one split."""

from __future__ import annotations

from pathlib import Path

import click

from xvision.evaluation.evaluate import evaluate_run


def format_metrics(metrics: dict) -> str:
    """A short human summary of metrics.json."""
    lines = [
        f"split {metrics['split']}: n={metrics['n']}, accuracy {metrics['accuracy']:.3f}"
        + (f", ROC AUC {metrics['roc_auc']:.3f}" if metrics.get("roc_auc") is not None else "")
    ]
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
def evaluate(run_dir: Path, features_dir: Path, split: str, out_dir: Path | None) -> None:
    """Score RUN_DIR on a split of FEATURES_DIR: metrics.json, predictions.csv, plots/*.png."""
    metrics = evaluate_run(run_dir, features_dir, split=None if split == "all" else split, out_dir=out_dir)
    out = out_dir or run_dir
    click.echo(format_metrics(metrics))
    click.echo(f"metrics: {out / 'metrics.json'}; plots: {out / 'plots'}")
