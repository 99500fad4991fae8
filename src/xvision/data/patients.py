"""Patient IDs from DICOM headers: grouping a folder's films by patient, and noticing when folders do not.

A patient's films (a PA and a lateral, this year's and last year's) must land in one split, or the test set
holds a patient the model trained on. A DICOM export carries the patient in its header, Patient ID
(0010,0020), whatever its folders are named; anonymised exports keep it as a pseudonym per patient, or blank it,
or write one placeholder (``ANONYMOUS``) into every file. Only the first carries information.
"""

from __future__ import annotations

import logging
from collections import defaultdict
from collections.abc import Sequence
from pathlib import Path
from typing import TYPE_CHECKING

from xvision.errors import ManifestError

if TYPE_CHECKING:
    from xvision.data.manifest import ManifestRow

logger = logging.getLogger(__name__)

# Images found by these suffixes are pictures, never DICOM: their headers are not read.
_PICTURE_SUFFIXES = frozenset({".png", ".jpg", ".jpeg", ".tif", ".tiff", ".bmp"})


def patient_ids(folder: Path, paths: Sequence[str]) -> dict[str, str]:
    """``{path: Patient ID}`` for the DICOM files among ``paths`` (relative to ``folder``) that carry one."""
    from xvision.io.dicom import read_patient_id  # pydicom is imported only when a folder is listed

    found: dict[str, str] = {}
    for path in paths:
        if Path(path).suffix.lower() in _PICTURE_SUFFIXES:
            continue
        patient = read_patient_id(folder / path)
        if patient is not None:
            found[path] = patient
    return found


def check_patient_groups(folder: Path, rows: Sequence[ManifestRow]) -> None:
    """After ``group_from="patient"``: say which images got no group, and refuse one ID for every image."""
    missing = sum(1 for row in rows if not row.group)
    if missing == len(rows):
        logger.warning(
            "%s: --group-from patient found no DICOM Patient ID (the images are not DICOM, or the tag is empty), "
            "so no group was set; every image counts as its own patient",
            folder,
        )
        return
    if missing:
        logger.warning(
            "%s: %d of %d images have no DICOM Patient ID (not DICOM, or the tag is empty); each counts as its "
            "own patient",
            folder,
            missing,
            len(rows),
        )
    distinct = {row.group for row in rows if row.group}
    if len(distinct) == 1 and len(rows) - missing > 2:  # two films of one patient among pictures may be real
        raise ManifestError(
            f"{folder}: all {len(rows) - missing} DICOM images have Patient ID {next(iter(distinct))!r}, so they "
            "would be one patient and no split could keep training and test apart; the IDs were anonymised to one "
            "value. Group by folder instead (--group-from top or parent) or give each image its own group (none)"
        )


def warn_patients_across_groups(folder: Path, rows: Sequence[ManifestRow], group_from: str) -> None:
    """Warn when DICOM files of one Patient ID fall in several groups (an image without a group is its own):
    a split by those groups could put one patient's films on both sides. One ID shared by every file (three or
    more) is a placeholder, not a patient, and is ignored."""
    ids = patient_ids(folder, [row.path for row in rows])
    if not ids or (len(set(ids.values())) == 1 and len(ids) > 2):
        return
    groups: dict[str, set[str]] = defaultdict(set)
    for row in rows:
        if row.path in ids:
            groups[ids[row.path]].add(row.group or row.path)
    spread = sorted(patient for patient, held in groups.items() if len(held) > 1)
    if spread:
        logger.warning(
            "%s: %d DICOM patient(s) have images in more than one group with --group-from %s (first: Patient ID "
            "%s, %d groups), so a split could put one patient's films in both training and test; use "
            "--group-from patient to group by the Patient ID in the headers",
            folder,
            len(spread),
            group_from,
            spread[0],
            len(groups[spread[0]]),
        )
