"""`xvision fit` runs a recipe end to end; `evaluate --manifest` judges the run on images it never saw."""

from __future__ import annotations

import csv
import json

import pytest

from xvision.cli.main import main
from xvision.data.phantoms import make_phantom_dataset
from xvision.recipes import get_recipe, list_recipes

TINY = "timm:mobilenetv3_small_050"


def test_recipes_are_listed_with_seed_and_best(capsys) -> None:
    assert main(["recipes"]) == 0
    out = capsys.readouterr().out
    assert out.startswith("seed") and "best" in out and "(default)" in out
    assert get_recipe("seed").backbone == "vgg16" and get_recipe("seed").head["epochs"] == 20
    assert {r.name for r in list_recipes()} >= {"seed", "best"}
    assert main(["fit", "m.csv", "-o", "r", "--recipe", "nope"]) == 2
    assert "unknown recipe" in capsys.readouterr().err


@pytest.fixture(scope="module")
def fitted(tmp_path_factory):
    root = tmp_path_factory.mktemp("fit")
    manifest = make_phantom_dataset(root / "data", n_per_class=10, size=96, seed=5)
    # hold out four images per class as "another hospital": never in the fitted manifest
    with open(manifest, newline="") as handle:
        rows = list(csv.DictReader(handle))
    held = [r for r in rows if r["label"] == "nodule"][:4] + [r for r in rows if r["label"] == "normal"][:4]
    kept = [r for r in rows if r not in held]
    for name, subset in (("fit.csv", kept), ("other.csv", held)):
        with open(root / "data" / name, "w", newline="") as handle:
            writer = csv.DictWriter(handle, fieldnames=["path", "label", "group"])
            writer.writeheader()
            writer.writerows(subset)
    assert main(["split", str(root / "data" / "fit.csv"), "--test", "0.25", "--val", "0.25", "--seed", "2"]) == 0
    code = main(
        [
            "fit",
            str(root / "data" / "fit.csv"),
            "-o",
            str(root / "run"),
            "--recipe",
            "lite0",
            "--backbone",
            TINY,
            "--weights",
            "random",
        ]
    )
    return root, code


def test_fit_leaves_a_complete_run_folder(fitted) -> None:
    root, code = fitted
    assert code == 0
    run = root / "run"
    bundle = json.loads((run / "bundle.json").read_text())
    assert bundle["backbone"]["name"] == TINY and bundle["untrained_backbone"] is True
    assert bundle["recipe"] == "lite0"
    assert len(list((run / "checkpoints").glob("epoch-*.safetensors"))) == 20
    metrics = json.loads((run / "metrics.json").read_text())
    assert metrics["split"] == "test" and metrics["n"] > 0


def test_evaluate_manifest_scores_unseen_images(fitted, capsys) -> None:
    root, _ = fitted
    capsys.readouterr()
    assert main(["evaluate", str(root / "run"), "--manifest", str(root / "data" / "other.csv")]) == 0
    out_dir = root / "run" / "eval-other"
    metrics = json.loads((out_dir / "metrics.json").read_text())
    assert metrics["n"] == 8 and metrics["overlap_with_training"] == 0
    assert metrics["split"] == "all" and sum(map(sum, metrics["confusion_matrix"])) == 8
    assert (out_dir / "predictions.csv").read_text().count("\n") == 9
    # the run's own test metrics are untouched
    assert json.loads((root / "run" / "metrics.json").read_text())["split"] == "test"


def test_evaluate_manifest_scores_images_as_predict_does(fitted, tmp_path, monkeypatch) -> None:
    """On a CPU with native bf16, `extract` would take bf16; `evaluate --manifest` extracts as `predict`
    computes (fp32), so its probabilities are the served model's, image for image."""
    from dataclasses import replace

    from xvision.backbones import runtime
    from xvision.inference.predictor import Predictor

    root, _ = fitted
    bf16_cpu = replace(runtime.detect_hardware(), cpu_bf16=True, cuda=False, openvino=False)
    monkeypatch.setattr(runtime, "detect_hardware", lambda: bf16_cpu)
    other = root / "data" / "other.csv"
    assert main(["evaluate", str(root / "run"), "--manifest", str(other), "-o", str(tmp_path / "e")]) == 0
    meta = json.loads((tmp_path / "e" / "features" / "meta.json").read_text())
    assert meta["extraction"]["plan"]["precision"] == "fp32" and meta["extraction"]["rejected_plan"] is None
    with open(tmp_path / "e" / "predictions.csv", newline="") as handle:
        rows = list(csv.DictReader(handle))
    served = {p.path: p.probabilities for p in Predictor(root / "run").predict_paths([r["path"] for r in rows])}
    for row in rows:
        for name, value in served[row["path"]].items():
            assert abs(float(row[f"p_{name}"]) - value) < 2e-6, row["path"]
    fast = ["--manifest", str(other), "-o", str(tmp_path / "f"), "--precision", "auto"]
    assert main(["evaluate", str(root / "run"), *fast]) == 0
    record = json.loads((tmp_path / "f" / "features" / "meta.json").read_text())["extraction"]
    assert "bf16" in (record["plan"]["precision"], (record["rejected_plan"] or {}).get("precision"))


def test_evaluate_needs_exactly_one_source(fitted, capsys) -> None:
    root, _ = fitted
    assert main(["evaluate", str(root / "run")]) == 2
    assert "exactly one of --features" in capsys.readouterr().err


def test_a_recipe_that_reads_no_lesion_columns_is_not_refused_for_half_of_them(fitted, tmp_path, monkeypatch) -> None:
    import importlib

    from xvision import fit

    root, _ = fitted
    lines = (root / "data" / "fit.csv").read_text().splitlines()
    partial = tmp_path / "partial.csv"  # lesion_x and lesion_y, no lesion_diam: the head recipes never read them
    partial.write_text("\n".join([lines[0] + ",lesion_x,lesion_y", *(line + ",," for line in lines[1:])]) + "\n")

    class Extracting(Exception):
        pass

    def extracting(*args, **kwargs):
        raise Extracting

    monkeypatch.setattr(importlib.import_module("xvision.recipes.fit"), "extract_manifest", extracting)
    with pytest.raises(Extracting):  # got as far as extraction: the manifest was accepted
        fit(partial, tmp_path / "run", recipe="lite0", backbone=TINY)


def test_fit_refuses_a_bad_seed_or_checkpoint_policy_before_any_work(fitted, tmp_path, monkeypatch) -> None:
    import importlib

    from xvision import fit

    root, _ = fitted
    fit_module = importlib.import_module("xvision.recipes.fit")
    monkeypatch.setattr(fit_module, "extract_manifest", lambda *a, **k: pytest.fail("extracted before refusing"))
    manifest = root / "data" / "fit.csv"
    with pytest.raises(TypeError, match="seed must be an integer, got '1'"):
        fit(manifest, tmp_path / "a", recipe="lite0", backbone=TINY, seed="1")
    with pytest.raises(ValueError, match=r"seed must lie in \[0, 2\*\*31 - 1\], got 99999999999999999999"):
        fit(manifest, tmp_path / "a", recipe="lite0", backbone=TINY, seed=99999999999999999999)
    with pytest.raises(ValueError, match="checkpoints must be one of all, best, got 'last'"):
        fit(manifest, tmp_path / "b", recipe="lite0", backbone=TINY, checkpoints="last")
    assert not (tmp_path / "a").exists() and not (tmp_path / "b").exists()


def test_fit_refuses_a_used_folder_before_any_work(fitted, capsys, monkeypatch) -> None:
    import importlib

    root, _ = fitted
    fit_module = importlib.import_module("xvision.recipes.fit")  # the module, not the function it exports

    def no_work(*args, **kwargs):
        raise AssertionError("fit started work before refusing the folder")

    monkeypatch.setattr(fit_module, "extract_manifest", no_work)
    bundle = root / "run" / "bundle.json"
    stamp = bundle.stat().st_mtime_ns
    args = ["--recipe", "lite0", "--backbone", TINY, "--weights", "random"]
    capsys.readouterr()
    # the same command (random weights again): finished, a no-op
    assert main(["fit", str(root / "data" / "fit.csv"), "-o", str(root / "run"), *args]) == 0
    assert bundle.stat().st_mtime_ns == stamp
    same = ["--recipe", "lite0", "--backbone", TINY]  # without --weights: the same command, finished, is a no-op
    assert main(["fit", str(root / "data" / "fit.csv"), "-o", str(root / "run"), *same, "--seed", "1"]) != 0
    assert f"holds recipe 'lite0' (backbone {TINY}, seed 0)" in capsys.readouterr().err  # another seed: another fit
    assert main(["fit", str(root / "data" / "fit.csv"), "-o", str(root / "data"), *args, "--overwrite"]) != 0
    assert "not a run folder" in capsys.readouterr().err
    assert not (root / "data" / "features").exists()


def test_an_interrupted_head_is_trained_again_without_overwrite(tmp_path) -> None:
    from xvision.errors import RunError
    from xvision.training import _prepare_run_dir, check_run_dir

    run = tmp_path / "run"
    (run / "features").mkdir(parents=True)
    (run / "finetune").mkdir()
    assert check_run_dir(run, overwrite=False) is False  # fit's own inputs: an interrupted fit resumes
    (run / "checkpoints").mkdir()
    (run / "checkpoints" / "epoch-001.safetensors").write_bytes(b"partial")
    (run / "history.csv").write_text("epoch,train_loss\n1,0.7\n")
    assert check_run_dir(run, overwrite=False) is True  # the head was interrupted: redone, no --overwrite
    _prepare_run_dir(run, overwrite=False)
    assert not list((run / "checkpoints").iterdir()) and (run / "features").is_dir()
    (run / "bundle.json").write_text("{}")  # a finished run is not replaced without --overwrite
    with pytest.raises(RunError, match="pass --overwrite"):
        check_run_dir(run, overwrite=False)
    (run / "bundle.json").unlink()
    (run / "notes.txt").write_text("mine")  # nor is a folder holding anything else
    with pytest.raises(RunError, match="pass --overwrite"):
        check_run_dir(run, overwrite=False)


def test_evaluate_manifest_refuses_unknown_labels_and_splits_before_extracting(fitted, tmp_path, capsys, monkeypatch):
    """A label the run does not know, or a split the manifest lacks, is refused before any image is read."""
    import importlib

    root, _ = fitted
    on_images = importlib.import_module("xvision.evaluation.on_images")

    def no_work(*args, **kwargs):
        raise AssertionError("features were extracted before the manifest was checked")

    monkeypatch.setattr(on_images, "extract_manifest", no_work)
    with open(root / "data" / "other.csv", newline="") as handle:
        rows = list(csv.DictReader(handle))
    rows[0]["label"] = rows[0]["label"].capitalize()
    odd = tmp_path / "odd.csv"
    with open(odd, "w", newline="") as handle:
        writer = csv.DictWriter(handle, fieldnames=list(rows[0]))
        writer.writeheader()
        writer.writerows(rows)
    capsys.readouterr()
    assert main(["evaluate", str(root / "run"), "--manifest", str(odd), "-o", str(tmp_path / "e")]) == 2
    err = capsys.readouterr().err
    assert f"odd.csv: labels ['{rows[0]['label']}'] are not classes of the run" in err
    assert f"rename '{rows[0]['label']}' -> '{rows[0]['label'].lower()}'" in err and "Traceback" not in err
    other = ["--manifest", str(root / "data" / "other.csv"), "-o", str(tmp_path / "e")]
    assert main(["evaluate", str(root / "run"), *other, "--split", "test"]) == 2
    assert "no images in split 'test' (splits present: none)" in capsys.readouterr().err
    assert not (tmp_path / "e").exists()


def test_fit_refuses_a_leaky_or_one_class_manifest_before_training(tmp_path, capsys, monkeypatch) -> None:
    """Fine-tuning runs for minutes before extraction checks the splits: `fit` checks them first."""
    import importlib

    fit_module = importlib.import_module("xvision.recipes.fit")

    def no_work(*args, **kwargs):
        raise AssertionError("fit started work before checking the manifest")

    monkeypatch.setattr(fit_module, "extract_manifest", no_work)
    monkeypatch.setattr("xvision.finetune.trainer.finetune", no_work)
    manifest = make_phantom_dataset(tmp_path / "data", n_per_class=4, size=64, seed=1)
    with open(manifest, newline="") as handle:
        rows = list(csv.DictReader(handle))
    for i, row in enumerate(rows):
        row["group"], row["split"] = f"p{i // 2}", "train" if i % 2 == 0 else "test"  # each patient in both

    def write(name, subset):
        with open(tmp_path / "data" / name, "w", newline="") as handle:
            writer = csv.DictWriter(handle, fieldnames=list(rows[0]))
            writer.writeheader()
            writer.writerows(subset)
        return str(tmp_path / "data" / name)

    capsys.readouterr()
    assert main(["fit", write("leaky.csv", rows), "-o", str(tmp_path / "run"), "--recipe", "finetune"]) != 0
    err = capsys.readouterr().err
    assert "leaky.csv: group 'p0' is in more than one split" in err and "Traceback" not in err
    one_class = [{**r, "split": ""} for r in rows if r["label"] == "normal"]
    args = ["-o", str(tmp_path / "run"), "--recipe", "lite0", "--backbone", TINY, "--weights", "random"]
    assert main(["fit", write("normal.csv", one_class), *args]) != 0
    assert "normal.csv: the training rows hold only class 'normal'" in capsys.readouterr().err
    assert not (tmp_path / "run").exists()


def test_evaluate_manifest_on_one_split_extracts_only_that_split(fitted, tmp_path) -> None:
    root, _ = fitted
    with open(root / "data" / "fit.csv", newline="") as handle:
        tests = [r["path"] for r in csv.DictReader(handle) if r["split"] == "test"]
    out = tmp_path / "e"
    args = ["--manifest", str(root / "data" / "fit.csv"), "-o", str(out), "--split", "test"]
    assert main(["evaluate", str(root / "run"), *args]) == 0
    with open(out / "features" / "index.csv", newline="") as handle:
        assert sorted(r["path"] for r in csv.DictReader(handle)) == sorted(tests)
    metrics = json.loads((out / "metrics.json").read_text())
    assert metrics["split"] == "test" and metrics["n"] == len(tests) and metrics["overlap_with_training"] == 0


def test_a_fit_interrupted_before_its_evaluation_only_evaluates_when_run_again(
    fitted, tmp_path, monkeypatch, capsys
) -> None:
    import importlib
    import shutil

    root, _ = fitted
    run = tmp_path / "run"
    shutil.copytree(root / "run", run)
    (run / "metrics.json").unlink()  # as if interrupted between the head and its evaluation
    fit_module = importlib.import_module("xvision.recipes.fit")

    def no_work(*args, **kwargs):
        raise AssertionError("fit trained again")

    monkeypatch.setattr(fit_module, "extract_manifest", no_work)
    stamp = (run / "bundle.json").stat().st_mtime_ns
    args = ["-o", str(run), "--recipe", "lite0", "--backbone", TINY, "--weights", "random"]
    assert main(["fit", str(root / "data" / "fit.csv"), *args]) == 0
    again, before = (json.loads((r / "metrics.json").read_text()) for r in (run, root / "run"))
    assert again["n"] == before["n"] and again["roc_auc"] == before["roc_auc"] and again["run"] == str(run)
    assert (run / "bundle.json").stat().st_mtime_ns == stamp
    assert main(["fit", str(root / "data" / "fit.csv"), *args]) == 0  # finished, random weights again: a no-op
    assert (run / "bundle.json").stat().st_mtime_ns == stamp
    # The same command again: finished, nothing to redo, and a report that an interruption left unwritten is
    # written.
    (run / "report.html").unlink(missing_ok=True)
    assert main(["fit", str(root / "data" / "fit.csv"), *args]) == 0
    assert (run / "report.html").is_file() and (run / "bundle.json").stat().st_mtime_ns == stamp
    # Without --weights it asks for the pretrained backbone: this run of random features is not that fit (it
    # answered "nothing to redo" with the untrained run's figures).
    capsys.readouterr()
    assert main(["fit", str(root / "data" / "fit.csv"), *args[:-2]]) == 2
    assert "not what this command asks for" in capsys.readouterr().err
    # Without --backbone the recipe means its own network, not the one this run was fitted on: not "finished".
    capsys.readouterr()
    assert main(["fit", str(root / "data" / "fit.csv"), *args[:4]]) == 2
    assert (run / "bundle.json").stat().st_mtime_ns == stamp
    assert f"holds recipe 'lite0' (backbone {TINY}, seed 0) fitted on" in capsys.readouterr().err  # what it holds
    kept = (run / "bundle.json").read_text()  # a head `train` made (no recipe) is not this recipe's finished fit
    (run / "bundle.json").write_text(json.dumps({**json.loads(kept), "recipe": None}))
    assert main(["fit", str(root / "data" / "fit.csv"), *args]) == 2
    (run / "bundle.json").write_text(kept)
    (run / "metrics.json").unlink()
    lines = (root / "data" / "fit.csv").read_text().splitlines(keepends=True)
    changed = root / "data" / "fit-changed.csv"  # another manifest, with a test split too: refused as before
    changed.write_text("".join(lines[:-1]))
    assert main(["fit", str(changed), *args]) == 2 and not (run / "metrics.json").exists()
    # the recipe reported is the one the bundle says ran (best falls back to finetune_lung without lesions)
    bundle = json.loads((run / "bundle.json").read_text())
    (run / "bundle.json").write_text(json.dumps({**bundle, "recipe": "finetune_lung"}))
    from xvision.recipes import fit as fit_api

    result = fit_api(root / "data" / "fit.csv", run, recipe="best", weights="random", progress=False)
    assert result.recipe == "finetune_lung"


def test_an_unreadable_image_is_left_out_and_said_so(fitted, tmp_path, capsys) -> None:
    """Figures on a set with an unreadable image count the others, and say which one is missing."""
    root, _ = fitted
    lines = (root / "data" / "other.csv").read_text().splitlines()
    (tmp_path / "gone.png").write_bytes(b"")
    manifest = tmp_path / "with-bad.csv"
    absolute = [lines[0], *(f"{root / 'data' / line}" for line in lines[1:])]  # paths relative to data/
    manifest.write_text("\n".join([*absolute, f"{tmp_path / 'gone.png'},normal,gone"]) + "\n")
    capsys.readouterr()
    assert main(["evaluate", str(root / "run"), "--manifest", str(manifest), "-o", str(tmp_path / "e")]) == 0
    metrics = json.loads((tmp_path / "e" / "metrics.json").read_text())
    assert metrics["n"] == 8 and [u["path"] for u in metrics["unreadable"]] == [str(tmp_path / "gone.png")]
    assert "empty" in metrics["unreadable"][0]["error"]
    assert "n=8 (1 unreadable image left out)" in capsys.readouterr().out
    assert "Images left out" in (tmp_path / "e" / "report.html").read_text()
    assert main(["cv", str(tmp_path / "e" / "features"), "-o", str(tmp_path / "cv"), "--folds", "2"]) == 0
    assert json.loads((tmp_path / "cv" / "metrics.json").read_text())["unreadable"] == metrics["unreadable"]
    assert "n=8 (1 unreadable image left out)" in capsys.readouterr().out


def test_a_fit_killed_while_drawing_its_plots_is_evaluated_again_not_taken_as_finished(
    fitted, tmp_path, monkeypatch
) -> None:
    import importlib
    import shutil

    root, _ = fitted
    run = tmp_path / "run"
    shutil.copytree(root / "run", run)
    for old in ("metrics.json", "report.html", "predictions.csv"):
        (run / old).unlink(missing_ok=True)
    shutil.rmtree(run / "plots")
    evaluate_module = importlib.import_module("xvision.evaluation.evaluate")

    def killed(*args, **kwargs):
        (run / "plots" / ".training_curve.png.x1.part").write_bytes(b"half")  # what atomic_write leaves
        raise KeyboardInterrupt

    monkeypatch.setattr(evaluate_module, "plot_training_curve", killed)
    with pytest.raises(KeyboardInterrupt):
        evaluate_module.evaluate_run(run, run / "features", split="test")
    assert not (run / "metrics.json").exists()  # written last: its absence says the evaluation did not finish
    monkeypatch.undo()
    args = ["-o", str(run), "--recipe", "lite0", "--backbone", TINY, "--weights", "random"]
    assert main(["fit", str(root / "data" / "fit.csv"), *args]) == 0
    assert (run / "metrics.json").is_file() and (run / "report.html").is_file()
    names = {p.name for p in (run / "plots").iterdir()}
    assert {"roc.png", "reliability.png", "training_curve.png", "confusion_matrix.png"} <= names
    assert not [n for n in names if n.endswith(".part")]


def test_the_cv_hint_after_a_fit_without_test_split_runs_as_printed(fitted, tmp_path, capsys) -> None:
    root, _ = fitted
    capsys.readouterr()
    args = ["-o", str(tmp_path / "run"), "--recipe", "lite0", "--backbone", TINY, "--weights", "random"]
    assert main(["fit", str(root / "data" / "other.csv"), *args]) == 0
    printed = capsys.readouterr().out
    assert f"--recipe lite0 --backbone {TINY} --weights random -o CV_DIR" in printed  # not the recipe's own VGG16


def test_evaluations_belong_to_one_manifest_and_one_model(fitted, tmp_path, caplog, capsys) -> None:
    import shutil

    root, _ = fitted
    run = tmp_path / "run"
    shutil.copytree(root / "run", run)
    other = root / "data" / "other.csv"
    assert main(["evaluate", str(run), "--manifest", str(other)]) == 0
    metrics = json.loads((run / "eval-other" / "metrics.json").read_text())
    assert metrics["manifest"] == str(other.resolve()) and len(metrics["model_sha256"]) == 64
    assert main(["evaluate", str(run), "--manifest", str(other)]) == 0  # the same manifest again: fine
    namesake = tmp_path / "elsewhere" / "other.csv"  # another list with the same file name
    namesake.parent.mkdir()
    header, *rows = other.read_text().splitlines(keepends=True)
    namesake.write_text(
        header
        + "".join(f"{(other.parent / row.split(',', 1)[0]).resolve()},{row.split(',', 1)[1]}" for row in rows[:3])
    )
    capsys.readouterr()
    assert main(["evaluate", str(run), "--manifest", str(namesake)]) == 2
    assert f"holds the evaluation of {other.resolve()}, not {namesake}; give this one its own folder" in (
        capsys.readouterr().err
    )
    assert json.loads((run / "eval-other" / "metrics.json").read_text())["n"] == metrics["n"]  # untouched
    into = ["-o", str(run / "eval-other"), "--split", "all"]
    assert main(["evaluate", str(run), "--features", str(run / "features"), *into]) == 2  # nor a store's figures
    assert f"holds the evaluation of {other.resolve()}, not a feature store" in capsys.readouterr().err
    # Results written elsewhere, then the head trained again: report refuses the old model's figures.
    assert main(["evaluate", str(run), "--manifest", str(other), "-o", str(tmp_path / "kept")]) == 0
    args = ["train", str(run / "features"), "-o", str(run), "--overwrite", "--epochs", "3", "--seed", "9"]
    assert main([*args, "--no-audit"]) == 0
    assert not (run / "eval-other").exists()
    assert "removing 2 evaluation(s) of the previous model: its own (metrics.json), eval-other" in caplog.text
    assert main(["report", str(run), "--results", str(tmp_path / "kept"), "-o", str(tmp_path / "r.html")]) == 2
    assert "scored by an earlier model of" in capsys.readouterr().err and not (tmp_path / "r.html").exists()


def test_more_than_two_classes_run_a_recipe_that_trains_them_or_are_refused_before_work(
    tmp_path, capsys, caplog
) -> None:
    """`fit` (default `best`) and `cv` failed on a three-class manifest with "fine-tuning needs exactly two
    classes", `cv` after auditing and claiming its folder; nothing said which recipes take more classes."""
    manifest = make_phantom_dataset(tmp_path / "data", n_per_class=10, size=64, seed=3)
    with open(manifest, newline="") as handle:
        rows = list(csv.DictReader(handle))
    for index, row in enumerate(r for r in rows if r["label"] == "normal"):
        if index % 2:
            row["label"] = "effusion"
    with open(manifest, "w", newline="") as handle:
        writer = csv.DictWriter(handle, fieldnames=list(rows[0]))
        writer.writeheader()
        writer.writerows(rows)
    for command in (
        ["fit", str(manifest), "-o", str(tmp_path / "ft"), "--recipe", "finetune"],
        ["cv", str(manifest), "-o", str(tmp_path / "cv"), "--recipe", "detect"],
    ):
        assert main(command) == 2
        err = capsys.readouterr().err
        assert "fine-tunes for two classes and the manifest has 3 (effusion, nodule, normal)" in err, err
        assert "use --recipe seed, lite0 or lite0_768, which train any number of classes" in err
    assert not (tmp_path / "ft").exists() and not (tmp_path / "cv").exists()
    run = tmp_path / "run"
    assert main(["fit", str(manifest), "-o", str(run), "--backbone", TINY, "--weights", "random"]) == 0
    assert "recipe 'best' fine-tunes for two classes and manifest.csv has 3" in caplog.text
    bundle = json.loads((run / "bundle.json").read_text())
    assert bundle["recipe"] == "lite0" and bundle["classes"] == ["effusion", "nodule", "normal"]
    # The same command again (without --weights, which is never taken as the same) finds the run finished,
    # instead of refusing it as another recipe's.
    from xvision.recipes.fit import _already_fitted

    done = _already_fitted(run, manifest, get_recipe("best"), backbone=TINY, seed=0, weights="random")
    assert done is not None and done.recipe == "lite0"


def test_the_report_of_a_copied_or_moved_run_shows_its_own_data(tmp_path, caplog) -> None:
    """A copy's report showed the store at bundle.json's old path, by then another manifest's; a moved run's
    report found no store although `features/` was inside it."""
    import shutil

    manifest = make_phantom_dataset(tmp_path / "data", n_per_class=8, size=64, seed=6)
    with open(manifest, newline="") as handle:
        rows = list(csv.DictReader(handle))
    with open(tmp_path / "data" / "other.csv", "w", newline="") as handle:
        writer = csv.DictWriter(handle, fieldnames=list(rows[0]))
        writer.writeheader()
        writer.writerows(rows[2:])
    fit = ["--recipe", "lite0", "--backbone", TINY, "--weights", "random"]
    assert main(["fit", str(manifest), "-o", str(tmp_path / "run"), *fit]) == 0
    shutil.copytree(tmp_path / "run", tmp_path / "copy")
    assert main(["fit", str(tmp_path / "data" / "other.csv"), "-o", str(tmp_path / "run"), *fit, "--overwrite"]) == 0
    ours = json.loads((tmp_path / "copy" / "bundle.json").read_text())["data"]["manifest"]["sha256"]
    theirs = json.loads((tmp_path / "run" / "bundle.json").read_text())["data"]["manifest"]["sha256"]
    assert ours != theirs
    assert main(["report", str(tmp_path / "copy"), "-o", str(tmp_path / "copy.html")]) == 0
    page = (tmp_path / "copy.html").read_text()
    assert ours in page and theirs not in page
    shutil.copytree(tmp_path / "copy", tmp_path / "bare", ignore=shutil.ignore_patterns("features"))
    assert main(["report", str(tmp_path / "bare"), "-o", str(tmp_path / "bare.html")]) == 0
    assert "a feature store of another manifest than the run was trained on" in caplog.text
    assert theirs not in (tmp_path / "bare.html").read_text()
    (tmp_path / "away" / "my runs").mkdir(parents=True)
    moved = shutil.move(tmp_path / "copy", tmp_path / "away" / "my runs" / "run")
    shutil.rmtree(tmp_path / "run")  # bundle.json's recorded store is gone too
    assert main(["report", str(moved), "-o", str(tmp_path / "moved.html")]) == 0
    page = (tmp_path / "moved.html").read_text()
    assert "feature store was not found" not in page and ours in page


def test_the_same_fit_with_random_weights_run_again_finds_its_run(fitted, caplog, capsys, tmp_path) -> None:
    """`fit ... --weights random` run again was refused as "not what this command asks for", which it was."""
    import shutil

    root, _ = fitted
    run = tmp_path / "run"
    shutil.copytree(root / "run", run)
    args = ["fit", str(root / "data" / "fit.csv"), "-o", str(run), "--recipe", "lite0", "--backbone", TINY]
    assert main([*args, "--weights", "random"]) == 0
    assert "already holds recipe 'lite0' fitted on this manifest; nothing to redo" in caplog.text
    weights = tmp_path / "w.safetensors"
    weights.write_bytes(b"x")
    assert main([*args, "--weights", str(weights)]) == 2
    err = capsys.readouterr().err
    assert "with --weights FILE, whether it was fitted from the same weights cannot be told" in err
    assert "not what this command asks for" not in err
