"""The whole CLI flow on tiny synthetic phantoms: manifest -> split -> extract -> train -> evaluate -> predict."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from xvision.cli.main import main
from xvision.data.phantoms import make_phantom_dataset
from xvision.features.store import FeatureStore

TINY = "timm:mobilenetv3_small_050"


@pytest.fixture(scope="module")
def pipeline(tmp_path_factory):
    """Run every stage once; tests below inspect what each left behind."""
    root = tmp_path_factory.mktemp("pipeline")
    data = root / "data"
    make_phantom_dataset(data, n_per_class=12, size=96, seed=3)
    manifest = root / "manifest.csv"
    codes = {}
    codes["manifest"] = main(["manifest", str(data), "-o", str(manifest)])
    codes["split"] = main(
        ["split", str(manifest), "--group-by", "none", "--test", "0.25", "--val", "0.25", "--seed", "1"]
    )
    codes["extract"] = main(
        ["extract", str(manifest), "--backbone", TINY, "--weights", "random", "-o", str(root / "feats")]
    )
    codes["train"] = main(["train", str(root / "feats"), "-o", str(root / "run"), "--epochs", "4"])
    codes["evaluate"] = main(["evaluate", str(root / "run"), "--features", str(root / "feats")])
    return root, codes


def test_every_stage_succeeds(pipeline) -> None:
    _, codes = pipeline
    assert codes == {"manifest": 0, "split": 0, "extract": 0, "train": 0, "evaluate": 0}


def test_train_writes_one_checkpoint_per_epoch_and_history(pipeline) -> None:
    root, _ = pipeline
    run = root / "run"
    assert sorted(p.name for p in (run / "checkpoints").iterdir()) == [
        f"epoch-{i:03d}.safetensors" for i in range(1, 5)
    ]
    lines = (run / "history.csv").read_text().splitlines()
    assert lines[0] == "epoch,train_loss,train_accuracy,val_loss,val_accuracy" and len(lines) == 5
    bundle = json.loads((run / "bundle.json").read_text())
    assert bundle["classes"] == ["nodule", "normal"]
    assert bundle["backbone"]["name"] == TINY and bundle["untrained_backbone"] is True
    assert 1 <= bundle["best_epoch"] <= 4 and "torch" in bundle["versions"]
    # what decoded the images and how the features were computed, for a run shared without features/
    assert {"pillow", "pydicom"} <= set(bundle["versions"])
    meta = json.loads((run.parent / "feats" / "meta.json").read_text())
    assert bundle["data"]["extraction_plan"] == meta["extraction"]["plan"]


def test_metrics_agree_with_each_other(pipeline) -> None:
    root, _ = pipeline
    metrics = json.loads((root / "run" / "metrics.json").read_text())
    cm = np.array(metrics["confusion_matrix"])
    assert metrics["classes"] == ["nodule", "normal"] and cm.shape == (2, 2)
    assert cm.sum() == metrics["n"] > 0
    assert metrics["accuracy"] == pytest.approx(np.trace(cm) / cm.sum())
    for i, c in enumerate(metrics["classes"]):
        if cm[i].sum():
            assert metrics["recall"][c] == pytest.approx(cm[i, i] / cm[i].sum())
        if cm[:, i].sum():
            assert metrics["precision"][c] == pytest.approx(cm[i, i] / cm[:, i].sum())
    assert 0.0 <= metrics["roc_auc"] <= 1.0
    assert metrics["warning"] == "UNTRAINED BACKBONE"
    for name in ("confusion_matrix.png", "training_curve.png", "roc.png"):
        assert Image.open(root / "run" / "plots" / name).format == "PNG"


def test_predict_prints_json_and_draws_a_grid(pipeline, capsys) -> None:
    root, _ = pipeline
    capsys.readouterr()
    images = sorted((root / "data" / "nodule").glob("*.png"))[:3]
    grid = root / "grid.png"
    code = main(["predict", str(root / "run"), *map(str, images), "--json", "--grid", str(grid)])
    out, err = capsys.readouterr()
    assert code == 0
    results = json.loads(out)
    assert [Path(r["path"]).name for r in results] == [p.name for p in images]
    for r in results:
        assert r["predicted"] in ("nodule", "normal")
        assert sum(r["probabilities"].values()) == pytest.approx(1.0, abs=1e-5)
    assert "UNTRAINED BACKBONE" in err
    assert Image.open(grid).format == "PNG"
    kept = root / "data" / "manifest.csv"  # a slip of the file name never replaces another file with a PNG
    before = kept.read_bytes()
    assert main(["predict", str(root / "run"), str(images[0]), "--grid", str(kept)]) == 2
    assert "ending in .png" in capsys.readouterr().err and kept.read_bytes() == before


def test_predict_matches_evaluate_on_the_same_image(pipeline, capsys) -> None:
    """The predictor (images -> backbone -> head) reproduces the probabilities computed from stored features."""
    root, _ = pipeline
    lines = (root / "run" / "predictions.csv").read_text().splitlines()
    path, _label, _pred, p_nodule, _p_normal, _sha256 = lines[1].split(",")
    manifest_dir = root
    capsys.readouterr()
    main(["predict", str(root / "run"), str(manifest_dir / path), "--csv"])
    out = capsys.readouterr().out.splitlines()
    # Extracted in fp32, the stored features are the predictor's to rounding. On a CPU with native bf16 the
    # default extraction is bf16, which agrees with fp32 within the accuracy guard's bar (cosine 0.999):
    # the head's probability then moves by up to about 0.01.
    plan = FeatureStore(root / "feats").read_meta()["extraction"]["plan"]
    tolerance = 1e-4 if plan["precision"] == "fp32" else 1e-2
    assert float(out[1].split(",")[2]) == pytest.approx(float(p_nodule), abs=tolerance)


def test_predict_reports_bad_files_and_continues(pipeline, capsys, tmp_path) -> None:
    root, _ = pipeline
    bad = tmp_path / "bad.png"
    bad.write_text("not an image")
    good = next((root / "data" / "normal").glob("*.png"))
    capsys.readouterr()
    code = main(["predict", str(root / "run"), str(good), str(bad)])
    out, err = capsys.readouterr()
    assert code == 1
    assert str(good) in out and "bad.png" in err
    assert "Traceback" not in err
    mask = tmp_path / "lung_mask.png"  # a mask beside the films is refused, not given a confident class
    Image.fromarray((np.arange(64 * 64).reshape(64, 64) % 7 == 0).astype(np.uint8)).save(mask)
    assert main(["predict", str(root / "run"), str(good), str(mask)]) == 1
    out, err = capsys.readouterr()
    rows = dict(line.split("\t", 1) for line in out.splitlines())
    assert rows[str(mask)].startswith("ERROR\tonly 2 grey levels: a mask") and "lung_mask.png" in err
    assert rows[str(good)].split("\t")[0] in ("normal", "nodule")
    icon = tmp_path / "icon.png"  # an 8 x 8 icon is refused too, not scaled up to 224 px and classified
    Image.fromarray(np.random.default_rng(0).integers(0, 256, (8, 8), dtype=np.uint8)).save(icon)
    assert main(["predict", str(root / "run"), str(icon)]) == 1
    assert "icon.png: image is 8 x 8 pixels: too small" in capsys.readouterr().err
    loop = tmp_path / "loop.png"  # a link to itself: said so, not "file not found"
    loop.symlink_to(loop)
    assert main(["predict", str(root / "run"), str(loop)]) == 2
    assert "loop.png: a link that leads to no file" in capsys.readouterr().err
    # A missing file among others is skipped like an unreadable one; the rest are still predicted.
    assert main(["predict", str(root / "run"), str(good), str(tmp_path / "typo.png"), str(loop)]) == 1
    out, err = capsys.readouterr()
    rows = dict(line.split("\t", 1) for line in out.splitlines())
    assert rows[str(good)].split("\t")[0] in ("normal", "nodule")
    assert rows[str(tmp_path / "typo.png")] == "ERROR\tfile not found"
    assert rows[str(loop)].startswith("ERROR\ta link that leads to no file")


def test_user_mistakes_are_one_line_errors(pipeline, capsys, tmp_path) -> None:
    root, _ = pipeline
    capsys.readouterr()
    assert main(["train", str(tmp_path / "nowhere"), "-o", str(tmp_path / "run")]) == 2
    err = capsys.readouterr().err
    assert err.startswith("Error: ") and err.count("\n") == 1 and "nowhere" in err
    assert main(["evaluate", str(tmp_path), "--features", str(root / "feats")]) == 2
    assert "not a run folder" in capsys.readouterr().err
    assert main(["predict", str(tmp_path / "no-run"), str(root / "manifest.csv")]) == 2
    assert "no-run: no such run folder" in capsys.readouterr().err  # a typo'd path, not a wrong folder
    assert main(["extract", str(root / "manifest.csv"), "--backbone", "nonsense", "-o", str(tmp_path / "f")]) == 2
    assert "unknown backbone" in capsys.readouterr().err


def test_training_over_an_evaluated_run_drops_the_old_heads_results(pipeline, tmp_path, caplog) -> None:
    root, _ = pipeline
    run = tmp_path / "run"
    shutil.copytree(root / "run", run)
    assert (run / "metrics.json").is_file() and (run / "report.html").is_file()
    (run / "eval-other").mkdir()  # evaluate --manifest results: the old head's too
    assert main(["train", str(root / "feats"), "-o", str(run), "--epochs", "2", "--overwrite", "--no-audit"]) == 0
    for stale in ("metrics.json", "predictions.csv", "report.html", "plots"):
        assert not (run / stale).exists(), stale  # else `report` shows the old head's figures beside the new one
    assert not (run / "eval-other").exists() and (run / "val_keys.json").is_file()
    assert "removing 2 evaluation(s) of the previous model: its own (metrics.json), eval-other" in caplog.text
    caplog.clear()  # a run folder that is taken is refused before the audit reads every image
    caplog.set_level("INFO")
    assert main(["train", str(root / "feats"), "-o", str(run), "--epochs", "2"]) == 2
    assert "auditing" not in caplog.text
    assert main(["train", str(root / "feats"), "-o", str(tmp_path / "new"), "--epochs", "1"]) == 0
    assert "auditing" in caplog.text  # where the folder is free, the audit runs as before
    assert main(["evaluate", str(run), "--features", str(root / "feats")]) == 0
    assert (run / "metrics.json").is_file()


def test_a_bundle_whose_classes_disagree_with_its_model_is_refused_in_one_line(pipeline, tmp_path, capsys) -> None:
    root, _ = pipeline
    run = tmp_path / "run"
    shutil.copytree(root / "run", run)
    bundle = json.loads((run / "bundle.json").read_text())
    bundle["classes"] = [*bundle["classes"], "mass"]  # hand-edited: three classes over a two-class head
    (run / "bundle.json").write_text(json.dumps(bundle))
    image = next((root / "data" / "normal").glob("*.png"))
    capsys.readouterr()
    assert main(["predict", str(run), str(image)]) == 2
    err = capsys.readouterr().err
    assert "differ from those of model.safetensors" in err and "Traceback" not in err and err.count("\n") == 1


def test_checkpoints_best_keeps_the_last_and_the_best_and_all_warns_when_large(
    pipeline, tmp_path, caplog, monkeypatch
) -> None:
    root, _ = pipeline
    args = ["train", str(root / "feats"), "--epochs", "6", "--no-audit"]
    assert main([*args, "-o", str(tmp_path / "best"), "--checkpoints", "best"]) == 0
    bundle = json.loads((tmp_path / "best" / "bundle.json").read_text())
    kept = sorted(p.name for p in (tmp_path / "best" / "checkpoints").iterdir())
    assert kept == sorted({f"epoch-{bundle['best_epoch']:03d}.safetensors", "epoch-006.safetensors"})
    assert "checkpoint is" not in caplog.text
    assert "the validation split holds few images of a class (nodule 3, normal 3; under 5)" in caplog.text
    monkeypatch.setattr("xvision.training._LARGE_CHECKPOINTS", 1000)  # as if each were 52 MB
    assert main([*args, "-o", str(tmp_path / "all")]) == 0
    assert len(list((tmp_path / "all" / "checkpoints").iterdir())) == 6
    assert "6 epochs write" in caplog.text and "--checkpoints best keeps only the last and the best" in caplog.text


def test_training_that_diverges_stops_in_one_line_and_can_be_run_again(pipeline, tmp_path, capsys) -> None:
    root, _ = pipeline
    args = ["train", str(root / "feats"), "-o", str(tmp_path / "run"), "--epochs", "5", "--no-audit"]
    capsys.readouterr()
    assert main([*args, "--lr", "1e9", "--momentum", "0.9"]) == 2
    err = capsys.readouterr().err
    assert "training diverged at epoch" in err and "lower --lr (it was 1e+09)" in err and "Traceback" not in err
    assert main(args) == 0  # the same folder, a sane rate, no --overwrite needed: nothing was saved as a model


def test_outputs_never_replace_inputs_or_files_xvision_did_not_write(pipeline, tmp_path, capsys) -> None:
    """`predict --heatmaps` into the images' own folder replaced the radiographs with heatmaps; `audit -o` and
    `report -o` replaced a manifest or a model without a word."""
    root, _ = pipeline
    films = tmp_path / "films"
    films.mkdir()
    for source in sorted((root / "data" / "normal").glob("*.png"))[:2]:
        shutil.copy(source, films / source.name)
    before = {p.name: p.read_bytes() for p in films.iterdir()}
    run, manifest, model = root / "run", root / "manifest.csv", root / "run" / "model.safetensors"
    kept = {p: p.read_bytes() for p in (manifest, model)}

    assert main(["predict", str(run), str(films), "--heatmaps", str(films)]) == 2
    assert "the heatmap would replace an input of this command" in capsys.readouterr().err
    one = sorted(films.iterdir())[0]
    assert main(["predict", str(run), str(one), "--grid", str(one)]) == 2
    assert "the grid would replace an input" in capsys.readouterr().err
    assert main(["audit", str(manifest), "-o", str(manifest), "--repeats", "1", "--no-progress"]) == 2
    assert "the audit result would replace an input" in capsys.readouterr().err
    assert main(["audit", str(manifest), "-o", str(model), "--repeats", "1", "--no-progress"]) == 2
    assert "model.safetensors exists and is not an earlier audit result from Xvision" in capsys.readouterr().err
    assert main(["report", str(run), "-o", str(manifest)]) == 2
    assert "manifest.csv exists and is not an earlier report from Xvision" in capsys.readouterr().err
    assert {p.name: p.read_bytes() for p in films.iterdir()} == before
    assert all(path.read_bytes() == data for path, data in kept.items())

    # Xvision's own earlier outputs are replaced as before: running the same command again works.
    heat, grid = tmp_path / "heat", tmp_path / "grid.png"
    for _ in range(2):
        assert main(["predict", str(run), str(films), "--heatmaps", str(heat), "--grid", str(grid)]) == 0
        assert main(
            ["audit", str(manifest), "-o", str(tmp_path / "audit.json"), "--repeats", "1", "--no-progress"]
        ) in (0, 3)
        assert main(["report", str(run), "-o", str(tmp_path / "report.html")]) == 0
    assert sorted(p.name for p in heat.iterdir()) == sorted(before)
    one = sorted(films.iterdir())[0]  # the same film twice, and a missing one between: one heatmap per film given
    twice = tmp_path / "twice"
    assert main(["predict", str(run), str(one), str(tmp_path / "gone.png"), str(one), "--heatmaps", str(twice)]) == 1
    assert sorted(p.name for p in twice.iterdir()) == [f"films_{one.stem}-2.png", f"films_{one.stem}.png"]
    # Names that repeat in other folders (every PACS series has an IM0000): the path tells the overlays apart.
    for series in ("P1/SE1", "P2/SE1"):
        (tmp_path / "export" / series).mkdir(parents=True)
        shutil.copy(one, tmp_path / "export" / series / "IM0000.png")
    pacs = tmp_path / "pacs-heat"
    assert main(["predict", str(run), str(tmp_path / "export"), "--heatmaps", str(pacs)]) == 0
    assert sorted(p.name for p in pacs.iterdir()) == ["P1_SE1_IM0000.png", "P2_SE1_IM0000.png"]
    # A grid drawn before the mark existed (matplotlib's own Software chunk) is an earlier grid too.
    Image.open(grid).save(grid, pnginfo=_png_software("Matplotlib version3.10.0, https://matplotlib.org/"))
    assert main(["predict", str(run), str(films), "--grid", str(grid)]) == 0
    Image.open(grid).save(grid)  # no mark at all: a PNG of unknown origin is kept
    assert main(["predict", str(run), str(films), "--grid", str(grid)]) == 2


def _png_software(text: str):
    from PIL.PngImagePlugin import PngInfo

    info = PngInfo()
    info.add_text("Software", text)
    return info


def test_a_report_refuses_a_cross_validation_or_another_runs_results(pipeline, tmp_path, capsys) -> None:
    root, _ = pipeline
    cv = tmp_path / "cv"
    assert main(["cv", str(root / "feats"), "-o", str(cv), "--folds", "2", "--epochs", "1", "--bootstrap", "0"]) == 0
    assert main(["report", str(root / "run"), "--results", str(cv)]) == 2
    assert "holds a cross-validation (`xvision cv`), not an evaluation of" in capsys.readouterr().err
    assert not (cv / "report.html").exists()

    other = tmp_path / "other"
    assert main(["train", str(root / "feats"), "-o", str(other), "--epochs", "2", "--seed", "5", "--no-audit"]) == 0
    assert main(["report", str(other), "--results", str(root / "run")]) == 2
    assert f"these results are an evaluation of {root / 'run'}, not of {other}" in capsys.readouterr().err
