"""compute_metrics against hand-computed cases, plus consistency and JSON checks."""

from __future__ import annotations

import json

import numpy as np
import pytest
from sklearn.metrics import accuracy_score, auc, balanced_accuracy_score, roc_auc_score

from xvision.evaluation import compute_metrics, roc_points

CLASSES = ["normal", "nodule"]
# Hand-worked binary case: 4 normals, 2 nodules; P(nodule) per sample.
Y6 = [0, 0, 0, 0, 1, 1]
P_NODULE = np.array([0.1, 0.2, 0.6, 0.7, 0.4, 0.9])
PROBA6 = np.column_stack([1 - P_NODULE, P_NODULE])


def test_binary_case_matches_hand_computation() -> None:
    m = compute_metrics(Y6, PROBA6, CLASSES)
    # argmax predicts [0, 0, 1, 1, 0, 1]
    assert m["n"] == 6
    assert m["classes"] == CLASSES
    assert m["confusion_matrix"] == [[2, 2], [1, 1]]
    assert m["accuracy"] == pytest.approx(3 / 6)
    assert m["precision"] == pytest.approx({"normal": 2 / 3, "nodule": 1 / 3})
    assert m["recall"] == pytest.approx({"normal": 2 / 4, "nodule": 1 / 2})
    assert m["f1"] == pytest.approx({"normal": 4 / 7, "nodule": 0.4})
    assert m["support"] == {"normal": 4, "nodule": 2}
    assert m["balanced_accuracy"] == pytest.approx(0.5)
    # Nodule scores {0.4, 0.9} beat 2 and 4 of the normal scores {0.1, 0.2, 0.6, 0.7}: 6 of 8 pairs.
    assert m["roc_auc"] == pytest.approx(6 / 8)
    assert m["positive"] == "nodule"
    assert m["sensitivity"] == pytest.approx(1 / 2)
    assert m["specificity"] == pytest.approx(2 / 4)
    assert m["threshold"] is None


def test_threshold_moves_the_decision_and_is_recorded() -> None:
    high = compute_metrics(Y6, PROBA6, CLASSES, threshold=0.65)  # predicts [0, 0, 0, 1, 0, 1]
    assert high["threshold"] == 0.65
    assert high["confusion_matrix"] == [[3, 1], [1, 1]]
    assert high["sensitivity"] == pytest.approx(0.5)
    assert high["specificity"] == pytest.approx(0.75)

    at = compute_metrics(Y6, PROBA6, CLASSES, threshold=0.4)  # >= : the 0.4 nodule counts as positive
    assert at["confusion_matrix"] == [[2, 2], [0, 2]]
    assert at["sensitivity"] == pytest.approx(1.0)
    assert at["specificity"] == pytest.approx(0.5)

    # The threshold changes decisions, never the AUC.
    assert high["roc_auc"] == at["roc_auc"] == pytest.approx(0.75)


def test_positive_class_can_be_named() -> None:
    m = compute_metrics(Y6, PROBA6, CLASSES, positive="normal", threshold=0.85)
    # P(normal) >= 0.85 only for the first sample: predicts [0, 1, 1, 1, 1, 1]
    assert m["positive"] == "normal"
    assert m["confusion_matrix"] == [[1, 3], [0, 2]]
    assert m["sensitivity"] == pytest.approx(1 / 4)
    assert m["specificity"] == pytest.approx(1.0)
    assert m["roc_auc"] == pytest.approx(0.75)  # AUC is symmetric in the choice of positive class


def test_three_classes() -> None:
    y = [0, 0, 1, 1, 2, 2]
    proba = np.array(
        [
            [0.7, 0.2, 0.1],  # a -> a
            [0.3, 0.4, 0.3],  # a -> b
            [0.1, 0.8, 0.1],  # b -> b
            [0.2, 0.3, 0.5],  # b -> c
            [0.1, 0.1, 0.8],  # c -> c
            [0.5, 0.1, 0.4],  # c -> a
        ]
    )
    m = compute_metrics(y, proba, ["a", "b", "c"])
    assert m["confusion_matrix"] == [[1, 1, 0], [0, 1, 1], [1, 0, 1]]
    assert m["accuracy"] == pytest.approx(0.5)
    assert m["precision"] == pytest.approx({"a": 0.5, "b": 0.5, "c": 0.5})
    assert m["recall"] == pytest.approx({"a": 0.5, "b": 0.5, "c": 0.5})
    # One-vs-rest, each class's positives beat 7 of 8 (positive, negative) pairs.
    assert m["roc_auc_per_class"] == pytest.approx({"a": 7 / 8, "b": 7 / 8, "c": 7 / 8})
    assert m["roc_auc"] == pytest.approx(7 / 8)
    assert m["roc_auc"] == pytest.approx(roc_auc_score(y, proba, multi_class="ovr", average="macro"))
    assert "sensitivity" not in m and "threshold" not in m


def test_single_class_in_y_true_gives_no_auc() -> None:
    m = compute_metrics([1, 1, 1], np.array([[0.2, 0.8], [0.6, 0.4], [0.1, 0.9]]), CLASSES)
    assert m["roc_auc"] is None
    assert "nodule" in m["roc_auc_note"]
    assert m["specificity"] is None  # no negatives to be specific about
    assert m["sensitivity"] == pytest.approx(2 / 3)
    assert m["balanced_accuracy"] == pytest.approx(2 / 3)  # averaged over the classes present
    json.dumps(m)


def test_missing_class_among_three_gives_no_auc() -> None:
    proba = np.full((4, 3), 1 / 3)
    m = compute_metrics([0, 1, 0, 1], proba, ["a", "b", "c"])
    assert m["roc_auc"] is None
    assert "'c'" in m["roc_auc_note"]
    assert m["support"]["c"] == 0
    assert m["recall"]["c"] is None  # undefined, not a measured 0
    assert m["precision"]["c"] is None and m["f1"]["c"] is None  # never predicted, never present


@pytest.mark.parametrize("seed", range(8))
@pytest.mark.parametrize("k", [2, 3, 5])
def test_metrics_are_internally_consistent(seed: int, k: int) -> None:
    rng = np.random.default_rng(seed)
    n = int(rng.integers(5, 60))
    y = rng.integers(0, k, size=n)
    logits = rng.normal(size=(n, k)) + 1.5 * np.eye(k)[y] * rng.random()
    proba = np.exp(logits) / np.exp(logits).sum(axis=1, keepdims=True)
    m = compute_metrics(y, proba.astype(np.float32), [f"c{i}" for i in range(k)])

    cm = np.array(m["confusion_matrix"])
    assert cm.shape == (k, k) and cm.sum() == n == m["n"]
    y_pred = proba.argmax(axis=1)
    assert m["accuracy"] == pytest.approx(np.trace(cm) / n)
    assert m["accuracy"] == pytest.approx(accuracy_score(y, y_pred))
    assert m["balanced_accuracy"] == pytest.approx(balanced_accuracy_score(y, y_pred))
    for i, name in enumerate(m["classes"]):
        row, col = cm[i].sum(), cm[:, i].sum()
        assert m["support"][name] == row == int(np.sum(y == i))
        assert m["recall"][name] == (pytest.approx(cm[i, i] / row) if row else None)
        assert m["precision"][name] == (pytest.approx(cm[i, i] / col) if col else None)
        assert m["f1"][name] == (pytest.approx(2 * cm[i, i] / (row + col)) if row + col else None)
    if k == 2:
        assert m["sensitivity"] == (m["recall"]["c1"] if m["support"]["c1"] else None)
        assert m["specificity"] == (m["recall"]["c0"] if m["support"]["c0"] else None)


def test_a_class_never_predicted_has_undefined_precision_not_zero(capsys) -> None:
    from xvision.cli.evaluate_cmd import format_metrics

    proba = np.array([[0.9, 0.1], [0.8, 0.2], [0.7, 0.3], [0.6, 0.4]])
    m = compute_metrics([0, 1, 0, 1], proba, ["normal", "nodule"], threshold=0.5)
    assert m["precision"]["nodule"] is None and m["recall"]["nodule"] == 0.0 and m["f1"]["nodule"] == 0.0
    assert m["precision"]["normal"] == pytest.approx(0.5)
    json.loads(json.dumps(m, allow_nan=False))
    table = format_metrics({**m, "split": "test"})
    assert ["nodule", "n/a", "0.000", "0.000", "2"] in [line.split() for line in table.splitlines()]


def test_result_is_plain_json() -> None:
    y = np.array([0, 1, 1, 0], dtype=np.int32)
    proba = np.array([[0.9, 0.1], [0.2, 0.8], [0.6, 0.4], [0.5, 0.5]], dtype=np.float32)
    m = compute_metrics(y, proba, ("neg", "pos"), threshold=0.5)
    assert json.loads(json.dumps(m)) == m

    def plain(value: object) -> bool:
        if isinstance(value, dict):
            return all(isinstance(key, str) and plain(v) for key, v in value.items())
        if isinstance(value, list):
            return all(plain(v) for v in value)
        return value is None or type(value) in (int, float, str, bool)

    assert plain(m)


@pytest.mark.parametrize(
    ("y", "proba", "classes", "match"),
    [
        ([0, 1], np.array([[0.5, 0.5]]), CLASSES, "shape"),
        ([0, 1], np.array([[0.5, 0.5, 0.0], [0.5, 0.5, 0.0]]), CLASSES, "shape"),
        ([0, 1], np.array([0.5, 0.5]), CLASSES, "2-D"),
        ([0, 1], np.array([[0.5, 0.4], [0.3, 0.7]]), CLASSES, "sum to 1"),
        ([0, 1], np.array([[2.0, -1.0], [0.3, 0.7]]), CLASSES, r"\[0, 1\]"),
        ([0, 1], np.array([[np.nan, 0.5], [0.3, 0.7]]), CLASSES, "NaN"),
        ([0, 2], np.array([[0.5, 0.5], [0.3, 0.7]]), CLASSES, "outside"),
        ([0, -1], np.array([[0.5, 0.5], [0.3, 0.7]]), CLASSES, "outside"),
        ([0, 0.5], np.array([[0.5, 0.5], [0.3, 0.7]]), CLASSES, "integer"),
        (["normal", "nodule"], np.array([[0.5, 0.5], [0.3, 0.7]]), CLASSES, "class names\\? pass their positions"),
        ([], np.zeros((0, 2)), CLASSES, "empty"),
        ([0, 1], np.array([[0.5, 0.5], [0.3, 0.7]]), ["a", "a"], "unique"),
        ([0], np.array([[1.0]]), ["a"], "two classes"),
    ],
)
def test_bad_inputs_raise_value_error(y: list, proba: np.ndarray, classes: list[str], match: str) -> None:
    with pytest.raises(ValueError, match=match):
        compute_metrics(y, proba, classes)


def test_bad_positive_or_threshold() -> None:
    with pytest.raises(ValueError, match="not one of"):
        compute_metrics(Y6, PROBA6, CLASSES, positive="effusion")
    with pytest.raises(ValueError, match=r"\[0, 1\]"):
        compute_metrics(Y6, PROBA6, CLASSES, threshold=1.5)
    three = np.full((6, 3), 1 / 3)
    with pytest.raises(ValueError, match="two classes"):
        compute_metrics([0, 1, 2, 0, 1, 2], three, ["a", "b", "c"], threshold=0.5)


def test_rows_summing_to_one_within_float32_rounding_are_accepted() -> None:
    proba = np.array([[0.3333, 0.3333, 0.3333], [0.2, 0.7, 0.1], [0.1, 0.1, 0.8]])
    m = compute_metrics([0, 1, 2], proba, ["a", "b", "c"])
    assert m["roc_auc"] == pytest.approx(1.0)


def test_roc_points() -> None:
    fpr, tpr, thresholds = roc_points([0, 0, 1, 1], [0.1, 0.4, 0.35, 0.8])
    assert fpr[0] == 0 and tpr[0] == 0 and fpr[-1] == 1 and tpr[-1] == 1
    assert np.all(np.diff(fpr) >= 0) and np.all(np.diff(tpr) >= 0)
    assert len(fpr) == len(tpr) == len(thresholds)
    assert auc(fpr, tpr) == pytest.approx(0.75)
    with pytest.raises(ValueError, match="both"):
        roc_points([1, 1], [0.2, 0.3])
    with pytest.raises(ValueError, match="equal length"):
        roc_points([0, 1], [0.2])


def test_sensitivity_at_90_specificity_is_read_off_the_roc_curve() -> None:
    negatives = np.arange(10) / 10  # 0.0 .. 0.9: keeping specificity >= 0.9 lets only the 0.9 one through
    positives = np.array([0.95, 0.85, 0.5, 0.2])
    scores = np.r_[negatives, positives]
    y = np.r_[np.zeros(10, int), np.ones(4, int)]
    proba = np.stack([1 - scores, scores], axis=1)
    metrics = compute_metrics(y, proba, ["normal", "nodule"], threshold=0.5)
    assert metrics["sensitivity_at_90_specificity"] == pytest.approx(0.5)  # 0.95 and 0.85 above the cut
    assert metrics["sensitivity"] == pytest.approx(0.75)  # the run's own threshold is another matter
    flipped = compute_metrics(y, proba[:, ::-1], ["normal", "nodule"], positive="normal")
    # "normal" positive: its 4 negatives score up to 0.95, so no normal may pass, and none scores above 0.95
    assert flipped["sensitivity_at_90_specificity"] == 0.0
