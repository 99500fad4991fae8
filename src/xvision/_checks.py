"""Argument checks for the public Python API: a wrong type gets a TypeError naming the parameter and what it
takes, not an AttributeError from deep inside (``'dict' object has no attribute 'split'``)."""

from __future__ import annotations

from typing import Any


def check_type(value: Any, expected: type | tuple[type, ...], name: str, takes: str) -> None:
    """Raise ``TypeError("<name> takes <takes>, got <type>")`` unless ``value`` is an ``expected``."""
    if not isinstance(value, expected):
        raise TypeError(f"{name} takes {takes}, got {type(value).__name__} {value!r:.60}")
