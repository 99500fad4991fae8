"""``xvision extract``: CNN codes for every image of a manifest, stored in a resumable feature store."""

from __future__ import annotations

from pathlib import Path

import click

from xvision.backbones import DEFAULT_BACKBONE
from xvision.features.extract import extract_manifest


@click.command("extract")
@click.argument("manifest", type=click.Path(dir_okay=False, path_type=Path))
@click.option(
    "-o",
    "--output",
    "out_dir",
    type=click.Path(file_okay=False, path_type=Path),
    required=True,
    help="FEATURES_DIR to create or resume.",
)
@click.option(
    "--backbone",
    default=DEFAULT_BACKBONE,
    show_default=True,
    help="Registry name (see `xvision backbones`) or timm:<model>.",
)
@click.option(
    "--weights",
    default=None,
    help="Weights FILE (safetensors or state dict), or 'random' for an untrained network "
    "(experiments only). Default: the backbone's pretrained weights.",
)
@click.option("--batch-size", default=16, show_default=True, type=click.IntRange(1))
@click.option(
    "--workers",
    default=None,
    type=click.IntRange(0),
    help="Image-decoding worker processes [default: automatic].",
)
@click.option("--strict", is_flag=True, help="Stop at the first unreadable image instead of skipping it.")
def extract(
    manifest: Path,
    out_dir: Path,
    backbone: str,
    weights: str | None,
    batch_size: int,
    workers: int | None,
    strict: bool,
) -> None:
    """Extract features for the images of MANIFEST into FEATURES_DIR.

    Interrupt at any time: re-running the same command continues where it stopped, and images whose
    content is already stored are never extracted twice. Unreadable images are reported and skipped.
    """
    report = extract_manifest(
        manifest,
        out_dir,
        backbone=backbone,
        weights=weights,
        batch_size=batch_size,
        workers=workers,
        strict=strict,
    )
    ok = report.total - len(report.failed)
    click.echo(
        f"{out_dir}: {ok} of {report.total} images have features "
        f"({report.extracted} extracted now, {report.reused} already stored, {len(report.failed)} failed)"
    )
    for path, reason in report.failed:
        click.echo(f"  skipped {path}: {reason}", err=True)
    from xvision.features.store import FeatureStore

    if not FeatureStore(out_dir).read_meta()["backbone"]["weights"]["pretrained"]:
        click.secho("UNTRAINED BACKBONE: these features come from random weights.", fg="red", err=True)
