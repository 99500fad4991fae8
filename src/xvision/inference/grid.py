"""A labelled grid of images with their predicted class and probability (`predict --grid`)."""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F

from xvision._text import displayable
from xvision.errors import ImageLoadError
from xvision.evaluation.plots import plot_prediction_grid
from xvision.inference.predictor import Prediction
from xvision.io import load_image

MAX_GRID_IMAGES = 64
THUMBNAIL = 192


def _thumbnail(image: np.ndarray, size: int = THUMBNAIL) -> np.ndarray:
    height, width = image.shape
    scale = size / max(height, width)
    if scale >= 1:
        return image
    tensor = torch.from_numpy(np.ascontiguousarray(image))[None, None]
    shape = (max(1, round(height * scale)), max(1, round(width * scale)))
    return F.interpolate(tensor, size=shape, mode="bilinear", antialias=True)[0, 0].numpy()


def draw_prediction_grid(
    predictions: Sequence[Prediction],
    path: str | Path,
    *,
    truth: Mapping[str, str] | None = None,
    watermark: str | None = None,
    limit: int = MAX_GRID_IMAGES,
) -> Path:
    """Draw up to ``limit`` predicted images, each titled with its file name and "class probability"
    (green/red when truth is known): skipped files would otherwise leave tiles no one can match to a file."""
    images, titles, colors = [], [], []
    for prediction in [p for p in predictions if p.label is not None][:limit]:
        try:
            image = _thumbnail(load_image(prediction.path))
        except ImageLoadError:
            continue
        label = prediction.label
        images.append(image)
        titles.append(f"{_short_name(prediction.path)}\n{label} {prediction.probabilities[label]:.2f}")
        expected = (truth or {}).get(prediction.path)
        colors.append("black" if expected is None else ("green" if expected == label else "red"))
    if not images:
        raise ImageLoadError(path, "no readable predicted image to draw in the grid")
    return plot_prediction_grid(images, titles, path, colors=colors, watermark=watermark)


def _short_name(path: str, width: int = 26) -> str:
    """The file name, its middle elided when too long for a tile's title."""
    name = displayable(Path(path).name)
    return name if len(name) <= width else f"{name[: width // 2 - 1]}...{name[-(width // 2 - 2) :]}"
