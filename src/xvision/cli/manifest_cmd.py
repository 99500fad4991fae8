"""``xvision manifest``: list a folder of class subfolders, or a data set's labels table, as a manifest CSV."""

from __future__ import annotations

import logging
import os
from pathlib import Path

import click

from xvision.data.hints import groups_spanning_classes, misspelling_of, warn_similar_labels
from xvision.data.manifest import Manifest, build_manifest, read_manifest, write_manifest
from xvision.errors import ManifestError

log = logging.getLogger(__name__)


def _column_pairs(values: tuple[str, ...]) -> dict[str, str]:
    pairs: dict[str, str] = {}
    for value in values:
        mine, _, theirs = value.partition("=")
        if not mine.strip() or not theirs.strip():
            raise click.BadParameter(f"{value!r}: write MANIFEST_NAME=YOUR_NAME, e.g. path=file", param_hint="--column")
        if mine.strip() in pairs:
            raise click.BadParameter(f"{mine.strip()!r} is given twice", param_hint="--column")
        pairs[mine.strip()] = theirs.strip()
        _warn_if_misspelt(mine.strip())
    return pairs


#: The columns Xvision reads; any other name is kept as an extra column.
READ_COLUMNS = ("path", "label", "group", "split", "mask", "lesion_x", "lesion_y", "lesion_diam")


def _warn_if_misspelt(name: str) -> None:
    """A --column target one letter or a separator away from a column Xvision reads ("lesionx") is kept as an
    extra column that nothing reads: say so before a recipe fails on it minutes later."""
    meant = misspelling_of(name, READ_COLUMNS)
    if meant is not None:
        log.warning(
            "--column %s=...: %r is not a column Xvision reads (it stays an extra column); did you mean %r?",
            name,
            name,
            meant,
        )


_TABLE_SUFFIXES = frozenset({".csv", ".tsv", ".txt", ".xlsx", ".xls"})


@click.command("manifest")
@click.argument("source", metavar="FOLDER|TABLE.csv", type=click.Path(path_type=Path))
@click.option(
    "-o",
    "--output",
    type=click.Path(dir_okay=False, path_type=Path),
    help="Where to write the CSV  [default: manifest.csv in FOLDER, or beside TABLE.csv].",
)
@click.option(
    "--group-from",
    type=click.Choice(["none", "stem", "parent", "top", "patient"]),
    default="none",
    show_default=True,
    help="FOLDER: fill the group (patient) column: none; parent = folder holding the image "
    "(class/patient/img.png); top = first folder below the class folder (class/patient/study/series/img, "
    "as a PACS export nests them); stem = file name without suffix; patient = the Patient ID in each DICOM "
    "header.",
)
@click.option(
    "--column",
    "columns",
    multiple=True,
    metavar="NAME=THEIRS",
    help="TABLE.csv: the table's column THEIRS is the manifest's NAME (path, label, group, split, mask, "
    "lesion_x, lesion_y, lesion_diam); repeat for each, e.g. --column path=file --column group=study_id.",
)
@click.option("--force", is_flag=True, help="Overwrite OUTPUT if it exists.")
def manifest(source: Path, output: Path | None, group_from: str, columns: tuple[str, ...], force: bool) -> None:
    """Write a manifest CSV from FOLDER (one subfolder per class) or from a labels table TABLE.csv.

    From a table, --column renames its columns to the manifest's and every other column is kept. Paths in
    the CSV are relative to the CSV's folder (a table's own paths are read relative to the table's folder).
    Next step: `xvision split OUTPUT`.
    """
    if not source.exists() and (source.suffix.lower() in _TABLE_SUFFIXES or columns):  # --column: a table
        raise ManifestError(f"{source}: table not found")
    if not source.is_file():  # a folder, or a missing one (build_manifest says so)
        if columns:
            raise click.UsageError("--column renames a table's columns; FOLDER is a folder of class subfolders")
        output = output or source / "manifest.csv"
        _check_output(output, force)
        result = build_manifest(source, group_from=group_from)  # type: ignore[arg-type]
        if group_from != "patient":  # one patient's films in two classes (normal, then a nodule) is no slip
            _warn_spanning_groups(result, source, group_from)
    else:
        if group_from != "none":
            raise click.UsageError("--group-from applies to a FOLDER; with a table, name its column: --column group=ID")
        output = output or source.parent / "manifest.csv"
        if os.path.abspath(output) == os.path.abspath(source):
            raise ManifestError(f"{output}: is the table being read; choose another -o")
        _check_output(output, force)
        result = read_manifest(source, columns=_column_pairs(columns))
        _report_missing(result, source)
        if len(result.labels) < 2:  # a warning, not an error: a one-class table can still be evaluated on
            log.warning(
                "%s: only class %s; training needs two (evaluating or predicting on it works)",
                source,
                ", ".join(result.labels) or "(none)",
            )
    warn_similar_labels(result, source)
    write_manifest(result, output)
    counts = ", ".join(f"{label} {n}" for label, n in result.counts().items())
    groups = f", {len({row.group for row in result if row.group})} groups" if result.has_groups else ""
    click.echo(f"Wrote {output}: {len(result)} images, {len(result.labels)} classes ({counts}){groups}")


def _warn_spanning_groups(result: Manifest, source: Path, group_from: str) -> None:
    mixed = groups_spanning_classes(result)
    if mixed:
        n, example = mixed
        log.warning(
            "%s: %d group(s) from --group-from %s hold images of two classes (first %s); files named alike in "
            "different class folders are taken as one patient. If images sit in class/patient/study/.../ "
            "folders, use --group-from top; if the names are only numbers per class, --group-from none",
            source,
            n,
            group_from,
            example,
        )


def _check_output(output: Path, force: bool) -> None:
    if output.exists() and not force:
        raise ManifestError(f"{output} already exists; pass --force to overwrite it or choose another -o")


def _report_missing(result: Manifest, source: Path) -> None:
    """Warn (not fail: the files may come later) when the table names files that are not there."""
    missing = [row.path for row, file in zip(result.rows, result.paths(), strict=True) if not file.is_file()]
    if missing:
        log.warning(
            "%s: %d of %d files not found (first: %s; paths are read relative to %s)",
            source,
            len(missing),
            len(result.rows),
            missing[0],
            source.parent,
        )
