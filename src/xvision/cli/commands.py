"""The list of commands the ``xvision`` group exposes (one module per command)."""

from __future__ import annotations

import click

ALL: list[click.Command] = []
