"""``xvision evaluate``: metrics.json, predictions.csv and plots for one split."""

from __future__ import annotations

from pathlib import Path

import click

from xvision.cli.options import SEED, Resamples, run_weights_option
from xvision.evaluation.bootstrap import DEFAULT_RESAMPLES, BootstrapConfig
from xvision.evaluation.evaluate import evaluate_run
from xvision.evaluation.operating import describe_threshold
from xvision.evaluation.report_card import num


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
    left_out = len(metrics.get("unreadable") or [])
    unread = f" ({left_out} unreadable image{'s' if left_out > 1 else ''} left out)" if left_out else ""
    present = sum(1 for n in (metrics.get("support") or {}).values() if n)
    classes = metrics["classes"]
    auc = "ROC AUC (macro one-vs-rest)" if len(classes) > 2 else "ROC AUC"
    no_auc = f", {auc} n/a (only {present} class{'es' if present != 1 else ''} present)"
    lines = [
        f"{where}: n={metrics['n']}{unread}, accuracy {_with_ci(metrics, 'accuracy')}"
        + (f", {auc} {_with_ci(metrics, 'roc_auc')}" if metrics.get("roc_auc") is not None else no_auc)
    ]
    if "sensitivity" in metrics:
        lines.append(
            f"{metrics['positive']} positive: sensitivity {_with_ci(metrics, 'sensitivity')}, "
            f"specificity {_with_ci(metrics, 'specificity')}"
            + (
                f"; at 90% specificity: sensitivity {metrics['sensitivity_at_90_specificity']:.3f}"
                if metrics.get("sensitivity_at_90_specificity") is not None
                else ""
            )
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
        if b.get("caution"):
            lines.append(f"caution: {b['caution']}")
    width = max(len(c) for c in classes)
    per_class_auc = metrics.get("roc_auc_per_class")  # more than two classes: each class against the rest
    lines.append(f"{'':{width}}  precision  recall  f1     " + ("AUC vs rest  n" if per_class_auc else "n"))
    for c in classes:
        lines.append(
            f"{c:{width}}  {num(metrics['precision'][c]):>9}  {num(metrics['recall'][c]):>6}  "
            f"{num(metrics['f1'][c]):<5}  "
            + (f"{num(per_class_auc.get(c)):>11}  " if per_class_auc else "")
            + f"{metrics['support'][c]}"
        )
    repeats = (metrics.get("cv") or {}).get("repeats") or 1
    if repeats > 1:  # the figures are means over the repeats; the matrix's counts then have decimals
        lines.append(
            f"confusion matrix, mean of {repeats} repeats (rows true, columns predicted): {metrics['confusion_matrix']}"
        )
        if any(metrics[key][c] is None for key in ("precision", "recall", "f1") for c in classes):
            lines.append("n/a above: undefined in at least one repeat (no image of that class, or none called it)")
    else:
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
    default=None,
    help="FEATURES_DIR extracted with the run's backbone.",
)
@click.option(
    "--manifest",
    type=click.Path(dir_okay=False, path_type=Path),
    default=None,
    help="Evaluate on these images instead: features are extracted on the fly with the run's backbone.",
)
@click.option(
    "--split",
    default=None,
    help="Split to score, or 'all'  [default: test with --features, every image with --manifest].",
)
@run_weights_option
@click.option(
    "--precision",
    type=click.Choice(["fp32", "auto"]),
    default="fp32",
    show_default=True,
    help="With --manifest: fp32 computes the features in the precision `predict` uses, so the figures are the "
    "served model's (probabilities agree to about 1e-6: memory layout and batching round differently); auto "
    "takes `extract`'s faster path (bf16 on CPUs with native bf16: probabilities may move by about 0.01).",
)
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
    type=Resamples(allow_none=True),
    help="Bootstrap resamples for the 95% intervals (0: no intervals).",
)
@click.option("--seed", default=0, show_default=True, type=SEED, help="Seed of the bootstrap.")
def evaluate(
    run_dir: Path,
    features_dir: Path | None,
    manifest: Path | None,
    split: str | None,
    weights: str | None,
    precision: str,
    out_dir: Path | None,
    n_resamples: int,
    seed: int,
) -> None:
    """Score RUN_DIR on a split of FEATURES_DIR, or on the images of --manifest (never seen by the run).

    Writes metrics.json, predictions.csv, plots/*.png and report.html to -o (default: RUN_DIR, or
    RUN_DIR/eval-<manifest name> with --manifest).

    Decisions use the threshold the run chose on its validation split; every main figure gets a 95%
    bootstrap interval (whole groups resampled, stratified by class).
    """
    if (features_dir is None) == (manifest is None):
        raise click.UsageError("pass exactly one of --features FEATURES_DIR and --manifest MANIFEST")
    if features_dir is not None and weights is not None:  # the features are made: there is nothing to load
        raise click.UsageError("--weights applies with --manifest (images extracted now), not to a feature store")
    if split is not None and not split.strip():
        raise click.BadParameter("give a split name (train, val, test) or 'all'", param_hint="--split")
    bootstrap = BootstrapConfig(n_resamples=n_resamples, seed=seed) if n_resamples else None
    if manifest is not None:
        from xvision.evaluation.on_images import evaluate_manifest

        chosen = None if split in (None, "all") else split
        out = out_dir or run_dir / f"eval-{manifest.stem}"
        metrics = evaluate_manifest(
            run_dir, manifest, split=chosen, out_dir=out, weights=weights, bootstrap=bootstrap, precision=precision
        )
    else:
        split = split or "test"
        metrics = evaluate_run(
            run_dir, features_dir, split=None if split == "all" else split, out_dir=out_dir, bootstrap=bootstrap
        )
        out = out_dir or run_dir
    click.echo(format_metrics(metrics))
    click.echo(f"metrics: {out / 'metrics.json'}; plots: {out / 'plots'}")
