"""``xvision demo``: the whole pipeline on synthetic chest phantoms, offline."""

from __future__ import annotations

import sys
import time
from pathlib import Path

import click

from xvision.cli.evaluate_cmd import format_metrics
from xvision.cli.options import SEED


@click.command("demo")
@click.option(
    "-o",
    "--output",
    "out_dir",
    type=click.Path(file_okay=False, path_type=Path),
    default=Path("xvision-demo"),
    show_default=True,
    help="Folder for data, features and run.",
)
@click.option(
    "--n-per-class",
    default=100,
    show_default=True,
    type=click.IntRange(10, 5000),  # a slip of a few zeros would fill the disk with phantoms for hours
    help="Phantoms per class.",
)
@click.option("--seed", default=0, show_default=True, type=SEED)
def demo(out_dir: Path, n_per_class: int, seed: int) -> None:
    """Generate synthetic chest phantoms (normal vs nodule) and run manifest -> split -> extract ->
    train -> evaluate -> predict on them, printing the metrics and where the plots are."""
    from xvision.demo import run_demo

    start = time.perf_counter()
    result = run_demo(out_dir, n_per_class=n_per_class, seed=seed)
    click.echo("")
    click.echo(format_metrics(result.metrics))
    click.echo("")
    click.echo(f"data + manifest: {result.manifest}")
    click.echo(f"features:        {result.features}")
    click.echo(f"run (model):     {result.run}")
    click.echo(f"metrics:         {result.run / 'metrics.json'}")
    click.echo(f"plots:           {result.run / 'plots'} (confusion_matrix, training_curve, roc, predictions)")
    click.echo(f"done in {time.perf_counter() - start:.0f} s. Next: {_program()} predict {result.run} IMAGE...")


def _program() -> str:
    """How the user ran xvision (`.venv/bin/xvision` when the environment is not activated), so the hint runs."""
    invoked = Path(sys.argv[0]) if sys.argv and sys.argv[0] else None
    if invoked is not None and invoked.name == "xvision" and len(invoked.parts) > 1:
        return str(invoked)
    return "xvision"
