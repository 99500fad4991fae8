"""Open-i (openi.nlm.nih.gov): fetch the Indiana University chest X-ray collection into a local folder.

An output folder holds ``images/`` and ``records.jsonl`` (one :class:`ImageRecord` per image, written only once
its image is stored and verified), plus ``failures.jsonl`` listing what the last run could not get.
:func:`fetch_openi` pages through the search API; :func:`fetch_openi_bulk` streams the two bulk tarballs.
Label the records with :mod:`xvision.data.labels` (``xvision label``).
"""

from xvision.data.openi.bulk import fetch_openi_bulk
from xvision.data.openi.client import ClientOptions, HttpClient
from xvision.data.openi.fetch import DEFAULT_BASE_URL, FetchSummary, QueryError, SearchOptions, fetch_openi
from xvision.data.openi.records import ImageRecord, safe_name
from xvision.data.openi.store import (
    FAILURES_FILE,
    RECORDS_FILE,
    REPORTS_FILE,
    Failure,
    RecordStore,
    read_failures,
    read_records,
    read_reports_without_images,
)
from xvision.data.openi.views import read_dicom_views, view_from_caption

__all__ = [
    "DEFAULT_BASE_URL",
    "FAILURES_FILE",
    "RECORDS_FILE",
    "REPORTS_FILE",
    "ClientOptions",
    "Failure",
    "FetchSummary",
    "HttpClient",
    "ImageRecord",
    "QueryError",
    "RecordStore",
    "SearchOptions",
    "fetch_openi",
    "fetch_openi_bulk",
    "read_dicom_views",
    "read_failures",
    "read_records",
    "read_reports_without_images",
    "safe_name",
    "view_from_caption",
]
