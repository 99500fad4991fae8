"""The accuracy guard's comparison: per image for ordinary features, over the sample for one-number ones."""

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
