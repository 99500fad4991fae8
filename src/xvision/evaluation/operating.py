"""How a trained head turns probabilities into decisions, fitted on validation data only.

:func:`fit_operating_point` is called by ``train`` (and by ``cv`` inside each fold) with the validation
split's labels and probabilities. It returns the three entries stored in bundle.json:

``positive``     the positive class of two (``--positive``, else the class not named like "normal");
``calibration``  ``{"method": "none"}`` or the temperature fitted on validation (``--calibrate temperature``);
``threshold``    the cut-off on the (calibrated) positive-class probability and the rule that chose it.

Without validation data the threshold is 0.5 and says so; test data never reaches this module.
"""

from __future__ import annotations

import logging
from collections.abc import Sequence
from typing import Any

import numpy as np
from sklearn.metrics import roc_auc_score

from xvision.errors import RunError
from xvision.evaluation.calibration import TEMPERATURE_BOUNDS, apply_temperature, fit_temperature
from xvision.evaluation.threshold import (
    DEFAULT_RULE,
    DEFAULT_THRESHOLD,
    ThresholdRule,
    choose_threshold,
    default_positive,
)

CALIBRATION_METHODS = ("none", "temperature")
#: Below this validation AUC a threshold chosen on validation is reported as close to arbitrary.
WEAK_VALIDATION_AUC = 0.6

log = logging.getLogger(__name__)


def fit_operating_point(
    y_val: Sequence[int] | np.ndarray | None,
    proba_val: np.ndarray | None,
    classes: Sequence[str],
    *,
    rule: ThresholdRule | str = "youden",
    calibrate: str = "none",
    positive: str | None = None,
    source: str = "validation split",
) -> dict[str, Any]:
    """Fit calibration, then the threshold, on validation class indices ``y_val`` and probabilities.

    ``y_val``/``proba_val`` None means there is no validation data. Raises ``ValueError`` for an unknown
    rule, calibration method or positive class, and for temperature scaling without validation data.
    """
    classes = [str(c) for c in classes]
    rule = rule if isinstance(rule, ThresholdRule) else ThresholdRule.parse(rule)
    if calibrate not in CALIBRATION_METHODS:
        raise ValueError(f"unknown calibration {calibrate!r}; use one of {', '.join(CALIBRATION_METHODS)}")
    has_val = y_val is not None and proba_val is not None and len(y_val) > 0
    if calibrate != "none" and not has_val:
        raise ValueError(f"--calibrate {calibrate} is fitted on the validation split, and there is none")
    y = None if not has_val else np.asarray(y_val, dtype=np.int64)
    proba = None if not has_val else np.asarray(proba_val, dtype=np.float64)

    calibration: dict[str, Any] = {"method": "none"}
    if calibrate == "temperature":
        assert y is not None and proba is not None
        calibration = {"method": "temperature", **fit_temperature(y, proba), "source": source, "n": len(y)}
        if not TEMPERATURE_BOUNDS[0] * 1.01 < calibration["temperature"] < TEMPERATURE_BOUNDS[1] * 0.99:
            log.warning(
                "the fitted temperature %.3g sits at its bound: on the %s the head's probabilities carry "
                "almost no information (or it separates the classes perfectly)",
                calibration["temperature"],
                source,
            )
        proba = apply_temperature(proba, calibration["temperature"])

    if len(classes) != 2:
        if positive is not None:
            raise ValueError(f"--positive applies to two classes only; this head has {len(classes)}")
        threshold = {"value": None, "rule": "argmax", "note": "more than two classes: the most probable is predicted"}
        return {"positive": None, "calibration": calibration, "threshold": threshold}

    if positive is None:
        positive = default_positive(classes)
    elif positive not in classes:
        raise ValueError(f"positive class {positive!r} is not one of the classes {classes}")
    return {
        "positive": positive,
        "calibration": calibration,
        "threshold": _threshold(y, proba, classes.index(positive), rule, source),
    }


def _threshold(
    y: np.ndarray | None, proba: np.ndarray | None, pos: int, rule: ThresholdRule, source: str
) -> dict[str, Any]:
    fallback = {"value": DEFAULT_THRESHOLD, "rule": "default 0.5", "requested_rule": str(rule), "source": "none"}
    if y is None or proba is None:
        return {**fallback, "note": "no validation split: the default threshold 0.5 is used"}
    is_pos = (y == pos).astype(int)
    if len(np.unique(is_pos)) < 2:
        return {**fallback, "note": f"the {source} holds one class only: the default threshold 0.5 is used"}
    chosen = choose_threshold(is_pos, proba[:, pos], rule)
    val_auc = float(roc_auc_score(is_pos, proba[:, pos]))
    if val_auc < WEAK_VALIDATION_AUC:
        log.warning(
            "the head separates the classes poorly on the %s (ROC AUC %.2f, n=%d): the %s threshold chosen "
            "there (%.3f) is close to arbitrary",
            source,
            val_auc,
            len(y),
            rule,
            chosen["value"],
        )
    return {
        "value": chosen["value"],
        "rule": chosen["rule"],
        "source": source,
        "n": int(len(y)),
        "val_sensitivity": chosen["sensitivity"],
        "val_specificity": chosen["specificity"],
        "val_auc": val_auc,
    }


def check_positive(positive: str | None, classes: Sequence[str]) -> None:
    """Refuse a ``--positive`` that is not one of two classes, saying which of the two mistakes it is."""
    if positive is None or (len(classes) == 2 and positive in classes):
        return
    names = ", ".join(classes)
    if len(classes) == 2:
        raise RunError(f"--positive {positive!r} must name one of the classes ({names})")
    raise RunError(
        f"--positive applies to two classes; there are {len(classes)} ({names}), each image gets the most probable"
    )


def check_threshold_rule(rule: str | ThresholdRule, classes: Sequence[str]) -> None:
    """Refuse a threshold rule other than the default for more than two classes: the most probable class is
    predicted, so a rule asked for would be dropped without a word."""
    if len(classes) > 2 and str(rule if isinstance(rule, ThresholdRule) else ThresholdRule.parse(rule)) != DEFAULT_RULE:
        raise RunError(
            f"--threshold-rule applies to two classes; there are {len(classes)} ({', '.join(classes)}), each image "
            "gets the most probable"
        )


def describe_threshold(threshold: dict[str, Any] | None, positive: str | None) -> str:
    """One line for the CLI: how decisions are made, e.g. ``p(nodule) >= 0.372 (youden on validation split)``."""
    if threshold and threshold.get("per_fold"):
        values = threshold["per_fold"]
        return (
            f"p({positive}) >= each fold's own threshold ({threshold['rule']} on {threshold['source']}; "
            f"mean {np.mean(values):.3f}, range {min(values):.3f}-{max(values):.3f})"
        )
    if not threshold or threshold.get("value") is None:
        if threshold and threshold.get("rule") == "argmax":
            return "the most probable class is predicted (more than two classes)"
        return "the most probable class is predicted (no threshold recorded in this run)"
    where = f" on the {threshold['source']}, n={threshold['n']}" if threshold.get("n") else ""
    note = f"; {threshold['note']}" if threshold.get("note") else ""
    if threshold["value"] > 1.0:  # NOTHING_POSITIVE: no cut-off met the rule on validation
        return f"nothing is called {positive}: no cut-off met the rule ({threshold['rule']}{where}{note})"
    return f"p({positive}) >= {threshold['value']:.3f} ({threshold['rule']}{where}{note})"
