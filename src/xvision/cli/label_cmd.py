"""``xvision label``: label fetched Open-i records by rules and write a manifest."""

from __future__ import annotations

import logging
from pathlib import Path

import click

from xvision._fileio import atomic_write_json, is_inside, sha256_file
from xvision._outputs import same_file
from xvision._version import __version__
from xvision.data.labels import BUILTIN_RULES, LabelRules, label_manifest, label_records, load_rules
from xvision.data.manifest import write_manifest
from xvision.data.openi import (
    FAILURES_FILE,
    RECORDS_FILE,
    REPORTS_FILE,
    read_dicom_views,
    read_failures,
    read_records,
    read_reports_without_images,
)
from xvision.data.openi.records import IMAGES_DIR, ImageRecord
from xvision.errors import ManifestError
from xvision.io.loader import SUPPORTED_SUFFIXES

logger = logging.getLogger(__name__)


@click.command("label")
@click.argument("folder", type=click.Path(file_okay=False, path_type=Path))
@click.option(
    "--rules",
    default="default",
    show_default=True,
    help=f"Rules file (TOML), or a built-in set: {'; '.join(f'{k} = {v}' for k, v in BUILTIN_RULES.items())}.",
)
@click.option(
    "-o",
    "--output",
    type=click.Path(dir_okay=False, path_type=Path),
    help="Where to write the manifest  [default: FOLDER/manifest.csv].",
)
@click.option(
    "--views",
    type=click.Choice(["all", "frontal", "lateral"]),
    default="all",
    show_default=True,
    help="Keep only images of this view (images whose view is unknown are then excluded).",
)
@click.option(
    "--dicom-metadata",
    type=click.Path(dir_okay=False, path_type=Path),
    help="The collection's DICOM metadata CSV (nlmcxr_dicom_metadata.csv.gz): the view of most images.",
)
@click.option("--force", is_flag=True, help="Overwrite OUTPUT if it exists.")
def label(folder: Path, rules: str, output: Path | None, views: str, dicom_metadata: Path | None, force: bool) -> None:
    """Label the records of FOLDER (from `xvision fetch openi`) and write a manifest (path,label,group,view,...).

    group is the report uid, so both views of a study stay in one split. Prints a label report: counts per
    class, exclusions by reason, conflicts. Next step: `xvision split OUTPUT --group-by group`.
    """
    output = output or folder / "manifest.csv"
    fetched = [folder / name for name in (RECORDS_FILE, REPORTS_FILE, FAILURES_FILE)]
    if output.suffix.lower() == ".jsonl" or any(same_file(output, path) for path in fetched):
        # Even with --force: that is what `fetch` wrote (or its kind), the input of this command.
        raise ManifestError(f"{output}: -o names the manifest (a CSV), not a .jsonl file like fetch's records")
    if output.suffix.lower() in SUPPORTED_SUFFIXES or is_inside(output, folder / IMAGES_DIR):
        # Even with --force: --force -o images/CXR1_1_IM-0001-3001.png wrote a CSV over a fetched image.
        raise ManifestError(f"{output}: -o names the manifest (a CSV), not an image or a file among the images")
    sidecar = output.with_name(f"{output.stem}.labels.json")
    for path in (output, sidecar):
        if path.exists() and not force:
            raise ManifestError(f"{path} already exists; pass --force to overwrite it or choose another -o")
    label_rules = load_rules(rules)
    dicom_views = read_dicom_views(dicom_metadata) if dicom_metadata else None
    records = read_records(folder)
    if views != "all" and dicom_views is None:
        logger.warning(
            "--views %s without --dicom-metadata: a view is then known only from the caption of a report with one "
            "image, which is rare (2 images in the whole collection); give the collection's "
            "nlmcxr_dicom_metadata.csv.gz",
            views,
        )
    imageless = read_reports_without_images(folder)
    _warn_idle_rules(label_rules, [*records, *imageless])
    kept, report = label_records(
        records,
        label_rules,
        reports_without_images=imageless,
        folder=folder,
        views=None if views == "all" else views,
        dicom_views=dicom_views,
    )
    click.echo(report.format())
    _warn_unfetched(folder, {record.image_id for record in records})
    if not kept:
        raise ManifestError(
            f"{folder}: no labelled image is in the manifest, so none was written; check the rules, --views, "
            "and that the images were fetched (reports-only records have no image file)"
        )
    manifest = label_manifest(kept, folder)
    if len(manifest.labels) < 2:
        logger.warning("only one class (%s) was labelled; a classifier needs two", manifest.labels[0])
    write_manifest(manifest, output)
    atomic_write_json(
        sidecar,
        {
            **report.to_json(),
            "rules_text": label_rules.text,
            "records_sha256": sha256_file(folder / RECORDS_FILE),
            "views": views,
            "dicom_metadata": str(dicom_metadata) if dicom_metadata else None,
            "xvision": __version__,
        },
    )
    click.echo(f"Wrote {output} ({len(manifest)} images) and {sidecar} (the rules and these counts).")
    click.echo(f"Next: xvision split {output} --group-by group")


def _warn_idle_rules(rules: LabelRules, records: list[ImageRecord]) -> None:
    """A rule that matches no record at all is most often a typo in a pattern (`*nodul[e*`), not a finding absent
    from the collection: say so before the counts make it look like one."""
    for number, rule in enumerate(rules.rules, start=1):
        if not any(rule.matches(record) for record in records):
            logger.warning(
                "%s rule %d (label %r) matches no record; check its patterns (a glob matches a whole value: "
                "*word* for 'contains')",
                rules.source,
                number,
                rule.label,
            )


def _warn_unfetched(folder: Path, fetched: set[str]) -> None:
    """Name what the last fetch could not get: such images have no record, so the report above cannot count
    them, and when failures follow the class (a report's images on one slow server) the labels are skewed."""
    failures = read_failures(folder)
    images = [f for f in failures if f.kind == "image" and f.key not in fetched]
    pages = [f for f in failures if f.kind == "page"]
    if not images and not pages:
        return
    lost = [f"{len(images)} image(s) of {len({f.uid for f in images})} report(s)"] if images else []
    lost += [f"{len(pages)} search page(s) whose results are unknown"] if pages else []
    retry = any(f.retry for f in images + pages)
    logger.warning(
        "%s lists %s that the fetch did not get: they are not in this manifest%s",
        folder / FAILURES_FILE,
        " and ".join(lost),
        "; run the same `xvision fetch openi` again to retry them, then label again" if retry else "",
    )
