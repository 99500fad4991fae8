"""Fixtures of the evaluation tests: synthetic feature stores (see synthetic_store.py)."""

from __future__ import annotations

from pathlib import Path

import pytest
from synthetic_store import make_store


@pytest.fixture
def store_factory(tmp_path: Path):
    """Make synthetic stores under tmp_path: ``store_factory(**make_store_kwargs) -> FEATURES_DIR``."""
    counter = iter(range(1000))

    def factory(**kwargs) -> Path:
        return make_store(tmp_path / f"store{next(counter)}", **kwargs)

    return factory
