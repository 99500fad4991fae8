"""Option types shared by several commands."""

from __future__ import annotations

import math

import click

#: numpy's and scikit-learn's seeds lie in [0, 2**32 - 1]: outside it `--seed -1` ended in a ValueError traceback
#: (in some commands only after minutes of work), and torch's overflowed beyond 2**63.
MAX_SEED = 2**32 - 1
SEED = click.IntRange(0, MAX_SEED)


class FiniteFloatRange(click.FloatRange):
    """A FloatRange that also refuses nan and inf: every comparison with nan is false, so click's own range
    let `--lr nan` through to a traceback, and `--weight-decay inf` to a loss blamed on the learning rate."""

    def convert(self, value: object, param: click.Parameter | None, ctx: click.Context | None) -> float:
        number = super().convert(value, param, ctx)
        if not math.isfinite(number):
            self.fail(f"{value!r} is not a finite number", param, ctx)
        return number
