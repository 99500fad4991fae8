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


class ImageWarning(UserWarning):
    """One image was read, with something its user should know (a MONOCHROME1 film inverted, ...).

    ``kind`` says what without naming the file, so that a long job over a folder of such films can say it a
    few times and then count (the CLI does); the message is ``"<path>: <detail or kind>"``.
    """

    def __init__(self, path: str | Path, kind: str, detail: str | None = None) -> None:
        self.path = str(path)
        self.kind = kind
        self.detail = detail
        super().__init__(f"{self.path}: {detail or kind}")

    def __reduce__(self) -> tuple[type[ImageWarning], tuple[str, str, str | None]]:
        # Made in extraction's worker processes and shown by the main one: pickle the arguments, not args.
        return ImageWarning, (self.path, self.kind, self.detail)


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


class OutputError(XvisionError):
    """An output would replace a file it must not: one of the command's inputs, or a file of another kind."""


class FetchError(XvisionError):
    """Downloading from a remote service (e.g. Open-i) failed, or the service answered something unusable."""


class LabelRulesError(XvisionError):
    """A label rules file is missing, malformed, or uses an unknown field or operator."""


class AccuracyGuardError(FeatureStoreError):
    """Features from a fast (reduced-precision or alternate-engine) path disagree with the fp32 reference."""
