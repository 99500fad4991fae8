"""Grad-CAM points at the evidence: a planted mark is where the heat is; `predict --heatmaps` writes overlays."""

from __future__ import annotations

import csv
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from xvision.cli.main import main
from xvision.features.extract import extract_manifest
from xvision.heads import MLPClassifier
from xvision.inference import Predictor
from xvision.inference.heatmap import gradcam
from xvision.io import load_image
from xvision.training import train_run

BACKBONE = "vgg16"  # random VGG16 features stay local (conv, ReLU, max-pool): a fair test of the maths


def _image(rng: np.random.Generator, marked: bool) -> np.ndarray:
    image = 0.35 + 0.05 * rng.standard_normal((128, 128))
    if marked:  # the only difference between the classes: a bright disk somewhere in the lower right
        cy, cx = rng.integers(75, 105, size=2)
        yy, xx = np.mgrid[:128, :128]
        image[(yy - cy) ** 2 + (xx - cx) ** 2 <= 81] = 0.95
    return np.clip(image, 0, 1)


@pytest.fixture(scope="module")
def marked_run(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, Path]:
    root = tmp_path_factory.mktemp("heat")
    rng = np.random.default_rng(0)
    with open(root / "m.csv", "w", newline="") as handle:
        writer = csv.writer(handle)
        writer.writerow(["path", "label"])
        for i in range(24):
            label = "mark" if i % 2 else "normal"
            Image.fromarray((_image(rng, label == "mark") * 255).astype(np.uint8)).save(root / f"{i:02d}.png")
            writer.writerow([f"{i:02d}.png", label])
    extract_manifest(root / "m.csv", root / "features", backbone=BACKBONE, weights="random", progress=False)
    head = MLPClassifier(hidden=(), lr=0.01, momentum=0.9, epochs=40, batch_size=8, standardize=True, seed=0)
    train_run(root / "features", root / "run", head=head, progress=False, audit=False)
    return root, root / "run"


def test_gradcam_is_hot_on_the_planted_mark(marked_run) -> None:
    root, run = marked_run
    predictor = Predictor(run)
    rng = np.random.default_rng(99)  # new images, not seen in training
    hits = 0
    for _ in range(4):
        image = _image(rng, True)
        heat = gradcam(predictor, image, "mark")
        assert heat.shape == image.shape and 0 <= heat.min() and heat.max() <= 1
        lower_right, upper_left = heat[64:, 64:].mean(), heat[:64, :64].mean()
        hits += lower_right > 1.5 * upper_left
    assert hits >= 3


def test_predict_writes_one_heatmap_per_readable_image(marked_run, tmp_path, capsys) -> None:
    root, run = marked_run
    (tmp_path / "bad.png").write_bytes(b"nope")
    code = main(
        [
            "predict",
            str(run),
            str(root / "01.png"),
            str(root / "02.png"),
            str(tmp_path / "bad.png"),
            "--heatmaps",
            str(tmp_path / "heat"),
        ]
    )
    assert code == 1  # the unreadable file is reported, the others still get their heatmaps
    written = sorted(p.name for p in (tmp_path / "heat").iterdir())
    assert written == ["01.png", "02.png"]
    overlay = load_image(tmp_path / "heat" / "01.png")
    assert overlay.shape[0] > 100


def test_a_heatmap_without_any_evidence_says_so_in_its_title(marked_run, tmp_path, monkeypatch) -> None:
    import xvision.evaluation.plots as plots
    import xvision.inference.heatmap as heatmap

    root, run = marked_run
    predictor = Predictor(run)
    image = load_image(root / "00.png")
    prediction = predictor.predict_paths([root / "00.png"])[0]
    titles: list[str] = []
    monkeypatch.setattr(plots, "plot_heatmap", lambda image, heat, path, title, watermark: titles.append(title))
    heatmap.draw_evidence(predictor, image, prediction, tmp_path / "a.png", name="a")
    assert titles[-1].startswith("a: ") and "no evidence" not in titles[-1]
    # A lesion detector whose every place scores below zero gives an all-zero Grad-CAM: no bare film, no word.
    monkeypatch.setattr(heatmap, "gradcam", lambda predictor, image, target: np.zeros_like(image))
    heatmap.draw_evidence(predictor, image, prediction, tmp_path / "b.png", name="b")
    assert titles[-1].endswith("; no evidence for mark anywhere")
