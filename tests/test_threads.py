"""Thread choices on shared machines."""

from __future__ import annotations

import torch

from xvision import _threads


def test_busy_machine_gets_one_thread(monkeypatch) -> None:
    monkeypatch.delenv("OMP_NUM_THREADS", raising=False)
    monkeypatch.setattr(_threads, "other_processes_load", lambda seconds=0.25: 64.0)
    assert _threads.machine_is_busy() and _threads.auto_threads() == 1


def test_a_thread_count_set_in_omp_num_threads_is_kept_under_any_load(monkeypatch) -> None:
    """One and two threads round features differently: the same command gave other figures under load."""
    monkeypatch.setattr(_threads, "other_processes_load", lambda seconds=0.25: 64.0)
    monkeypatch.setenv("OMP_NUM_THREADS", "2")
    assert not _threads.machine_is_busy() and _threads.auto_threads() == torch.get_num_threads()


def test_idle_machine_keeps_torch_threads(monkeypatch) -> None:
    monkeypatch.setattr(_threads, "other_processes_load", lambda seconds=0.25: 0.0)
    assert not _threads.machine_is_busy() and _threads.auto_threads() == torch.get_num_threads()


def test_measured_load_is_a_number_of_cores_or_none() -> None:
    load = _threads.other_processes_load(0.05)
    assert load is None or load >= 0.0


def test_torch_threads_restores_the_setting() -> None:
    before = torch.get_num_threads()
    with _threads.torch_threads(1):
        assert torch.get_num_threads() == 1
    assert torch.get_num_threads() == before
