"""One exception tree for Xvision.

Library code raises these; the CLI turns them into a one-line message and a non-zero exit status.
Messages name the file concerned and, where possible, say how to fix the problem.
"""

from __future__ import annotations

from pathlib import Path


class XvisionError(Exception):
    """Base class of every error Xvision raises on purpose."""


class ImageLoadError(XvisionError):
    """An image file could not be read: not an image, empty, truncated, unsupported or absurd."""

    def __init__(self, path: str | Path, reason: str) -> None:
        self.path = str(path)
        self.reason = reason
        super().__init__(f"{self.path}: {reason}")


class ManifestError(XvisionError):
    """A manifest CSV is missing, malformed or inconsistent."""


class LeakageError(ManifestError):
    """A group or an identical image appears in more than one split."""


class BackboneError(XvisionError):
    """Unknown backbone name, or a backbone that cannot be built."""


class WeightsNotFoundError(BackboneError):
    """Pretrained weights for a backbone could not be found or downloaded."""


class FeatureStoreError(XvisionError):
    """A feature store is missing, corrupt, or inconsistent with the stage reading it."""


class RunError(XvisionError):
    """A run folder (model bundle) is missing, corrupt or inconsistent."""


class NotFittedError(XvisionError, ValueError, AttributeError):
    """An estimator was used before ``fit`` (mirrors scikit-learn's NotFittedError)."""


class FetchError(XvisionError):
    """Downloading from a remote service (e.g. Open-i) failed, or the service answered something unusable."""


class LabelRulesError(XvisionError):
    """A label rules file is missing, malformed, or uses an unknown field or operator."""


class AccuracyGuardError(FeatureStoreError):
    """Features from a fast (reduced-precision or alternate-engine) path disagree with the fp32 reference."""
