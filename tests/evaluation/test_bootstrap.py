"""Bootstrap intervals: weighted metrics match scikit-learn, resamples respect classes and groups, and the
AUC interval covers the true AUC of a simulated score distribution about 95% of the time."""

from __future__ import annotations

import json

import numpy as np
import pytest
from scipy.stats import norm
from sklearn.metrics import precision_score, recall_score, roc_auc_score

from xvision.evaluation.bootstrap import (
    BootstrapConfig,
    _SortedScores,
    bootstrap_samples,
    group_codes,
    resample_weights,
)
from xvision.evaluation.scoring import score_predictions


def binormal(rng: np.random.Generator, n_pos: int, n_neg: int, d: float) -> tuple[np.ndarray, np.ndarray]:
    """Scores N(d, 1) for positives and N(0, 1) for negatives: true AUC = Phi(d / sqrt 2)."""
    y = np.r_[np.ones(n_pos, dtype=int), np.zeros(n_neg, dtype=int)]
    return y, rng.normal(size=n_pos + n_neg) + d * y


def as_proba(scores: np.ndarray) -> np.ndarray:
    p = 1 / (1 + np.exp(-scores))
    return np.column_stack([1 - p, p])


def test_weighted_auc_matches_sklearn_with_ties_and_weights() -> None:
    rng = np.random.default_rng(0)
    y = rng.integers(0, 2, 200)
    scores = np.round(rng.normal(size=200) + y, 1)  # many ties
    sorted_scores = _SortedScores(scores, y == 1)
    W = rng.integers(0, 4, size=(5, 200)).astype(float)
    expected = [roc_auc_score(y, scores, sample_weight=w) for w in W]
    assert sorted_scores.auc(W) == pytest.approx(expected, abs=1e-12)
    assert sorted_scores.auc(np.ones((1, 200)))[0] == pytest.approx(roc_auc_score(y, scores))


def test_resamples_keep_class_counts_and_are_seeded() -> None:
    y = np.array([0] * 30 + [1] * 10)
    blocks = list(resample_weights(y, group_codes(None, 40), n_resamples=300, seed=7))
    W = np.vstack(blocks)
    assert W.shape == (300, 40)
    assert np.all(W[:, y == 0].sum(axis=1) == 30) and np.all(W[:, y == 1].sum(axis=1) == 10)
    again = np.vstack(list(resample_weights(y, group_codes(None, 40), n_resamples=300, seed=7)))
    other = np.vstack(list(resample_weights(y, group_codes(None, 40), n_resamples=300, seed=8)))
    assert np.array_equal(W, again) and not np.array_equal(W, other)


def test_resamples_draw_whole_groups() -> None:
    groups = [f"P{i // 3}" for i in range(30)]  # 10 patients x 3 images
    y = np.array([(i // 3) % 2 for i in range(30)])
    W = np.vstack(list(resample_weights(y, group_codes(groups, 30), n_resamples=200, seed=0)))
    per_patient = W.reshape(200, 10, 3)
    assert np.all(per_patient == per_patient[:, :, :1])  # the images of a patient share one count
    assert np.all(W[:, y == 1].sum(axis=1) == 15)  # 5 positive patients drawn per resample, 3 images each


def test_images_without_group_are_their_own_group() -> None:
    codes = group_codes(["a", "", None, "a", "b"], 5)
    assert codes[0] == codes[3] and len(set(codes.tolist())) == 4


def test_resampled_metrics_match_sklearn_on_one_resample() -> None:
    rng = np.random.default_rng(3)
    y, s = binormal(rng, 40, 60, 1.0)
    proba = as_proba(s)
    y_pred = (proba[:, 1] >= 0.5).astype(int)
    samples = bootstrap_samples(
        y, proba, y_pred, positive=1, groups=group_codes(None, 100), config=BootstrapConfig(n_resamples=1, seed=5)
    )
    w = next(resample_weights(y, group_codes(None, 100), n_resamples=1, seed=5))[0]
    assert samples["roc_auc"][0] == pytest.approx(roc_auc_score(y, s, sample_weight=w))
    assert samples["precision/1"][0] == pytest.approx(precision_score(y, y_pred, sample_weight=w))
    assert samples["sensitivity"][0] == pytest.approx(recall_score(y, y_pred, sample_weight=w))
    assert samples["specificity"][0] == pytest.approx(recall_score(y, y_pred, pos_label=0, sample_weight=w))


def test_auc_interval_covers_the_true_auc_about_95_percent_of_the_time() -> None:
    d = 1.0
    true_auc = norm.cdf(d / np.sqrt(2))  # 0.760
    rng = np.random.default_rng(2024)
    config = BootstrapConfig(n_resamples=500, seed=0)
    covered, widths = [], []
    for _ in range(200):
        y, s = binormal(rng, 60, 90, d)
        samples = bootstrap_samples(
            y, as_proba(s), (s > 0).astype(int), positive=1, groups=group_codes(None, 150), config=config
        )
        low, high = np.quantile(samples["roc_auc"], [0.025, 0.975])
        covered.append(low <= true_auc <= high)
        widths.append(high - low)
    coverage = float(np.mean(covered))
    assert 0.90 <= coverage <= 0.99, coverage
    assert 0.1 < float(np.mean(widths)) < 0.2  # sqrt(var) of AUC ~0.04 here: width ~0.16


def test_2000_resamples_of_300_images_are_drawn_by_patient() -> None:
    # How long they take is measured in benchmarks/evaluation_speed.py, not here.
    rng = np.random.default_rng(0)
    y, s = binormal(rng, 100, 200, 1.0)
    groups = [f"P{i // 2}" for i in range(300)]
    metrics = score_predictions(y, as_proba(s), ["normal", "nodule"], groups=groups)
    assert metrics["bootstrap"]["n_resamples"] == 2000 and metrics["bootstrap"]["unit"] == "group"
    assert metrics["bootstrap"]["n_units"] == 150


@pytest.mark.parametrize("k", [2, 3])
def test_intervals_contain_their_point_estimates_and_are_plain_json(k: int) -> None:
    rng = np.random.default_rng(k)
    y = rng.integers(0, k, 120)
    logits = rng.normal(size=(120, k)) + 1.2 * np.eye(k)[y]
    proba = np.exp(logits) / np.exp(logits).sum(axis=1, keepdims=True)
    classes = [f"c{i}" for i in range(k)]
    m = score_predictions(y, proba, classes, bootstrap=BootstrapConfig(n_resamples=400, seed=1))
    intervals = m["intervals"]
    flat = [intervals["roc_auc"], intervals["accuracy"], intervals["brier"]]
    flat += [intervals[name][c] for name in ("precision", "recall") for c in classes]
    if k == 2:
        flat += [intervals["sensitivity"], intervals["specificity"]]
        assert intervals["sensitivity"]["value"] == m["sensitivity"]
    for entry in flat:
        assert set(entry) >= {"value", "ci_low", "ci_high"}
        assert entry["ci_low"] <= entry["value"] <= entry["ci_high"]
    assert intervals["roc_auc"]["value"] == m["roc_auc"] and intervals["accuracy"]["value"] == m["accuracy"]
    assert json.loads(json.dumps(m)) == m
    assert ("roc_band" in m) == (k == 2)


def test_undefined_resamples_are_counted_not_averaged() -> None:
    # One positive prediction only: many resamples predict nothing positive, so precision is undefined there.
    y = np.array([0] * 10 + [1] * 10)
    p = np.full(20, 0.2)
    p[10] = 0.9
    m = score_predictions(y, as_proba(np.log(p / (1 - p))), ["a", "b"], bootstrap=BootstrapConfig(n_resamples=300))
    entry = m["intervals"]["precision"]["b"]
    assert entry["value"] == 1.0 and entry["n_undefined"] > 0 and entry["ci_low"] == entry["ci_high"] == 1.0


def test_few_cases_per_class_get_a_caution_and_enough_do_not() -> None:
    # Four perfectly separated films per class: every resample is perfectly separated, so the AUC interval
    # is [1, 1]. That is the bootstrap's blind spot, and metrics.json must say so.
    y = np.array([0] * 4 + [1] * 4)
    scores = np.r_[np.linspace(-2, -1, 4), np.linspace(1, 2, 4)]
    m = score_predictions(y, as_proba(scores), ["normal", "nodule"], bootstrap=BootstrapConfig(n_resamples=200))
    auc = m["intervals"]["roc_auc"]
    assert auc["ci_low"] == auc["ci_high"] == 1.0
    assert "normal 4, nodule 4" in m["bootstrap"]["caution"] and "zero width" in m["bootstrap"]["caution"]

    # Groups are the units: 12 images of 3 patients per class is still three cases per class.
    y12 = np.repeat([0, 1], 12)
    groups = [f"p{i // 4}" for i in range(24)]
    scores12 = np.random.default_rng(0).normal(size=24) + y12
    m = score_predictions(y12, as_proba(scores12), ["a", "b"], groups=groups, bootstrap=BootstrapConfig(50))
    assert "a 3, b 3" in m["bootstrap"]["caution"]

    y = np.array([0] * 40 + [1] * 10)  # ten positives is enough
    rng = np.random.default_rng(1)
    m = score_predictions(y, as_proba(rng.normal(size=50) + y), ["a", "b"], bootstrap=BootstrapConfig(50))
    assert "caution" not in m["bootstrap"]


def test_the_resampled_unit_is_named_the_same_way_by_every_command() -> None:
    from xvision.evaluation.bootstrap import group_codes, resampled_unit
    from xvision.evaluation.compare import compare_scores

    one_film_each = group_codes(["p1", "p2", "p3", "p4"], 4)  # JSRT: a group per patient, one film each
    assert resampled_unit(one_film_each) == "image"
    assert resampled_unit(group_codes(["p1", "p1", "p2", "p3"], 4)) == "group"
    assert resampled_unit(group_codes(None, 4)) == "image"
    y = np.array([0, 1] * 10)
    proba = np.column_stack([1 - np.linspace(0, 1, 20), np.linspace(0, 1, 20)])
    config = BootstrapConfig(n_resamples=50, seed=0)
    result = compare_scores(y, proba, proba[::-1], ["a", "b"], "b", [f"p{i}" for i in range(20)], config)
    assert result["bootstrap"]["unit"] == "image"  # was "group" here while cv said "image" for the same set
