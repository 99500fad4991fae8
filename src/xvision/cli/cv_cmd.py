"""``xvision cv``: cross-validated metrics with intervals, for data too small to hold out a test split.

On a feature store it cross-validates the head; on a manifest, a whole recipe (`fit` once per fold)."""

from __future__ import annotations

from pathlib import Path

import click

from xvision.cli.evaluate_cmd import format_metrics
from xvision.cli.options import WEIGHTS, Resamples
from xvision.cli.train_cmd import head_options, operating_options
from xvision.errors import RunError
from xvision.evaluation.bootstrap import DEFAULT_RESAMPLES, BootstrapConfig

#: Options that only a feature store's cross-validation takes (a recipe fixes them itself).
HEAD_ONLY = (
    *("hidden", "lr", "momentum", "weight_decay", "batch_size", "epochs", "no_standardize", "class_weight"),
    *("threshold_rule", "calibrate", "positive"),
)
#: Options that only a manifest's cross-validation takes.
RECIPE_ONLY = ("recipe", "backbone", "weights")


@click.command("cv")
@click.argument("source", metavar="FEATURES_DIR|MANIFEST", type=click.Path(path_type=Path))
@click.option(
    "-o",
    "--output",
    "out_dir",
    type=click.Path(file_okay=False, path_type=Path),
    required=True,
    help="Folder for metrics.json, oof_predictions.csv and plots/ (and, for a recipe, folds/: a run per fold).",
)
@click.option("--folds", default=5, show_default=True, type=click.IntRange(2), help="Number of folds.")
@click.option("--repeats", default=1, show_default=True, type=click.IntRange(1), help="Repeat with new folds.")
@click.option(
    "--group-by",
    default="group",
    show_default=True,
    help="Column with the patient/study id; a group never spans two folds. 'none': images only "
    "(identical files are always kept together).",
)
@click.option(
    "--inner-val",
    default=0.0,
    show_default=True,
    type=click.FloatRange(0, 0.5, max_open=True),
    help="Fraction of each fold's training part held out as its validation split (picks the epoch, "
    "threshold and temperature, as in train). 0: full epochs, threshold 0.5.",
)
@click.option(
    "--split",
    default="all",
    show_default=True,
    help="Use only this split of FEATURES_DIR (or of the MANIFEST), or 'all'.",
)
@click.option(
    "--bootstrap",
    "n_resamples",
    default=DEFAULT_RESAMPLES,
    show_default=True,
    type=Resamples(allow_none=True),
    help="Bootstrap resamples for the 95% intervals (0: no intervals).",
)
@click.option(
    "--recipe",
    default=None,
    help="With a MANIFEST: the recipe to cross-validate, fitted once per fold (default: `fit`'s, "
    "see `xvision recipes`).",
)
@click.option("--backbone", default=None, help="With a MANIFEST: override the recipe's backbone, as in `fit`.")
@click.option("--weights", default=None, type=WEIGHTS, help="With a MANIFEST: backbone weights FILE, as in `fit`.")
@head_options
@operating_options
@click.pass_context
def cv(
    ctx: click.Context,
    source: Path,
    out_dir: Path,
    folds: int,
    repeats: int,
    group_by: str,
    inner_val: float,
    split: str,
    n_resamples: int,
    recipe: str | None,
    backbone: str | None,
    weights: str | None,
    hidden: tuple[int, ...],
    lr: float,
    momentum: float,
    weight_decay: float,
    batch_size: int,
    epochs: int,
    seed: int,
    no_standardize: bool,
    class_weight: str,
    threshold_rule: str,
    calibrate: str,
    positive: str | None,
) -> None:
    """Cross-validate the head on FEATURES_DIR, or a whole recipe on a MANIFEST: grouped stratified folds,
    pooled out-of-fold metrics.

    On FEATURES_DIR (from `extract`) the head is trained as `train` trains it (same options and defaults).
    On a MANIFEST (a CSV), a whole recipe is: `fit` runs once per fold, fine-tuning included, into
    OUT/folds/; run the same command again after an interruption to continue. Either way every image is
    scored once by a model that never saw it (or its group), and the pooled predictions get 95% bootstrap
    intervals. --seed sets the fold assignment and the model's initialisation.
    """
    from xvision.evaluation.crossval import CVConfig, cross_validate

    # Options that do not apply to this kind of source are named first: CVConfig's own checks would
    # otherwise advise, say, --inner-val for a --calibrate that a recipe refuses anyway.
    is_manifest = source.is_file()
    given = [
        name
        for name in (HEAD_ONLY if is_manifest else RECIPE_ONLY)
        if ctx.get_parameter_source(name) == click.core.ParameterSource.COMMANDLINE
    ]
    if given:
        flag = "--" + given[0].replace("_", "-")
        raise RunError(
            f"{flag} applies to a feature store, not to a manifest: a recipe fixes its own head and threshold"
            if is_manifest
            else f"{flag} applies to a manifest (a recipe fitted per fold); {source} is a feature store"
        )
    try:
        config = CVConfig(
            folds=folds,
            repeats=repeats,
            group_by=None if group_by.lower() == "none" else group_by,
            seed=seed,
            inner_val=inner_val,
            threshold_rule=threshold_rule,
            calibrate=calibrate,
            positive=positive,
            split=None if split == "all" else split,
        )
    except ValueError as error:
        raise RunError(str(error)) from None
    head_params = {
        "hidden": hidden,
        "lr": lr,
        "momentum": momentum,
        "weight_decay": weight_decay,
        "batch_size": batch_size,
        "epochs": epochs,
        "standardize": not no_standardize,
        "class_weight": None if class_weight == "none" else class_weight,
        "seed": seed,
    }
    bootstrap = BootstrapConfig(n_resamples=n_resamples, seed=seed) if n_resamples else None
    if is_manifest:
        from xvision.evaluation.crossval_recipe import cross_validate_recipe

        metrics = cross_validate_recipe(
            source, out_dir, recipe=recipe, backbone=backbone, weights=weights, config=config, bootstrap=bootstrap
        )
    else:
        if not source.is_dir():
            raise RunError(f"{source}: no such feature store folder or manifest file")
        metrics = cross_validate(source, out_dir, head_params=head_params, config=config, bootstrap=bootstrap)
    click.echo(format_metrics(metrics))
    fold_aucs = [d.get("roc_auc") for d in metrics["folds_detail"]]
    if fold_aucs and None not in fold_aucs:
        click.echo(
            f"ROC AUC per fold: {', '.join(f'{a:.3f}' for a in fold_aucs)} (mean {sum(fold_aucs) / len(fold_aucs):.3f})"
        )
    if repeats > 1:
        spread = metrics.get("repeat_summary", {}).get("roc_auc")
        if spread:
            click.echo(
                f"over {repeats} repeats: ROC AUC mean {spread['mean']:.3f}, sd {spread['sd']:.3f} "
                f"(range {spread['min']:.3f}-{spread['max']:.3f}); intervals are averaged over repeats"
            )
    click.echo(f"metrics: {out_dir / 'metrics.json'}; predictions: {out_dir / 'oof_predictions.csv'}")
    click.echo(f"plots: {out_dir / 'plots'}")
