"""The operating threshold of a two-class head: which class is positive, and where its cut-off lies.

The threshold applies to the probability of the positive class (``predict positive when p >= threshold``)
and is chosen on the validation split, never on test, by one of three rules:

``youden``            maximise Youden's J = sensitivity + specificity - 1 (the default);
``sensitivity:0.9``   the most specific threshold whose validation sensitivity is at least 0.9;
``specificity:0.9``   the most sensitive threshold whose validation specificity is at least 0.9.

Every threshold between two adjacent distinct validation scores gives the same validation decisions; the
midpoint of that gap is used, so the cut-off does not sit on one validation image's score.
"""

from __future__ import annotations

import re
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any, Literal

import numpy as np
from sklearn.metrics import roc_curve

DEFAULT_RULE = "youden"
DEFAULT_THRESHOLD = 0.5
#: Class names that mean "no disease": the other of two classes is then the positive one.
NEGATIVE_NAMES = frozenset(
    {
        "normal",
        "negative",
        "healthy",
        "benign",
        "control",
        "no finding",
        "no_finding",
        "nofinding",
        "absent",
        "none",
        "no",
        "false",
        "0",
    }
)
#: A name that negates a finding: "non-nodule", "no effusion", "not cancer", "without nodule", "nodule negative",
#: "nodule-free" (JSRT's own categories are "nodule" and "non-nodule").
_NEGATED = re.compile(r"^(?:non|no|not|without)[\s_-]+\S|\S[\s_-]+(?:negative|absent|free)$")


@dataclass(frozen=True)
class ThresholdRule:
    """A parsed ``--threshold-rule``: ``youden``, ``sensitivity:T`` or ``specificity:T``."""

    kind: Literal["youden", "sensitivity", "specificity"]
    target: float | None = None

    @classmethod
    def parse(cls, text: str) -> ThresholdRule:
        """Parse a rule; raises ``ValueError`` with the accepted forms when ``text`` is not one of them."""
        name, _, value = str(text).strip().lower().partition(":")
        if name == "youden" and not value:
            return cls("youden")
        if name in ("sensitivity", "specificity") and value:
            try:
                target = float(value)
            except ValueError:
                target = -1.0
            if 0.0 < target <= 1.0:
                return cls(name, target)  # type: ignore[arg-type]
        raise ValueError(
            f"unknown threshold rule {text!r}; use youden, sensitivity:T or specificity:T with 0 < T <= 1 "
            "(e.g. sensitivity:0.9)"
        )

    def __str__(self) -> str:
        return self.kind if self.target is None else f"{self.kind}:{self.target:g}"


def default_positive(classes: Sequence[str]) -> str:
    """The positive class of two: the one that is not named like "normal" (or as a negation, "non-nodule", "no
    effusion"), else the second in order."""
    names = [str(c) for c in classes]
    if len(names) != 2:
        raise ValueError(f"a positive class applies to two classes only, got {names}")
    # A name like "normal" decides first: "non-small cell carcinoma" against "normal" is the carcinoma.
    for negative in (
        [_plain(c) in NEGATIVE_NAMES for c in names],
        [_negates(c, other) for c, other in zip(names, names[::-1], strict=True)],
    ):
        if negative == [True, False]:
            return names[1]
        if negative == [False, True]:
            return names[0]
    return names[1]


def _plain(name: str) -> str:
    return " ".join(name.strip().lower().split())


def _negates(name: str, other: str) -> bool:
    joined = "".join(_plain(name).split())  # "nonnodule" negates "nodule" only when the other class is "nodule"
    return _NEGATED.search(_plain(name)) is not None or joined in {f"{p}{_plain(other)}" for p in ("non", "no", "not")}


#: The cut-off that calls no probability positive, 1.0 included (decisions take ``p >= threshold``).
NOTHING_POSITIVE = float(np.nextafter(1.0, 2.0))


def choose_threshold(
    y_pos: Sequence[int] | np.ndarray, scores: Sequence[float] | np.ndarray, rule: ThresholdRule
) -> dict[str, Any]:
    """Pick the threshold on ``scores`` (probabilities of the positive class) for ``y_pos`` (1 = positive).

    Returns ``{"value", "rule", "sensitivity", "specificity"}``: the threshold and the sensitivity and
    specificity it achieves on these (validation) samples. Raises ``ValueError`` without both classes.
    """
    y = np.asarray(y_pos).astype(int)
    s = np.asarray(scores, dtype=np.float64)
    if len(np.unique(y)) < 2:
        raise ValueError("choosing a threshold needs both positive and negative validation samples")
    fpr, tpr, thr = roc_curve(y, s, pos_label=1, drop_intermediate=False)
    # thr[0] is +inf (nothing positive); thr[i] keeps every score >= thr[i]. The decisions of thr[i] hold
    # for any cut-off in (next lower distinct score, thr[i]]: use the middle of that gap.
    lower = np.r_[thr[1:], -np.inf]
    cut = np.where(np.isfinite(lower), (thr + lower) / 2, thr)
    candidates = np.arange(1, len(thr))  # never "nothing positive"
    if rule.kind == "youden":
        j = tpr[candidates] - fpr[candidates]
        best = candidates[j >= j.max() - 1e-12]
        # Ties: the cut-off closest to 0.5, i.e. the least departure from the untuned decision.
        index = int(best[np.argmin(np.abs(cut[best] - DEFAULT_THRESHOLD))])
    elif rule.kind == "sensitivity":
        ok = candidates[tpr[candidates] >= rule.target - 1e-12]
        index = int(ok[0])  # highest threshold, hence most specific, reaching the target
    else:
        ok = candidates[1 - fpr[candidates] >= rule.target - 1e-12]
        # The lowest threshold, hence most sensitive, keeping the target; when even the top score is a
        # negative, only "nothing positive" keeps it: cut above the highest validation score.
        index = int(ok[-1]) if len(ok) else 0
        # Above a score of exactly 1.0 (a saturated float32 softmax) only a cut-off over 1 decides nothing
        # positive, as decisions take p >= threshold: the next float above 1.
        cut[0] = min(1.0, (thr[1] + 1.0) / 2) if thr[1] < 1.0 else NOTHING_POSITIVE
    value = float(cut[index]) if cut[index] == NOTHING_POSITIVE else float(np.clip(cut[index], 0.0, 1.0))
    return {
        "value": value,
        "rule": str(rule),
        "sensitivity": float(tpr[index]),
        "specificity": float(1 - fpr[index]),
    }


def decide(proba: np.ndarray, *, positive: int | None, threshold: float | None) -> np.ndarray:
    """Predicted class indices: the positive class when its probability is ``>= threshold``, else argmax."""
    p = np.asarray(proba)
    if threshold is None or positive is None:
        return np.argmax(p, axis=1)
    return np.where(p[:, positive] >= threshold, positive, 1 - positive)
