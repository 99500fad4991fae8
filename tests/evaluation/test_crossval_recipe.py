"""`xvision cv MANIFEST --recipe NAME`: a whole recipe fitted once per fold, its held-out scores pooled."""

from __future__ import annotations

import csv
import json
import shutil
from collections import defaultdict
from pathlib import Path

import pytest
from sklearn.metrics import roc_auc_score

import xvision.recipes
from xvision.cli.main import main
from xvision.data.phantoms import make_phantom_dataset
from xvision.errors import RunError
from xvision.evaluation.bootstrap import BootstrapConfig
from xvision.evaluation.crossval import CVConfig
from xvision.evaluation.crossval_recipe import cross_validate_recipe

TINY = "timm:mobilenetv3_small_050"
FAST_BOOTSTRAP = BootstrapConfig(n_resamples=200, seed=0)


def read_csv(path: Path) -> list[dict[str, str]]:
    with open(path, newline="", encoding="utf-8") as handle:
        return list(csv.DictReader(handle))


def run_cv(manifest: Path, out: Path, only_fold: int | None = None, **config) -> dict:
    return cross_validate_recipe(
        manifest,
        out,
        recipe="lite0",
        backbone=TINY,
        weights="random",
        config=CVConfig(**{"folds": 2, **config}),
        bootstrap=FAST_BOOTSTRAP,
        progress=False,
        only_fold=only_fold,
    )


@pytest.fixture(scope="module")
def data(tmp_path_factory) -> Path:
    """Two views per patient, so that folds must keep a patient's views together."""
    return make_phantom_dataset(tmp_path_factory.mktemp("cvr"), n_per_class=6, size=96, seed=3, views_per_patient=2)


@pytest.fixture
def fit_calls(monkeypatch) -> list[str]:
    """The fold folders `fit` is called for (it still runs)."""
    calls: list[str] = []
    real_fit = xvision.recipes.fit

    def counting_fit(manifest, run, **kwargs):
        calls.append(Path(run).parent.name)
        return real_fit(manifest, run, **kwargs)

    monkeypatch.setattr(xvision.recipes, "fit", counting_fit)
    return calls


@pytest.fixture(scope="module")
def finished(data, tmp_path_factory) -> tuple[Path, dict]:
    out = tmp_path_factory.mktemp("out") / "cv"
    return out, run_cv(data, out)


def test_every_image_is_scored_once_by_the_fold_that_held_it_out(data, finished) -> None:
    out, metrics = finished
    oof = read_csv(out / "oof_predictions.csv")
    assert len(oof) == 24 and len({r["path"] for r in oof}) == 24
    assert all(len(r["sha256"]) == 64 for r in oof)
    folds_of_patient = defaultdict(set)
    for row in oof:
        folds_of_patient[row["group"]].add(row["fold"])
    assert all(len(folds) == 1 for folds in folds_of_patient.values())

    for fold in ("1", "2"):
        fold_dir = out / "folds" / f"repeat-1-fold-{fold}"
        split_of = {r["path"]: r["split"] for r in read_csv(fold_dir / "manifest.csv")}
        held = {Path(r["path"]).name for r in oof if r["fold"] == fold}
        # the fold's run trained on the other images only, and scored exactly its held-out ones as test
        assert {Path(p).name for p, s in split_of.items() if s == "test"} == held
        assert {Path(p).name for p, s in split_of.items() if s == "train"} == {
            Path(r["path"]).name for r in oof if r["fold"] != fold
        }
        predicted = {Path(r["path"]).name: float(r["p_nodule"]) for r in read_csv(fold_dir / "run" / "predictions.csv")}
        mine = {Path(r["path"]).name: float(r["p_nodule"]) for r in oof if r["fold"] == fold}
        assert predicted == pytest.approx(mine, abs=1e-6)

    y = [r["label"] == "nodule" for r in oof]
    assert metrics["roc_auc"] == pytest.approx(roc_auc_score(y, [float(r["p_nodule"]) for r in oof]))
    assert metrics["n"] == 24 and metrics["cv"]["fit_per_fold"] and metrics["recipes_run"] == ["lite0"]
    assert metrics["backbone"] == TINY and metrics["warning"] == "UNTRAINED BACKBONE"
    assert metrics["bootstrap"]["unit"] == "group" and metrics["bootstrap"]["n_units"] == 12
    assert json.loads((out / "metrics.json").read_text())["intervals"] == metrics["intervals"]
    assert (out / "plots" / "roc.png").stat().st_size > 0


@pytest.mark.parametrize("lost", ["metrics.json", "predictions.csv", "report.html"])  # before/during/after scoring
def test_run_again_keeps_finished_folds_and_resumes_an_unfinished_one(
    data, finished, tmp_path, fit_calls, lost
) -> None:
    source, before = finished
    out = tmp_path / "cv"
    shutil.copytree(source, out)
    (out / "folds" / "repeat-1-fold-2" / "run" / lost).unlink()
    again = run_cv(data, out)
    # A fold whose figures were written is kept; only its report is drawn again when that was all it lacked.
    assert fit_calls == ([] if lost == "report.html" else ["repeat-1-fold-2"])
    assert (out / "folds" / "repeat-1-fold-2" / "run" / "report.html").stat().st_size > 0
    assert again["roc_auc"] == pytest.approx(before["roc_auc"], abs=1e-6)


def test_folds_of_other_settings_or_a_foreign_folder_are_refused(data, finished, tmp_path) -> None:
    out, _ = finished
    with pytest.raises(RunError, match="different seed"):
        run_cv(data, out, seed=1)
    foreign = tmp_path / "notes"
    foreign.mkdir()
    (foreign / "mine.txt").write_text("keep me")
    with pytest.raises(RunError, match="not empty"):
        run_cv(data, foreign)
    assert (foreign / "mine.txt").read_text() == "keep me"


def test_settings_may_change_while_no_fold_has_started(data, tmp_path, monkeypatch) -> None:
    def failing_fit(*args, **kwargs):
        raise RunError("weights not available offline")

    monkeypatch.setattr(xvision.recipes, "fit", failing_fit)
    with pytest.raises(RunError, match="offline"):
        run_cv(data, tmp_path / "cv")
    monkeypatch.undo()
    metrics = run_cv(data, tmp_path / "cv", seed=1)  # another setting, accepted: nothing had been fitted
    assert metrics["cv"]["seed"] == 1
    assert json.loads((tmp_path / "cv" / "cv_recipe.json").read_text())["cv"]["seed"] == 1


def test_an_unreadable_image_is_left_out_and_listed(data, tmp_path) -> None:
    root = tmp_path / "data"
    shutil.copytree(data.parent, root)
    broken = read_csv(root / "manifest.csv")[0]["path"]
    (root / broken).write_bytes(b"not a png")
    metrics = run_cv(root / "manifest.csv", tmp_path / "cv")
    assert metrics["n"] == 23
    assert [item["path"] for item in metrics["unreadable"]] == [broken]
    assert broken not in {r["path"] for r in read_csv(tmp_path / "cv" / "oof_predictions.csv")}


def test_cli_takes_a_manifest_or_a_store_and_refuses_options_of_the_other(data, finished, capsys) -> None:
    out, _ = finished
    args = ["--recipe", "lite0", "--backbone", TINY, "--weights", "random", "--folds", "2", "--bootstrap", "200"]
    assert main(["cv", str(data), "-o", str(out), *args]) == 0  # finished folds: scored again, nothing refitted
    shown = capsys.readouterr().out
    assert "cross-validation (2 folds, pooled out-of-fold): n=24" in shown
    fold_aucs = [
        json.loads((out / "folds" / f"repeat-1-fold-{k}" / "run" / "metrics.json").read_text())["roc_auc"]
        for k in (1, 2)
    ]
    assert f"ROC AUC per fold: {fold_aucs[0]:.3f}, {fold_aucs[1]:.3f}" in shown
    assert main(["cv", str(data), "-o", str(out), "--hidden", "none"]) == 2
    assert "--hidden applies to a feature store" in capsys.readouterr().err
    # Named before CVConfig's own advice, which asked for an --inner-val that a recipe refuses next.
    assert main(["cv", str(data), "-o", str(out), "--calibrate", "temperature"]) == 2
    assert "--calibrate applies to a feature store" in capsys.readouterr().err
    features = out / "folds" / "repeat-1-fold-1" / "run" / "features"
    assert main(["cv", str(features), "-o", str(out / "x"), "--recipe", "seed"]) == 2
    assert "--recipe applies to a manifest" in capsys.readouterr().err
    assert main(["cv", str(out / "missing.csv"), "-o", str(out / "y")]) == 2
    assert "no such feature store folder or manifest file" in capsys.readouterr().err


def test_too_few_groups_are_refused_before_any_fold(data, tmp_path, monkeypatch) -> None:
    monkeypatch.setattr(xvision.recipes, "fit", lambda *a, **k: pytest.fail("fit ran"))
    with pytest.raises(Exception, match="fewer than --folds 7"):
        run_cv(data, tmp_path / "cv", folds=7)
    assert not list((tmp_path / "cv").glob("folds/*"))


def test_an_inner_val_too_small_for_the_patients_is_one_line_before_the_folder_is_claimed(data, tmp_path) -> None:
    """--inner-val 0.01 asks for 100 inner folds: a scikit-learn traceback, after cv_recipe.json was written."""
    from xvision.errors import RunError

    with pytest.raises(RunError, match=r"--inner-val 0.01 holds out 1/100 of each fold's training part, too little"):
        run_cv(data, tmp_path / "cv", inner_val=0.01)
    assert not (tmp_path / "cv").exists()


def test_one_fold_at_a_time_then_pooled(data, finished, tmp_path, fit_calls) -> None:
    _, complete = finished
    out = tmp_path / "cv"
    assert run_cv(data, out, only_fold=2) is None
    assert fit_calls == ["repeat-1-fold-2"] and not (out / "metrics.json").exists()
    with pytest.raises(RunError, match="choose 1 to 2"):
        run_cv(data, out, only_fold=3)
    pooled = run_cv(data, out)
    assert fit_calls == ["repeat-1-fold-2", "repeat-1-fold-1"]
    assert pooled["roc_auc"] == pytest.approx(complete["roc_auc"], abs=1e-6)  # the same folds and seeds


def test_a_cv_folder_given_where_a_run_is_expected_says_what_it_holds(finished, capsys) -> None:
    out, _ = finished
    for command in (["report", str(out)], ["predict", str(out), str(out / "cv_recipe.json")]):
        assert main(command) == 2
        err = capsys.readouterr().err
        assert "not a run folder" in err and "holds a cross-validation" in err and "folds/" in err


def test_the_images_are_audited_once_and_every_fold_records_that_audit(data, tmp_path, monkeypatch) -> None:
    import xvision.evaluation.audit as audit

    audited: list[int] = []
    real_audit = audit.audit_manifest

    def counting_audit(manifest, *args, **kwargs):
        audited.append(len(manifest.rows))
        return real_audit(manifest, *args, **kwargs)

    monkeypatch.setattr(audit, "audit_manifest", counting_audit)
    run_cv(data, tmp_path / "cv")
    assert audited == [24]  # not once per fold: the folds hold the same images
    records = [
        json.loads((tmp_path / "cv" / "folds" / f"repeat-1-fold-{k}" / "run" / "bundle.json").read_text())["audit"]
        for k in (1, 2)
    ]
    assert records[0]["status"] == "done" and records[0]["n_images"] == 24
    assert records[0] == records[1]


def test_every_fold_fit_is_told_that_cv_offers_inner_val_against_imbalance(data, tmp_path, monkeypatch) -> None:
    from xvision.data.hints import IMBALANCE_CURE

    seen: list[str | None] = []

    class Stop(Exception):
        pass

    def fit_noting_the_advice(manifest, run, **kwargs):
        seen.append(IMBALANCE_CURE.get())  # what warn_imbalance would advise inside this fold's `fit`
        raise Stop

    monkeypatch.setattr(xvision.recipes, "fit", fit_noting_the_advice)
    with pytest.raises(Stop):
        run_cv(data, tmp_path / "cv")
    assert seen and "--inner-val" in seen[0]  # the folds replace the manifest's splits: a val split is cv's option
    assert IMBALANCE_CURE.get() is None  # and the advice does not outlive the fold


def test_a_relative_output_folder_scores_every_fold(data, finished, tmp_path, monkeypatch) -> None:
    """With fold manifests naming images by relative path, `-o cv` (relative) scored no image in any fold."""
    monkeypatch.chdir(tmp_path)
    again = run_cv(data, Path("cv"))
    assert again["roc_auc"] == pytest.approx(finished[1]["roc_auc"], abs=1e-6) and again["n"] == finished[1]["n"]


def test_a_cv_moved_with_its_images_resumes_there(data, tmp_path) -> None:
    """Fold manifests held absolute image paths: moved with the images, every fitted fold was refused as
    "not what this command asks for", with advice to pass --overwrite, which `cv` does not have."""
    shutil.copytree(data.parent, tmp_path / "project" / "data")
    before = run_cv(tmp_path / "project" / "data" / data.name, tmp_path / "project" / "cv")
    shutil.move(tmp_path / "project", tmp_path / "colleague")  # another disk, another machine
    out = tmp_path / "colleague" / "cv"
    (out / "folds" / "repeat-1-fold-2" / "run" / "metrics.json").unlink()
    again = run_cv(tmp_path / "colleague" / "data" / data.name, out)
    assert again["roc_auc"] == pytest.approx(before["roc_auc"], abs=1e-6)
    fold_manifest = (out / "folds" / "repeat-1-fold-1" / "manifest.csv").read_text()
    assert str(tmp_path) not in fold_manifest and "../../../data/" in fold_manifest
