"""Progress bars: tqdm's (a widget in a notebook), redrawn rarely when stderr is a log file or a pipe."""

from __future__ import annotations

import sys
from collections.abc import Iterable
from typing import Any

LOG_INTERVAL = 30.0
"""Seconds between redraws when stderr is not a terminal. A terminal redraws one line in place ten times a second;
a log file (nohup, a batch scheduler, `2> log.txt`) keeps every redraw, which made an hour's extraction a
megabyte-long line of bars. Every 30 s keeps the progress readable there, and the last state is always written."""


def progress_bar(iterable: Iterable[Any] | None = None, **kwargs: Any) -> Any:
    """``tqdm.auto.tqdm(iterable, **kwargs)``, with ``mininterval`` :data:`LOG_INTERVAL` when the bar would be
    text written to a stderr that is not a terminal (a notebook's widget is left as it is)."""
    from tqdm.auto import tqdm

    widget = any(cls.__module__ == "tqdm.notebook" for cls in tqdm.__mro__)  # tqdm.auto in a notebook
    if not widget and "mininterval" not in kwargs and not _is_terminal(kwargs.get("file") or sys.stderr):
        kwargs["mininterval"] = LOG_INTERVAL
        kwargs.setdefault("maxinterval", LOG_INTERVAL)  # tqdm's monitor thread would redraw every 10 s
    return tqdm(iterable, **kwargs)


def _is_terminal(stream: Any) -> bool:
    try:
        return bool(stream.isatty())
    except (AttributeError, ValueError):  # no isatty, or a closed stream
        return False
