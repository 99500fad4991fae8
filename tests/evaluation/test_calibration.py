"""ECE, Brier score and temperature scaling on constructed cases."""

from __future__ import annotations

import numpy as np
import pytest
from sklearn.metrics import brier_score_loss

from xvision.evaluation.calibration import (
    apply_temperature,
    brier_score,
    calibration_summary,
    expected_calibration_error,
    fit_temperature,
    negative_log_likelihood,
    reliability_bins,
)


def two_class(p_positive: list[float]) -> np.ndarray:
    p = np.asarray(p_positive, dtype=float)
    return np.column_stack([1 - p, p])


def test_ece_is_zero_when_every_bin_is_calibrated() -> None:
    # 10 images at 0.2 (2 positive), 4 at 0.5 (2 positive), 10 at 0.7 (7 positive).
    p = [0.2] * 10 + [0.5] * 4 + [0.7] * 10
    y = [1] * 2 + [0] * 8 + [1] * 2 + [0] * 2 + [1] * 7 + [0] * 3
    assert expected_calibration_error(y, two_class(p), positive=1) == pytest.approx(0.0, abs=1e-12)


def test_ece_weights_each_bin_by_its_size() -> None:
    # 10 images at 0.9 with 6 positives (gap 0.3) and 10 at 0.1 with 1 positive (calibrated): ECE = 0.15.
    p = [0.9] * 10 + [0.1] * 10
    y = [1] * 6 + [0] * 4 + [1] * 1 + [0] * 9
    assert expected_calibration_error(y, two_class(p), positive=1) == pytest.approx(0.15)
    bins = reliability_bins(y, two_class(p), positive=1)
    assert [b["n"] for b in bins] == [0, 10, 0, 0, 0, 0, 0, 0, 0, 10]  # 0.1 opens the second bin
    assert bins[9]["mean_predicted"] == pytest.approx(0.9) and bins[9]["observed"] == pytest.approx(0.6)
    assert bins[0]["mean_predicted"] is None


def test_probability_one_lands_in_the_last_bin_and_the_positive_class_can_be_either() -> None:
    bins = reliability_bins([1, 0], two_class([1.0, 0.0]), positive=1)
    assert bins[-1]["n"] == 1 and bins[0]["n"] == 1
    # Scoring the other class as positive mirrors the bins; the ECE stays the same.
    p, y = [0.9] * 10 + [0.3] * 10, [1] * 6 + [0] * 4 + [1] * 5 + [0] * 5
    assert expected_calibration_error(y, two_class(p), positive=0) == pytest.approx(
        expected_calibration_error(y, two_class(p), positive=1)
    )


def test_a_probability_on_a_bin_edge_opens_the_upper_bin() -> None:
    edges = [k / 10 for k in range(1, 10)]  # 0.1 ... 0.9, each the lower edge of a bin
    bins = reliability_bins([1] * 9, two_class(edges), positive=1)
    assert [b["n"] for b in bins] == [0] + [1] * 9
    assert all(b["lower"] == b["mean_predicted"] for b in bins[1:])


def test_multiclass_ece_uses_top_label_confidence() -> None:
    proba = np.array([[0.8, 0.1, 0.1]] * 5 + [[0.2, 0.6, 0.2]] * 5)
    y = [0, 0, 0, 0, 1] + [1, 1, 1, 0, 2]  # 80% and 60% correct: perfectly calibrated
    assert expected_calibration_error(y, proba, positive=None) == pytest.approx(0.0, abs=1e-12)
    y_bad = [0] * 5 + [0] * 5  # 100% then 0% correct: gaps 0.2 and 0.6
    assert expected_calibration_error(y_bad, proba, positive=None) == pytest.approx(0.4)


def test_brier_score() -> None:
    assert brier_score([1, 0], two_class([0.9, 0.2]), positive=1) == pytest.approx((0.1**2 + 0.2**2) / 2)
    rng = np.random.default_rng(0)
    p, y = rng.random(50), rng.integers(0, 2, 50)
    assert brier_score(y, two_class(p), positive=1) == pytest.approx(brier_score_loss(y, p))
    # More classes: the sum over classes, e.g. a confident wrong answer costs 2.
    assert brier_score([1], np.array([[1.0, 0.0, 0.0]]), positive=None) == pytest.approx(2.0)


def test_summary_names_what_was_binned() -> None:
    summary = calibration_summary([0, 1], two_class([0.3, 0.8]), ["normal", "nodule"], positive=1)
    assert summary["binned"] == "p(nodule) vs fraction nodule"
    assert set(summary) == {"ece", "brier", "n_bins", "binned", "bins"} and len(summary["bins"]) == 10


def test_temperature_undoes_overconfidence_and_keeps_the_ranking() -> None:
    rng = np.random.default_rng(1)
    logits = rng.normal(scale=1.5, size=(4000, 2))
    calibrated = np.exp(logits) / np.exp(logits).sum(axis=1, keepdims=True)
    y = (rng.random(4000) < calibrated[:, 1]).astype(int)  # labels drawn from the calibrated probabilities
    overconfident = apply_temperature(calibrated, 1 / 3)  # logits x 3
    fit = fit_temperature(y[:2000], overconfident[:2000])
    assert fit["temperature"] == pytest.approx(3.0, rel=0.15)
    assert fit["nll_after"] < fit["nll_before"]
    rescaled = apply_temperature(overconfident[2000:], fit["temperature"])
    held_out = y[2000:]
    assert expected_calibration_error(held_out, rescaled, positive=1) < 0.5 * expected_calibration_error(
        held_out, overconfident[2000:], positive=1
    )
    assert negative_log_likelihood(held_out, rescaled) < negative_log_likelihood(held_out, overconfident[2000:])
    assert np.array_equal(np.argsort(rescaled[:, 1]), np.argsort(overconfident[2000:, 1]))


def test_temperature_can_change_the_multiclass_auc_but_not_the_two_class_one() -> None:
    """What docs/evaluation.md says of `--calibrate temperature`: with more than two classes it keeps every
    image's predicted class but can reorder one class's probabilities across images, so the one-vs-rest AUCs
    move; with two classes it is monotone in p(positive), so the AUC cannot."""
    from sklearn.metrics import roc_auc_score

    proba = np.array([[0.50, 0.49, 0.01], [0.40, 0.30, 0.30], [0.2, 0.6, 0.2], [0.1, 0.1, 0.8]])
    y = np.array([0, 1, 1, 2])
    flatter = apply_temperature(proba, 3.0)
    assert np.array_equal(flatter.argmax(axis=1), proba.argmax(axis=1))  # same decisions
    assert roc_auc_score(y == 1, flatter[:, 1]) == pytest.approx(0.5)  # image 1 fell below image 0 in p(class 1)
    assert roc_auc_score(y == 1, proba[:, 1]) == pytest.approx(0.75)
    assert roc_auc_score(y, flatter, multi_class="ovr") < roc_auc_score(y, proba, multi_class="ovr")

    rng = np.random.default_rng(2)
    binary = two_class(rng.random(50))
    labels = rng.integers(0, 2, size=50)
    for temperature in (0.2, 3.0):
        assert roc_auc_score(labels, apply_temperature(binary, temperature)[:, 1]) == pytest.approx(
            roc_auc_score(labels, binary[:, 1])
        )


def test_temperature_one_is_the_identity() -> None:
    proba = two_class([0.1, 0.5, 0.97]).astype(np.float32)
    assert apply_temperature(proba, 1.0) is proba and apply_temperature(proba, None) is proba
    assert apply_temperature(proba, 1.0 + 1e-12) == pytest.approx(proba, abs=1e-6)
    assert apply_temperature(proba, 2.0).dtype == np.float32


def test_reliability_diagram_and_roc_band_are_drawn(tmp_path) -> None:
    from PIL import Image

    from xvision.evaluation import plot_reliability, plot_roc, score_predictions

    rng = np.random.default_rng(0)
    y = rng.integers(0, 2, 80)
    p = np.clip(0.3 * y + 0.7 * rng.random(80), 0, 1)
    metrics = score_predictions(y, two_class(p), ["normal", "nodule"], positive="nodule")
    bins = metrics["calibration"]["bins"]
    out = plot_reliability(bins, tmp_path / "rel.png", ece=metrics["ece"], brier=metrics["brier"], watermark="X")
    band = metrics["roc_band"]
    assert len(band["fpr"]) == len(band["tpr_low"]) == len(band["tpr_high"]) == 51
    assert all(lo <= hi for lo, hi in zip(band["tpr_low"], band["tpr_high"], strict=True))
    roc = plot_roc(y, p, tmp_path / "roc.png", band=band, auc_interval=(0.6, 0.8), operating_point=(0.2, 0.7))
    for path in (out, roc):
        with Image.open(path) as image:
            assert image.format == "PNG" and image.width > 100
    with pytest.raises(ValueError, match="non-empty"):
        plot_reliability([{"lower": 0.0, "upper": 1.0, "n": 0}], tmp_path / "empty.png")
