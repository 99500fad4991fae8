"""Shared fixtures: real data location and an isolated Xvision home for every test."""

from __future__ import annotations

from pathlib import Path

import pytest

SHARED_DATA = Path(__file__).resolve().parents[1].parent / "shared" / "data"
JSRT = SHARED_DATA / "jsrt"


@pytest.fixture(autouse=True)
def _isolated_home(tmp_path_factory: pytest.TempPathFactory, monkeypatch: pytest.MonkeyPatch) -> None:
    """Point Xvision's user folder at a temp dir so tests never touch the real one."""
    monkeypatch.setenv("XVISION_HOME", str(tmp_path_factory.mktemp("xvision-home")))
    # An error no check foresaw is one line for users; in the tests, a traceback that shows where.
    monkeypatch.setenv("XVISION_TRACEBACK", "1")


@pytest.fixture
def jsrt_dir() -> Path:
    if not (JSRT / "labels.csv").exists():
        pytest.skip(f"real JSRT radiographs not found at {JSRT} (they live beside the repo in ../shared/data)")
    return JSRT
