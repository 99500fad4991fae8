"""Option types shared by several commands."""

from __future__ import annotations

import click

#: numpy's and scikit-learn's seeds lie in [0, 2**32 - 1]: outside it `--seed -1` ended in a ValueError traceback
#: (in some commands only after minutes of work), and torch's overflowed beyond 2**63.
MAX_SEED = 2**32 - 1
SEED = click.IntRange(0, MAX_SEED)
