"""``xvision extract``: CNN codes for every image of a manifest, stored in a resumable feature store."""

from __future__ import annotations

from pathlib import Path

import click

from xvision.backbones import DEFAULT_BACKBONE
from xvision.backbones.runtime import DEVICES, ENGINES, PRECISIONS
from xvision.cli.options import WEIGHTS
from xvision.features.extract import extract_manifest
from xvision.features.store import STORAGE_DTYPES


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
    type=WEIGHTS,
    help="Weights FILE (safetensors or state dict), or 'random' for an untrained network "
    "(experiments only). Default: the backbone's pretrained weights.",
)
@click.option(
    "--precision",
    type=click.Choice(PRECISIONS),
    default="auto",
    show_default=True,
    help="auto: fp16 on GPUs, bf16 on CPUs with native bf16 (AMX/AVX512-BF16), else fp32; fp32 as well where "
    "the reduced precision fails the accuracy guard, or the backbone gives a score (fewer than 8 numbers an "
    "image). fp32 forces the reference path (eager PyTorch, full-resolution decoding).",
)
@click.option(
    "--engine",
    type=click.Choice(ENGINES),
    default="auto",
    show_default=True,
    help="auto: OpenVINO when installed (pip install 'xvision[fast]'), torch.compile for large bf16 jobs, "
    "else PyTorch eager.",
)
@click.option("--device", type=click.Choice(DEVICES), default="auto", show_default=True)
@click.option(
    "--dtype",
    "storage_dtype",
    type=click.Choice(STORAGE_DTYPES),
    default=None,
    help="How a new store keeps vectors on disk; float16 halves the size [default: float32].",
)
@click.option("--batch-size", default=None, type=click.IntRange(1), help="[default: 4 on CPU, 64 on GPU]")
@click.option(
    "--workers",
    default=None,
    type=click.IntRange(0),
    help="Image-decoding worker processes [default: automatic].",
)
@click.option("--threads", default=None, type=click.IntRange(1), help="Compute threads [default: torch's].")
@click.option(
    "--strict",
    is_flag=True,
    help="Stop at the first unreadable image, or when the fast path disagrees with the fp32 reference.",
)
def extract(
    manifest: Path,
    out_dir: Path,
    backbone: str,
    weights: str | None,
    precision: str,
    engine: str,
    device: str,
    storage_dtype: str | None,
    batch_size: int | None,
    workers: int | None,
    threads: int | None,
    strict: bool,
) -> None:
    """Extract features for the images of MANIFEST into FEATURES_DIR.

    Interrupt at any time: re-running the same command continues where it stopped, and images whose
    content is already stored are never extracted twice, even from another manifest. Unreadable images are
    reported and skipped. The fastest path for this machine is chosen and recorded in meta.json; unless it
    is the fp32 reference, a sample of images is checked against the reference (cosine >= 0.999).
    """
    report = extract_manifest(
        manifest,
        out_dir,
        backbone=backbone,
        weights=weights,
        batch_size=batch_size,
        workers=workers,
        strict=strict,
        precision=precision,
        engine=engine,
        device=device,
        threads=threads,
        storage_dtype=storage_dtype,
    )
    ok = report.total - len(report.failed)
    click.echo(
        f"{out_dir}: {ok} of {report.total} images have features "
        f"({report.extracted} extracted now, {report.reused} already stored, {len(report.failed)} failed)"
    )
    if report.plan is not None and report.extracted:  # nothing extracted now: no path and no rate to report
        from xvision.backbones.runtime import ExecutionPlan

        rate = f", {report.extracted / report.seconds:.1f} images/s" if report.seconds > 0 else ""
        click.echo(f"  path: {ExecutionPlan(**report.plan).describe()}{rate}")
        if report.rejected is not None:
            guard = report.rejected["accuracy_guard"]
            click.echo(
                f"  fp32 instead of {report.rejected['plan']['precision']}, which reached only "
                f"{guard.get('measure', 'cosine')} {guard['cosine_min']:.6f} with the fp32 reference "
                f"(below {guard['threshold']})"
            )
    if report.guard is not None:
        from xvision.features.guard import GuardResult

        guard = GuardResult(**{k: v for k, v in report.guard.items() if k != "passed"})
        status = "ok" if guard.passed else "FAILED"
        click.secho(
            f"  accuracy guard {status}: {guard.describe()}", fg=None if guard.passed else "red", err=not guard.passed
        )
    if report.failed:  # each was named as it was skipped; index.csv keeps the reasons
        click.echo(f"  {len(report.failed)} skipped (named above; reasons in {out_dir / 'index.csv'})", err=True)
    from xvision.features.store import FeatureStore

    if not FeatureStore(out_dir).read_meta()["backbone"]["weights"]["pretrained"]:
        click.secho("UNTRAINED BACKBONE: these features come from random weights.", fg="red", err=True)
