"""``xvision fit`` and ``xvision recipes``: a named recipe end to end, from images to a run folder."""

from __future__ import annotations

from pathlib import Path

import click

from xvision.cli.options import SEED, WEIGHTS
from xvision.cli.train_cmd import checkpoints_option
from xvision.recipes import DEFAULT_RECIPE, list_recipes
from xvision.recipes import fit as fit_recipe


@click.command("fit")
@click.argument("manifest", type=click.Path(dir_okay=False, path_type=Path))
@click.option(
    "-o",
    "--output",
    "run_dir",
    type=click.Path(file_okay=False, path_type=Path),
    required=True,
    help="RUN_DIR to write (features in RUN_DIR/features).",
)
@click.option("--recipe", default=DEFAULT_RECIPE, show_default=True, help="See `xvision recipes`.")
@click.option("--backbone", default=None, help="Override the recipe's backbone.")
@click.option("--weights", default=None, type=WEIGHTS, help="Backbone weights FILE, or 'random' (experiments only).")
@click.option("--seed", default=0, show_default=True, type=SEED)
@click.option("--overwrite", is_flag=True, help="Replace an existing run folder.")
@checkpoints_option
def fit(
    manifest: Path,
    run_dir: Path,
    recipe: str,
    backbone: str | None,
    weights: str | None,
    seed: int,
    overwrite: bool,
    checkpoints: str,
) -> None:
    """Run a recipe on MANIFEST: extract features, train on its train split (val picks epoch and
    threshold), and evaluate on its test split when there is one."""
    from xvision.cli.evaluate_cmd import format_metrics

    result = fit_recipe(
        manifest,
        run_dir,
        recipe=recipe,
        backbone=backbone,
        weights=weights,
        seed=seed,
        overwrite=overwrite,
        checkpoints=checkpoints,
    )
    click.echo(f"{run_dir}: recipe '{result.recipe}' fitted")
    if result.metrics is not None:
        click.echo(format_metrics(result.metrics))
    else:
        # The options that chose the network go into the hint, so that it runs as printed.
        given = "".join(f" --{name} {value}" for name, value in (("backbone", backbone), ("weights", weights)) if value)
        click.echo(
            "no test split in the manifest: judge the run with `xvision evaluate RUN --manifest OTHER.csv`, or "
            f"the recipe with `xvision cv {manifest} --recipe {result.recipe}{given} -o CV_DIR` (fit once per fold)"
        )


@click.command("recipes")
def recipes() -> None:
    """List the recipes `xvision fit` can run."""
    listed = list_recipes()
    width = max(len(recipe.name) for recipe in listed)
    for recipe in listed:
        marker = " (default)" if recipe.name == DEFAULT_RECIPE else ""
        click.echo(f"{recipe.name:{width}s}  {recipe.description}{marker}")
