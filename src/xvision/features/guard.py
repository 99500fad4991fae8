"""The accuracy guard: a fast extraction path is checked against the fp32 reference on a sample of images.

Whenever extraction uses reduced precision, an alternate engine or reduced decoding, a few images are also
decoded at full resolution and run through the reference path (:meth:`Backbone.extract`, eager fp32). The
cosine similarity of the two feature vectors of each image is recorded in the store's ``meta.json``; below
:data:`MIN_COSINE` the run warns loudly, and ``strict`` extraction fails.
"""

from __future__ import annotations

import logging
import warnings
from dataclasses import asdict, dataclass
from typing import Any

import numpy as np

log = logging.getLogger(__name__)

MIN_COSINE = 0.999
"""Smallest per-image cosine similarity to the fp32 reference that a fast path may reach."""

DEFAULT_SAMPLE = 8


class AccuracyWarning(UserWarning):
    """A fast extraction path disagrees with the fp32 reference beyond :data:`MIN_COSINE`."""


@dataclass(frozen=True)
class GuardResult:
    """Agreement of a fast path with the fp32 reference on ``n`` sample images."""

    n: int
    cosine_min: float
    cosine_mean: float
    threshold: float = MIN_COSINE

    @property
    def passed(self) -> bool:
        return self.cosine_min >= self.threshold

    def to_dict(self) -> dict[str, Any]:
        return {**asdict(self), "passed": self.passed}

    def describe(self) -> str:
        images = f"{self.n} image{'s' * (self.n != 1)}"
        return f"cosine to fp32 reference: min {self.cosine_min:.6f}, mean {self.cosine_mean:.6f} ({images})"


def cosine_rows(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    """Cosine similarity of each row of ``a`` with the same row of ``b`` (two zero rows count as identical)."""
    a = np.asarray(a, dtype=np.float64)
    b = np.asarray(b, dtype=np.float64)
    dot = (a * b).sum(axis=1)
    norms = np.linalg.norm(a, axis=1) * np.linalg.norm(b, axis=1)
    both_zero = (np.abs(a).sum(axis=1) == 0) & (np.abs(b).sum(axis=1) == 0)
    with np.errstate(invalid="ignore", divide="ignore"):
        cosine = np.where(norms > 0, dot / np.where(norms > 0, norms, 1.0), 0.0)
    return np.where(both_zero, 1.0, cosine)


FEW_DIMS = 8
"""Below this many features per image, one image's cosine says little (with one feature, such as the
detector's lesion score, it is only the sign: 1 or -1), so the sample is compared as one vector."""


def evaluate_guard(fast: np.ndarray, reference: np.ndarray, threshold: float = MIN_COSINE) -> GuardResult:
    """Compare fast-path features with reference features of the same images (per image; for features of
    fewer than :data:`FEW_DIMS` dimensions, the whole sample's values as one vector)."""
    n = len(fast)
    if fast.ndim == 2 and fast.shape[1] < FEW_DIMS:
        fast, reference = fast.reshape(1, -1), np.asarray(reference).reshape(1, -1)
    cosine = cosine_rows(fast, reference)
    return GuardResult(n=n, cosine_min=float(cosine.min()), cosine_mean=float(cosine.mean()), threshold=threshold)


def warn_if_failed(result: GuardResult, what: str) -> None:
    """Warn loudly (``warnings`` and ``logging``) when the guard failed."""
    if result.passed:
        return
    message = (
        f"ACCURACY GUARD FAILED for {what}: {result.describe()} is below {result.threshold}; "
        "re-run with --precision fp32 for reference features (or --strict to stop on this)"
    )
    log.warning(message)
    warnings.warn(message, AccuracyWarning, stacklevel=3)
