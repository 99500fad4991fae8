"""The accuracy guard: a fast extraction path is checked against the fp32 reference on a sample of images.

Whenever extraction uses reduced precision, an alternate engine or reduced decoding, a few images are also
decoded at full resolution and run through the reference path (:meth:`Backbone.extract`, eager fp32). The
cosine similarity of the two feature vectors of each image is recorded in the store's ``meta.json``; below
:data:`MIN_COSINE` the run warns loudly, and ``strict`` extraction fails.

A feature of a few numbers (a lesion score) is judged differently: one image's cosine is only its sign, and
the raw values of several images compared as one vector agree in direction whenever they sit far from zero
(bf16 moved the `best` detectors' score by up to a third of its spread, and the raw comparison still passed
at 0.99915). Such features are compared by their correlation over the sample: the cosine of the two after
the reference's mean over the sample is taken from both, which an error large next to the spread between
images lowers (that bf16 score: 0.988).
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
    measure: str = "cosine"  # "correlation" for few-number features: one value over the sample, in both fields

    @property
    def passed(self) -> bool:
        return self.cosine_min >= self.threshold

    def to_dict(self) -> dict[str, Any]:
        return {**asdict(self), "passed": self.passed}

    def describe(self) -> str:
        images = f"{self.n} image{'s' * (self.n != 1)}"
        if self.measure == "correlation":
            return f"correlation with fp32 reference over the sample: {self.cosine_min:.6f} ({images})"
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
detector's lesion score, it is only the sign: 1 or -1), so the sample is compared by correlation."""

MIN_CORRELATION_SAMPLE = 3
"""Images a correlation needs: with two, the centred values are mirror images and agree whatever their size."""


def evaluate_guard(fast: np.ndarray, reference: np.ndarray, threshold: float = MIN_COSINE) -> GuardResult:
    """Compare fast-path features with reference features of the same images: per image, or, for features
    of fewer than :data:`FEW_DIMS` dimensions, by their correlation over the sample (the cosine after the
    reference's mean is taken from both; as one raw vector where the sample is too small or the reference
    does not vary over it)."""
    n = len(fast)
    reference = np.asarray(reference, dtype=np.float64)
    if fast.ndim == 2 and fast.shape[1] < FEW_DIMS:
        fast = np.asarray(fast, dtype=np.float64)
        centre = reference.mean(axis=0)
        spread = np.abs(reference - centre).max()
        if n >= MIN_CORRELATION_SAMPLE and spread > 1e-6 * max(np.abs(reference).max(), 1e-30):
            value = float(cosine_rows((fast - centre).reshape(1, -1), (reference - centre).reshape(1, -1))[0])
            return GuardResult(n=n, cosine_min=value, cosine_mean=value, threshold=threshold, measure="correlation")
        fast, reference = fast.reshape(1, -1), reference.reshape(1, -1)
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
