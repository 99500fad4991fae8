"""The accuracy guard's comparison: per image for ordinary features, by correlation over the sample for
one-number ones."""

from __future__ import annotations

import numpy as np

from xvision.features.guard import evaluate_guard


def test_one_bad_image_fails_the_guard_for_wide_features() -> None:
    rng = np.random.default_rng(0)
    reference = rng.normal(size=(6, 64))
    fast = reference + rng.normal(scale=1e-4, size=reference.shape)
    assert evaluate_guard(fast, reference).passed
    fast[3] = rng.normal(size=64)  # one image's features are wrong
    result = evaluate_guard(fast, reference)
    assert not result.passed and result.n == 6


def test_a_one_number_feature_is_judged_over_the_sample_not_by_its_sign() -> None:
    reference = np.array([[2.5], [-1.0], [1e-7], [0.8], [-3.0]])
    close = reference + np.array([[1e-4], [-1e-4], [-2e-7], [1e-4], [0.0]])  # one sign flips at 1e-7
    result = evaluate_guard(close, reference)
    assert result.passed and result.cosine_min > 0.99999 and result.n == 5
    shuffled = reference[[4, 2, 0, 1, 3]]  # every sign may agree by chance, the values do not
    assert not evaluate_guard(shuffled, reference).passed


def test_a_score_error_large_next_to_its_spread_fails_though_the_raw_values_agree() -> None:
    """What bf16 did to the `best` detectors' score: far from zero, so the raw values of a sample agree in
    direction (cosine above 0.999), but moved by up to a third of the spread between images."""
    rng = np.random.default_rng(1)
    reference = rng.normal(loc=-12.0, scale=1.45, size=(8, 1))
    moved = reference + rng.normal(scale=0.2, size=reference.shape)
    raw = float((moved * reference).sum() / np.linalg.norm(moved) / np.linalg.norm(reference))
    assert raw > 0.999  # the old comparison passed this
    result = evaluate_guard(moved, reference)
    assert result.measure == "correlation" and not result.passed and 0.9 < result.cosine_min < 0.999
    assert "correlation" in result.describe() and "8 images" in result.describe()
    rounding = reference + rng.normal(scale=1e-4, size=reference.shape)
    assert evaluate_guard(rounding, reference).passed


def test_a_score_on_too_few_or_identical_images_is_compared_raw() -> None:
    two = np.array([[3.0], [-2.0]])
    assert evaluate_guard(two * 1.5, two).measure == "cosine"  # two centred values mirror each other
    same = np.full((5, 1), 4.0)
    result = evaluate_guard(same + 1e-6, same)
    assert result.measure == "cosine" and result.passed
