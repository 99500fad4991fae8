"""``xvision backbones``: list the registry."""

from __future__ import annotations

import click

from xvision.backbones import list_backbones


@click.command("backbones")
def backbones() -> None:
    """List the built-in backbones (any timm model is also available as timm:<name>)."""
    specs = list_backbones()
    width = max(len(spec.name) for spec in specs)
    for spec in specs:
        size = f"{spec.preprocess.input_size}px"
        click.echo(f"{spec.name:{width}s} {size:>6s}  {spec.description}")
    click.echo(f"{'timm:<name>':{width}s} {'':>6s}  any timm model, pre-logits features")
