"""Predict classes for image files with a run folder: the one code path for CLI, Python API and server."""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import torch

from xvision.backbones import Backbone, create_backbone
from xvision.errors import ImageLoadError, RunError
from xvision.inference.bundle import RunBundle, load_bundle
from xvision.io import load_radiograph
from xvision.io.loader import not_a_radiograph


@dataclass
class Prediction:
    """One image's result; ``error`` is set (and the rest empty) when the image could not be read.

    ``label`` is the run's decision: for two classes, the positive class when its probability reaches the
    threshold stored in the run (chosen on validation); otherwise the most probable class.
    """

    path: str
    label: str | None = None
    probabilities: dict[str, float] = field(default_factory=dict)
    error: str | None = None


def weights_argument(bundle: RunBundle, weights: str | None) -> str | None:
    identity = bundle.backbone["weights"]
    if identity["source"] == "random":
        if weights not in (None, "random"):
            raise RunError(f"{bundle.root}: this run's backbone had random weights; leave out --weights {weights}")
        return "random"
    if weights == "random":  # random weights have no SHA-256 to compare: refused here, not scored as noise
        raise RunError(
            f"{bundle.root}: this run's backbone used the weights {identity.get('name') or identity['source']}; "
            "its head cannot read features from random ones: leave out --weights random"
        )
    if weights:
        return weights
    if identity["source"] == "file":
        tuned = _weights_in_run(bundle, identity)
        if tuned is not None:
            return str(tuned)
        raise RunError(
            f"{bundle.root}: this run's backbone used the weights file {identity['name']} "
            f"(SHA-256 {identity['sha256'][:12]}...); pass it with --weights PATH"
        )
    return None


def _weights_in_run(bundle: RunBundle, identity: dict) -> Path | None:
    """A weights file the run carries itself (a fine-tuned backbone), when its SHA-256 matches."""
    from xvision._fileio import sha256_file
    from xvision.finetune.config import FINETUNE_DIR

    candidate = bundle.root / FINETUNE_DIR / str(identity["name"])
    if candidate.is_file() and sha256_file(candidate) == identity.get("sha256"):
        return candidate
    return None


class Predictor:
    """Loads a run folder and its backbone once, then predicts any number of images."""

    def __init__(self, run_dir: str | Path, *, weights: str | None = None) -> None:
        self.bundle = load_bundle(run_dir)
        expected = self.bundle.backbone
        self.backbone: Backbone = create_backbone(expected["name"], weights=weights_argument(self.bundle, weights))
        found = self.backbone.describe()
        want_sha, got_sha = expected["weights"].get("sha256"), found["weights"].get("sha256")
        if want_sha and got_sha and want_sha != got_sha:
            raise RunError(
                f"{run_dir}: backbone weights differ from the ones the run was trained with "
                f"(SHA-256 {got_sha[:12]}... vs {want_sha[:12]}...); pass the original file with --weights"
            )
        if found["preprocess"] != expected["preprocess"]:
            ours, theirs = found["preprocess"] or {}, expected["preprocess"] or {}
            differ = ", ".join(
                f"{key} {theirs.get(key)!r} (the backbone's: {ours.get(key)!r})"
                for key in sorted(set(ours) | set(theirs))
                if ours.get(key) != theirs.get(key)
            )
            raise RunError(
                f"{run_dir}/bundle.json: preprocessing {differ or 'differs'}: the file was edited, or the run was made "
                "by another xvision version; use that version, or train again"
            )
        # Channels-last fp32: the same features (within 1e-5) 1.2-1.6x faster on CPUs (benchmarks/layout.py:
        # VGG16 1.23x, EfficientNet-Lite0 at 1024 px 1.61x on a 2-core AVX2 EPYC).
        self.backbone.model.to(memory_format=torch.channels_last)

    @property
    def classes(self) -> list[str]:
        return self.bundle.classes

    @property
    def untrained_backbone(self) -> bool:
        return self.bundle.untrained_backbone

    @property
    def threshold(self) -> float | None:
        """The run's cut-off on the positive class's probability (None: the most probable class wins)."""
        return self.bundle.threshold

    @property
    def positive(self) -> str | None:
        return self.bundle.positive

    @torch.inference_mode()
    def predict_arrays(self, images: Sequence[np.ndarray] | np.ndarray) -> np.ndarray:
        """Probabilities (n, classes) for images already in Xvision's array form (calibrated if the run is).

        Each image is a 2-D float array in [0, 1], 0 = black, as :func:`xvision.load_image` returns; one such
        array alone is one image. Anything else (uint8 pixels, colour, NaN, a blank or tiny image) raises
        ValueError or TypeError naming the image's index and the problem: scored anyway, it would get a
        confident, meaningless probability.
        """
        if isinstance(images, np.ndarray) and images.ndim == 2:
            images = [images]
        images = list(images)
        if not images:
            return np.empty((0, len(self.classes)), dtype=np.float32)
        return self._predict_inputs([self._network_input(image, f"image {i}") for i, image in enumerate(images)])

    def _network_input(self, image: np.ndarray, name: str) -> torch.Tensor:
        check_image_array(image, name)
        return self.backbone.preprocess(image)

    def _predict_inputs(self, inputs: list[torch.Tensor]) -> np.ndarray:
        batch = torch.stack(inputs).contiguous(memory_format=torch.channels_last)
        return self.bundle.predict_proba(self.backbone.extract(batch))

    def predict_paths(self, paths: Iterable[str | Path] | str | Path, *, batch_size: int = 16) -> list[Prediction]:
        """Predict each file, one result per path in the order given (a single path is a list of one);
        unreadable files come back with ``error`` set instead of stopping the job."""
        if batch_size < 1:
            raise ValueError(f"batch_size must be at least 1, got {batch_size}")
        if isinstance(paths, (str, Path)):
            paths = [paths]
        elif isinstance(paths, np.ndarray) or not isinstance(paths, Iterable):
            raise TypeError(
                f"expected file paths (str or Path), got {type(paths).__name__}; "
                "use predict_arrays for images already loaded"
            )
        paths = list(paths)
        for index, path in enumerate(paths):
            if not isinstance(path, (str, Path)):  # a path's str() would be "file not found", not the mistake
                raise TypeError(
                    f"path {index}: expected a file path (str or Path), got {type(path).__name__}; "
                    "use predict_arrays for images already loaded"
                )
        results: list[Prediction] = [Prediction(path=str(path)) for path in paths]
        for start in range(0, len(paths), batch_size):
            # Each film is cut to the network's input as soon as it is read: a batch of 16 films of 49 MP held
            # 3 GB of full-size pixels at once (the server's /predict with many large uploads).
            loaded: list[tuple[Prediction, torch.Tensor]] = []
            for prediction in results[start : start + batch_size]:
                try:
                    image = load_radiograph(prediction.path)
                except ImageLoadError as error:
                    prediction.error = error.reason
                    continue
                loaded.append((prediction, self._network_input(image, prediction.path)))
                del image
            if not loaded:
                continue
            proba = self._predict_inputs([tensor for _, tensor in loaded])
            decisions = self.bundle.decide(proba)
            for (prediction, _), p, label in zip(loaded, proba, decisions, strict=True):
                prediction.probabilities = {c: float(v) for c, v in zip(self.classes, p, strict=True)}
                prediction.label = self.classes[int(label)]
        return results


def prediction_record(predictor: Predictor, result: Prediction) -> dict[str, Any]:
    """One result as `predict --json` and the server give it: the decision, every class's probability, the
    threshold and rule behind the decision, and the untrained-backbone warning where it applies."""
    from xvision.evaluation.operating import describe_threshold
    from xvision.inference.bundle import UNTRAINED_WARNING

    rule = describe_threshold(predictor.bundle.threshold_info, predictor.positive)
    return {
        "path": result.path,
        "predicted": result.label,
        "probabilities": result.probabilities,
        "threshold": {"value": predictor.threshold, "positive": predictor.positive, "rule": rule},
        "error": result.error,
        **({"warning": UNTRAINED_WARNING} if predictor.untrained_backbone else {}),
    }


def check_image_array(image: object, name: str) -> None:
    """Raise TypeError/ValueError unless ``image`` is in Xvision's array form and could be a radiograph."""
    if not isinstance(image, np.ndarray):
        raise TypeError(f"{name}: expected a numpy array, got {type(image).__name__}")
    if image.ndim != 2:
        raise ValueError(
            f"{name}: expected a 2-D grayscale array, got shape {image.shape}; read files with xvision.load_radiograph"
        )
    if not np.issubdtype(image.dtype, np.floating):
        raise ValueError(
            f"{name}: {image.dtype} pixels; Xvision's array form is float in [0, 1] (0 = black): use "
            "xvision.load_radiograph(path), or divide 8-bit pixels by 255 (12-bit ones by 4095, 16-bit by 65535)"
        )
    if not np.isfinite(image).all():
        raise ValueError(f"{name}: contains NaN or infinity")
    low, high = float(image.min()), float(image.max())
    if low < 0.0 or high > 1.0:
        raise ValueError(f"{name}: values span [{low:g}, {high:g}]; Xvision's array form is float in [0, 1]")
    problem = not_a_radiograph(image)
    if problem:
        raise ValueError(f"{name}: {problem}")
