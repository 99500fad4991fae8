"""``xvision predict``: class and probabilities for image files, from a run folder."""

from __future__ import annotations

import csv
import json
import logging
import os
import sys
from pathlib import Path

import click

from xvision._fileio import csv_float
from xvision._text import displayable
from xvision.cli.options import run_weights_option
from xvision.errors import ImageLoadError, XvisionError
from xvision.evaluation.operating import describe_threshold
from xvision.inference.bundle import UNTRAINED_WARNING
from xvision.inference.predictor import Prediction, Predictor, prediction_record

logger = logging.getLogger(__name__)


def expand_inputs(inputs: tuple[Path, ...]) -> list[Path]:
    """Files as given; folders searched recursively for images as `xvision manifest` finds them (hidden
    entries skipped, linked folders followed, DICOMs without a suffix included). A file that is not there stays
    in the list: it is reported and skipped like any unreadable image, unless no input exists at all."""
    from xvision.data.manifest import find_images
    from xvision.io.loader import DANGLING_LINK

    paths: list[Path] = []
    for item in inputs:
        paths.extend(find_images(item) if item.is_dir() else [item])
    if inputs and not any(item.exists() for item in inputs):  # nothing to predict: a mistyped command
        first = inputs[0]
        raise ImageLoadError(first, DANGLING_LINK if first.is_symlink() else "file not found")
    return paths


def _print_table(results: list[Prediction], classes: list[str]) -> None:
    for r in results:
        if r.error:
            click.echo(f"{r.path}\tERROR\t{r.error}")
        else:
            probs = "  ".join(f"{c}={r.probabilities[c]:.3f}" for c in classes)
            click.echo(f"{r.path}\t{r.label}\t{probs}")


def _print_csv(results: list[Prediction], classes: list[str]) -> None:
    writer = csv.writer(sys.stdout, lineterminator="\n")
    writer.writerow(["path", "predicted", *[f"p_{c}" for c in classes], "error"])
    for r in results:
        writer.writerow(
            [
                r.path,
                r.label or "",
                *[csv_float(r.probabilities[c]) if not r.error else "" for c in classes],
                r.error or "",
            ]
        )


def _heatmap_files(paths: list[Path], folder: Path) -> list[Path]:
    """Each image's heatmap file in ``folder``, in the order of ``paths``: its stem; when stems repeat (a PACS
    export names every series IM0000), its path below the inputs' common folder, so that each overlay can be
    told apart. Still-equal names (the same file given twice) are numbered."""
    stems = [path.stem for path in paths]
    if len(set(stems)) < len(stems):
        common = Path(os.path.commonpath([os.path.abspath(p.parent) for p in paths]))
        stems = ["_".join(Path(os.path.abspath(p)).relative_to(common).with_suffix("").parts) for p in paths]
    files: list[Path] = []
    names: set[str] = set()
    for stem in stems:
        name = stem if stem not in names else f"{stem}-{len(names)}"
        names.add(name)
        files.append(folder / f"{name}.png")
    return files


def _write_heatmaps(predictor: Predictor, results: list[Prediction], files: list[Path]) -> None:
    from xvision.inference.heatmap import draw_evidence
    from xvision.io import load_image

    for r, file in zip(results, files, strict=True):  # one result per path, in order
        if not r.error:
            name = Path(r.path).name if file.stem == Path(r.path).stem else file.stem  # the title says which film
            try:
                draw_evidence(predictor, load_image(r.path), r, file, name=displayable(name))
            except (OSError, XvisionError) as error:  # one film's heatmap (a name too long...) never stops the rest
                logger.warning("%s: no heatmap written (%s)", displayable(r.path), error)


def _check_outputs(paths: list[Path], grid: Path | None, heatmaps: list[Path]) -> None:
    """Before any work: no grid or heatmap may replace an input image or a file Xvision did not draw."""
    from xvision._outputs import check_output, check_writable, is_xvision_png

    for target, what in [(grid, "grid"), *((file, "heatmap") for file in heatmaps)]:
        if target is not None:
            check_output(target, what=what, ours=is_xvision_png, inputs=paths)
    for folder in {target.parent for target in [grid, *heatmaps] if target is not None}:
        check_writable(folder)


@click.command("predict")
@click.argument("run_dir", type=click.Path(file_okay=False, path_type=Path))
@click.argument("inputs", nargs=-1, required=True, type=click.Path(path_type=Path))
@click.option("--json", "as_json", is_flag=True, help="Print a JSON list.")
@click.option("--csv", "as_csv", is_flag=True, help="Print CSV.")
@click.option(
    "--grid",
    type=click.Path(dir_okay=False, path_type=Path),
    default=None,
    help="Also draw a labelled grid of the images (PNG).",
)
@click.option(
    "--heatmaps",
    type=click.Path(file_okay=False, path_type=Path),
    default=None,
    help="Also write a Grad-CAM heatmap per image into this folder (where the evidence for the positive "
    "class comes from).",
)
@run_weights_option
@click.option("--batch-size", default=16, show_default=True, type=click.IntRange(1))
def predict(
    run_dir: Path,
    inputs: tuple[Path, ...],
    as_json: bool,
    as_csv: bool,
    grid: Path | None,
    heatmaps: Path | None,
    weights: str | None,
    batch_size: int,
) -> None:
    """Predict the class of each image in INPUTS (files or folders) with RUN_DIR.

    Two-class runs decide with the threshold chosen on their validation split (printed on stderr).

    Unreadable images are reported with their reason and skipped; the exit status is 1 if any failed.
    """
    if as_json and as_csv:
        raise click.UsageError("choose one of --json and --csv")
    if grid is not None and grid.suffix.lower() != ".png":  # a slip such as `--grid manifest.csv` would replace it
        raise click.UsageError(f"--grid {grid}: give a file name ending in .png")
    paths = expand_inputs(inputs)
    if not paths:
        raise ImageLoadError(", ".join(map(str, inputs)), "no supported images found")
    heatmap_files = _heatmap_files(paths, heatmaps) if heatmaps is not None else []
    _check_outputs(paths, grid, heatmap_files)
    predictor = Predictor(run_dir, weights=weights)
    results = predictor.predict_paths(paths, batch_size=batch_size)
    warning = UNTRAINED_WARNING if predictor.untrained_backbone else None
    decision = describe_threshold(predictor.bundle.threshold_info, predictor.positive)
    if as_json:
        click.echo(json.dumps([prediction_record(predictor, r) for r in results], indent=2))
    elif as_csv:
        _print_csv(results, predictor.classes)
    else:
        _print_table(results, predictor.classes)
    if grid is not None:
        from xvision.inference.grid import draw_prediction_grid

        draw_prediction_grid(results, grid, watermark=warning)
        click.echo(f"grid: {grid}", err=True)
    if heatmaps is not None:
        _write_heatmaps(predictor, results, heatmap_files)
        click.echo(f"heatmaps: {heatmaps}", err=True)
    click.echo(f"decision: {decision}", err=True)
    if warning:
        click.secho(f"{warning}: predictions from random features mean nothing.", fg="red", err=True)
    failed = [r for r in results if r.error]
    for r in failed:
        click.echo(f"skipped {r.path}: {r.error}", err=True)
    if failed:
        raise click.exceptions.Exit(1)
