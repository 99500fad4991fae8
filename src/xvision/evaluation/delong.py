"""DeLong's test for the difference between two correlated ROC AUCs (scored on the same images).

DeLong, DeLong & Clarke-Pearson (1988), Biometrics 44:837-845, in the fast midrank form of Sun & Xu (2014),
IEEE Signal Processing Letters 21:1389-1393. Each AUC is the mean of Mann-Whitney kernels
``psi(x, y) = 1 if x > y, 1/2 if x == y, 0 otherwise`` over (positive x, negative y) pairs. Its structural
components are ``V10(x_i) = mean_j psi(x_i, y_j)`` for each positive and ``V01(y_j) = mean_i psi(x_i, y_j)``
for each negative; the covariance of two AUCs is ``S10 / m + S01 / n`` where S10 and S01 are the sample
covariances (denominator m - 1 and n - 1) of those components across the two models. Midranks give all
components in O((m + n) log(m + n)) without forming the m x n kernel matrix.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import asdict, dataclass

import numpy as np
from scipy.stats import norm, rankdata


@dataclass(frozen=True)
class DeLongResult:
    """AUCs of A and B, their difference A - B, its standard error, z statistic and two-sided p-value."""

    auc_a: float
    auc_b: float
    difference: float
    se: float
    z: float | None
    p_value: float | None
    ci_low: float
    ci_high: float
    n_positive: int
    n_negative: int

    def to_dict(self) -> dict[str, float | int | None]:
        return asdict(self)


def structural_components(y_pos: np.ndarray, scores: np.ndarray) -> tuple[float, np.ndarray, np.ndarray]:
    """``(auc, V10, V01)`` for one score vector: the AUC and its per-positive and per-negative components."""
    y = np.asarray(y_pos).astype(bool)
    s = np.asarray(scores, dtype=np.float64)
    x, z = s[y], s[~y]
    m, n = len(x), len(z)
    if m == 0 or n == 0:
        raise ValueError("DeLong's test needs both positive and negative samples")
    rank_all = rankdata(np.concatenate([x, z]))  # midranks: ties share the average rank
    rank_x, rank_z = rankdata(x), rankdata(z)
    v10 = (rank_all[:m] - rank_x) / n  # negatives strictly below x_i, plus half the ties
    v01 = 1.0 - (rank_all[m:] - rank_z) / m
    auc = float(v10.mean())
    return auc, v10, v01


def delong_test(
    y_pos: Sequence[int] | np.ndarray,
    scores_a: Sequence[float] | np.ndarray,
    scores_b: Sequence[float] | np.ndarray,
    *,
    level: float = 0.95,
) -> DeLongResult:
    """Compare the AUCs of two scores on the same samples (``y_pos`` 1 = positive).

    The p-value is two-sided under the normal approximation; the interval is the Wald interval of the
    difference ``auc_a - auc_b``. Identical scores give difference 0, standard error 0 and p-value 1.
    """
    y = np.asarray(y_pos).astype(int)
    a, b = np.asarray(scores_a, dtype=np.float64), np.asarray(scores_b, dtype=np.float64)
    if not (y.ndim == a.ndim == b.ndim == 1 and len(y) == len(a) == len(b)):
        raise ValueError("y_pos, scores_a and scores_b must be 1-D and of equal length")
    if not np.all(np.isin(y, (0, 1))):
        raise ValueError("y_pos must contain only 0 (negative) and 1 (positive)")
    auc_a, v10_a, v01_a = structural_components(y, a)
    auc_b, v10_b, v01_b = structural_components(y, b)
    m, n = len(v10_a), len(v01_a)
    s10 = np.cov(np.vstack([v10_a, v10_b])) if m > 1 else np.zeros((2, 2))
    s01 = np.cov(np.vstack([v01_a, v01_b])) if n > 1 else np.zeros((2, 2))
    cov = s10 / m + s01 / n
    variance = float(cov[0, 0] + cov[1, 1] - 2 * cov[0, 1])
    se = float(np.sqrt(max(variance, 0.0)))
    diff = auc_a - auc_b
    if se > 0:
        z = diff / se
        p_value = float(2 * norm.sf(abs(z)))
    else:
        # No variance to test against: equal AUCs agree (p = 1); unequal ones on too few cases to estimate a
        # variance (one positive or one negative) cannot be tested, and p = 0 would claim certainty.
        z = None
        p_value = 1.0 if diff == 0 else None
    half = float(norm.ppf((1 + level) / 2)) * se
    return DeLongResult(
        auc_a=auc_a,
        auc_b=auc_b,
        difference=float(diff),
        se=se,
        z=None if z is None else float(z),
        p_value=p_value,
        ci_low=float(diff - half),
        ci_high=float(diff + half),
        n_positive=m,
        n_negative=n,
    )
