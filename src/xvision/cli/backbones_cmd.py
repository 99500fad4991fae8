"""``xvision backbones``: list the registry."""

from __future__ import annotations

import click

from xvision.backbones import list_backbones
from xvision.backbones.registry import LUNG_SUFFIX, lung_bases


@click.command("backbones")
def backbones() -> None:
    """List the built-in backbones (any timm model is also available as timm:<name>)."""
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
