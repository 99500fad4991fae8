"""Thread counts for compute on shared machines.

PyTorch's OpenMP threads spin-wait at the end of every parallel region. When the cores are already busy with
other processes, a thread that loses its core stalls all the others: on a loaded 2-core machine, two threads
ran EfficientNet-Lite0 3-7x and VGG16 1.2x slower than one thread, and head training 3-4x slower. So the
automatic choices use one thread when other processes keep the machine busy, and PyTorch's default otherwise.
"""

from __future__ import annotations

import os
from collections.abc import Iterator
from contextlib import contextmanager

import torch

BUSY_FRACTION = 0.5
"""The machine counts as busy when other processes keep more than this fraction of its cores running."""

SAMPLE_SECONDS = 0.25


def _cpu_jiffies() -> tuple[int, int] | None:
    """(busy, total) jiffies over all cores since boot, from /proc/stat (None where there is none)."""
    try:
        with open("/proc/stat", encoding="ascii") as handle:
            fields = [int(v) for v in handle.readline().split()[1:]]
    except (OSError, ValueError):
        return None
    idle = fields[3] + (fields[4] if len(fields) > 4 else 0)  # idle + iowait
    total = sum(fields[:8])  # guest time is already counted in user
    return total - idle, total


def _usable_cores() -> int:
    return len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else (os.cpu_count() or 1)


def other_processes_load(seconds: float = SAMPLE_SECONDS) -> float | None:
    """How many cores other processes keep busy right now (this process's own use is subtracted).

    Sampled over ``seconds`` from /proc/stat; ``None`` where it cannot be measured. Unlike the load average,
    it does not count this process's own recent work (e.g. a benchmark's previous phase).
    """
    import time

    first = _cpu_jiffies()
    if first is None:
        return None
    own_start, wall_start = time.process_time(), time.monotonic()
    time.sleep(seconds)
    second = _cpu_jiffies()
    own = time.process_time() - own_start
    wall = time.monotonic() - wall_start
    if second is None or second[1] <= first[1]:
        return None
    busy_fraction = (second[0] - first[0]) / (second[1] - first[1])
    cores = os.cpu_count() or 1  # /proc/stat sums every core of the machine
    return max(0.0, busy_fraction * cores - own / wall)


def machine_is_busy() -> bool:
    """True when other processes keep more than half of the usable cores busy.

    Measured from /proc/stat over a quarter second; where that is unavailable, the 1-minute load average is
    compared with the cores instead (False where neither exists). Always False when ``OMP_NUM_THREADS`` is set:
    the thread count then stays the one asked for, and with it the last bits of the features (one and two
    threads round differently), so that a run repeated under another load gives the same bytes.
    """
    if os.environ.get("OMP_NUM_THREADS", "").strip():
        return False
    others = other_processes_load()
    if others is None:
        try:
            others = os.getloadavg()[0]
        except (OSError, AttributeError):
            return False
    return others > BUSY_FRACTION * _usable_cores()


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
