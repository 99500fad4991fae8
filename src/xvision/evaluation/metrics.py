"""Classification metrics from class probabilities, as one JSON-ready dict.

Every number is derived from a single confusion matrix (rows = true class, columns = predicted class, both
in ``classes`` order), so the figures in a report always agree with each other. Per-class precision, recall
and F1 come from scikit-learn; where one is undefined (precision of a class never predicted, recall of a class
absent from the labels) it is ``None`` ("n/a" when printed), not scikit-learn's default 0, which reads as a
measured failure. ROC AUC uses the scores themselves, not the decisions.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import numpy as np
from sklearn.metrics import confusion_matrix, precision_recall_fscore_support, roc_auc_score, roc_curve

#: How far a row of probabilities may stray from summing to 1 (float32 softmax, rounding in CSV files).
PROBA_SUM_TOLERANCE = 1e-3


def compute_metrics(
    y_true: Sequence[int] | np.ndarray,
    proba: np.ndarray,
    classes: Sequence[str],
    *,
    positive: str | None = None,
    threshold: float | None = None,
    y_pred: Sequence[int] | np.ndarray | None = None,
) -> dict[str, Any]:
    """Score predicted probabilities against true class indices.

    ``y_true`` holds indices into ``classes``; ``proba`` has one row per sample and one column per class.
    The predicted class is the argmax of each row, except for two classes with a ``threshold``: then the
    positive class is predicted when its probability is ``>= threshold``. ``y_pred`` passes decisions made
    elsewhere instead (class indices, e.g. pooled out-of-fold predictions each cut at its own fold's
    threshold); it excludes ``threshold``.

    The positive class (two classes only) is ``classes[1]`` unless ``positive`` names another; it decides
    ``roc_auc``, ``sensitivity``, ``specificity`` and ``sensitivity_at_90_specificity`` (the best sensitivity
    of any threshold keeping specificity >= 0.9: a threshold-free operating figure). With more classes
    ``roc_auc`` is the macro average of one-vs-rest AUCs. An AUC that cannot be computed (a class missing
    from ``y_true``) is ``None``, with the reason in ``roc_auc_note``; so are ``sensitivity``/``specificity``
    when no sample is positive/negative.

    Returns a dict of plain Python numbers, lists and dicts that ``json.dumps`` accepts.
    Raises ``ValueError`` for inputs that do not fit together.
    """
    classes = _check_classes(classes)
    k = len(classes)
    y = _check_labels(y_true, k)
    p = _check_proba(proba, n=len(y), k=k)
    pos = _positive_index(classes, positive)
    if threshold is not None:
        threshold = _check_threshold(threshold, k)

    if y_pred is not None:
        if threshold is not None:
            raise ValueError("pass either threshold or y_pred, not both")
        y_pred = _check_labels(y_pred, k)
        if len(y_pred) != len(y):
            raise ValueError(f"y_pred has {len(y_pred)} decisions for {len(y)} samples")
    elif threshold is None:
        y_pred = np.argmax(p, axis=1)
    else:
        y_pred = np.where(p[:, pos] >= threshold, pos, 1 - pos)

    labels = list(range(k))
    cm = confusion_matrix(y, y_pred, labels=labels)
    precision, recall, f1, support = precision_recall_fscore_support(y, y_pred, labels=labels, zero_division=np.nan)
    n = len(y)
    per_class_recall = [float(r) for r, s in zip(recall, support, strict=True) if s > 0]

    result: dict[str, Any] = {
        "n": int(n),
        "classes": list(classes),
        "accuracy": float(np.trace(cm) / n),
        "balanced_accuracy": float(np.mean(per_class_recall)),
        "confusion_matrix": [[int(v) for v in row] for row in cm],
        "precision": _per_class(classes, precision, float),
        "recall": _per_class(classes, recall, float),
        "f1": _per_class(classes, f1, float),
        "support": _per_class(classes, support, int),
    }
    if k == 2:
        result.update(_binary_metrics(y, p[:, pos], cm, classes, pos, threshold))
    else:
        result.update(_multiclass_auc(y, p, classes))
    return result


def roc_points(
    y_true: Sequence[int] | np.ndarray, scores: Sequence[float] | np.ndarray
) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Return ``(fpr, tpr, thresholds)`` of the ROC curve; ``y_true`` is 1 for positive, 0 for negative.

    A thin wrapper over :func:`sklearn.metrics.roc_curve` that refuses inputs without both classes, for which
    a ROC curve is meaningless (scikit-learn would warn and return NaNs).
    """
    y = np.asarray(y_true)
    s = np.asarray(scores, dtype=float)
    if y.ndim != 1 or s.ndim != 1 or len(y) != len(s):
        raise ValueError(f"y_true and scores must be 1-D and of equal length, got shapes {y.shape} and {s.shape}")
    if not np.all(np.isfinite(s)):
        raise ValueError("scores contain NaN or infinite values")
    if not np.all(np.isin(y, (0, 1))):
        raise ValueError("y_true must contain only 0 (negative) and 1 (positive)")
    if len(np.unique(y)) < 2:
        raise ValueError("a ROC curve needs both positive and negative samples in y_true")
    fpr, tpr, thresholds = roc_curve(y.astype(int), s, pos_label=1)
    return fpr, tpr, thresholds


def _binary_metrics(
    y: np.ndarray,
    scores: np.ndarray,
    cm: np.ndarray,
    classes: list[str],
    pos: int,
    threshold: float | None,
) -> dict[str, Any]:
    neg = 1 - pos
    tp, fn = int(cm[pos, pos]), int(cm[pos, neg])
    tn, fp = int(cm[neg, neg]), int(cm[neg, pos])
    out: dict[str, Any] = {
        "positive": classes[pos],
        "threshold": threshold,
        "sensitivity": tp / (tp + fn) if tp + fn else None,
        "specificity": tn / (tn + fp) if tn + fp else None,
    }
    is_pos = (y == pos).astype(int)
    if len(np.unique(is_pos)) < 2:
        present = classes[int(y[0])]
        out["roc_auc"] = None
        out["roc_auc_note"] = f"undefined: only class {present!r} is present in y_true"
    else:
        out["roc_auc"] = float(roc_auc_score(is_pos, scores))
        out["sensitivity_at_90_specificity"] = sensitivity_at_specificity(is_pos, scores, 0.9)
    return out


def sensitivity_at_specificity(is_pos: np.ndarray, scores: np.ndarray, specificity: float) -> float:
    """The highest sensitivity any threshold reaches while keeping at least ``specificity`` on these samples
    (read off the ROC curve; independent of the model's own threshold)."""
    fpr, tpr, _ = roc_curve(is_pos, scores, pos_label=1, drop_intermediate=False)
    return float(tpr[fpr <= 1.0 - specificity + 1e-12].max())


def _multiclass_auc(y: np.ndarray, p: np.ndarray, classes: list[str]) -> dict[str, Any]:
    missing = [c for i, c in enumerate(classes) if not np.any(y == i)]
    if missing:
        return {"roc_auc": None, "roc_auc_note": f"undefined: no samples of class(es) {missing} in y_true"}
    # Macro one-vs-rest, as roc_auc_score(multi_class="ovr") computes it; done per class so that rows
    # summing to 1 only within PROBA_SUM_TOLERANCE are accepted, and so the per-class values can be reported.
    per_class = [float(roc_auc_score((y == i).astype(int), p[:, i])) for i in range(len(classes))]
    return {
        "roc_auc": float(np.mean(per_class)),
        "roc_auc_per_class": dict(zip(classes, per_class, strict=True)),
    }


def _per_class(classes: list[str], values: np.ndarray, kind: type) -> dict[str, Any]:
    """``{class: value}``; NaN (undefined: nothing to divide by) becomes None, which JSON can hold."""
    return {c: None if np.isnan(v) else kind(v) for c, v in zip(classes, values, strict=True)}


def _check_classes(classes: Sequence[str]) -> list[str]:
    if isinstance(classes, str):
        raise ValueError(f"classes must be a sequence of class names, not the string {classes!r}")
    names = [str(c) for c in classes]
    if len(names) < 2:
        raise ValueError(f"need at least two classes, got {names}")
    if len(set(names)) != len(names):
        raise ValueError(f"class names must be unique, got {names}")
    return names


def _check_labels(y_true: Sequence[int] | np.ndarray, k: int) -> np.ndarray:
    y = np.asarray(y_true)
    if y.ndim != 1:
        raise ValueError(f"y_true must be 1-D (one class index per sample), got shape {y.shape}")
    if len(y) == 0:
        raise ValueError("y_true is empty: there is nothing to score")
    if y.dtype.kind == "b" or y.dtype.kind not in "iuf":
        hint = " (class names? pass their positions in the class list)" if y.dtype.kind in "USO" else ""
        raise ValueError(f"y_true must hold integer class indices, got dtype {y.dtype}{hint}")
    if y.dtype.kind == "f" and not np.all(np.isfinite(y) & (y == np.round(y))):
        raise ValueError("y_true must hold integer class indices, got non-integer values")
    y = y.astype(np.int64)
    bad = y[(y < 0) | (y >= k)]
    if bad.size:
        raise ValueError(f"y_true has labels outside 0..{k - 1} (one per class), e.g. {int(bad[0])}")
    return y


def _check_proba(proba: np.ndarray, *, n: int, k: int) -> np.ndarray:
    p = np.asarray(proba, dtype=np.float64)
    if p.ndim != 2:
        raise ValueError(f"proba must be 2-D (samples x classes), got shape {p.shape}")
    if p.shape != (n, k):
        raise ValueError(f"proba has shape {p.shape}, expected ({n}, {k}): one row per label, one column per class")
    if not np.all(np.isfinite(p)):
        raise ValueError("proba contains NaN or infinite values")
    if np.any(p < -PROBA_SUM_TOLERANCE) or np.any(p > 1 + PROBA_SUM_TOLERANCE):
        raise ValueError("proba values must lie in [0, 1]; pass probabilities, not logits")
    sums = p.sum(axis=1)
    worst = int(np.argmax(np.abs(sums - 1)))
    if abs(sums[worst] - 1) > PROBA_SUM_TOLERANCE:
        raise ValueError(
            f"proba rows must sum to 1 (row {worst} sums to {sums[worst]:.6g}); "
            "pass softmax probabilities, not logits or one-vs-rest scores"
        )
    return p


def _positive_index(classes: list[str], positive: str | None) -> int:
    if positive is None:
        return 1
    if len(classes) != 2:
        raise ValueError(f"positive= applies to two classes only, got {len(classes)} classes")
    if positive not in classes:
        raise ValueError(f"positive class {positive!r} is not one of {classes}")
    return classes.index(positive)


def _check_threshold(threshold: float, k: int) -> float:
    if k != 2:
        raise ValueError(f"threshold= applies to two classes only, got {k} classes; predictions use argmax")
    value = float(threshold)
    if not 0.0 <= value <= 1.0:
        raise ValueError(f"threshold must lie in [0, 1], got {threshold}")
    return value
