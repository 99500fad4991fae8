"""``xvision manifest``: list a folder of class subfolders as a manifest CSV."""

from __future__ import annotations

from pathlib import Path

import click

from xvision.data.manifest import build_manifest, write_manifest
from xvision.errors import ManifestError


@click.command("manifest")
@click.argument("folder", type=click.Path(path_type=Path))
@click.option(
    "-o",
    "--output",
    type=click.Path(dir_okay=False, path_type=Path),
    help="Where to write the CSV  [default: FOLDER/manifest.csv].",
)
@click.option(
    "--group-from",
    type=click.Choice(["none", "stem", "parent"]),
    default="none",
    show_default=True,
    help="Fill the group (patient) column: none; parent = folder holding the image (class/patient/img.png); "
    "stem = file name without suffix.",
)
@click.option("--force", is_flag=True, help="Overwrite OUTPUT if it exists.")
def manifest(folder: Path, output: Path | None, group_from: str, force: bool) -> None:
    """List the images of FOLDER, one subfolder per class, as a manifest CSV (path,label,group).

    Paths in the CSV are relative to the CSV's folder. Next step: `xvision split OUTPUT`.
    """
    output = output or folder / "manifest.csv"
    if output.exists() and not force:
        raise ManifestError(f"{output} already exists; pass --force to overwrite it or choose another -o")
    result = build_manifest(folder, group_from=group_from)  # type: ignore[arg-type]
    write_manifest(result, output)
    counts = ", ".join(f"{label} {n}" for label, n in result.counts().items())
    groups = f", {len({row.group for row in result if row.group})} groups" if result.has_groups else ""
    click.echo(f"Wrote {output}: {len(result)} images, {len(result.labels)} classes ({counts}){groups}")
