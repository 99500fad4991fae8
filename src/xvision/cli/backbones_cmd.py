"""``xvision backbones``: list the registry, or convert a chest X-ray network's published weights."""

from __future__ import annotations

import click

from xvision.backbones import list_backbones
from xvision.backbones.registry import LUNG_SUFFIX, lung_bases


@click.command("backbones")
@click.option(
    "--convert",
    "convert_name",
    metavar="NAME",
    help="Convert torchxrayvision's published weights for backbone NAME (xrv_*) to safetensors in the torch "
    "hub cache, where it and a network exist (pip install torchxrayvision); Xvision never unpickles them itself.",
)
@click.option(
    "-o", "--out", type=click.Path(dir_okay=False), help="With --convert: write the file here instead of the cache."
)
def backbones(convert_name: str | None, out: str | None) -> None:
    """List the built-in backbones (any timm model is also available as timm:<name>)."""
    if convert_name is not None:
        from pathlib import Path

        from xvision.backbones.xrv import convert

        click.echo(f"wrote {convert(convert_name, Path(out) if out else None)}")
        return
    if out is not None:
        raise click.UsageError("-o/--out goes with --convert")
    specs = list_backbones()
    width = max(len(spec.name) for spec in specs)
    for spec in specs:
        size = f"{spec.preprocess.input_size}px"
        click.echo(f"{spec.name:{width}s} {size:>6s}  {spec.description}")
    click.echo(
        f"{'<name>' + LUNG_SUFFIX:{width}s} {'':>6s}  <name> one of {', '.join(lung_bases())}: its final features "
        "pooled over the lung fields a lung unit predicts; made by `xvision fit --recipe finetune_lung` "
        "(fine-tuned weights)"
    )
    click.echo(f"{'timm:<name>':{width}s} {'':>6s}  any timm model, pre-logits features")
