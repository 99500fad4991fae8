"""Calibration: do predicted probabilities match observed frequencies? ECE, Brier score, temperature scaling.

What is binned depends on the number of classes, so the numbers read naturally in each case:

* two classes: the probability of the positive class against the observed fraction of positives (the usual
  clinical reliability diagram); the Brier score is the mean of ``(p_positive - y_positive)^2``;
* more classes: the top-label confidence (the largest probability) against the fraction predicted
  correctly (Guo et al., 2017); the Brier score is the mean over images of ``sum_k (p_k - y_k)^2``.

The expected calibration error (ECE) is ``sum_b (n_b / n) * |mean predicted_b - observed_b|`` over
``n_bins`` equal-width bins of [0, 1] (the last bin includes 1.0).

Temperature scaling divides the logits by one scalar ``T`` fitted on the validation split by minimising
the negative log-likelihood. It never changes an image's most probable class. For two classes it moves every
probability towards (``T > 1``) or away from (``T < 1``) 0.5 and keeps their order across images, so the
AUC is unchanged; for more classes a class's probability can change order across images (it depends on the
other logits too), so the one-vs-rest AUCs and their macro average can change. Logits are recovered from
probabilities as their logarithms, which softmax maps back to the same probabilities.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import numpy as np

DEFAULT_BINS = 10
#: Bounds on the fitted temperature: beyond them a head is broken, not miscalibrated.
TEMPERATURE_BOUNDS = (0.05, 20.0)
_LOG_FLOOR = 1e-30


def reliability_bins(
    y: Sequence[int] | np.ndarray, proba: np.ndarray, *, positive: int | None, n_bins: int = DEFAULT_BINS
) -> list[dict[str, Any]]:
    """One dict per bin: ``lower``, ``upper``, ``n``, ``mean_predicted``, ``observed`` (None when empty).

    ``positive`` (two classes) bins the positive class's probability against the fraction of positives;
    ``None`` bins the top-label confidence against the fraction correct.
    """
    predicted, observed = _reliability_pairs(np.asarray(y), np.asarray(proba, dtype=np.float64), positive)
    edges = np.arange(n_bins + 1) / n_bins  # k / n exactly: linspace's 0.30000000000000004 put 0.3 below its bin
    which = np.clip(np.digitize(predicted, edges[1:-1], right=False), 0, n_bins - 1)
    bins = []
    for b in range(n_bins):
        inside = which == b
        count = int(inside.sum())
        bins.append(
            {
                "lower": float(edges[b]),
                "upper": float(edges[b + 1]),
                "n": count,
                "mean_predicted": float(predicted[inside].mean()) if count else None,
                "observed": float(observed[inside].mean()) if count else None,
            }
        )
    return bins


def expected_calibration_error(
    y: Sequence[int] | np.ndarray, proba: np.ndarray, *, positive: int | None, n_bins: int = DEFAULT_BINS
) -> float:
    """ECE over equal-width bins (see the module docstring for what is binned)."""
    return _ece(reliability_bins(y, proba, positive=positive, n_bins=n_bins))


def _ece(bins: list[dict[str, Any]]) -> float:
    n = sum(b["n"] for b in bins)
    return float(sum(b["n"] / n * abs(b["mean_predicted"] - b["observed"]) for b in bins if b["n"]))


def brier_score(y: Sequence[int] | np.ndarray, proba: np.ndarray, *, positive: int | None) -> float:
    """Mean squared error of the probabilities (two classes: of the positive class only)."""
    y = np.asarray(y, dtype=np.int64)
    p = np.asarray(proba, dtype=np.float64)
    if positive is not None:
        return float(np.mean((p[:, positive] - (y == positive)) ** 2))
    return float(np.mean(np.sum((p - np.eye(p.shape[1])[y]) ** 2, axis=1)))


def calibration_summary(
    y: Sequence[int] | np.ndarray,
    proba: np.ndarray,
    classes: Sequence[str],
    *,
    positive: int | None,
    n_bins: int = DEFAULT_BINS,
) -> dict[str, Any]:
    """The ``calibration`` block of metrics.json: ECE, Brier, what was binned, and the bins."""
    bins = reliability_bins(y, proba, positive=positive, n_bins=n_bins)
    if positive is not None:
        binned = f"p({classes[positive]}) vs fraction {classes[positive]}"
    else:
        binned = "top-label confidence vs fraction correct"
    return {
        "ece": _ece(bins),
        "brier": brier_score(y, proba, positive=positive),
        "n_bins": n_bins,
        "binned": binned,
        "bins": bins,
    }


def _reliability_pairs(y: np.ndarray, p: np.ndarray, positive: int | None) -> tuple[np.ndarray, np.ndarray]:
    if positive is not None:
        return p[:, positive], (y == positive).astype(np.float64)
    return p.max(axis=1), (p.argmax(axis=1) == y).astype(np.float64)


# ----- temperature scaling ---------------------------------------------------------------------------
def apply_temperature(proba: np.ndarray, temperature: float | None) -> np.ndarray:
    """Probabilities after dividing the logits by ``temperature`` (None or 1: unchanged)."""
    p = np.asarray(proba)
    if temperature is None or temperature == 1.0:
        return p
    logits = np.log(np.clip(p.astype(np.float64), _LOG_FLOOR, None)) / float(temperature)
    logits -= logits.max(axis=1, keepdims=True)
    out = np.exp(logits)
    out /= out.sum(axis=1, keepdims=True)
    return out.astype(p.dtype if p.dtype.kind == "f" else np.float64)


def negative_log_likelihood(y: Sequence[int] | np.ndarray, proba: np.ndarray) -> float:
    """Mean negative log-likelihood of the true classes."""
    y = np.asarray(y, dtype=np.int64)
    p = np.asarray(proba, dtype=np.float64)
    return float(-np.mean(np.log(np.clip(p[np.arange(len(y)), y], _LOG_FLOOR, None))))


def fit_temperature(y: Sequence[int] | np.ndarray, proba: np.ndarray) -> dict[str, float]:
    """Fit the temperature minimising validation NLL; returns ``temperature``, ``nll_before``, ``nll_after``."""
    from scipy.optimize import minimize_scalar

    y = np.asarray(y, dtype=np.int64)
    if len(y) == 0:
        raise ValueError("temperature scaling needs validation samples")
    low, high = np.log(TEMPERATURE_BOUNDS)
    result = minimize_scalar(
        lambda log_t: negative_log_likelihood(y, apply_temperature(proba, float(np.exp(log_t)))),
        bounds=(low, high),
        method="bounded",
        options={"xatol": 1e-4},
    )
    temperature = float(np.exp(result.x))
    return {
        "temperature": temperature,
        "nll_before": negative_log_likelihood(y, proba),
        "nll_after": negative_log_likelihood(y, apply_temperature(proba, temperature)),
    }
