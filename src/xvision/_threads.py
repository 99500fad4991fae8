"""Thread counts for compute on shared machines.

PyTorch's OpenMP threads spin-wait at the end of every parallel region. When the cores are already busy with
other processes, a thread that loses its core stalls all the others: on a loaded 2-core machine, two threads
ran EfficientNet-Lite0 3-7x and VGG16 1.2x slower than one thread, and head training 3-4x slower. So the
automatic choices use one thread when the machine is busy, and PyTorch's default otherwise.
"""

from __future__ import annotations

import os
from collections.abc import Iterator
from contextlib import contextmanager

import torch

BUSY_LOAD_FRACTION = 0.75


def machine_is_busy() -> bool:
    """True when the 1-minute load average exceeds 3/4 of the usable cores (False where there is none)."""
    try:
        load = os.getloadavg()[0]
    except (OSError, AttributeError):
        return False
    cores = len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else (os.cpu_count() or 1)
    return load > BUSY_LOAD_FRACTION * cores


def auto_threads() -> int:
    """One thread on a busy machine, else PyTorch's current setting."""
    return 1 if machine_is_busy() else torch.get_num_threads()


@contextmanager
def torch_threads(n: int | None) -> Iterator[None]:
    """Run with ``n`` intra-op threads (``None``: unchanged), restoring the previous setting afterwards."""
    previous = torch.get_num_threads()
    if n and n != previous:
        torch.set_num_threads(n)
    try:
        yield
    finally:
        if torch.get_num_threads() != previous:
            torch.set_num_threads(previous)
