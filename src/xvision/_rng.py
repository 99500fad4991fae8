"""Seeded training without touching the caller's random state.

Training seeds torch's global generator (weight initialisation draws from it); a library that does so behind
a notebook's back changes every later ``torch.rand`` of the user's. :func:`keeps_torch_rng` runs a function on a
fork of the CPU generator (``torch.random.fork_rng``) and puts the caller's state back afterwards.
"""

from __future__ import annotations

import functools
from collections.abc import Callable
from typing import ParamSpec, TypeVar

import torch

P = ParamSpec("P")
R = TypeVar("R")


def keeps_torch_rng(function: Callable[P, R]) -> Callable[P, R]:
    """Run ``function`` with torch's global CPU generator restored when it returns or raises."""

    @functools.wraps(function)
    def wrapper(*args: P.args, **kwargs: P.kwargs) -> R:
        with torch.random.fork_rng(devices=[]):
            return function(*args, **kwargs)

    return wrapper
