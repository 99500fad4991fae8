"""``xvision audit``: can image properties unrelated to the disease predict the label? Exit 3 if so."""

from __future__ import annotations

import json
import os
from pathlib import Path

import click

from xvision._fileio import atomic_write_json
from xvision._outputs import check_output, is_json_with
from xvision.cli.options import SEED
from xvision.evaluation.audit import DEFAULT_THRESHOLD, AuditConfig, audit_manifest

WARN_STATUS = 3
"""Exit status when the audit warns, so that scripts can gate on it."""
UNDETERMINED_STATUS = 4
"""Exit status when the audit could not judge (too few readable images): a script must not read it as a pass."""


@click.command("audit")
@click.argument("manifest_path", metavar="MANIFEST", type=click.Path(dir_okay=False, path_type=Path))
@click.option(
    "--threshold",
    type=click.FloatRange(0, 1),
    default=DEFAULT_THRESHOLD,
    show_default=True,
    help="Warn when the cross-validated AUC exceeds this.",
)
@click.option("--folds", type=click.IntRange(2), default=5, show_default=True, help="Cross-validation folds.")
@click.option(
    "--repeats", type=click.IntRange(1), default=5, show_default=True, help="Cross-validation repeats (averaged)."
)
@click.option(
    "--group-by",
    default="group",
    show_default=True,
    help="Column with the patient/study id; its images stay in one fold. 'none': no groups.",
)
@click.option(
    "--model",
    type=click.Choice(["logistic", "tree"]),
    default="logistic",
    show_default=True,
    help="Logistic regression on standardised features, or shallow gradient-boosted trees.",
)
@click.option("--seed", type=SEED, default=0, show_default=True, help="Seed of folds and bootstrap.")
@click.option(
    "-o",
    "--output",
    type=click.Path(path_type=str),
    default=None,
    help="Write the result as JSON to this file (a folder, or a path ending in /: audit.json inside it).",
)
@click.option("--json", "as_json", is_flag=True, help="Print the result as JSON instead of text.")
@click.option("--progress/--no-progress", default=True, show_default=True, help="Show a progress bar.")
def audit(
    manifest_path: Path,
    threshold: float,
    folds: int,
    repeats: int,
    group_by: str,
    model: str,
    seed: int,
    output: str | None,
    as_json: bool,
    progress: bool,
) -> None:
    """Check MANIFEST for shortcuts: image size, format, intensity, borders, corners, burned-in marks and
    DICOM header fields that should not carry the diagnosis.

    A simple model is cross-validated on those features (grouped, stratified folds). When its AUC exceeds
    --threshold the command names the strongest features and exits with status 3; when too few images
    can be read to judge, 4; otherwise 0.
    Unreadable images are reported and skipped.
    """
    config = AuditConfig(
        threshold=threshold,
        folds=folds,
        repeats=repeats,
        group_by=None if group_by.lower() == "none" else group_by,
        model=model,  # type: ignore[arg-type]  # click.Choice guarantees the literal
        seed=seed,
    )
    target = _output_file(output) if output is not None else None
    if target is not None:  # never over the manifest, a model or anything but an earlier audit.json
        check_output(target, what="audit result", ours=is_json_with({"verdict", "config"}), inputs=[manifest_path])
    result = audit_manifest(manifest_path, config, progress=progress)
    payload = result.to_dict()
    if target is not None:
        from xvision.inference.bundle import environment_versions

        atomic_write_json(target, {**payload, "versions": environment_versions()})
    if as_json:
        click.echo(json.dumps(payload, indent=2, default=str))
    else:
        for line in result.summary().splitlines():
            click.secho(line, fg="red" if line.startswith("WARNING") else None)
        # Skipped files were each named as they were read (audit_features); the summary counts them.
    if target is not None:
        click.echo(f"audit: {target}", err=True)
    if result.warn:
        raise click.exceptions.Exit(WARN_STATUS)
    if result.verdict == "undetermined":
        raise click.exceptions.Exit(UNDETERMINED_STATUS)


def _output_file(output: str) -> Path:
    """``-o`` as the file to write: ``audit.json`` inside a folder, or inside a path written with a final /."""
    path = Path(output)
    if output.endswith(("/", os.sep)) or path.is_dir():
        return path / "audit.json"
    return path
