"""Option types shared by several commands."""

from __future__ import annotations

import math

import click

#: numpy's and scikit-learn's seeds lie in [0, 2**32 - 1]: outside it `--seed -1` ended in a ValueError traceback
#: (in some commands only after minutes of work). Repeats, folds and ensemble members add small numbers to the
#: seed, so the top half of that range is kept free for them.
MAX_SEED = 2**31 - 1
SEED = click.IntRange(0, MAX_SEED)


class FiniteFloatRange(click.FloatRange):
    """A FloatRange that also refuses nan and inf: every comparison with nan is false, so click's own range
    let `--lr nan` through to a traceback, and `--weight-decay inf` to a loss blamed on the learning rate."""

    def convert(self, value: object, param: click.Parameter | None, ctx: click.Context | None) -> float:
        number = super().convert(value, param, ctx)
        if not math.isfinite(number):
            self.fail(f"{value!r} is not a finite number", param, ctx)
        return number


class WeightsArg(click.ParamType):
    """``--weights``: a file or 'random'. An empty value (``--weights "$WEIGHTS"`` with the variable unset) meant the
    default pretrained weights without a word; it is refused, since the user meant some file."""

    name = "FILE|random"

    def convert(self, value: object, param: click.Parameter | None, ctx: click.Context | None) -> str:
        text = str(value)
        if not text.strip():
            self.fail("an empty value; leave --weights out for the backbone's pretrained weights", param, ctx)
        return text


WEIGHTS = WeightsArg()

#: ``--weights`` of the commands that use a finished run (evaluate, predict, serve).
run_weights_option = click.option(
    "--weights", default=None, type=WEIGHTS, help="Backbone weights file, when the run was made with --weights FILE."
)


#: Fewer resamples than this give "95%" intervals that are noise: with 1, `accuracy 0.750 [0.625, 0.625]`.
MIN_RESAMPLES = 100


class Resamples(click.ParamType):
    """A bootstrap resample count: at least :data:`MIN_RESAMPLES`, or 0 (no intervals) where ``allow_none``."""

    name = "integer"

    def __init__(self, *, allow_none: bool) -> None:
        self.allow_none = allow_none

    def convert(self, value: object, param: click.Parameter | None, ctx: click.Context | None) -> int:
        number = click.INT.convert(value, param, ctx)
        if number == 0 and self.allow_none:
            return 0
        if number < MIN_RESAMPLES:
            none = "0 (no intervals) or " if self.allow_none else ""
            self.fail(f"{number} resamples give intervals that are noise; use {none}at least {MIN_RESAMPLES}", param)
        return number
