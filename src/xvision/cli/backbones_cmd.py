"""``xvision backbones``: list the registry."""

from __future__ import annotations

import click

from xvision.backbones import list_backbones


@click.command("backbones")
def backbones() -> None:
    """List the built-in backbones (any timm model is also available as timm:<name>)."""
    for spec in list_backbones():
        size = spec.preprocess.input_size
        click.echo(f"{spec.name:20s} {size}px  {spec.description}")
    click.echo(f"{'timm:<name>':20s}        any timm model, pre-logits features")
