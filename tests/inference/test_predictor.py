"""The Python API's Predictor: arrays it cannot score are refused by name, and paths come back in order."""

from __future__ import annotations

import re

import numpy as np
import pytest
from PIL import Image

from xvision.cli.main import main
from xvision.data.phantoms import make_phantom_dataset
from xvision.inference import Predictor
from xvision.io import load_image

TINY = "timm:mobilenetv3_small_050"


@pytest.fixture(scope="module")
def predictor(tmp_path_factory) -> tuple[Predictor, list]:
    root = tmp_path_factory.mktemp("predictor")
    manifest = make_phantom_dataset(root / "data", n_per_class=6, size=64, seed=5)
    assert main(["extract", str(manifest), "--backbone", TINY, "--weights", "random", "-o", str(root / "f")]) == 0
    assert main(["train", str(root / "f"), "-o", str(root / "run"), "--epochs", "2", "--no-audit"]) == 0
    return Predictor(root / "run"), sorted((root / "data").rglob("*.png"))


def test_arrays_not_in_xvisions_form_are_refused_by_name(predictor) -> None:
    model, images = predictor
    film = load_image(images[0])
    as_uint8 = np.asarray(Image.open(images[0]))  # what np.array(Image.open(...)) gives: 0..255 integers
    with pytest.raises(ValueError, match=r"image 1: uint8 pixels; .*divide 8-bit pixels by 255"):
        model.predict_arrays([film, as_uint8])
    with pytest.raises(ValueError, match=r"image 0: values span \[0, \d+\]; Xvision.s array form is float in \[0, 1\]"):
        model.predict_arrays([as_uint8.astype(np.float32)])
    broken = film.copy()
    broken[3, 3] = np.nan
    with pytest.raises(ValueError, match="image 0: contains NaN"):
        model.predict_arrays([broken])
    with pytest.raises(ValueError, match=r"image 0: expected a 2-D grayscale array, got shape \(64, 64, 3\)"):
        model.predict_arrays([np.repeat(film[:, :, None], 3, axis=2)])
    with pytest.raises(ValueError, match="every pixel has the same value"):
        model.predict_arrays([np.zeros((64, 64), dtype=np.float32)])
    with pytest.raises(ValueError, match="4 x 4 pixels: too small"):
        model.predict_arrays([film[:4, :4]])
    with pytest.raises(TypeError, match="expected a numpy array, got list"):
        model.predict_arrays([film.tolist()])
    # One 2-D array alone is one image; the same answer as in a list.
    np.testing.assert_allclose(model.predict_arrays(film), model.predict_arrays([film]), rtol=1e-6)
    assert model.predict_arrays(film).shape == (1, 2)


def test_paths_come_back_one_per_input_in_the_order_given(predictor, tmp_path) -> None:
    model, images = predictor
    bad = tmp_path / "bad.png"
    bad.write_text("not an image")
    a, b = images[0], images[-1]
    results = model.predict_paths([a, bad, a, b], batch_size=2)
    assert [r.path for r in results] == [str(a), str(bad), str(a), str(b)]
    assert results[1].error and results[0].error is results[2].error is results[3].error is None
    assert results[0].probabilities == results[2].probabilities
    # A single path (str or Path) is one image, not a sequence of characters; any iterable is accepted.
    [single] = model.predict_paths(str(a))
    assert single.path == str(a) and single.probabilities == results[0].probabilities
    assert [r.path for r in model.predict_paths(p for p in (b, a))] == [str(b), str(a)]
    with pytest.raises(ValueError, match="batch_size must be at least 1"):
        model.predict_paths([a], batch_size=0)


@pytest.mark.parametrize("given", ["array", "pil", "none", "pil_alone"])
def test_paths_refuse_what_is_not_a_path_and_point_to_predict_arrays(predictor, given: str) -> None:
    model, images = predictor
    film = load_image(images[0])
    pil = Image.open(images[0])
    value = {"array": film, "pil": [pil], "none": [None], "pil_alone": pil}[given]
    with pytest.raises(TypeError, match=r"expected (a )?file paths? \(str or Path\), got \w+; use predict_arrays"):
        model.predict_paths(value)


def test_weights_other_than_the_runs_kind_are_refused(predictor, tmp_path) -> None:
    """A run made with random weights takes no weights file; a run made with a file refuses random ones,
    which have no SHA-256 to compare and would feed the head features it never saw."""
    import timm
    from safetensors.torch import save_file

    from xvision.errors import RunError

    model, images = predictor
    file = tmp_path / "w.safetensors"
    save_file(timm.create_model(TINY.removeprefix("timm:")).state_dict(), file)
    with pytest.raises(RunError, match=r"had random weights; leave out --weights .*w.safetensors"):
        Predictor(model.bundle.root, weights=str(file))
    manifest = make_phantom_dataset(tmp_path / "data", n_per_class=4, size=64, seed=6)
    assert main(["extract", str(manifest), "--backbone", TINY, "--weights", str(file), "-o", str(tmp_path / "f")]) == 0
    assert main(["train", str(tmp_path / "f"), "-o", str(tmp_path / "run"), "--epochs", "1", "--no-audit"]) == 0
    with pytest.raises(RunError, match=r"used the weights w.safetensors; .* leave out --weights random"):
        Predictor(tmp_path / "run", weights="random")
    assert Predictor(tmp_path / "run", weights=str(file)).predict_paths(images[:1])[0].error is None


def test_grid_tiles_name_their_files(predictor, tmp_path, monkeypatch) -> None:
    """With unreadable files skipped, tiles in order could not be matched to files: each names its own."""
    from xvision.inference import grid

    model, images = predictor
    long = tmp_path / ("a-very-long-radiograph-file-name-" * 2 + "end.png")
    long.write_bytes(images[1].read_bytes())
    drawn = {}
    monkeypatch.setattr(grid, "plot_prediction_grid", lambda imgs, titles, path, **kw: drawn.update(titles=titles))
    grid.draw_prediction_grid(model.predict_paths([images[0], tmp_path / "gone.png", long]), tmp_path / "g.png")
    first, second = drawn["titles"]
    assert first.startswith(f"{images[0].name}\n") and first.split("\n")[1].split()[0] in model.classes
    assert second.startswith("a-very-long-...") and second.split("\n")[0].endswith("end.png")
    assert len(second.split("\n")[0]) <= 26


def test_a_head_copied_in_from_another_run_is_refused_in_one_line(predictor, tmp_path, capsys) -> None:
    """Another seed's head predicted at this run's threshold without a word; a head of another width failed on
    every image with a traceback (and `serve` answered 500 to every request)."""
    import json
    import shutil

    from xvision.errors import RunError

    run = predictor[0].bundle.root
    features = run.parent / "f"
    other = ["train", str(features), "-o", str(tmp_path / "other"), "--epochs", "2", "--no-audit", "--seed", "1"]
    assert main(other) == 0
    mixed = tmp_path / "mixed"
    shutil.copytree(run, mixed)
    shutil.copy(tmp_path / "other" / "model.safetensors", mixed / "model.safetensors")
    with pytest.raises(RunError, match=r"model\.safetensors: not the head this run trained \(its SHA-256 differs"):
        Predictor(mixed)
    assert main(["predict", str(mixed), str(predictor[1][0])]) == 2
    assert "not the head this run trained" in capsys.readouterr().err
    shutil.copy(run / "model.safetensors", mixed / "model.safetensors")
    bundle = json.loads((mixed / "bundle.json").read_text())
    bundle["backbone"]["feature_dim"] += 1
    (mixed / "bundle.json").write_text(json.dumps(bundle))
    with pytest.raises(RunError, match=r"a head for \d+ features, and the run's backbone gives \d+"):
        Predictor(mixed)


@pytest.mark.parametrize(
    ("edit", "expected"),
    [
        (lambda b: b.update(positive="Nodule"), r"positive 'Nodule' is not one of the classes"),
        (lambda b: b["threshold"].update(value="0.5"), r"threshold value '0.5' is not a number in \[0, 1\]"),
        (lambda b: b["backbone"]["preprocess"].update(input_size=256), r"preprocessing input_size 256 \(the backbone"),
        # types a hand-made or damaged file may have: each was a traceback in whichever command read it first
        (lambda b: b.update(backbone="efficientnet_lite0"), r"backbone must hold a name, weights and preprocess"),
        (lambda b: b["backbone"].update(name=7), r"backbone must hold a name, weights and preprocess"),
        (lambda b: b.update(threshold=[0.5]), r"threshold must be an object, not list"),
        (lambda b: b.update(classes=[{"a": 1}, "b"]), r"classes must be a list of two or more names"),
        (lambda b: b.update(format_version=99), r"format_version 99; made by a newer Xvision"),
        (  # every probability became 0.500
            lambda b: b.update(calibration={"method": "temperature", "temperature": 1e308}),
            r"temperature 1e\+308 is not a number in \[0.05, 20.0\]",
        ),
    ],
)
def test_a_hand_edited_bundle_is_refused_by_name(predictor, tmp_path, capsys, edit, expected) -> None:
    """Each edit failed inside `predict` with a ValueError or TypeError traceback, or blamed the xvision version."""
    import json
    import shutil

    edited = tmp_path / "edited"
    shutil.copytree(predictor[0].bundle.root, edited)
    bundle = json.loads((edited / "bundle.json").read_text())
    bundle.setdefault("threshold", {"value": 0.5})
    edit(bundle)
    (edited / "bundle.json").write_text(json.dumps(bundle))
    assert main(["predict", str(edited), str(predictor[1][0])]) == 2
    err = capsys.readouterr().err
    assert re.search(expected, err) and "bundle.json" in err and "Traceback" not in err, err


def test_a_batch_of_files_holds_one_full_size_film_at_a_time(predictor, monkeypatch) -> None:
    """A batch of 16 films of 49 MP held 3 GB of full-size pixels at once (the server's /predict took 4.3 GB):
    each film is now cut to the network's input as soon as it is read. The probabilities do not change."""
    import weakref

    from xvision.inference import predictor as module

    model, images = predictor
    alive: list[weakref.ref] = []
    real = module.load_radiograph

    def load(path):
        assert all(ref() is None for ref in alive), "an earlier full-size film is still held"
        image = real(path)
        alive.append(weakref.ref(image))
        return image

    expected = model.predict_arrays([load_image(path) for path in images[:6]])
    monkeypatch.setattr(module, "load_radiograph", load)
    results = model.predict_paths(images[:6], batch_size=6)
    assert len(alive) == 6
    got = np.array([[r.probabilities[c] for c in model.classes] for r in results])
    np.testing.assert_allclose(got, expected, atol=1e-6)


def test_a_file_name_that_is_not_utf8_is_predicted_drawn_and_skipped_by_manifest(predictor, tmp_path, caplog) -> None:
    """A Latin-1 name (caf\\xe9.png) ended `manifest` in a UnicodeEncodeError and `predict --grid/--heatmaps` in a
    matplotlib TypeError; a heatmap name over 255 bytes stopped the whole heatmap job."""
    import os
    import shutil

    from xvision.data import build_manifest

    model, images = predictor
    folder = tmp_path / "in" / "normal"
    folder.mkdir(parents=True)
    latin1 = folder / os.fsdecode(b"caf\xe9.png")
    shutil.copy(images[0], latin1)
    shutil.copy(images[1], folder / "plain.png")
    (tmp_path / "in" / "nodule").mkdir()
    sub = tmp_path / "in" / "nodule" / os.fsdecode(b"s\xe9rie")  # a folder name that is not UTF-8 either
    sub.mkdir()
    shutil.copy(images[2], sub / "x.png")
    shutil.copy(images[-1], tmp_path / "in" / "nodule" / "n.png")
    run = str(model.bundle.root)
    args = ["predict", run, str(folder), "--grid", str(tmp_path / "g.png"), "--heatmaps", str(tmp_path / "h")]
    assert main(args) == 0
    assert (tmp_path / "g.png").is_file() and len(list((tmp_path / "h").glob("*.png"))) == 2
    assert [row.path for row in build_manifest(tmp_path / "in")] == ["nodule/n.png", "normal/plain.png"]
    assert "skipping 1 file(s) whose names are not UTF-8 (first: caf\ufffd.png)" in caplog.text
    assert "skipping 1 file(s) whose names are not UTF-8 (first: s\ufffdrie/x.png)" in caplog.text
