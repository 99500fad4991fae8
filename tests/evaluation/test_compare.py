"""Comparing two runs on the same images: paired bootstrap interval and DeLong, across backbones by SHA-256."""

from __future__ import annotations

import shutil
from pathlib import Path

import numpy as np
import pytest
from synthetic_store import make_store

from xvision.errors import FeatureStoreError, RunError
from xvision.evaluation.bootstrap import BootstrapConfig
from xvision.evaluation.compare import compare_runs
from xvision.evaluation.delong import delong_test
from xvision.evaluation.evaluate import evaluate_run
from xvision.features.dataset import load_split
from xvision.features.store import FeatureStore
from xvision.heads import MLPClassifier
from xvision.inference.bundle import load_bundle
from xvision.training import train_run

BOOT = BootstrapConfig(n_resamples=500, seed=0)


@pytest.fixture(scope="module")
def two_runs(tmp_path_factory) -> tuple[Path, Path, Path, Path]:
    """Run A on store A; run B (weaker head) on store B: the same images seen by another 'backbone'."""
    root = tmp_path_factory.mktemp("compare")
    store_a = make_store(root / "fa", n_groups=60, per_group=2, dim=16, signal=1.5, seed=9)
    store_b = make_store(root / "fb", n_groups=60, per_group=2, dim=16, signal=1.5, seed=9, backbone_name="other")
    train_run(store_a, root / "A", head=MLPClassifier(hidden=(32,), epochs=15, lr=0.05), progress=False)
    train_run(store_b, root / "B", head=MLPClassifier(hidden=(32,), epochs=1, lr=0.001), progress=False)
    return root / "A", root / "B", store_a, store_b


def test_difference_interval_and_delong(two_runs, tmp_path) -> None:
    run_a, run_b, store_a, store_b = two_runs
    result = compare_runs(run_a, run_b, store_a, features_b=store_b, bootstrap=BOOT)
    eval_a = evaluate_run(run_a, store_a, out_dir=tmp_path / "ea", bootstrap=None)
    eval_b = evaluate_run(run_b, store_b, out_dir=tmp_path / "eb", bootstrap=None)
    assert result["n"] == eval_a["n"] == eval_b["n"]
    assert result["auc_a"] == pytest.approx(eval_a["roc_auc"]) and result["auc_b"] == pytest.approx(eval_b["roc_auc"])
    d = result["difference"]
    assert d["value"] == pytest.approx(result["auc_a"] - result["auc_b"])
    assert d["ci_low"] <= d["value"] <= d["ci_high"]
    assert result["bootstrap"]["unit"] == "group" and result["bootstrap"]["n_units"] == result["n"] // 2

    test = load_split(store_a, "test")
    a, b = load_bundle(run_a), load_bundle(run_b)
    pos = a.classes.index(a.positive)
    y = np.array([a.classes.index(label) for label in test.labels]) == pos
    expected = delong_test(y, a.predict_proba(test.X)[:, pos], b.predict_proba(test.X)[:, pos])
    assert result["delong"]["p_value"] == pytest.approx(expected.p_value)
    assert result["delong"]["difference"] == pytest.approx(d["value"])


def test_a_file_scored_twice_is_one_resampling_unit_and_is_named(two_runs, tmp_path, caplog) -> None:
    """`split` and `cv` link byte-identical files; evaluate and compare counted a copy as independent."""
    run_a, _, store_a, _ = two_runs
    copy = tmp_path / "store"
    shutil.copytree(store_a, copy)
    store = FeatureStore(copy)
    rows = store.read_index()
    tests = [i for i, row in enumerate(rows) if row.split == "test"]
    first = tests[0]
    second = next(i for i in tests if rows[i].group != rows[first].group)
    rows[second].sha256 = rows[first].sha256  # the same file under another name and group
    store.write_index(rows)
    plain = evaluate_run(run_a, store_a, out_dir=tmp_path / "plain", bootstrap=BOOT)
    with caplog.at_level("WARNING"):
        linked = evaluate_run(run_a, copy, out_dir=tmp_path / "linked", bootstrap=BOOT)
        compared = compare_runs(run_a, run_a, copy, bootstrap=BOOT)
    assert linked["n"] == plain["n"]  # each copy still counts in the figures ...
    assert linked["bootstrap"]["n_units"] == plain["bootstrap"]["n_units"] - 1  # ... but is resampled with its twin
    assert compared["bootstrap"]["n_units"] == linked["bootstrap"]["n_units"]
    assert "1 of the evaluated images are byte-identical copies of another one" in caplog.text
    assert "1 of the compared images are byte-identical copies" in caplog.text


def test_same_run_twice_gives_zero_difference(two_runs) -> None:
    run_a, _, store_a, _ = two_runs
    result = compare_runs(run_a, run_a, store_a, bootstrap=BOOT)
    assert result["difference"] == {"value": 0.0, "ci_low": 0.0, "ci_high": 0.0}
    assert result["delong"]["p_value"] == 1.0


def test_another_backbone_needs_its_own_store(two_runs) -> None:
    run_a, run_b, store_a, _ = two_runs
    with pytest.raises(RunError, match="--features-b"):
        compare_runs(run_a, run_b, store_a, bootstrap=BOOT)


def test_images_are_matched_by_content(two_runs, caplog, tmp_path) -> None:
    run_a, run_b, store_a, original_b = two_runs
    store_b = Path(shutil.copytree(original_b, tmp_path / "fb"))
    store = FeatureStore(store_b)
    rows = store.read_index()
    test_rows = [r for r in rows if r.split == "test"]
    dropped = {test_rows[0].sha256, test_rows[1].sha256}
    kept = [r for r in rows if r.sha256 not in dropped]
    # Store B lists its rows in another order and under other split names: only content matters.
    for r in kept:
        r.split = ""
    store.write_index(kept[::-1])
    result = compare_runs(run_a, run_b, store_a, features_b=store_b, bootstrap=BOOT)
    assert result["n"] == len(test_rows) - 2
    assert "left out of the comparison" in caplog.text

    compared = next(r for r in kept if r.sha256 in {t.sha256 for t in test_rows})
    compared.label = "nodule" if compared.label == "normal" else "normal"
    store.write_index(kept)
    with pytest.raises(FeatureStoreError, match="another label"):
        compare_runs(run_a, run_b, store_a, features_b=store_b, bootstrap=BOOT)


@pytest.fixture(scope="module")
def two_cvs(two_runs, tmp_path_factory) -> tuple[Path, Path, dict, dict]:
    """A strong and a weak head cross-validated on the same images (stores A and B see them differently)."""
    from xvision.evaluation.crossval import CVConfig, cross_validate

    _, _, store_a, store_b = two_runs
    root = tmp_path_factory.mktemp("cvs")
    strong = {"hidden": (32,), "epochs": 15, "lr": 0.05}
    weak = {"hidden": (32,), "epochs": 1, "lr": 0.001}
    metrics_a = cross_validate(store_a, root / "cv_a", head_params=strong, config=CVConfig(folds=3), progress=False)
    metrics_b = cross_validate(
        store_b, root / "cv_b", head_params=weak, config=CVConfig(folds=3, seed=1), progress=False
    )
    oof_b = (root / "cv_b" / "oof_predictions.csv").read_text().splitlines()
    shuffled = [oof_b[0], *np.random.default_rng(0).permutation(oof_b[1:]).tolist()]  # matched by image, not order
    (root / "cv_b" / "oof_predictions.csv").write_text("\n".join(shuffled) + "\n")
    return root / "cv_a", root / "cv_b", metrics_a, metrics_b


def test_two_cross_validations_are_compared_on_their_out_of_fold_predictions(two_cvs) -> None:
    from xvision.evaluation.compare import compare_cv

    cv_a, cv_b, metrics_a, metrics_b = two_cvs
    result = compare_cv(cv_a, cv_b, bootstrap=BOOT)
    assert result["n"] == 120 and result["matched_by"] == "sha256"  # the same images, other features
    assert result["auc_a"] == pytest.approx(metrics_a["roc_auc"], abs=1e-5)
    assert result["auc_b"] == pytest.approx(metrics_b["roc_auc"], abs=1e-5)
    d = result["difference"]
    assert d["value"] == pytest.approx(result["auc_a"] - result["auc_b"])
    assert d["ci_low"] <= d["value"] <= d["ci_high"] and result["delong"]["p_value"] < 0.05
    assert result["bootstrap"]["unit"] == "group" and result["bootstrap"]["n_units"] == 60
    same = compare_cv(cv_a, cv_a, bootstrap=BOOT)["difference"]
    assert same == {"value": 0.0, "ci_low": 0.0, "ci_high": 0.0}


def test_compare_cli_takes_two_runs_or_two_cv_folders(two_runs, two_cvs, capsys) -> None:
    from xvision.cli.main import main

    run_a, _, store_a, _ = two_runs
    cv_a, cv_b, _, _ = two_cvs
    assert main(["compare", str(cv_a), str(cv_b), "--bootstrap", "200"]) == 0
    assert "pooled out-of-fold predictions (matched by sha256): n=120" in capsys.readouterr().out
    assert main(["compare", str(cv_a), str(run_a)]) == 2
    assert "is an `xvision cv` folder and" in capsys.readouterr().err
    assert main(["compare", str(cv_a.parent / "nope"), str(cv_a)]) == 2  # a typo: not "is not a cv folder"
    assert f"{cv_a.parent / 'nope'}: no such folder" in capsys.readouterr().err
    assert main(["compare", str(cv_a), str(cv_b), "--features", str(store_a)]) == 2
    assert "--features, --features-b and --split apply to runs" in capsys.readouterr().err
    for split in ("all", "test"):  # an explicit --split, even the runs' default, is refused, not ignored
        assert main(["compare", str(cv_a), str(cv_b), "--split", split]) == 2
        assert "apply to runs" in capsys.readouterr().err
    assert main(["compare", str(run_a), str(run_a)]) == 2
    assert "needs --features" in capsys.readouterr().err
    n_test = len(load_split(store_a, "test").labels)
    assert main(["compare", str(run_a), str(run_a), "--features", str(store_a), "--bootstrap", "100"]) == 0
    assert f"split test: n={n_test} images" in capsys.readouterr().out  # runs default to the test split
    assert main(["compare", str(run_a), str(run_a), "--features", str(store_a), "--split", "all"]) == 0
    assert f"split all: n={len(load_split(store_a, None).labels)} images" in capsys.readouterr().out


def test_a_repeated_cv_is_compared_on_its_first_repeat_and_says_so(two_runs, two_cvs, tmp_path, capsys, caplog) -> None:
    from xvision.cli.main import main
    from xvision.evaluation.crossval import CVConfig, cross_validate

    _, _, store_a, _ = two_runs
    cv_a, _, _, _ = two_cvs
    weak = {"hidden": (8,), "epochs": 1, "lr": 0.001}
    cross_validate(store_a, tmp_path / "cv2", head_params=weak, config=CVConfig(folds=3, repeats=2), progress=False)
    assert main(["compare", str(tmp_path / "cv2"), str(cv_a), "--bootstrap", "100"]) == 0
    out = capsys.readouterr().out
    assert "repeat 1 only (A has 2)" in out and "n=120" in out
    assert main(["compare", str(cv_a), str(cv_a), "--bootstrap", "100"]) == 0
    assert "repeat 1 only" not in capsys.readouterr().out
    assert f"{cv_a} is both A and B: the difference is 0 and p = 1 by construction" in caplog.text
