"""The evaluation commands end to end: train -> evaluate -> predict -> cv -> compare, on tiny phantoms with a
tiny random backbone (as tests/cli/test_pipeline.py), and cv at the size it is meant for."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from PIL import Image
from synthetic_store import make_store

import xvision
from xvision.cli.main import main
from xvision.data.phantoms import make_phantom_dataset

TINY = "timm:mobilenetv3_small_050"


@pytest.fixture(scope="module")
def phantom_run(tmp_path_factory) -> Path:
    root = tmp_path_factory.mktemp("evaluation-cli")
    manifest = make_phantom_dataset(root / "data", n_per_class=10, size=64, seed=4, views_per_patient=2)
    assert main(["split", str(manifest), "--test", "0.3", "--val", "0.3", "--seed", "2"]) == 0
    feats = str(root / "feats")
    assert main(["extract", str(manifest), "--backbone", TINY, "--weights", "random", "-o", feats]) == 0
    for run, seed in (("run", "0"), ("run2", "1")):
        args = ["train", feats, "-o", str(root / run), "--epochs", "4", "--seed", seed]
        assert main([*args, "--threshold-rule", "specificity:0.8", "--calibrate", "temperature"]) == 0
    return root


def test_train_reports_and_stores_the_operating_point(phantom_run) -> None:
    bundle = json.loads((phantom_run / "run" / "bundle.json").read_text())
    assert bundle["positive"] == "nodule"
    assert bundle["threshold"]["rule"] == "specificity:0.8" and bundle["threshold"]["source"] == "validation split"
    assert bundle["threshold"]["val_specificity"] >= 0.8
    assert bundle["calibration"]["method"] == "temperature"


def test_evaluate_writes_intervals_calibration_and_the_rule(phantom_run, capsys) -> None:
    capsys.readouterr()
    out = phantom_run / "eval"
    code = main(["evaluate", str(phantom_run / "run"), "--features", str(phantom_run / "feats"), "-o", str(out)])
    assert code == 0
    printed = capsys.readouterr().out
    assert "decision: p(nodule) >= " in printed and "specificity:0.8" in printed and "ECE" in printed
    metrics = json.loads((out / "metrics.json").read_text())
    bundle = json.loads((phantom_run / "run" / "bundle.json").read_text())
    assert metrics["versions"] == bundle["versions"]  # what computed the figures, as what trained the model
    for plain in ("n", "classes", "accuracy", "confusion_matrix", "precision", "recall", "f1", "roc_auc"):
        assert plain in metrics
    assert isinstance(metrics["accuracy"], float)
    called_nodule = sum(row[0] for row in metrics["confusion_matrix"])  # classes are [nodule, normal]
    precision = metrics["precision"]["nodule"]
    assert isinstance(precision, float) if called_nodule else precision is None
    assert metrics["threshold"] == bundle["threshold"]["value"] and metrics["threshold_rule"] == bundle["threshold"]
    assert 0 <= metrics["ece"] <= 1 and 0 <= metrics["brier"] <= 1
    for name in ("roc_auc", "accuracy", "sensitivity", "specificity"):
        entry = metrics["intervals"][name]
        assert entry["ci_low"] <= entry["value"] == metrics[name] <= entry["ci_high"]
    for name in ("precision", "recall"):
        assert set(metrics["intervals"][name]) == {"nodule", "normal"}
    assert metrics["bootstrap"]["n_resamples"] == 2000 and metrics["bootstrap"]["unit"] == "group"
    # A test split of a few patients per class: the intervals are printed with a caution, not bare.
    assert metrics["bootstrap"]["n_units"] < 10 and "few cases per class" in metrics["bootstrap"]["caution"]
    assert "caution: few cases per class" in printed
    for name in ("confusion_matrix.png", "roc.png", "reliability.png", "training_curve.png"):
        assert Image.open(out / "plots" / name).format == "PNG"


def test_a_run_shared_without_its_image_lists_says_overlap_is_unknown_not_zero(phantom_run, tmp_path, caplog) -> None:
    """bundle.json and model.safetensors alone (all `predict` needs) evaluated on the training images gave a
    clean figure and recorded an overlap of 0."""
    import shutil

    shared = tmp_path / "shared"
    shared.mkdir()
    for name in ("bundle.json", "model.safetensors"):
        shutil.copy(phantom_run / "run" / name, shared / name)
    out = tmp_path / "eval"
    args = ["evaluate", str(shared), "--features", str(phantom_run / "feats"), "--split", "train", "-o", str(out)]
    assert main([*args, "--bootstrap", "0"]) == 0
    metrics = json.loads((out / "metrics.json").read_text())
    assert metrics["overlap_with_training"] is None and metrics["overlap_with_validation"] is None
    assert "has no train_keys.json: whether any of the evaluated images were its training images cannot" in (
        caplog.text
    )
    page = (out / "report.html").read_text()
    assert "Overlap with training unknown" in page and "is unknown (no train_keys.json" in page
    caplog.clear()
    whole = ["evaluate", str(phantom_run / "run"), "--features", str(phantom_run / "feats"), "--split", "train"]
    assert main([*whole, "-o", str(tmp_path / "eval2"), "--bootstrap", "0"]) == 0
    assert json.loads((tmp_path / "eval2" / "metrics.json").read_text())["overlap_with_training"] > 0
    assert "keys.json" not in caplog.text


def test_a_feature_store_whose_files_disagree_is_a_one_line_error(tmp_path, capsys) -> None:
    """A shard or meta.json from another store, an emptied or re-encoded index.csv: each was a traceback."""
    import shutil

    def refused(store: Path, expected: str) -> None:
        assert main(["train", str(store), "-o", str(tmp_path / "run"), "--epochs", "1", "--no-audit"]) == 2
        err = capsys.readouterr().err
        assert expected in err and "Traceback" not in err, err

    wide, narrow = make_store(tmp_path / "wide", dim=8), make_store(tmp_path / "narrow", dim=4, seed=1)
    [shard] = sorted((wide / "shards").glob("shard-*.safetensors"))
    shutil.copy(next((narrow / "shards").glob("shard-*.safetensors")), shard)
    refused(wide, "features for 80 images, and meta.json says 8 per image: the shard or meta.json comes from")
    edited = make_store(tmp_path / "edited", dim=8)
    meta = json.loads((edited / "meta.json").read_text())
    meta["backbone"]["feature_dim"] = 12
    (edited / "meta.json").write_text(json.dumps(meta))
    refused(edited, "meta.json says 12 per image")
    emptied = make_store(tmp_path / "emptied", dim=8)
    index = emptied / "index.csv"
    index.write_text(index.read_text().splitlines()[0] + "\n")
    refused(emptied, "index.csv: lists no images; re-run `xvision extract`")
    index.write_bytes("path,label\nnódulo.png,x\n".encode("latin-1"))
    refused(emptied, "index.csv: not UTF-8 text")


def test_evaluating_on_the_validation_split_is_flagged_as_optimistic(phantom_run, caplog) -> None:
    run = phantom_run / "run"
    val_keys = json.loads((run / "val_keys.json").read_text())
    assert val_keys and not set(val_keys) & set(json.loads((run / "train_keys.json").read_text()))
    out = phantom_run / "eval-val"
    assert main(["evaluate", str(run), "--features", str(phantom_run / "feats"), "--split", "val", "-o", str(out)]) == 0
    metrics = json.loads((out / "metrics.json").read_text())
    assert metrics["overlap_with_validation"] == metrics["n"] == len(val_keys)
    assert f"{len(val_keys)} evaluated images were the validation images of the run" in caplog.text
    assert "Evaluated on validation images" in (out / "report.html").read_text()
    caplog.clear()
    out = phantom_run / "eval-test"
    assert main(["evaluate", str(run), "--features", str(phantom_run / "feats"), "-o", str(out)]) == 0
    assert json.loads((out / "metrics.json").read_text())["overlap_with_validation"] == 0
    assert "validation images" not in caplog.text
    # compare on the same validation images says so too, for each run
    caplog.clear()
    record = phantom_run / "compare-val.json"
    args = ["compare", str(run), str(phantom_run / "run2"), "--features", str(phantom_run / "feats")]
    assert main([*args, "--split", "val", "-o", str(record)]) == 0
    assert f"{len(val_keys)} compared images were the validation images of run A" in caplog.text
    assert "compared images were the validation images of run B" in caplog.text
    assert json.loads(record.read_text())["overlap_with_validation"]["a"] == len(val_keys)


def test_predict_decides_with_the_runs_threshold(phantom_run, capsys) -> None:
    images = sorted((phantom_run / "data").glob("*/*.png"))[:8]
    capsys.readouterr()
    assert main(["predict", str(phantom_run / "run"), *map(str, images), "--json"]) == 0
    out, err = capsys.readouterr()
    assert "decision: p(nodule) >= " in err
    for result in json.loads(out):
        threshold = result["threshold"]["value"]
        assert result["threshold"]["positive"] == "nodule" and threshold is not None
        expected = "nodule" if result["probabilities"]["nodule"] >= threshold else "normal"
        assert result["predicted"] == expected


def test_cv_and_compare_commands(phantom_run, capsys) -> None:
    feats = str(phantom_run / "feats")
    capsys.readouterr()
    args = ["cv", feats, "-o", str(phantom_run / "cv"), "--folds", "3", "--repeats", "2", "--epochs", "3"]
    assert main([*args, "--bootstrap", "300"]) == 0
    printed = capsys.readouterr().out
    assert "cross-validation (3 folds x 2 repeats" in printed and "over 2 repeats" in printed
    metrics = json.loads((phantom_run / "cv" / "metrics.json").read_text())
    assert metrics["n"] == 40 and metrics["kind"] == "cross-validation" and len(metrics["repeats"]) == 2
    assert metrics["warning"] == "UNTRAINED BACKBONE"
    assert metrics["versions"]["xvision"] == xvision.__version__ and "torch" in metrics["versions"]
    assert (phantom_run / "cv" / "oof_predictions.csv").read_text().count("\n") == 1 + 2 * 40

    out = phantom_run / "compare.json"
    code = main(["compare", str(phantom_run / "run"), str(phantom_run / "run2"), "--features", feats, "-o", str(out)])
    assert code == 0
    printed = capsys.readouterr().out
    assert "DeLong's test" in printed and "paired bootstrap interval" in printed
    assert f"A = {phantom_run / 'run'}, B = {phantom_run / 'run2'}" in printed
    result = json.loads(out.read_text())
    assert 0 <= result["delong"]["p_value"] <= 1 and result["versions"]["xvision"] == xvision.__version__
    assert result["difference"]["ci_low"] <= result["difference"]["value"] <= result["difference"]["ci_high"]


def test_user_mistakes_are_one_line_errors(phantom_run, capsys) -> None:
    feats = str(phantom_run / "feats")
    capsys.readouterr()
    assert main(["cv", feats, "-o", str(phantom_run / "cv-bad"), "--folds", "20"]) == 2
    assert "fewer than --folds 20" in capsys.readouterr().err
    assert main(["cv", feats, "-o", str(phantom_run / "cv-bad"), "--threshold-rule", "f1"]) == 2
    assert "unknown threshold rule" in capsys.readouterr().err
    assert main(["train", feats, "-o", str(phantom_run / "r-bad"), "--positive", "effusion"]) == 2
    assert "--positive" in capsys.readouterr().err
    assert main(["evaluate", str(phantom_run / "run"), "--features", feats, "--split", ""]) == 2
    assert "give a split name" in capsys.readouterr().err  # not silently the test split


def test_a_one_class_split_says_why_it_has_no_auc() -> None:
    from xvision.cli.evaluate_cmd import format_metrics

    metrics = {"split": "test", "n": 3, "accuracy": 1.0, "roc_auc": None, "classes": ["nodule", "normal"]}
    metrics |= {"support": {"nodule": 0, "normal": 3}, "precision": {"nodule": 0.0, "normal": 1.0}}
    metrics |= {"recall": {"nodule": 0.0, "normal": 1.0}, "f1": {"nodule": 0.0, "normal": 1.0}}
    metrics |= {"confusion_matrix": [[0, 0], [0, 3]]}
    assert "ROC AUC n/a (only 1 class present)" in format_metrics(metrics).splitlines()[0]


def test_cv_on_150_images_of_1280_features_uses_the_default_head_and_patient_resamples(tmp_path, capsys) -> None:
    """148 images x 1280-d, 5 folds x 20 epochs of the default 512-512 head, 2,000 resamples by patient.

    How long it takes is measured in benchmarks/evaluation_speed.py, not here.
    """
    features = make_store(tmp_path / "feats", n_groups=74, per_group=2, dim=1280, signal=0.8, seed=1)
    assert main(["cv", str(features), "-o", str(tmp_path / "cv"), "--folds", "5"]) == 0
    metrics = json.loads((tmp_path / "cv" / "metrics.json").read_text())
    assert metrics["n"] == 148 and metrics["head"]["params"]["epochs"] == 20
    assert metrics["head"]["params"]["hidden"] == [512, 512]
    assert metrics["bootstrap"]["n_resamples"] == 2000 and metrics["bootstrap"]["n_units"] == 74


def test_an_inner_val_too_small_for_the_patients_is_a_one_line_error(tmp_path, capsys) -> None:
    features = make_store(tmp_path / "feats", n_groups=20, per_group=2, dim=8)
    assert main(["cv", str(features), "-o", str(tmp_path / "cv"), "--folds", "2", "--inner-val", "0.05"]) == 2
    err = capsys.readouterr().err
    assert "--inner-val 0.05 holds out 1/20 of each fold's training part, too little for its images" in err
    assert "use --inner-val 0.19 or more" in err and "Traceback" not in err
    # The advice works (0.06 was advised for 16 patients, and refused again, when it was rounded down).
    assert main(["cv", str(features), "-o", str(tmp_path / "cv"), "--folds", "2", "--inner-val", "0.19"]) == 0


def test_imbalance_of_more_than_two_classes_advises_weights_not_a_threshold(tmp_path, caplog) -> None:
    """With a val split, a 3-class run was told "no validation split picks the threshold ... decisions at 0.5":
    it decides by the most probable class, and only weighting the classes helps."""
    classes = ("normal", "normal", "normal", "normal", "nodule", "effusion")
    features = make_store(tmp_path / "feats", n_groups=60, per_group=1, dim=8, classes=classes)
    args = ["--epochs", "2", "--no-audit"]
    assert main(["train", str(features), "-o", str(tmp_path / "plain"), *args]) == 0
    [said] = [r.getMessage() for r in caplog.records if "imbalanced" in r.getMessage()]
    assert "the classes are imbalanced (effusion 6, nodule 3, normal 21)" in said and "most probable class" in said
    assert "validation split" not in said and "0.5" not in said and "--class-weight balanced" in said
    caplog.clear()
    assert main(["train", str(features), "-o", str(tmp_path / "weighted"), *args, "--class-weight", "balanced"]) == 0
    assert "imbalanced" not in caplog.text
    balanced = ("normal", "nodule", "effusion")
    even = make_store(tmp_path / "even", n_groups=60, per_group=1, dim=8, classes=balanced)
    assert main(["train", str(even), "-o", str(tmp_path / "even-run"), *args]) == 0
    assert "imbalanced" not in caplog.text


def test_two_class_options_are_refused_for_three_classes_not_dropped(tmp_path, capsys) -> None:
    """`--threshold-rule sensitivity:0.9` on three classes trained and recorded "argmax" without a word, while
    `--positive` was refused; `score_predictions` dropped positive= and threshold= alike."""
    import numpy as np

    from xvision.evaluation.scoring import score_predictions

    features = make_store(tmp_path / "feats", n_groups=30, per_group=1, dim=8, classes=("a", "b", "c"))
    for command in ("train", "cv"):
        out = tmp_path / command
        args = [command, str(features), "-o", str(out), "--epochs", "2", "--threshold-rule", "sensitivity:0.9"]
        assert main([*args, "--no-audit"] if command == "train" else args) == 2
        err = capsys.readouterr().err
        assert "--threshold-rule applies to two classes; there are 3 (a, b, c)" in err, err
        assert not out.exists()
    y, proba = np.array([0, 1, 2, 0]), np.full((4, 3), 1 / 3)
    for option in ({"positive": "a"}, {"threshold": 0.4}):
        with pytest.raises(ValueError, match="applies to two classes only"):
            score_predictions(y, proba, ["a", "b", "c"], bootstrap=None, **option)


def test_imbalanced_classes_without_validation_warn_and_class_weight_balances(tmp_path, caplog) -> None:
    # Labels cycle normal, normal, normal, nodule by patient: three normals to each nodule, no split column.
    classes = ("normal", "normal", "normal", "nodule")
    features = make_store(tmp_path / "feats", n_groups=48, per_group=1, dim=8, splits=None, classes=classes)
    args = ["--epochs", "2", "--no-audit"]
    assert main(["train", str(features), "-o", str(tmp_path / "plain"), *args]) == 0
    assert "the classes are imbalanced (nodule 12, normal 36) and no validation split picks the threshold" in (
        caplog.text
    )
    assert "--class-weight balanced" in caplog.text
    caplog.clear()
    assert main(["train", str(features), "-o", str(tmp_path / "weighted"), *args, "--class-weight", "balanced"]) == 0
    assert "classes are imbalanced" not in caplog.text
    config = json.loads((tmp_path / "weighted" / "config.json").read_text())
    assert config["params"]["class_weight"] == "balanced"
    plain = json.loads((tmp_path / "plain" / "config.json").read_text())
    assert plain["params"]["class_weight"] is None
    caplog.clear()
    cv = ["cv", str(features), "-o", str(tmp_path / "cv"), "--folds", "3", "--epochs", "2", "--bootstrap", "0"]
    assert main(cv) == 0 and "imbalanced (nodule 12, normal 36)" in caplog.text
    assert "use --class-weight balanced, or --inner-val 0.2" in caplog.text  # cv ignores the manifest's val split
    caplog.clear()
    assert main([*cv[:3], str(tmp_path / "cv-w"), *cv[4:], "--class-weight", "balanced"]) == 0
    assert "classes are imbalanced" not in caplog.text
    cv_metrics = json.loads((tmp_path / "cv-w" / "metrics.json").read_text())
    assert cv_metrics["head"]["params"]["class_weight"] == "balanced"
    caplog.clear()  # the same folder again without the weighting: replaced, and said so
    assert main([*cv[:3], str(tmp_path / "cv-w"), *cv[4:]]) == 0
    assert "replacing an earlier cross-validation with other settings (class_weight 'balanced' -> None)" in caplog.text
    caplog.clear()
    assert main([*cv[:3], str(tmp_path / "cv-w"), *cv[4:]]) == 0 and "replacing" not in caplog.text  # same: quiet
    assert main([*cv[:3], str(tmp_path / "cv-w"), *cv[4:-1], "100"]) == 0  # only the intervals' resamples differ
    assert "replacing an earlier cross-validation with other settings (bootstrap 0 -> 100)" in caplog.text
    # `fit` has no --class-weight (a recipe fixes its head): its warning names the cure it has, a val split.
    from xvision.heads import MLPClassifier
    from xvision.training import train_run

    caplog.clear()
    train_run(features, tmp_path / "fitted", head=MLPClassifier(epochs=1), recipe="lite0", audit=False, progress=False)
    assert "imbalanced (nodule 12, normal 36)" in caplog.text and "--class-weight" not in caplog.text
    assert "give the manifest a val split (`xvision split MANIFEST --val 0.1`)" in caplog.text
    # Inside `cv MANIFEST --recipe`, whose folds replace the manifest's splits, the advice is cv's own option.
    from xvision.data.hints import IMBALANCE_CURE

    caplog.clear()
    token = IMBALANCE_CURE.set("pass --inner-val 0.2")
    try:
        head = MLPClassifier(epochs=1)
        train_run(features, tmp_path / "fold", head=head, recipe="lite0", audit=False, progress=False)
    finally:
        IMBALANCE_CURE.reset(token)
    assert "0.5 will favour the common class; pass --inner-val 0.2" in caplog.text


def test_train_says_how_many_images_have_no_split(tmp_path, caplog) -> None:
    import csv

    features = make_store(tmp_path / "feats", n_groups=24, per_group=1, dim=8, splits=(0.25, 0.0))
    index = features / "index.csv"
    rows = list(csv.DictReader(index.open(newline="")))
    for row in rows[::4]:
        row["split"] = ""  # six images the user never assigned
    with index.open("w", newline="") as handle:
        writer = csv.DictWriter(handle, fieldnames=list(rows[0]))
        writer.writeheader()
        writer.writerows(rows)
    assert main(["train", str(features), "-o", str(tmp_path / "run"), "--epochs", "1", "--no-audit"]) == 0
    assert "6 image(s) have no split and are left out of training and validation" in caplog.text
    trained = len(json.loads((tmp_path / "run" / "train_keys.json").read_text()))
    assert trained == sum(1 for row in rows if row["split"] == "train")


def test_training_into_a_log_draws_its_bar_once_or_twice_not_once_per_epoch(tmp_path, capsys) -> None:
    """set_postfix redrew the bar at every epoch (and every fine-tuning step), whatever the interval."""
    store = make_store(tmp_path / "feats", n_groups=20, per_group=1, dim=8)
    assert main(["train", str(store), "-o", str(tmp_path / "run"), "--epochs", "30", "--no-audit"]) == 0
    drawn = capsys.readouterr().err.count("train:")
    assert 1 <= drawn <= 3, drawn


def test_a_run_trained_on_decomposed_labels_still_evaluates_and_compares(tmp_path: Path) -> None:
    """Runs, stores and cv folders written before manifests were read in NFC may hold a decomposed 'nódulo'
    (a Mac): evaluating such a run on the same table (now read composed) failed with two identical-looking
    class lists, and comparing its cv with a new one refused them as different classes."""
    import csv
    import unicodedata

    from safetensors import safe_open
    from safetensors.torch import load_file, save_file

    from xvision._fileio import sha256_file

    composed = "nódulo"
    decomposed = unicodedata.normalize("NFD", composed)
    manifest = make_phantom_dataset(tmp_path / "data", n_per_class=8, size=64, seed=5)
    manifest.write_text(manifest.read_text().replace(",nodule", f",{composed}"), encoding="utf-8")
    assert main(["split", str(manifest), "--test", "0.3", "--val", "0", "--seed", "1"]) == 0
    feats, run = tmp_path / "feats", tmp_path / "run"
    assert main(["extract", str(manifest), "--backbone", TINY, "--weights", "random", "-o", str(feats)]) == 0
    assert main(["train", str(feats), "-o", str(run), "--epochs", "2"]) == 0
    assert main(["cv", str(feats), "-o", str(tmp_path / "cv_new"), "--folds", "2", "--epochs", "2"]) == 0
    assert main(["cv", str(feats), "-o", str(tmp_path / "cv_old"), "--folds", "2", "--epochs", "3"]) == 0

    # Make them as an older xvision wrote them: every class name decomposed.
    def decompose(text: str) -> str:  # raw, and as json.dumps escapes it
        return text.replace(composed, decomposed).replace(json.dumps(composed)[1:-1], json.dumps(decomposed)[1:-1])

    model = run / "model.safetensors"
    with safe_open(str(model), framework="pt") as handle:
        meta = handle.metadata()
    meta["classes"] = json.dumps([decomposed if c == composed else c for c in json.loads(meta["classes"])])
    save_file(load_file(str(model)), str(model), metadata=meta)
    bundle = json.loads(decompose((run / "bundle.json").read_text(encoding="utf-8")))
    bundle["model_sha256"] = sha256_file(model)
    (run / "bundle.json").write_text(json.dumps(bundle), encoding="utf-8")
    for path in (
        feats / "index.csv",
        tmp_path / "cv_old" / "metrics.json",
        tmp_path / "cv_old" / "oof_predictions.csv",
    ):
        path.write_text(decompose(path.read_text(encoding="utf-8")), encoding="utf-8")
    assert decomposed in (feats / "index.csv").read_text(encoding="utf-8") and decomposed in bundle["classes"]
    assert decomposed in json.loads((tmp_path / "cv_old" / "metrics.json").read_text())["classes"]

    assert main(["evaluate", str(run), "--manifest", str(manifest), "-o", str(tmp_path / "e1")]) == 0
    assert main(["evaluate", str(run), "--features", str(feats), "-o", str(tmp_path / "e2")]) == 0
    for out in ("e1", "e2"):
        metrics = json.loads((tmp_path / out / "metrics.json").read_text(encoding="utf-8"))
        assert composed in metrics["classes"] and metrics["n"] > 0
    assert main(["compare", str(tmp_path / "cv_old"), str(tmp_path / "cv_new"), "-o", str(tmp_path / "c.json")]) == 0
    with open(tmp_path / "cv_new" / "oof_predictions.csv", newline="", encoding="utf-8") as handle:
        n_scored = sum(1 for r in csv.DictReader(handle) if r["repeat"] == "1")
    assert json.loads((tmp_path / "c.json").read_text())["n"] == n_scored


def test_a_received_run_cannot_redirect_writes_through_linked_folders(
    phantom_run: Path, tmp_path: Path, capsys
) -> None:
    """A run folder from someone else with plots/ linked to another folder had `evaluate` overwrite the files
    there; `train --overwrite` with an eval-* link stopped half-way ("Cannot call rmtree on a symbolic link")."""
    import shutil

    run = tmp_path / "received"
    shutil.copytree(phantom_run / "run", run)
    victim = tmp_path / "victim"
    victim.mkdir()
    (victim / "roc.png").write_text("precious")
    shutil.rmtree(run / "plots", ignore_errors=True)
    (run / "plots").symlink_to(victim)
    feats = str(phantom_run / "feats")
    assert main(["evaluate", str(run), "--features", feats]) == 2
    assert "plots: a link (to " in capsys.readouterr().err
    assert sorted(p.name for p in victim.iterdir()) == ["roc.png"] and (victim / "roc.png").read_text() == "precious"
    (run / "plots").unlink()
    (run / "eval-other").symlink_to(victim)
    assert main(["train", feats, "-o", str(run), "--epochs", "1", "--overwrite"]) == 0
    assert not (run / "eval-other").exists() and (victim / "roc.png").read_text() == "precious"
    shutil.rmtree(run / "checkpoints")
    (run / "checkpoints").symlink_to(victim)
    (victim / "epoch-001.safetensors").write_text("mine")
    assert main(["train", feats, "-o", str(run), "--epochs", "1", "--overwrite"]) == 2
    assert "checkpoints: a link (to " in capsys.readouterr().err
    assert (victim / "epoch-001.safetensors").read_text() == "mine"


def test_an_interrupted_overwrite_or_evaluation_never_looks_finished(
    phantom_run: Path, tmp_path: Path, monkeypatch
) -> None:
    """`train --overwrite` stopped part-way left the old bundle.json and head beside the new history, which every
    command took for one run; `evaluate` stopped part-way left the old metrics.json beside the new predictions,
    which `report` showed as one evaluation."""
    from xvision.evaluation import evaluate as evaluate_module
    from xvision.heads import MLPClassifier

    run, feats = _evaluated_copy(phantom_run, tmp_path)
    with monkeypatch.context() as patch:
        patch.setattr(evaluate_module, "draw_plots", _interrupted)
        assert main(["evaluate", str(run), "--features", feats, "--split", "all"]) == 130
    assert (run / "predictions.csv").is_file() and not (run / "metrics.json").exists()
    assert not (run / "report.html").exists()

    with monkeypatch.context() as patch:
        patch.setattr(MLPClassifier, "fit", _interrupted)
        assert main(["train", feats, "-o", str(run), "--epochs", "1", "--overwrite"]) == 130
    assert not (run / "bundle.json").exists() and not (run / "model.safetensors").exists()
    image = next((phantom_run / "data").rglob("*.png"))
    assert main(["predict", str(run), str(image)]) == 2  # not a finished run: refused, not predicted by the old head
    assert main(["train", feats, "-o", str(run), "--epochs", "1"]) == 0  # the unfinished head is trained again
    assert main(["predict", str(run), str(image)]) == 0


def test_an_overwrite_interrupted_in_its_cleanup_can_be_run_again(
    phantom_run: Path, tmp_path: Path, monkeypatch
) -> None:
    """Stopped while removing the old run's results (bundle.json and history.csv gone, plots/ left), the folder
    was refused both ways: "not empty" without --overwrite, "not a run folder" with it."""
    from xvision import training

    run, feats = _evaluated_copy(phantom_run, tmp_path)
    assert (run / "plots").is_dir()
    with monkeypatch.context() as patch:
        patch.setattr(training.shutil, "rmtree", _interrupted)
        assert main(["train", feats, "-o", str(run), "--epochs", "1", "--overwrite"]) == 130
    assert not (run / "bundle.json").exists()
    assert main(["train", feats, "-o", str(run), "--epochs", "1", "--overwrite"]) == 0
    assert (run / "bundle.json").is_file()


def _evaluated_copy(phantom_run: Path, tmp_path: Path) -> tuple[Path, str]:
    """A copy of the module's run, evaluated on its test split, and the feature store's path."""
    import shutil

    run, feats = tmp_path / "run", str(phantom_run / "feats")
    shutil.copytree(phantom_run / "run", run)
    assert main(["evaluate", str(run), "--features", feats]) == 0 and (run / "metrics.json").is_file()
    return run, feats


def _interrupted(*args, **kwargs):
    raise KeyboardInterrupt


def test_train_says_when_the_manifest_changed_since_extraction(tmp_path: Path, caplog) -> None:
    """A label fixed or a split made in the manifest after `extract` was ignored by `train` without a word."""
    manifest = make_phantom_dataset(tmp_path / "data", n_per_class=8, size=64, seed=6)
    assert main(["split", str(manifest), "--test", "0.25", "--val", "0", "--seed", "1"]) == 0
    feats = str(tmp_path / "feats")
    assert main(["extract", str(manifest), "--backbone", TINY, "--weights", "random", "-o", feats]) == 0
    assert main(["train", feats, "-o", str(tmp_path / "r1"), "--epochs", "1", "--no-audit"]) == 0
    assert "has changed since it was extracted" not in caplog.text
    assert main(["split", str(manifest), "--test", "0.25", "--val", "0", "--seed", "2"]) == 0  # other splits
    assert main(["train", feats, "-o", str(tmp_path / "r2"), "--epochs", "1", "--no-audit"]) == 0
    assert f"{manifest.resolve()} has changed since it was extracted into {feats}" in caplog.text
    assert f"run `xvision extract {manifest.resolve()} -o {feats}` again" in caplog.text
