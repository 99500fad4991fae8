"""``xvision report``: one self-contained HTML page about a run (also written by ``xvision evaluate``)."""

from __future__ import annotations

from pathlib import Path

import click


@click.command("report")
@click.argument("run_dir", type=click.Path(file_okay=False, exists=True, path_type=Path))
@click.option(
    "--results",
    "results_dir",
    type=click.Path(file_okay=False, path_type=Path),
    default=None,
    help="Folder with metrics.json, predictions.csv and plots/ when evaluate wrote them elsewhere (-o).",
)
@click.option(
    "--features",
    "features_dir",
    type=click.Path(file_okay=False, path_type=Path),
    default=None,
    help="FEATURES_DIR, to find the images for thumbnails [default: the one the run was trained on].",
)
@click.option(
    "-o",
    "--output",
    type=click.Path(dir_okay=False, path_type=Path),
    default=None,
    help="HTML file to write [default: report.html beside metrics.json].",
)
def report(run_dir: Path, results_dir: Path | None, features_dir: Path | None, output: Path | None) -> None:
    """Write one HTML file about RUN_DIR that opens offline: data, provenance, curves, metrics with
    intervals, calibration, threshold, the most confident mistakes and a short model card.
    """
    from xvision.evaluation.report import evaluations_elsewhere, write_report

    path = write_report(run_dir, results_dir=results_dir, features_dir=features_dir, out=output)
    click.echo(f"report: {path}")
    if results_dir is None and not (run_dir / "metrics.json").is_file():
        elsewhere = evaluations_elsewhere(run_dir)  # the run was judged on other images only
        if elsewhere:
            commands = "; ".join(f"`xvision report {run_dir} --results {folder}`" for folder in elsewhere)
            click.echo(f"no evaluation of its own; on other images: {commands}")
