"""Cross-validation: grouped stratified folds, every image scored once per repeat, pooled metrics with intervals."""

from __future__ import annotations

import csv
import json
from collections import defaultdict
from pathlib import Path

import numpy as np
import pytest
from sklearn.metrics import roc_auc_score

from xvision.errors import FeatureStoreError, RunError
from xvision.evaluation import crossval
from xvision.evaluation.bootstrap import BootstrapConfig
from xvision.evaluation.crossval import CVConfig, cross_validate, cv_groups
from xvision.evaluation.operating import describe_threshold
from xvision.features.dataset import FeatureSet
from xvision.features.store import IndexRow

SMALL_HEAD = {"hidden": (16,), "epochs": 8, "lr": 0.05}
FAST_BOOTSTRAP = BootstrapConfig(n_resamples=300, seed=0)


def read_oof(path: Path) -> list[dict[str, str]]:
    with open(path, newline="") as handle:
        return list(csv.DictReader(handle))


def test_folds_keep_groups_together_and_score_every_image_once(store_factory, tmp_path) -> None:
    features = store_factory(n_groups=30, per_group=2, dim=16, signal=2.0, seed=1)
    out = tmp_path / "cv"
    metrics = cross_validate(
        features, out, head_params=SMALL_HEAD, config=CVConfig(folds=5), bootstrap=FAST_BOOTSTRAP, progress=False
    )
    rows = read_oof(out / "oof_predictions.csv")
    assert len(rows) == 60 and len({r["sha256"] for r in rows}) == 60
    folds_of_group = defaultdict(set)
    classes_of_fold = defaultdict(set)
    for row in rows:
        folds_of_group[row["group"]].add(row["fold"])
        classes_of_fold[row["fold"]].add(row["label"])
    assert all(len(folds) == 1 for folds in folds_of_group.values())
    assert sorted(classes_of_fold) == ["1", "2", "3", "4", "5"]
    assert all(labels == {"nodule", "normal"} for labels in classes_of_fold.values())

    assert metrics["n"] == 60 and np.sum(metrics["confusion_matrix"]) == 60
    assert metrics["cv"]["folds"] == 5 and metrics["cv"]["n_groups"] == 30
    assert metrics["bootstrap"]["unit"] == "group" and metrics["bootstrap"]["n_units"] == 30
    assert metrics["threshold"] == 0.5 and "inner-val" in metrics["threshold_rule"]["note"]
    auc = metrics["intervals"]["roc_auc"]
    assert auc["value"] == metrics["roc_auc"] and auc["ci_low"] <= auc["value"] <= auc["ci_high"]
    assert metrics["roc_auc"] > 0.7  # the synthetic signal is strong
    assert [d["n_test"] for d in metrics["folds_detail"]] and sum(d["n_test"] for d in metrics["folds_detail"]) == 60
    for detail in metrics["folds_detail"]:  # each fold's own AUC, from its held-out images only
        held = [r for r in rows if r["fold"] == str(detail["fold"])]
        y_fold = [r["label"] == "nodule" for r in held]
        assert detail["roc_auc"] == pytest.approx(roc_auc_score(y_fold, [float(r["p_nodule"]) for r in held]))
    on_disk = json.loads((out / "metrics.json").read_text())
    assert on_disk["intervals"] == metrics["intervals"]
    for name in ("confusion_matrix.png", "roc.png", "reliability.png"):
        assert (out / "plots" / name).stat().st_size > 0


def test_no_fold_trains_on_what_it_scores(store_factory, tmp_path, monkeypatch) -> None:
    features = store_factory(n_groups=20, per_group=3, dim=8, seed=2)
    seen: list[tuple[np.ndarray, np.ndarray, np.ndarray]] = []
    original = crossval._run_fold

    def spy(head, X, y, groups, train_idx, test_idx, *args):
        seen.append((train_idx, test_idx, groups))
        return original(head, X, y, groups, train_idx, test_idx, *args)

    monkeypatch.setattr(crossval, "_run_fold", spy)
    config = CVConfig(folds=4, inner_val=0.25)
    cross_validate(features, tmp_path / "cv", head_params=SMALL_HEAD, config=config, bootstrap=None, progress=False)
    assert len(seen) == 4
    for train_idx, test_idx, groups in seen:
        assert not set(train_idx) & set(test_idx)
        assert not set(groups[train_idx]) & set(groups[test_idx])
    assert sorted(np.concatenate([test for _, test, _ in seen]).tolist()) == list(range(60))


def test_repeats_report_each_repeat_and_their_mean(store_factory, tmp_path) -> None:
    features = store_factory(n_groups=24, per_group=2, dim=16, seed=3)
    metrics = cross_validate(
        features,
        tmp_path / "cv",
        head_params=SMALL_HEAD,
        config=CVConfig(folds=3, repeats=2),
        bootstrap=FAST_BOOTSTRAP,
        progress=False,
    )
    repeats = metrics["repeats"]
    assert [r["repeat"] for r in repeats] == [1, 2]
    assert metrics["roc_auc"] == pytest.approx(np.mean([r["roc_auc"] for r in repeats]))
    assert metrics["intervals"]["roc_auc"]["value"] == pytest.approx(metrics["roc_auc"])
    assert (
        metrics["repeat_summary"]["roc_auc"]["min"] <= metrics["roc_auc"] <= metrics["repeat_summary"]["roc_auc"]["max"]
    )
    assert np.sum(metrics["confusion_matrix"]) == pytest.approx(48)
    rows = read_oof(tmp_path / "cv" / "oof_predictions.csv")
    assert len(rows) == 96 and {r["repeat"] for r in rows} == {"1", "2"}


def test_inner_validation_picks_each_folds_threshold(store_factory, tmp_path) -> None:
    features = store_factory(n_groups=30, per_group=1, dim=16, seed=4)
    config = CVConfig(folds=3, inner_val=0.3, threshold_rule="sensitivity:0.8", calibrate="temperature")
    metrics = cross_validate(
        features, tmp_path / "cv", head_params=SMALL_HEAD, config=config, bootstrap=None, progress=False
    )
    details = metrics["folds_detail"]
    assert len(details) == 3 and all(d["n_val"] > 0 and d["temperature"] > 0 for d in details)
    assert metrics["threshold_rule"]["per_fold"] == [d["threshold"] for d in details]
    assert metrics["threshold_rule"]["source"] == "each fold's validation part"
    line = describe_threshold(metrics["threshold_rule"], "nodule")
    assert line.startswith("p(nodule) >= each fold's own threshold (sensitivity:0.8 on each fold's validation part")


def test_identical_images_share_a_group_across_patients() -> None:
    def row(group: str, sha: str) -> IndexRow:
        return IndexRow(
            path=f"{sha}.png", label="a", group=group, split="", sha256=sha, status="ok", error="", extra={}
        )

    data = FeatureSet(
        X=np.zeros((4, 2)), rows=[row("P1", "x"), row("P2", "x"), row("P2", "y"), row("P3", "z")], meta={}
    )
    groups = cv_groups(data, "group")
    assert groups[0] == groups[1] == groups[2] != groups[3]  # P1 and P2 linked by the copy "x"
    alone = cv_groups(data, None)
    assert alone[0] == alone[1] and len(set(alone.tolist())) == 3


def test_too_few_groups_for_the_folds(store_factory, tmp_path) -> None:
    features = store_factory(n_groups=6, per_group=3, dim=8)
    with pytest.raises(FeatureStoreError, match="fewer than --folds 5"):
        cross_validate(features, tmp_path / "cv", config=CVConfig(folds=5), progress=False)
    with pytest.raises(ValueError, match="inner-val"):
        CVConfig(calibrate="temperature")


def test_an_output_folder_holding_something_else_is_refused(store_factory, tmp_path) -> None:
    features = store_factory(n_groups=20, per_group=1, dim=8, signal=2.0)
    run = tmp_path / "run"  # a trained run given as -o by mistake: its metrics must survive
    run.mkdir()
    (run / "bundle.json").write_text("{}")
    (run / "metrics.json").write_text('{"kind": "evaluation"}')
    with pytest.raises(RunError, match="not empty"):
        cross_validate(features, run, head_params=SMALL_HEAD, config=CVConfig(folds=3), progress=False)
    assert (run / "metrics.json").read_text() == '{"kind": "evaluation"}'
    out = tmp_path / "cv"  # an earlier feature-store cv is recomputed in place
    for _ in range(2):
        cross_validate(features, out, head_params=SMALL_HEAD, config=CVConfig(folds=3), bootstrap=None, progress=False)
    assert json.loads((out / "metrics.json").read_text())["kind"] == "cross-validation"


@pytest.mark.parametrize("patients", [2, 5, 16, 23, 24, 31])
def test_the_inner_val_advised_for_too_few_images_is_itself_accepted(patients: int) -> None:
    """The advice was rounded down (0.06 for 16 patients, which asks for 17 folds) and refused in turn."""
    import re

    from xvision.errors import RunError
    from xvision.evaluation.crossval import inner_split

    y = np.repeat([0, 1], patients)
    groups = np.arange(2 * patients)
    train_idx = np.arange(2 * patients)
    with pytest.raises(RunError, match="too little for its images") as refused:
        inner_split(y, groups, train_idx, 0.01, seed=0)
    advised = float(re.search(r"use --inner-val (\d\.\d\d) or more", str(refused.value)).group(1))
    fit_idx, val_idx = inner_split(y, groups, train_idx, advised, seed=0)
    assert len(val_idx) > 0 and len(fit_idx) + len(val_idx) == 2 * patients


def test_repeated_cv_says_its_confusion_matrix_is_a_mean_and_why_a_figure_is_na(tmp_path, capsys) -> None:
    """With repeats, the printed matrix held decimals ([[91.0, 1.0], [54.333, 1.667]]) beside "normal precision
    n/a" (one repeat called no image normal), which read as a contradiction."""
    from synthetic_store import make_store

    from xvision.cli.evaluate_cmd import format_metrics
    from xvision.cli.main import main

    store = make_store(tmp_path / "feats", n_groups=20, splits=None, seed=3)
    assert main(["cv", str(store), "-o", str(tmp_path / "cv"), "--folds", "2", "--repeats", "2", "--epochs", "2"]) == 0
    assert "confusion matrix, mean of 2 repeats (rows true, columns predicted)" in capsys.readouterr().out
    metrics = json.loads((tmp_path / "cv" / "metrics.json").read_text())
    assert "undefined in at least one repeat" not in format_metrics(metrics)
    metrics["precision"]["normal"] = None  # as when one repeat called no image normal
    assert "n/a above: undefined in at least one repeat" in format_metrics(metrics)


def test_an_output_folder_that_cannot_be_written_is_found_before_any_fold(tmp_path, capsys, monkeypatch) -> None:
    """`cv -o` on a read-only or full file system trained every fold, then failed on metrics.json."""
    import errno
    import tempfile

    from synthetic_store import make_store

    from xvision.cli.main import main
    from xvision.heads import MLPClassifier

    store = make_store(tmp_path / "feats", n_groups=12, splits=None, seed=4)
    out = tmp_path / "ro"
    real = tempfile.TemporaryFile

    def read_only(*args, dir=None, **kwargs):
        if dir is not None and Path(dir) == out:
            raise OSError(errno.EROFS, "Read-only file system")
        return real(*args, dir=dir, **kwargs)

    def no_fold(*args, **kwargs):
        raise AssertionError("a fold was trained before the output folder was checked")

    monkeypatch.setattr(tempfile, "TemporaryFile", read_only)
    monkeypatch.setattr(MLPClassifier, "fit", no_fold)
    assert main(["cv", str(store), "-o", str(out), "--folds", "2"]) == 1
    assert f"Error: Read-only file system: {out}" in capsys.readouterr().err
