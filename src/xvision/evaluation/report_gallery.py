"""The report's gallery: the most confident mistakes of a run, with thumbnails inlined as data URIs."""

from __future__ import annotations

import base64
import csv
import io
import logging
import os
from dataclasses import dataclass
from pathlib import Path

import numpy as np
from PIL import Image

from xvision._fileio import is_inside, sha256_file
from xvision.errors import XvisionError

log = logging.getLogger(__name__)

THUMBNAIL_SIZE = 176
"""Longest side of a gallery thumbnail, in pixels."""
PER_KIND = 8
"""Mistakes shown per kind (false positives, false negatives, or confident mistakes)."""


@dataclass(frozen=True)
class Mistake:
    """One wrongly classified image, as the report shows it."""

    path: str
    label: str
    predicted: str
    probability: float  # of the positive class (two classes) or of the predicted class (more)
    score: str  # what ``probability`` is, e.g. "p(nodule)"
    thumbnail: str | None  # a data: URI, or None when the image could not be read


@dataclass(frozen=True)
class Gallery:
    """Groups of mistakes (title -> mistakes) and a note on what could not be shown."""

    groups: dict[str, list[Mistake]]
    note: str | None = None

    @property
    def thumbnails(self) -> bool:
        """Whether any mistake has a thumbnail (else the report lists them as a table)."""
        return any(item.thumbnail for items in self.groups.values() for item in items)


def read_predictions(path: Path) -> list[dict[str, str]]:
    """Rows of ``predictions.csv`` (``path,label,predicted,p_<class>...``); empty when the file is absent."""
    if not path.is_file():
        return []
    with open(path, newline="", encoding="utf-8") as handle:
        return list(csv.DictReader(handle))


def build_gallery(
    rows: list[dict[str, str]], classes: list[str], positive: str | None, image_root: Path | None
) -> Gallery:
    """Pick the most confident mistakes and make their thumbnails.

    Two classes: false positives sorted by the positive class's probability (highest first), false negatives
    by it (lowest first). More classes: mistakes sorted by the probability of the predicted class. Relative
    paths are resolved against ``image_root`` (the manifest's folder); unreadable images get no thumbnail.
    """
    wrong = [row for row in rows if row["label"] != row["predicted"]]
    if len(classes) == 2 and positive in classes:
        key = f"p_{positive}"
        false_pos = sorted((r for r in wrong if r["predicted"] == positive), key=lambda r: -float(r[key]))
        false_neg = sorted((r for r in wrong if r["label"] == positive), key=lambda r: float(r[key]))
        picked = {
            f"Most confident false positives (predicted {positive})": [(r, float(r[key]), positive) for r in false_pos],
            f"Most confident false negatives (missed {positive})": [(r, float(r[key]), positive) for r in false_neg],
        }
    else:
        ranked = sorted(wrong, key=lambda r: -float(r[f"p_{r['predicted']}"]))
        picked = {"Most confident mistakes": [(r, float(r[f"p_{r['predicted']}"]), r["predicted"]) for r in ranked]}
    groups: dict[str, list[Mistake]] = {}
    missing = 0
    for title, items in picked.items():
        shown = []
        for row, probability, scored in items[:PER_KIND]:
            thumbnail = _thumbnail(row["path"], image_root, row.get("sha256"))
            missing += thumbnail is None
            shown.append(Mistake(row["path"], row["label"], row["predicted"], probability, f"p({scored})", thumbnail))
        groups[title] = shown
    note = None
    if missing and wrong and "sha256" not in wrong[0]:  # written before predictions.csv recorded the content
        note = (
            "predictions.csv does not record each image's SHA-256 (an evaluation by an older Xvision), so no "
            "thumbnail is shown: run `xvision evaluate` again to see them."
        )
    elif missing:
        where = f"under {image_root}" if image_root else "(the feature store's manifest location is unknown)"
        note = f"{missing} image(s) could not be read {where}; they are listed without a thumbnail."
        if missing == sum(len(items) for items in groups.values()):
            note = f"No image could be read {where}: no thumbnails."
    return Gallery(groups=groups, note=note)


def png_data_uri(path: Path, folder: Path) -> str | None:
    """A PNG file in ``folder`` as a ``data:image/png;base64,...`` URI; None for anything else.

    Reports are sent on, and a run folder may come from someone else: a ``plots/roc.png`` that is a link to a
    file outside the folder (a private key) was embedded in the report, whatever its content.
    """
    if not path.is_file() or not is_inside(path, folder):
        return None
    data = path.read_bytes()
    if not data.startswith(b"\x89PNG\r\n\x1a\n"):
        log.warning("%s: not a PNG file; left out of the report", path)
        return None
    return "data:image/png;base64," + base64.b64encode(data).decode("ascii")


def _thumbnail(relative: str, image_root: Path | None, sha256: str | None) -> str | None:
    """A thumbnail of the row's image, only when the file there has the content the row scored (its SHA-256):
    a predictions.csv received from someone else could otherwise name any image on this machine, and put a copy
    of it in a report that is then sent on."""
    from xvision.io import load_image

    path = Path(relative)
    if not path.is_absolute():
        if image_root is None:
            return None
        path = Path(os.path.normpath(image_root / path))
    try:
        if not sha256 or not path.is_file() or sha256_file(path) != sha256:
            log.debug("no thumbnail: %s is not the image the row scored (or predictions.csv has no sha256)", path)
            return None
        image = load_image(path)
    except (XvisionError, OSError) as error:
        log.debug("no thumbnail: %s", error)
        return None
    pixels = Image.fromarray(np.round(image * 255).astype(np.uint8))
    pixels.thumbnail((THUMBNAIL_SIZE, THUMBNAIL_SIZE), Image.Resampling.LANCZOS)
    buffer = io.BytesIO()
    pixels.save(buffer, format="JPEG", quality=85)
    return "data:image/jpeg;base64," + base64.b64encode(buffer.getvalue()).decode("ascii")
