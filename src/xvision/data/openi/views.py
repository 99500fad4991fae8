"""Which view (``frontal`` or ``lateral``) an Open-i image shows, where that can be known.

Two sources, in order of trust:

1. The DICOM header fields published with the collection (``nlmcxr_dicom_metadata.csv.gz``, one row per image):
   ``View Position`` (PA/AP: frontal; LL/RL/LATERAL: lateral), else ``Patient Orientation`` (rows towards the
   patient's left or right: frontal; towards anterior or posterior: lateral). These headers were often copied
   from one exposure of a study to the next: in 1,221 two-image studies both images claim to be frontal
   (e.g. ``CXR1``, whose second image is a lateral). A frontal claim is therefore trusted only when no other
   image of the same report also claims frontal; lateral claims are kept.
2. The image caption, when it names one kind of view and nothing suggests several ("CHEST SINGLE VIEW FRONTAL").
   Captions describe the whole study, and the anonymisation often blanks a word: "Chest XXXX and lateral" means
   "PA and lateral", so a caption with "and", "two", "2" or "views" decides nothing.

Anything else is unknown (``None``); no view is guessed from image size or series number.
"""

from __future__ import annotations

import csv
import gzip
import io
import re
import zlib
from collections import Counter
from pathlib import Path

from xvision.errors import ManifestError

FRONTAL, LATERAL = "frontal", "lateral"
_FRONTAL_WORDS = re.compile(r"\b(pa|ap|frontal|posteroanterior|anteroposterior)\b", re.IGNORECASE)
_LATERAL_WORDS = re.compile(r"\b(lat|lateral|ll|rl)\b", re.IGNORECASE)
_SEVERAL_VIEWS = re.compile(r"\b(and|two|2|both|views|series)\b|&", re.IGNORECASE)
_FRONTAL_POSITIONS = {"PA", "AP"}
_LATERAL_POSITIONS = {"LL", "RL", "LATERAL", "LARGE LATERAL", "LAT"}


def view_from_caption(caption: str) -> str | None:
    """``frontal`` or ``lateral`` when the caption names only that kind of view (and no other), else None."""
    if _SEVERAL_VIEWS.search(caption):
        return None
    frontal, lateral = bool(_FRONTAL_WORDS.search(caption)), bool(_LATERAL_WORDS.search(caption))
    if frontal != lateral:
        return FRONTAL if frontal else LATERAL
    return None


def metadata_key(image_id: str) -> str:
    """The key of an image in the DICOM metadata table: ``CXR1_1_IM-0001-3001`` is listed as ``CXR1_IM-0001-3001``."""
    return re.sub(r"^(CXR\d+)_\d+_", r"\1_", image_id)


def read_dicom_views(path: str | Path) -> dict[str, str]:
    """``{metadata key: view}`` from the collection's DICOM metadata CSV (plain or gzipped).

    Raises:
        ManifestError: The file is missing or lacks the ``imageid`` and ``View Position`` columns.
    """
    path = Path(path)
    if not path.is_file():
        raise ManifestError(f"{path}: DICOM metadata file not found")
    with open(path, "rb") as probe:
        zipped = probe.read(2) == b"\x1f\x8b"  # by content, not by name: a .csv may be gzipped and vice versa
    opener = gzip.open if zipped else open
    try:
        with opener(path, "rb") as raw, io.TextIOWrapper(raw, encoding="utf-8", errors="replace", newline="") as text:
            reader = csv.DictReader(text)
            columns = set(reader.fieldnames or ())
            if not {"imageid", "View Position"} <= columns:
                raise ManifestError(
                    f"{path}: not the Open-i DICOM metadata table (needs columns imageid and View Position)"
                )
            views = {}
            for row in reader:
                view = _view_from_header(row.get("View Position") or "", row.get("Patient Orientation") or "")
                if view and row.get("imageid"):
                    views[metadata_key(row["imageid"].strip())] = view
    except (EOFError, OSError, zlib.error, csv.Error) as error:  # a truncated or damaged download
        raise ManifestError(
            f"{path}: damaged or cut short ({type(error).__name__}: {error}); download the metadata file again"
        ) from None
    frontal_claims = Counter(_report_of(key) for key, view in views.items() if view == FRONTAL)
    return {key: view for key, view in views.items() if view == LATERAL or frontal_claims[_report_of(key)] == 1}


def _report_of(key: str) -> str:
    return key.split("_", 1)[0]


def _view_from_header(position: str, orientation: str) -> str | None:
    position = position.strip().upper()
    if position in _FRONTAL_POSITIONS:
        return FRONTAL
    if position in _LATERAL_POSITIONS:
        return LATERAL
    # Patient Orientation is written like "['L', 'F']": the direction of the rows, then of the columns.
    letters = re.findall(r"[A-Z]+", orientation.upper())
    if letters and letters[0] in ("L", "R"):
        return FRONTAL
    if letters and letters[0] in ("A", "P"):
        return LATERAL
    return None
