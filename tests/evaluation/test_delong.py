"""DeLong's test: a worked example by hand, and agreement with a slow, independent implementation that builds
the Mann-Whitney kernel matrix and its structural components explicitly."""

from __future__ import annotations

import numpy as np
import pytest
from scipy.stats import norm
from sklearn.metrics import roc_auc_score

from xvision.evaluation.delong import delong_test, structural_components


def slow_delong(y: np.ndarray, a: np.ndarray, b: np.ndarray) -> tuple[float, float, float]:
    """(auc_a - auc_b, variance of the difference, p-value) straight from DeLong et al. (1988)."""

    def components(scores: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        x, z = scores[y == 1], scores[y == 0]
        psi = (x[:, None] > z[None, :]) + 0.5 * (x[:, None] == z[None, :])  # m x n kernel matrix
        return psi.mean(axis=1), psi.mean(axis=0)  # V10 per positive, V01 per negative

    (v10a, v01a), (v10b, v01b) = components(a), components(b)
    m, n = len(v10a), len(v01a)

    def cov(u: np.ndarray, v: np.ndarray) -> float:
        return float(np.sum((u - u.mean()) * (v - v.mean())) / (len(u) - 1))

    var_a = cov(v10a, v10a) / m + cov(v01a, v01a) / n
    var_b = cov(v10b, v10b) / m + cov(v01b, v01b) / n
    covariance = cov(v10a, v10b) / m + cov(v01a, v01b) / n
    diff = v10a.mean() - v10b.mean()
    variance = var_a + var_b - 2 * covariance
    return diff, variance, float(2 * norm.sf(abs(diff) / np.sqrt(variance)))


# Six images: positives first. Worked by hand below.
Y = np.array([1, 1, 1, 0, 0, 0])
A = np.array([0.9, 0.8, 0.4, 0.7, 0.4, 0.1])
B = np.array([0.6, 0.9, 0.3, 0.2, 0.5, 0.4])


def test_worked_example() -> None:
    # A: V10 = [1, 1, 1/2] (0.4 ties the negative 0.4), V01 = [2/3, 5/6, 1]; AUC_A = 5/6.
    # B: V10 = [1, 1, 1/3], V01 = [1, 2/3, 2/3]; AUC_B = 7/9.
    # S10 = [[1/12, 1/9], [1/9, 4/27]], S01 = [[1/36, -1/36], [-1/36, 1/27]]; S = S10/3 + S01/3
    # Var(A - B) = 1/27 + 5/81 - 2/36 = 7/162; z = (1/18) / sqrt(7/162) = 1/sqrt(14).
    auc, v10, v01 = structural_components(Y, A)
    assert auc == pytest.approx(5 / 6)
    assert v10 == pytest.approx([1, 1, 0.5]) and v01 == pytest.approx([2 / 3, 5 / 6, 1])
    result = delong_test(Y, A, B)
    assert result.auc_a == pytest.approx(5 / 6) and result.auc_b == pytest.approx(7 / 9)
    assert result.difference == pytest.approx(1 / 18)
    assert result.se == pytest.approx(np.sqrt(7 / 162))
    assert result.z == pytest.approx(1 / np.sqrt(14))
    assert result.p_value == pytest.approx(2 * norm.sf(1 / np.sqrt(14)))
    assert result.p_value == pytest.approx(0.7893, abs=1e-4)
    assert result.n_positive == 3 and result.n_negative == 3


@pytest.mark.parametrize("seed", range(6))
def test_matches_the_slow_implementation(seed: int) -> None:
    rng = np.random.default_rng(seed)
    n = int(rng.integers(20, 120))
    y = rng.integers(0, 2, n)
    y[:2] = [0, 1]
    a = np.round(rng.normal(size=n) + 1.2 * y, 1)  # rounded: ties within and across classes
    b = np.round(0.6 * a + rng.normal(size=n) + 0.3 * y, 1)  # correlated with a
    diff, variance, p_value = slow_delong(y, a, b)
    result = delong_test(y, a, b)
    assert result.auc_a == pytest.approx(roc_auc_score(y, a))
    assert result.auc_b == pytest.approx(roc_auc_score(y, b))
    assert result.difference == pytest.approx(diff)
    assert result.se**2 == pytest.approx(variance)
    assert result.p_value == pytest.approx(p_value)
    half = norm.ppf(0.975) * np.sqrt(variance)
    assert (result.ci_low, result.ci_high) == pytest.approx((diff - half, diff + half))


def test_identical_scores_and_swapped_models() -> None:
    rng = np.random.default_rng(0)
    y = rng.integers(0, 2, 50)
    a = rng.normal(size=50) + y
    same = delong_test(y, a, a)
    assert same.difference == 0 and same.se == 0 and same.p_value == 1.0 and same.z is None
    b = rng.normal(size=50) + 0.5 * y
    ab, ba = delong_test(y, a, b), delong_test(y, b, a)
    assert ab.difference == pytest.approx(-ba.difference) and ab.p_value == pytest.approx(ba.p_value)
    # Monotone transforms change no AUC, hence no test result.
    assert delong_test(y, np.exp(a), b).p_value == pytest.approx(ab.p_value)


def test_needs_both_classes_and_matching_lengths() -> None:
    with pytest.raises(ValueError, match="both"):
        delong_test([1, 1, 1], [0.1, 0.2, 0.3], [0.3, 0.2, 0.1])
    with pytest.raises(ValueError, match="equal length"):
        delong_test([0, 1], [0.1, 0.2], [0.3])


def test_unequal_aucs_with_no_variance_have_no_p_value() -> None:
    # One positive, one negative: each model's AUC is 0 or 1 and no variance can be estimated. p = 0 (certainty)
    # was printed before; there is no test here.
    y = np.array([1, 0])
    result = delong_test(y, np.array([0.9, 0.1]), np.array([0.1, 0.9]))
    assert result.difference == 1.0 and result.se == 0 and result.z is None and result.p_value is None
    from xvision.cli.compare_cmd import format_comparison

    record = {"difference": {"value": 1.0, "ci_low": 1.0, "ci_high": 1.0}, "bootstrap": {"level": 0.95}}
    record |= {"split": "val", "n": 2, "auc_a": 1.0, "auc_b": 0.0, "delong": result.to_dict()}
    record["bootstrap"] |= {"n_resamples": 10, "n_units": 2, "unit": "image"}
    assert "p = n/a (too few cases" in format_comparison(record)
