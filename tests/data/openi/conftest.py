"""Fixtures for the Open-i tests: the real report tarball, search items built from it, a stand-in server."""

from __future__ import annotations

from collections.abc import Callable, Iterator
from pathlib import Path

import pytest
from fake_openi import FakeOpenI, items_from_reports

OPENI = Path(__file__).resolve().parents[3].parent / "shared" / "data" / "openi"
REPORTS_TGZ = OPENI / "NLMCXR_reports.tgz"
DICOM_METADATA = OPENI / "nlmcxr_dicom_metadata.csv.gz"


@pytest.fixture(scope="session")
def reports_tgz() -> Path:
    if not REPORTS_TGZ.is_file():
        pytest.skip(f"Open-i report tarball not found at {REPORTS_TGZ} (it lives beside the repo in ../shared/data)")
    return REPORTS_TGZ


@pytest.fixture(scope="session")
def dicom_metadata() -> Path:
    if not DICOM_METADATA.is_file():
        pytest.skip(f"Open-i DICOM metadata not found at {DICOM_METADATA} (beside the repo in ../shared/data)")
    return DICOM_METADATA


@pytest.fixture(scope="session")
def report_items(reports_tgz: Path) -> list[dict]:
    """Search items for every image of the 3,955 real reports (built once per session)."""
    return items_from_reports(reports_tgz)


@pytest.fixture(scope="session")
def first_items(reports_tgz: Path) -> list[dict]:
    """Search items for the images of the first 120 reports (about 230 images)."""
    return items_from_reports(reports_tgz, max_reports=120)


@pytest.fixture
def serve() -> Iterator[Callable[..., FakeOpenI]]:
    """Start stand-in servers (``serve(items, **options)``); they stop when the test ends."""
    servers: list[FakeOpenI] = []

    def start(items: list[dict], **options: object) -> FakeOpenI:
        server = FakeOpenI(items, **options).__enter__()
        servers.append(server)
        return server

    yield start
    for server in servers:
        server.__exit__(None, None, None)
