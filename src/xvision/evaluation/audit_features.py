"""Per-image features that should not carry the diagnosis, for the shortcut audit.

Each image gives a handful of numbers a radiologist would call irrelevant to the finding: its size and
aspect, bit depth and file format, the mean and spread of its intensities, statistics of its borders and
corners, signs of burned-in marks (saturated pixels and flat rectangles in the corners, where scanners and
anonymisation tools stamp text and patches) and, for DICOM, header fields such as the manufacturer or the
view. If these predict the label, a network will happily learn them instead of the disease.

Reading the image is the cost, so every pixel statistic is computed on a copy shrunk to at most
:data:`WORK_SIZE` pixels a side (box averaging: a solid mark stays solid, noise is averaged away).
Intensities are those of :func:`xvision.io.load_image`: ``[0, 1]``, display polarity.
"""

from __future__ import annotations

import logging
from collections import Counter
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
from PIL import Image

from xvision.errors import ImageLoadError
from xvision.io import is_dicom, load_radiograph
from xvision.io.loader import exception_reason

log = logging.getLogger(__name__)

WORK_SIZE = 256
"""Pixel statistics are computed on the image box-averaged to at most this many pixels a side."""
CORNER_FRACTION = 0.2
"""A corner region is this fraction of the image's width by this fraction of its height."""
BORDER_FRACTION = 0.05
"""A border strip is this fraction of the image deep."""
DARK, WHITE = 0.02, 0.98
"""Pixels at or below DARK count as black, at or above WHITE as white (saturated or burned in)."""
FLAT_RANGE = 2.0 / 255.0
"""A pixel is flat when its 3 x 3 neighbourhood spans no more than this (two 8-bit grey levels)."""
STROKE = 0.15
"""A pixel is part of a stroke (text, a marker's outline) when it differs from its 5 x 5 median by more."""
DICOM_FIELDS = (
    "Manufacturer",
    "ManufacturerModelName",
    "InstitutionName",
    "Modality",
    "ViewPosition",
    "BodyPartExamined",
    "PhotometricInterpretation",
)
"""DICOM header fields one-hot encoded when present."""
MAX_CATEGORIES = 12
"""Most frequent values kept per categorical field; rarer ones are pooled as ``other``."""

_CORNERS = {"top_left": (0, 0), "top_right": (0, 1), "bottom_left": (1, 0), "bottom_right": (1, 1)}
_PIL_FORMATS = {"PNG": "png", "JPEG": "jpeg", "TIFF": "tiff", "BMP": "bmp"}


@dataclass(frozen=True)
class ImageFeatures:
    """The nuisance features of one image: numbers, and categories to be one-hot encoded."""

    numeric: dict[str, float]
    categorical: dict[str, str] = field(default_factory=dict)


@dataclass(frozen=True)
class FeatureTable:
    """Nuisance features of many images as one matrix.

    Attributes:
        X: ``(n_images, n_features)`` float64, one row per readable image, in input order.
        names: One name per column; one-hot columns read ``field=value``.
        kept: Indices (into the input) of the images that were read.
        failures: ``(index, reason)`` of every image that could not be read.
    """

    X: np.ndarray
    names: list[str]
    kept: list[int]
    failures: list[tuple[int, str]]


def image_features(path: str | Path) -> ImageFeatures:
    """Compute the nuisance features of one image file.

    Raises:
        ImageLoadError: The file cannot be read as a radiograph (see :func:`xvision.io.load_radiograph`).
    """
    path = Path(path)
    image = load_radiograph(path)  # what extraction reads: blank files, masks and CT slices are skipped here too
    height, width = image.shape
    numeric: dict[str, float] = {
        "width": float(width),
        "height": float(height),
        "aspect": width / height,
    }
    categorical: dict[str, str] = {}
    if is_dicom(path):
        header = _dicom_header(path)
        numeric["bit_depth"] = float(header.pop("_bits", 0.0) or 0.0)
        numeric["color"] = 0.0
        categorical["format"] = "dicom"
        categorical.update({f"dicom.{name}": value for name, value in header.items()})
    else:
        file_format, bits, color = _pillow_header(path)
        numeric["bit_depth"] = bits
        numeric["color"] = color
        categorical["format"] = file_format
    numeric.update(pixel_features(shrink(image)))
    return ImageFeatures(numeric=numeric, categorical=categorical)


def shrink(image: np.ndarray, size: int = WORK_SIZE) -> np.ndarray:
    """Box-average ``image`` by a whole factor so that neither side exceeds ``size``.

    Smaller images are returned as they are. The few rows and columns that do not fill a whole box at the
    bottom and right (fewer than the factor) are dropped.
    """
    height, width = image.shape
    factor = -(-max(height, width) // size)
    if factor <= 1:
        return image
    rows, cols = height // factor, width // factor
    blocks = image[: rows * factor, : cols * factor].reshape(rows, factor, cols, factor)
    return blocks.mean(axis=(1, 3), dtype=np.float32)


def pixel_features(image: np.ndarray) -> dict[str, float]:
    """Intensity, border, corner and burned-in-mark statistics of a (shrunk) image in ``[0, 1]``."""
    from scipy import ndimage

    out = {
        "intensity_mean": float(image.mean()),
        "intensity_std": float(image.std()),
        "intensity_p01": float(np.percentile(image, 1)),
        "intensity_p50": float(np.percentile(image, 50)),
        "intensity_p99": float(np.percentile(image, 99)),
        "black_fraction": float(np.mean(image <= DARK)),
        "white_fraction": float(np.mean(image >= WHITE)),
    }
    height, width = image.shape
    depth_y = max(1, round(height * BORDER_FRACTION))
    depth_x = max(1, round(width * BORDER_FRACTION))
    borders = {
        "top": image[:depth_y],
        "bottom": image[height - depth_y :],
        "left": image[:, :depth_x],
        "right": image[:, width - depth_x :],
    }
    for name, strip in borders.items():
        out.update(_region_stats(f"border_{name}", strip))

    span = ndimage.maximum_filter(image, size=3, mode="nearest") - ndimage.minimum_filter(image, size=3, mode="nearest")
    flat = span <= FLAT_RANGE
    corner_h = max(2, round(height * CORNER_FRACTION))
    corner_w = max(2, round(width * CORNER_FRACTION))
    for name, (bottom, right) in _CORNERS.items():
        rows = slice(height - corner_h, height) if bottom else slice(0, corner_h)
        cols = slice(width - corner_w, width) if right else slice(0, corner_w)
        region = image[rows, cols]
        out.update(_region_stats(f"corner_{name}", region))
        out[f"corner_{name}_min"] = float(region.min())
        out[f"corner_{name}_max"] = float(region.max())
        out[f"corner_{name}_flat_rectangle"] = largest_rectangle(flat[rows, cols]) / region.size
        # Thin bright or dark strokes (burned-in letters, rulers) stand out from their local median;
        # anatomy, smooth at this scale, does not.
        contrast = np.abs(region - ndimage.median_filter(region, size=5, mode="nearest"))
        out[f"corner_{name}_stroke_contrast"] = float(contrast.max())
        out[f"corner_{name}_stroke_fraction"] = float(np.mean(contrast > STROKE))
    # The same mark may sit in any corner: the strongest sign over the four corners is a feature too.
    for stat in ("black_fraction", "white_fraction", "flat_rectangle", "stroke_contrast", "stroke_fraction"):
        out[f"any_corner_{stat}"] = max(out[f"corner_{name}_{stat}"] for name in _CORNERS)
    return out


def largest_rectangle(mask: np.ndarray) -> int:
    """Area in pixels of the largest axis-aligned rectangle of True values in a 2-D boolean mask."""
    mask = np.asarray(mask, dtype=bool)
    if not mask.any():
        return 0
    # heights[r, c]: how many True cells end at (r, c) going down. A rectangle t rows high whose bottom row
    # is r spans a run of columns where heights[r] >= t; try every t at once (the masks here are small).
    heights = _run_lengths(mask, axis=0)
    tall = np.arange(1, int(heights.max()) + 1)
    runs = _run_lengths(heights[None, :, :] >= tall[:, None, None], axis=2)
    return int((runs.max(axis=(1, 2)) * tall).max())


def _run_lengths(mask: np.ndarray, axis: int) -> np.ndarray:
    """Length of the run of True values ending at each cell along ``axis`` (0 where False)."""
    shape = [1] * mask.ndim
    shape[axis] = mask.shape[axis]
    index = np.arange(mask.shape[axis]).reshape(shape)
    last_false = np.maximum.accumulate(np.where(mask, -1, index), axis=axis)
    return np.where(mask, index - last_false, 0)


_WHOLE = {
    "width": "image width in pixels",
    "height": "image height in pixels",
    "aspect": "aspect ratio (width / height)",
    "bit_depth": "bits per grey level stored in the file",
    "color": "stored as a colour image",
    "intensity_mean": "mean intensity of the whole image",
    "intensity_std": "intensity spread (SD) of the whole image",
    "intensity_p01": "1st percentile of intensity (the darkest parts)",
    "intensity_p50": "median intensity",
    "intensity_p99": "99th percentile of intensity (the brightest parts)",
    "black_fraction": "fraction of black pixels in the whole image",
    "white_fraction": "fraction of white (saturated) pixels in the whole image",
}
_STATS = {
    "mean": "mean intensity",
    "std": "intensity spread (SD)",
    "min": "darkest value",
    "max": "brightest value",
    "black_fraction": "fraction of black pixels",
    "white_fraction": "fraction of white (saturated) pixels",
    "flat_rectangle": "largest perfectly flat rectangle (a burned-in patch?)",
    "stroke_contrast": "strongest thin stroke (burned-in text or marker?)",
    "stroke_fraction": "fraction of thin-stroke pixels (burned-in text or marker?)",
}


def describe_feature(name: str) -> str:
    """A phrase saying what a feature column measures, e.g. ``"top-left corner: brightest value"``."""
    if "=" in name:
        field_name, value = name.split("=", 1)
        if field_name == "format":
            return f"file format is {value}"
        return f"DICOM {field_name.removeprefix('dicom.')} is {value}"
    if name in _WHOLE:
        return _WHOLE[name]
    for stat, meaning in sorted(_STATS.items(), key=lambda item: -len(item[0])):
        if name.endswith("_" + stat):
            region = name[: -len(stat) - 1]
            if region.startswith("any_corner"):
                return f"any corner (the highest of the four): {meaning}"
            kind, _, where = region.partition("_")
            place = where.replace("_", "-")
            return f"{place} {'corner' if kind == 'corner' else 'border strip'}: {meaning}"
    return name


def feature_table(paths: Sequence[str | Path], *, progress: bool = False) -> FeatureTable:
    """Compute :func:`image_features` for every path; unreadable images are logged and left out."""
    from xvision._progress import progress_bar

    rows: list[ImageFeatures] = []
    kept: list[int] = []
    failures: list[tuple[int, str]] = []
    for index, path in enumerate(progress_bar(paths, desc="audit", unit="img", disable=not progress)):
        try:
            rows.append(image_features(path))
        except ImageLoadError as error:
            failures.append((index, error.reason))
            log.warning("skipped %s", error)
            continue
        except Exception as error:  # noqa: BLE001 - one odd file must not stop an audit of thousands
            failures.append((index, exception_reason(error)))
            log.warning("skipped %s: %s", path, exception_reason(error))
            continue
        kept.append(index)
    X, names = _to_matrix(rows)
    return FeatureTable(X=X, names=names, kept=kept, failures=failures)


def _to_matrix(rows: list[ImageFeatures]) -> tuple[np.ndarray, list[str]]:
    names = list(dict.fromkeys(name for row in rows for name in row.numeric))
    columns = [[row.numeric.get(name, 0.0) for row in rows] for name in names]
    for field_name in sorted({name for row in rows for name in row.categorical}):
        values = [row.categorical.get(field_name) for row in rows]
        counts = Counter(v for v in values if v is not None)
        common = sorted(value for value, _ in counts.most_common(MAX_CATEGORIES))
        for category in common:
            names.append(f"{field_name}={category}")
            columns.append([float(v == category) for v in values])
        if len(counts) > MAX_CATEGORIES:
            names.append(f"{field_name}=other")
            columns.append([float(v is not None and v not in common) for v in values])
    if not columns:
        return np.zeros((len(rows), 0)), names
    return np.asarray(columns, dtype=np.float64).T.reshape(len(rows), len(names)), names


def _region_stats(prefix: str, region: np.ndarray) -> dict[str, float]:
    return {
        f"{prefix}_mean": float(region.mean()),
        f"{prefix}_std": float(region.std()),
        f"{prefix}_black_fraction": float(np.mean(region <= DARK)),
        f"{prefix}_white_fraction": float(np.mean(region >= WHITE)),
    }


def _pillow_header(path: Path) -> tuple[str, float, float]:
    """File format, bits per grey level and whether the file is colour, from the header alone."""
    with Image.open(path) as image:  # lazy: reads the header; load_image has already checked the size
        mode, file_format = image.mode, image.format or ""
    bits = 16.0 if mode.startswith("I;16") or mode == "I" else 1.0 if mode == "1" else 8.0
    color = 0.0 if mode in ("1", "L", "LA", "I", "I;16", "I;16L", "I;16B", "I;16N", "F") else 1.0
    return _PIL_FORMATS.get(file_format, file_format.lower() or "unknown"), bits, color


def _dicom_header(path: Path) -> dict[str, str | float]:
    import pydicom

    ds = pydicom.dcmread(path, stop_before_pixels=True, force=True)
    header: dict[str, str | float] = {}
    for name in DICOM_FIELDS:
        value = ds.get(name)
        header[name] = " ".join(str(value).split()) if value not in (None, "") else "(absent)"
    bits = ds.get("BitsStored")
    header["_bits"] = float(bits) if bits else 0.0
    return header


__all__ = [
    "BORDER_FRACTION",
    "CORNER_FRACTION",
    "DICOM_FIELDS",
    "WORK_SIZE",
    "FeatureTable",
    "describe_feature",
    "ImageFeatures",
    "feature_table",
    "image_features",
    "largest_rectangle",
    "pixel_features",
    "shrink",
]
