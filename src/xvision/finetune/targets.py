"""Lesion maps for lesion-supervised fine-tuning, from the manifest's optional lesion columns.

A manifest row may carry ``lesion_x``, ``lesion_y`` (centre) and ``lesion_diam`` (diameter), all in pixels of
the original image. For a positive image with a lesion, the map has two channels at ``size`` x ``size``:
``inside`` (1 within the lesion's radius) and ``care`` (0 in a ring around it, where a cell half-covers the
lesion and neither answer is fair). A negative image is "no lesion anywhere" (care everywhere). A positive
image without lesion columns gives no dense supervision (care nowhere); the image-level loss still applies.
Prediction never needs these columns.
"""

from __future__ import annotations

import math

import torch

from xvision.data.manifest import ManifestRow
from xvision.errors import ManifestError

LESION_COLUMNS = ("lesion_x", "lesion_y", "lesion_diam")


def lesion_of(row: ManifestRow, where: str) -> tuple[float, float, float] | None:
    """(x, y, diameter) in original pixels, or None when the row has no lesion location."""
    values = [row.get(column) for column in LESION_COLUMNS]
    if all(v is None for v in values):
        return None
    if any(v is None for v in values):
        raise ManifestError(f"{where}: lesion columns must be all set or all empty ({', '.join(LESION_COLUMNS)})")
    try:
        x, y, diam = (float(v) for v in values)  # type: ignore[arg-type]
    except ValueError:
        raise ManifestError(f"{where}: lesion columns must be numbers, got {values}") from None
    if not all(math.isfinite(v) for v in (x, y, diam)):  # float() reads "nan" and "inf": no signal, or the whole film
        raise ManifestError(f"{where}: lesion columns must be finite numbers, got {values}")
    if diam <= 0 or x < 0 or y < 0:
        raise ManifestError(f"{where}: lesion_diam must be positive and lesion_x, lesion_y not negative, got {values}")
    return x, y, diam


def lesion_map(
    positive: bool, lesion: tuple[float, float, float] | None, image_shape: tuple[int, int], size: int
) -> torch.Tensor:
    """The (2, size, size) map ``[inside, care]`` for one image (see the module docstring)."""
    inside = torch.zeros(size, size)
    if not positive:
        return torch.stack([inside, torch.ones(size, size)])
    if lesion is None:
        return torch.stack([inside, torch.zeros(size, size)])
    height, width = image_shape
    x, y, diam = lesion
    # The image is squashed to a square: scale each axis on its own; the radius by the mean scale.
    sx, sy = size / width, size / height
    cx, cy, radius = x * sx, y * sy, 0.5 * diam * (sx + sy) / 2
    rows = torch.arange(size, dtype=torch.float32)[:, None] + 0.5
    cols = torch.arange(size, dtype=torch.float32)[None, :] + 0.5
    distance = torch.hypot(cols - cx, rows - cy)
    inside = (distance <= radius).float()
    care = ((distance <= radius) | (distance > 2.0 * radius + 2.0)).float()
    return torch.stack([inside, care])
