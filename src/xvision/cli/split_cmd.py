"""``xvision split``: assign train/val/test by group and class, then check for leakage."""

from __future__ import annotations

import logging
import os
from pathlib import Path

import click

from xvision.cli.options import SEED
from xvision.data.hints import warn_conflicting_labels, warn_one_class, warn_similar_labels
from xvision.data.manifest import Manifest, read_manifest, write_manifest
from xvision.data.split import assign_splits, check_no_leakage, file_hashes, split_counts

logger = logging.getLogger(__name__)


@click.command("split")
@click.argument("manifest_path", metavar="MANIFEST", type=click.Path(path_type=Path))
@click.option(
    "--group-by",
    default="group",
    show_default=True,
    help="Column with the patient/study id; images sharing a value stay in one split. 'none': no groups.",
)
@click.option("--test", type=float, default=0.2, show_default=True, help="Fraction of images for test.")
@click.option("--val", type=float, default=0.1, show_default=True, help="Fraction of images for validation.")
@click.option("--seed", type=SEED, default=0, show_default=True, help="Seed of the shuffle.")
@click.option(
    "-o",
    "--output",
    type=click.Path(dir_okay=False, path_type=Path),
    help="Where to write the split manifest  [default: rewrite MANIFEST in place; a link to a file in its own "
    "folder writes that file, a link to another folder is replaced by the split copy].",
)
def split(manifest_path: Path, group_by: str, test: float, val: float, seed: int, output: Path | None) -> None:
    """Write a split column into MANIFEST, stratified by label, never dividing a group.

    Files with identical bytes (same SHA-256) are treated as one group, so copies cannot leak across
    splits. The result is checked for leakage before it is written.
    """
    column = None if group_by.lower() == "none" else group_by
    manifest = read_manifest(manifest_path)
    warn_similar_labels(manifest, manifest_path)
    warn_one_class(manifest, manifest_path)
    hashes = file_hashes(manifest)
    warn_conflicting_labels(manifest, hashes, manifest_path)
    result = assign_splits(manifest, group_by=column, test=test, val=val, seed=seed, hashes=hashes)
    check_no_leakage(result, group_by=column, hashes=hashes)
    if output is None:
        output = _in_place(manifest_path)
    write_manifest(result, output)
    click.echo(_table(result, column, hashes))
    click.echo(f"Wrote {output}; no group or identical image is in two splits.")


def _in_place(manifest_path: Path) -> Path:
    """Where "in place" writes. Through a link to a file in the same folder (current.csv -> v2.csv, a version
    alias), that file: replacing the link left it unsplit. Through a link to another folder (a shared data set),
    the link is replaced by the split copy and the shared file is left as it is, with a line saying so."""
    if not manifest_path.is_symlink():
        return manifest_path
    target = Path(os.path.realpath(manifest_path))
    if target.parent == Path(os.path.realpath(manifest_path.parent)):
        return target
    logger.warning(
        "%s was a link to %s, in another folder: the split copy replaces the link, and %s is left unchanged "
        "(give -o to write elsewhere)",
        manifest_path,
        target,
        target,
    )
    return manifest_path


def _table(manifest: Manifest, group_by: str | None, hashes: dict[str, str]) -> str:
    header = ("split", "class", "images", "groups")
    body = [(s, label, str(n), str(g)) for s, label, n, g in split_counts(manifest, group_by, hashes)]
    widths = [max(len(cell) for cell in column) for column in zip(header, *body, strict=True)]
    return "\n".join(
        f"{split:<{widths[0]}}  {label:<{widths[1]}}  {images:>{widths[2]}}  {groups:>{widths[3]}}"
        for split, label, images, groups in (header, *body)
    )
