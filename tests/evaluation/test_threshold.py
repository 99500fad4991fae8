"""The operating threshold: rules on constructed scores, and in a run it is fitted on validation, never on test."""

from __future__ import annotations

import csv
import json
from pathlib import Path

import numpy as np
import pytest

from xvision.errors import RunError
from xvision.evaluation.evaluate import evaluate_run
from xvision.evaluation.operating import describe_threshold, fit_operating_point
from xvision.evaluation.threshold import ThresholdRule, choose_threshold, decide, default_positive
from xvision.features.dataset import load_split
from xvision.features.store import FeatureStore
from xvision.heads import MLPClassifier
from xvision.inference.bundle import load_bundle
from xvision.training import train_run

# Positives first; thresholds in descending order: 0.8 0.7 0.6 0.35 0.3 0.2 0.15 0.1.
Y = np.array([1, 1, 1, 1, 0, 0, 0, 0])
S = np.array([0.15, 0.6, 0.7, 0.8, 0.1, 0.2, 0.3, 0.35])


def test_parse_rules() -> None:
    assert ThresholdRule.parse("youden") == ThresholdRule("youden")
    assert ThresholdRule.parse("Sensitivity:0.9") == ThresholdRule("sensitivity", 0.9)
    assert str(ThresholdRule.parse("specificity:0.95")) == "specificity:0.95"
    for bad in ("youden:0.5", "sensitivity", "sensitivity:1.5", "sensitivity:x", "f1"):
        with pytest.raises(ValueError, match="youden, sensitivity:T or specificity:T"):
            ThresholdRule.parse(bad)


def test_youden_cuts_midway_between_the_classes_not_at_half() -> None:
    chosen = choose_threshold(Y, S, ThresholdRule("youden"))
    # J = 1 - 0 = 0.75 for cut-offs in (0.35, 0.6]: the middle of the gap is 0.475.
    assert chosen == {"value": pytest.approx(0.475), "rule": "youden", "sensitivity": 0.75, "specificity": 1.0}
    separable = choose_threshold([1, 1, 0, 0], [0.4, 0.45, 0.1, 0.3], ThresholdRule("youden"))
    assert separable["value"] == pytest.approx(0.35) and separable["value"] != 0.5


@pytest.mark.parametrize(
    ("rule", "value", "sensitivity", "specificity"),
    [
        ("sensitivity:1.0", 0.125, 1.0, 0.25),  # must include the 0.15 positive
        ("sensitivity:0.75", 0.475, 0.75, 1.0),  # the most specific cut reaching 3 of 4
        ("specificity:1.0", 0.475, 0.75, 1.0),  # the most sensitive cut keeping every negative out
        ("specificity:0.75", 0.325, 0.75, 0.75),  # one negative (0.35) may pass
    ],
)
def test_target_rules(rule: str, value: float, sensitivity: float, specificity: float) -> None:
    chosen = choose_threshold(Y, S, ThresholdRule.parse(rule))
    assert chosen["value"] == pytest.approx(value)
    assert (chosen["sensitivity"], chosen["specificity"]) == (sensitivity, specificity)
    assert np.mean(S[Y == 1] >= chosen["value"]) == sensitivity
    assert np.mean(S[Y == 0] < chosen["value"]) == specificity


def test_unreachable_specificity_predicts_nothing_positive() -> None:
    chosen = choose_threshold([0, 1], [0.9, 0.2], ThresholdRule.parse("specificity:1.0"))
    assert chosen["value"] > 0.9 and chosen["specificity"] == 1.0 and chosen["sensitivity"] == 0.0
    # A saturated softmax gives exactly 1.0: a cut-off of 1.0 would still call that negative image positive.
    saturated = [1.0, 0.3, 0.97, 0.2]
    chosen = choose_threshold([0, 0, 1, 1], saturated, ThresholdRule.parse("specificity:1.0"))
    proba = np.column_stack([1 - np.array(saturated), saturated])
    decided = decide(proba, positive=1, threshold=chosen["value"])
    assert chosen["specificity"] == 1.0 and not decided.any()  # what was reported is what is decided
    said = describe_threshold({**chosen, "source": "validation split", "n": 4}, "nodule")
    assert said.startswith("nothing is called nodule: no cut-off met the rule (specificity:1 on the validation")


def test_default_positive_is_the_abnormal_class() -> None:
    assert default_positive(["nodule", "normal"]) == "nodule"
    assert default_positive(["Normal", "Pneumonia"]) == "Pneumonia"
    assert default_positive(["abnormal", "normal"]) == "abnormal"
    assert default_positive(["cat", "dog"]) == "dog"


@pytest.mark.parametrize(
    ("finding", "negation"),
    [
        ("nodule", "non-nodule"),  # JSRT's own categories: "non-nodule" came second and was called positive
        ("Nodule", "Non_Nodule"),
        ("cancer", "no cancer"),
        ("effusion", "no  effusion"),
        ("nodule", "nonnodule"),
        ("pneumonia", "pneumonia negative"),
        ("yes", "no"),
    ],
)
def test_default_positive_is_not_the_class_named_as_a_negation(finding: str, negation: str) -> None:
    assert default_positive([finding, negation]) == finding
    assert default_positive([negation, finding]) == finding


def test_default_positive_does_not_read_negations_into_ordinary_names() -> None:
    assert default_positive(["nodule", "notable"]) == "notable"  # neither negates: the second in order
    assert default_positive(["nodule", "nonspecific"]) == "nonspecific"
    # a finding whose name starts with a negation, against "normal": the name like "normal" decides first
    assert default_positive(["non-small cell carcinoma", "normal"]) == "non-small cell carcinoma"
    assert default_positive(["normal", "non-tuberculous mycobacteria"]) == "non-tuberculous mycobacteria"


def test_decide() -> None:
    proba = np.array([[0.7, 0.3], [0.4, 0.6], [0.55, 0.45]])
    assert decide(proba, positive=1, threshold=0.4).tolist() == [0, 1, 1]
    assert decide(proba, positive=0, threshold=0.6).tolist() == [0, 1, 1]
    assert decide(proba, positive=None, threshold=None).tolist() == [0, 1, 0]


def test_operating_point_without_validation_says_so() -> None:
    point = fit_operating_point(None, None, ["nodule", "normal"])
    assert point["positive"] == "nodule" and point["calibration"] == {"method": "none"}
    assert point["threshold"]["value"] == 0.5 and "no validation" in point["threshold"]["note"]
    with pytest.raises(ValueError, match="validation"):
        fit_operating_point(None, None, ["nodule", "normal"], calibrate="temperature")
    three = fit_operating_point([0, 1, 2], np.full((3, 3), 1 / 3), ["a", "b", "c"])
    assert three["positive"] is None and three["threshold"]["rule"] == "argmax"


# ----- in a run ---------------------------------------------------------------------------------------
def _train(features: Path, run: Path, **kwargs) -> dict:
    train_run(features, run, head=MLPClassifier(hidden=(16,), epochs=15, lr=0.05), progress=False, **kwargs)
    return json.loads((run / "bundle.json").read_text())


def _flip_test_labels(features: Path) -> None:
    store = FeatureStore(features)
    rows = store.read_index()
    for row in rows:
        if row.split == "test":
            row.label = "normal" if row.label == "nodule" else "nodule"
    store.write_index(rows)


def test_threshold_is_fitted_on_validation_and_test_labels_cannot_move_it(store_factory, tmp_path) -> None:
    features = store_factory(n_groups=40, signal=1.0, seed=5)
    info = _train(features, tmp_path / "run", threshold_rule="sensitivity:0.9")
    threshold = info["threshold"]
    assert threshold["rule"] == "sensitivity:0.9" and threshold["source"] == "validation split"
    bundle = load_bundle(tmp_path / "run")
    val = load_split(features, "val")
    pos = bundle.classes.index(bundle.positive)
    y_val = np.array([bundle.classes.index(label) for label in val.labels]) == pos
    expected = choose_threshold(y_val, bundle.predict_proba(val.X)[:, pos], ThresholdRule.parse("sensitivity:0.9"))
    assert threshold["value"] == pytest.approx(expected["value"]) and threshold["n"] == len(val.rows)
    assert threshold["val_sensitivity"] >= 0.9

    _flip_test_labels(features)  # a threshold fitted on test would move
    again = _train(features, tmp_path / "run2", threshold_rule="sensitivity:0.9")
    assert again["threshold"] == threshold


def test_evaluate_and_predictions_use_the_runs_threshold(store_factory, tmp_path) -> None:
    features = store_factory(n_groups=40, signal=1.0, seed=6)
    info = _train(features, tmp_path / "run", threshold_rule="specificity:0.9", calibrate="temperature")
    assert info["calibration"]["method"] == "temperature" and info["calibration"]["temperature"] > 0
    metrics = evaluate_run(tmp_path / "run", features, out_dir=tmp_path / "eval")
    t = info["threshold"]["value"]
    assert metrics["threshold"] == t and metrics["threshold_rule"] == info["threshold"]
    assert metrics["positive"] == "nodule" and metrics["calibration"]["applied"] == info["calibration"]
    with open(tmp_path / "eval" / "predictions.csv", newline="") as handle:
        rows = list(csv.DictReader(handle))
    for row in rows:
        assert row["predicted"] == ("nodule" if float(row["p_nodule"]) >= t else "normal")
    # The file holds the probabilities themselves, not a rounding (0.9999996 written as 1.000000).
    test = load_split(features, "test")
    written = np.array([[float(row[f"p_{c}"]) for c in load_bundle(tmp_path / "run").classes] for row in rows])
    assert [row["path"] for row in rows] == [r.path for r in test.rows]
    assert np.array_equal(written, load_bundle(tmp_path / "run").predict_proba(test.X))
    positives = sum(row["predicted"] == "nodule" for row in rows)
    assert metrics["confusion_matrix"][0][0] + metrics["confusion_matrix"][1][0] == positives


def test_without_validation_the_threshold_is_half_and_calibration_refuses(store_factory, tmp_path) -> None:
    features = store_factory(n_groups=12, splits=None)
    info = _train(features, tmp_path / "run")
    assert info["threshold"]["value"] == 0.5 and info["threshold"]["rule"] == "default 0.5"
    assert "no validation split" in info["threshold"]["note"]
    with pytest.raises(RunError, match="validation split"):
        _train(features, tmp_path / "run2", calibrate="temperature")
    with pytest.raises(RunError, match="threshold rule"):
        _train(features, tmp_path / "run3", threshold_rule="sensitivity:2")
    assert not (tmp_path / "run2").exists() and not (tmp_path / "run3").exists()  # refused before training


def test_positive_is_checked_against_the_classes_with_the_right_reason() -> None:
    from xvision.errors import RunError
    from xvision.evaluation.operating import check_positive

    check_positive(None, ["a", "b", "c"])
    check_positive("nodule", ["nodule", "normal"])
    with pytest.raises(RunError, match=r"--positive 'effusion' must name one of the classes \(nodule, normal\)"):
        check_positive("effusion", ["nodule", "normal"])
    with pytest.raises(RunError, match=r"--positive applies to two classes; there are 3 \(a, b, normal\)"):
        check_positive("normal", ["a", "b", "normal"])  # a real class, but three of them: not "one of two"
