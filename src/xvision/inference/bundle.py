"""The run folder: a self-contained model bundle.

Layout of a RUN_DIR::

    bundle.json           classes, backbone (name, weights identity, preprocessing), head parameters,
                          chosen epoch, data summary, environment versions
    model.safetensors     the head that was kept (best validation loss, else the last epoch)
    checkpoints/epoch-NNN.safetensors   one per epoch
    history.csv           epoch, train/val loss and accuracy
    train_keys.json       SHA-256 of every training image (evaluate warns when test images overlap)
    val_keys.json         SHA-256 of every validation image (they chose the epoch and threshold: the same)

bundle.json also holds how probabilities become decisions, all fitted on the validation split by
`xvision train` (see xvision.evaluation.operating): ``positive`` (two classes), ``calibration``
(``{"method": "none"}`` or a temperature) and ``threshold`` (value and the rule that chose it).
Bundles written before these existed predict the most probable class, uncalibrated.
    metrics.json, plots/  written by `xvision evaluate`

Predicting needs only this folder, the images and the backbone weights.
"""

from __future__ import annotations

import json
import os
import platform
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from xvision._checks import check_type
from xvision._fileio import atomic_write_json, sha256_file
from xvision._text import nfc
from xvision._version import __version__
from xvision.errors import RunError
from xvision.evaluation.calibration import TEMPERATURE_BOUNDS, apply_temperature
from xvision.evaluation.threshold import decide
from xvision.heads import MLPClassifier

FORMAT = "xvision-run"
UNTRAINED_WARNING = "UNTRAINED BACKBONE"


def environment_versions() -> dict[str, str]:
    """Versions of everything that can change a number (Pillow and pydicom decode the images)."""
    import numpy
    import PIL
    import pydicom
    import sklearn
    import torch
    import torchvision

    versions = {
        "xvision": __version__,
        "python": platform.python_version(),
        "torch": torch.__version__,
        "torchvision": torchvision.__version__,
        "numpy": numpy.__version__,
        "scikit-learn": sklearn.__version__,
        "pillow": PIL.__version__,
        "pydicom": pydicom.__version__,
    }
    try:
        import timm

        versions["timm"] = timm.__version__
    except ImportError:  # pragma: no cover - timm is a dependency
        pass
    return versions


@dataclass
class RunBundle:
    """A loaded run folder."""

    root: Path
    info: dict[str, Any]
    head: MLPClassifier

    @property
    def classes(self) -> list[str]:
        return list(self.info["classes"])

    @property
    def backbone(self) -> dict[str, Any]:
        return dict(self.info["backbone"])

    @property
    def untrained_backbone(self) -> bool:
        return not self.info["backbone"]["weights"]["pretrained"]

    @property
    def positive(self) -> str | None:
        """The positive class of a two-class head (older bundles: the second class), else None."""
        if len(self.classes) != 2:
            return None
        return str(self.info.get("positive") or self.classes[1])

    @property
    def temperature(self) -> float | None:
        """The fitted temperature, or None when the run is not calibrated."""
        calibration = self.info.get("calibration") or {}
        return float(calibration["temperature"]) if calibration.get("method") == "temperature" else None

    @property
    def threshold_info(self) -> dict[str, Any]:
        """bundle.json's ``threshold`` entry (value, rule, source...); empty for older bundles."""
        return dict(self.info.get("threshold") or {})

    @property
    def threshold(self) -> float | None:
        """The cut-off on the positive class's probability; None means "predict the most probable class"."""
        value = self.threshold_info.get("value")
        return None if value is None or len(self.classes) != 2 else float(value)

    def predict_proba(self, X: np.ndarray) -> np.ndarray:
        """The head's class probabilities, temperature-scaled when the run was calibrated."""
        return apply_temperature(self.head.predict_proba(X), self.temperature)

    def decide(self, proba: np.ndarray) -> np.ndarray:
        """Predicted class indices for probabilities from :meth:`predict_proba`, using the run's threshold."""
        positive = self.positive
        index = None if positive is None else self.classes.index(positive)
        return decide(proba, positive=index, threshold=self.threshold)

    def train_keys(self) -> set[str] | None:
        """Content keys of the training images; None when ``train_keys.json`` is not in the folder (a run shared
        as bundle.json and model.safetensors alone): which images trained it is then unknown."""
        return self._keys("train_keys.json", (self.info.get("data") or {}).get("n_train"))

    def val_keys(self) -> set[str] | None:
        """Content keys of the validation images (empty for runs without validation); None when the run had
        some and ``val_keys.json`` is not in the folder."""
        return self._keys("val_keys.json", (self.info.get("data") or {}).get("n_val"))

    def _keys(self, name: str, recorded: Any) -> set[str] | None:
        path = self.root / name
        if path.is_file():
            return set(json.loads(path.read_text()))
        return set() if recorded == 0 else None


def model_sha256(run_dir: str | Path) -> str:
    """SHA-256 of the run's head (model.safetensors): which model a metrics.json scored."""
    return sha256_file(Path(run_dir) / "model.safetensors")


def write_bundle_info(run_dir: Path, info: dict[str, Any]) -> None:
    atomic_write_json(run_dir / "bundle.json", {"format": FORMAT, "format_version": 1, **info})


def load_bundle(run_dir: str | Path) -> RunBundle:
    """Open a run folder written by `xvision train`."""
    check_type(run_dir, (str, os.PathLike), "run_dir", "a run folder's path (str or Path)")
    root = Path(run_dir)
    info_path = root / "bundle.json"
    if not info_path.is_file():
        from xvision.evaluation.crossval import not_a_run

        raise RunError(not_a_run(root))
    try:
        info = json.loads(info_path.read_text(encoding="utf-8"))
    except (OSError, json.JSONDecodeError) as error:
        raise RunError(f"{info_path}: unreadable ({error})") from None
    if not isinstance(info, dict) or info.get("format") != FORMAT:
        raise RunError(f"{info_path}: not an Xvision run bundle")
    _check_types(info_path, info)
    model_path = root / "model.safetensors"
    if not model_path.is_file():
        raise RunError(f"{model_path}: missing; the training did not finish; re-run `xvision train`")
    # Runs trained before manifests were read in NFC may hold decomposed class names (see xvision._text).
    info["classes"] = [nfc(c) for c in info.get("classes") or []]
    info["positive"] = nfc(info.get("positive"))
    head = MLPClassifier.load(model_path)
    head.classes_ = np.array([nfc(str(c)) for c in head.classes_])
    if [str(c) for c in head.classes_] != [str(c) for c in info.get("classes") or []]:
        raise RunError(
            f"{info_path}: classes {info.get('classes')} differ from those of model.safetensors "
            f"({list(head.classes_)}); the run folder was edited or mixed from two runs: train it again"
        )
    _check_head_is_the_runs(model_path, head, info)
    _check_operating_point(info_path, info)
    return RunBundle(root=root, info=info, head=head)


def _check_types(info_path: Path, info: dict[str, Any]) -> None:
    """The entries every command reads must have their types: a bundle.json edited by hand, or made elsewhere,
    with `backbone` a string or `threshold` a list, ended in a traceback in whichever command read it first."""
    if info.get("format_version", 1) != 1:
        raise RunError(f"{info_path}: format_version {info.get('format_version')!r}; made by a newer Xvision?")
    classes = info.get("classes")
    if not isinstance(classes, list) or len(classes) < 2 or not all(isinstance(c, str) for c in classes):
        raise RunError(f"{info_path}: classes must be a list of two or more names; the file was edited or damaged")
    backbone = info.get("backbone")
    shapes = {"name": str, "weights": dict, "preprocess": dict}
    if not isinstance(backbone, dict) or not all(isinstance(backbone.get(k), t) for k, t in shapes.items()):
        raise RunError(
            f"{info_path}: backbone must hold a name, weights and preprocess entry; the file was edited or damaged"
        )
    for key in ("threshold", "calibration", "data", "head", "audit", "versions"):
        if info.get(key) is not None and not isinstance(info[key], dict):
            raise RunError(f"{info_path}: {key} must be an object, not {type(info[key]).__name__}; the file was edited")


def _check_operating_point(info_path: Path, info: dict[str, Any]) -> None:
    """Refuse a hand-edited positive class, threshold or temperature that no decision could use (a traceback
    in the middle of `predict` before)."""
    classes = [str(c) for c in info.get("classes") or []]
    positive = info.get("positive")
    if positive is not None and str(positive) not in classes:
        raise RunError(f"{info_path}: positive {positive!r} is not one of the classes {classes}; the file was edited")
    value = (info.get("threshold") or {}).get("value")
    number = not isinstance(value, bool) and isinstance(value, (int, float))
    if value is not None and not (number and 0 <= value <= 1.0 + 1e-9):  # NOTHING_POSITIVE is just above 1
        raise RunError(f"{info_path}: threshold value {value!r} is not a number in [0, 1]; the file was edited")
    calibration = info.get("calibration") or {}
    temperature = calibration.get("temperature")
    low, high = TEMPERATURE_BOUNDS  # what fitting can give; 1e308 or Infinity made every probability 0.5
    if calibration.get("method") == "temperature" and (
        isinstance(temperature, bool)
        or not isinstance(temperature, (int, float))
        or not low * (1 - 1e-6) <= temperature <= high * (1 + 1e-6)
    ):
        raise RunError(
            f"{info_path}: temperature {temperature!r} is not a number in [{low}, {high}], the range it is fitted "
            "in; the file was edited"
        )


def _check_head_is_the_runs(model_path: Path, head: MLPClassifier, info: dict[str, Any]) -> None:
    """Refuse a model.safetensors that another run trained: one of another width fails on every image, one of the
    same width predicts at this run's threshold without a word (runs before model_sha256 was recorded: the
    width alone is checked)."""
    dim = (info.get("backbone") or {}).get("feature_dim")
    if isinstance(dim, int) and head.n_features_in_ != dim:
        raise RunError(
            f"{model_path}: a head for {head.n_features_in_} features, and the run's backbone gives {dim}: "
            "the file comes from another run; put this run's own model.safetensors back, or train again"
        )
    recorded = info.get("model_sha256")
    if recorded and sha256_file(model_path) != recorded:
        raise RunError(
            f"{model_path}: not the head this run trained (its SHA-256 differs from bundle.json's model_sha256); "
            "put this run's own model.safetensors back, or train again"
        )


def check_same_backbone(expected: dict[str, Any], found: dict[str, Any], where: str) -> None:
    """Refuse features that were made by another backbone, weights or preprocessing than the run's."""
    for key in ("name", "weights", "preprocess"):
        if expected.get(key) != found.get(key):
            raise RunError(
                f"{where}: {key} differs from the run's backbone "
                f"({_short(found.get(key))} vs {_short(expected.get(key))}); "
                "extract features with the same backbone and weights as the run"
            )


def _short(value: Any) -> str:
    if isinstance(value, dict) and "name" in value:
        return str(value["name"])
    text = json.dumps(value)
    return text if len(text) < 60 else text[:57] + "..."
