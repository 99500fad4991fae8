"""The lesion detector: crops hold their lesion anywhere, training is resumable, the recipe gives a working run."""

from __future__ import annotations

import csv
import json
import logging
import shlex
from dataclasses import replace
from pathlib import Path

import numpy as np
import pytest
import torch

from xvision.backbones.registry import LESION_BACKBONE, LESION_UNIT, max_inside
from xvision.cli.main import main
from xvision.data.manifest import read_manifest
from xvision.data.phantoms import make_phantom_dataset
from xvision.errors import ManifestError, WeightsNotFoundError
from xvision.finetune import detector
from xvision.finetune import trainer as trainer_module
from xvision.finetune.config import DetectorConfig
from xvision.finetune.targets import lesion_map
from xvision.finetune.trainer import _Sample

TINY = DetectorConfig(rounds=2, steps_per_round=2, batch_size=4, crop=32)


def _sample(size: int, lesion: tuple[float, float, float]) -> _Sample:
    maps = lesion_map(True, lesion, (size, size), size // 4)
    return _Sample(torch.zeros(size, size).half(), 1.0, torch.cat([maps, torch.zeros(1, size // 4, size // 4)]), False)


def test_lesion_crops_hold_the_lesion_at_varying_places_inside_the_trimmed_crop() -> None:
    crop, margin = 128, detector.MARGIN
    sample = _sample(512, (300.0, 200.0, 20.0))
    centre = detector.lesion_centre(sample)
    assert centre is not None and abs(centre[0] - 300) <= 4 and abs(centre[1] - 200) <= 4
    generator = torch.Generator().manual_seed(0)
    places = set()
    for _ in range(40):
        image, maps = detector.sample_crop(sample, centre, crop, generator)
        assert image.shape == (crop + 2 * margin,) * 2 and maps.shape[-1] == image.shape[-1] // 4
        q = margin // 4
        inside = maps[0, q:-q, q:-q].nonzero()
        assert len(inside) > 0  # the lesion survives the trim
        places.add(tuple((inside.float().mean(0) // 8).tolist()))
    # A lesion always at the crop's centre teaches the network a position instead of a lesion.
    assert len(places) >= 10


def test_random_crops_stay_off_the_film_border() -> None:
    sample = _sample(1024, (500.0, 500.0, 30.0))
    generator = torch.Generator().manual_seed(1)
    for _ in range(50):
        image, _ = detector.sample_crop(sample, None, 256, generator)
        assert image.shape == (352, 352)


def test_the_detector_trains_resumes_and_saves_for_the_registry(
    lesion_manifest, tmp_path, interrupted_after_round_1
) -> None:
    from xvision.backbones import create_backbone

    whole = detector.train_detector(lesion_manifest, tmp_path / "whole", TINY, weights="random", progress=False)
    tuned = _load(whole)
    start = create_backbone("efficientnet_lite0", weights="random").model.body.model.state_dict()
    assert torch.equal(tuned["conv_stem.weight"], start["conv_stem.weight"])  # frozen
    assert not torch.equal(tuned["blocks.5.0.conv_pw.weight"], start["blocks.5.0.conv_pw.weight"])
    assert f"{LESION_UNIT}.weight" in tuned
    assert trainer_module.tuned_backbone(whole) == LESION_BACKBONE
    backbone = create_backbone(LESION_BACKBONE, weights=str(whole))
    assert backbone.feature_dim == 1
    features = backbone.extract(torch.zeros(1, 3, 1024, 1024))
    assert features.shape == (1, 1)

    with interrupted_after_round_1():
        detector.train_detector(lesion_manifest, tmp_path / "cut", TINY, weights="random", progress=False)
    resumed = detector.train_detector(lesion_manifest, tmp_path / "cut", TINY, weights="random", progress=False)
    state = json.loads((tmp_path / "cut" / "state.json").read_text())
    assert [r["epoch"] for r in state["history"]] == [1, 2] and state["finished"]
    a, b = _load(whole), _load(resumed)
    assert all(torch.allclose(a[k], b[k], atol=1e-4) for k in a)  # the same as the uninterrupted run


def test_the_detector_needs_lesion_locations(tmp_path) -> None:
    folder = tmp_path / "phantoms"
    make_phantom_dataset(folder, n_per_class=3, size=64, seed=6)
    manifest = folder / "manifest.csv"
    info = json.loads((folder / "phantoms.json").read_text())
    manifest.write_text(
        "path,label\n" + "".join(f"{image['path']},{image['label']}\n" for image in info["images"]), encoding="utf-8"
    )
    with pytest.raises(ManifestError, match="lesion_x, lesion_y, lesion_diam"):
        detector.train_detector(manifest, tmp_path / "det", TINY, weights="random", progress=False)


def test_the_lesion_backbone_has_no_published_weights() -> None:
    from xvision.backbones import create_backbone

    with pytest.raises(WeightsNotFoundError, match="--recipe detect"):
        create_backbone(LESION_BACKBONE)


def test_fit_detect_gives_a_run_that_predicts_and_best_falls_back_without_lesions(
    lesion_manifest, tmp_path, monkeypatch, caplog
) -> None:
    from xvision.inference import Predictor
    from xvision.recipes import fit, registry

    monkeypatch.setitem(registry._RECIPES, "detect", replace(registry.get_recipe("detect"), finetune=TINY))
    run = tmp_path / "run"
    result = fit(lesion_manifest, run, recipe="detect", weights="random", progress=False)
    assert result.recipe == "detect"
    bundle = json.loads((run / "bundle.json").read_text())
    assert bundle["backbone"]["name"] == LESION_BACKBONE
    images = sorted(lesion_manifest.parent.glob("nodule/*.png"))[:2]
    results = Predictor(run).predict_paths(images)  # no lesion columns, no --weights
    assert all(r.error is None and r.label in {"normal", "nodule"} for r in results)
    from xvision.evaluation.report import write_report

    html = write_report(run).read_text()  # the report says what training did
    assert "lesion detector on full-resolution crops: 2 rounds, kept round 2" in html

    bare = tmp_path / "bare.csv"
    with open(lesion_manifest, newline="") as handle:
        rows = [(r["path"], r["label"]) for r in csv.DictReader(handle)]
    bare.write_text(
        "path,label\n" + "".join(f"{lesion_manifest.parent / p},{label}\n" for p, label in rows), encoding="utf-8"
    )
    lung = registry.get_recipe("finetune_lung")
    small = replace(lung.finetune, backbone="efficientnet_lite0", epochs=1)
    monkeypatch.setitem(
        registry._RECIPES, "finetune_lung", replace(lung, backbone="efficientnet_lite0", finetune=small)
    )
    with pytest.raises(ManifestError, match="recipe 'detect' learns from lesion locations") as refused:
        fit(bare, tmp_path / "run2", recipe="detect", weights="random", progress=False)  # asked for by name
    assert not (tmp_path / "run2").exists()  # refused before any work
    assert "rename them" not in str(refused.value)
    half = tmp_path / "half-renamed.csv"  # only lesion_x renamed: refused at once, no folder left behind
    half.write_text(
        "path,label,lesion_x,nodule_y,nodule_diam_px\n"
        + "".join(
            f"{lesion_manifest.parent / p},{label},{'5,6,7' if label == 'nodule' else ',,'}\n" for p, label in rows
        ),
        encoding="utf-8",
    )
    with pytest.raises(ManifestError, match="has the column.s. lesion_x but no lesion_y, lesion_diam") as refused:
        fit(half, tmp_path / "run2", recipe="detect", weights="random", progress=False)
    assert "if nodule_y, nodule_diam_px give the lesion" in str(refused.value)  # the look-alikes it has
    assert not (tmp_path / "run2").exists()
    empty = tmp_path / "empty-columns.csv"  # the right columns, left empty: nothing to rename
    empty.write_text(
        "path,label,lesion_x,lesion_y,lesion_diam\n"
        + "".join(f"{lesion_manifest.parent / p},{label},,,\n" for p, label in rows),
        encoding="utf-8",
    )
    with pytest.raises(ManifestError, match="learns from lesion locations") as refused:
        fit(empty, tmp_path / "run2", recipe="detect", weights="random", progress=False)
    assert "rename them" not in str(refused.value)
    jsrt_named = tmp_path / "jsrt-named.csv"  # JSRT's own column names: the message says what to rename
    jsrt_named.write_text(
        "path,label,nodule_x,nodule_y,nodule_diam_px\n"
        + "".join(f"{lesion_manifest.parent / p},{label},1,2,3\n" for p, label in rows),
        encoding="utf-8",
    )
    for recipe in ("detect", "best"):  # the default does not fall back silently past misnamed locations
        with pytest.raises(ManifestError, match="if nodule_x, nodule_y, nodule_diam_px give the lesion's centre") as e:
            fit(jsrt_named, tmp_path / "run2", recipe=recipe, weights="random", progress=False)
    assert not (tmp_path / "run2").exists()
    command = str(e.value).split("`")[1]  # the message's own command renames them
    assert command.startswith(f"xvision manifest {jsrt_named} --column lesion_x=nodule_x")
    (tmp_path / "elsewhere").mkdir()
    monkeypatch.chdir(tmp_path / "elsewhere")  # the command names the manifest as given: it runs from anywhere
    assert main(shlex.split(command)[1:]) == 0
    renamed = read_manifest(tmp_path / "elsewhere" / "renamed.csv")
    assert renamed.columns[2:] == ("lesion_x", "lesion_y", "lesion_diam")
    assert [row.get("lesion_diam") for row in renamed.rows] == ["3"] * len(rows)
    with caplog.at_level(logging.WARNING):
        result = fit(bare, tmp_path / "run2", recipe="best", weights="random", progress=False)
    assert result.recipe == "finetune_lung" and "running recipe 'finetune_lung' instead" in caplog.text


def test_several_detectors_score_their_mean_map_and_share_their_frozen_stages(
    lesion_manifest, tmp_path, monkeypatch
) -> None:
    from xvision.backbones import create_backbone
    from xvision.evaluation.report import write_report
    from xvision.inference import Predictor
    from xvision.inference.heatmap import _last_spatial_output, gradcam
    from xvision.io import load_image
    from xvision.recipes import fit, registry

    pair = replace(TINY, members=2, seed=3)
    monkeypatch.setitem(registry._RECIPES, "detect", replace(registry.get_recipe("detect"), finetune=pair))
    run = tmp_path / "run"
    fit(lesion_manifest, run, recipe="detect", weights="random", seed=3, progress=False)
    assert json.loads((run / "bundle.json").read_text())["backbone"]["name"] == LESION_BACKBONE + "_x2"
    folder = run / "finetune"
    seeds = [json.loads((folder / f"member-{k}" / "state.json").read_text())["config"]["seed"] for k in (1, 2)]
    assert seeds == [3, 4]

    both = create_backbone(LESION_BACKBONE + "_x2", weights=str(folder / "backbone.safetensors"))
    one, two = (
        create_backbone(LESION_BACKBONE, weights=str(folder / f"member-{k}/backbone.safetensors")) for k in (1, 2)
    )
    assert both.model.shared_stages == 1 + TINY.frozen_stages  # the stem and the frozen stages run once
    x = torch.randn(1, 3, 1024, 1024)
    with torch.no_grad():
        a, b, score = one.extract(x), two.extract(x), both.extract(x)
        maps = [detector.DetectorNet(member.model.model).eval()(x) for member in (one, two)]
    assert not np.allclose(a, b)  # two different detectors
    assert np.allclose(score, max_inside(((maps[0] + maps[1]) / 2)[:, None]).numpy(), atol=1e-5)  # mean map

    image = sorted(lesion_manifest.parent.glob("nodule/*.png"))[0]
    predictor = Predictor(run)
    assert predictor.predict_paths([image])[0].error is None
    heat = gradcam(predictor, load_image(image))
    assert heat.shape == load_image(image).shape and np.isfinite(heat).all()
    with torch.enable_grad():  # Grad-CAM explains both members' final features, not only the last one's
        _, explained = _last_spatial_output(both.model, x.requires_grad_(True))
    assert explained.shape[1] == 2 * one.model.model.num_features
    html = write_report(run).read_text()
    assert "(detector 1 of 2)" in html and "(detector 2 of 2)" in html

    def no_training(*args, **kwargs):
        raise AssertionError("a finished member was trained again")

    monkeypatch.setattr(detector, "_load_samples", no_training)  # finished members are reused as they are
    combined = folder / "backbone.safetensors"
    before = (combined.read_bytes(), combined.stat().st_ino, combined.stat().st_mtime_ns)
    detector.train_detector(lesion_manifest, folder, pair, weights="random", progress=False)
    # The run and its feature store know the weights by SHA-256: a finished ensemble's file is not rewritten
    # (safetensors may order the same metadata differently, giving other bytes).
    assert (combined.read_bytes(), combined.stat().st_ino, combined.stat().st_mtime_ns) == before
    assert Predictor(run).predict_paths([image])[0].error is None
    with pytest.raises(ValueError, match="members"):
        detector.train_detector(lesion_manifest, tmp_path / "four", replace(TINY, members=4), weights="random")


def _load(path: Path) -> dict[str, torch.Tensor]:
    from safetensors.torch import load_file

    return load_file(path)


def _with_val(lesion_manifest: Path, per_class: int, out: Path) -> Path:
    """The lesion manifest with ``per_class`` images of each class in val, the rest train."""
    with open(lesion_manifest, newline="") as handle:
        rows = list(csv.DictReader(handle))
    seen: dict[str, int] = {}
    for row in rows:
        seen[row["label"]] = seen.get(row["label"], 0) + 1
        row["split"] = "val" if seen[row["label"]] <= per_class else "train"
        row["path"] = str(lesion_manifest.parent / row["path"])
    with open(out, "w", newline="") as handle:
        writer = csv.DictWriter(handle, fieldnames=list(rows[0]))
        writer.writeheader()
        writer.writerows(rows)
    return out


def test_a_val_split_scores_every_round_and_keeps_the_best_auc(lesion_manifest, tmp_path, monkeypatch) -> None:
    monkeypatch.setattr(detector, "MIN_VAL_PER_CLASS", 2)  # the phantom set is small
    split = _with_val(lesion_manifest, 2, tmp_path / "split.csv")
    detector.train_detector(split, tmp_path / "det", replace(TINY, rounds=3), weights="random", progress=False)
    state = json.loads((tmp_path / "det" / "state.json").read_text())
    aucs = [r["val_auc"] for r in state["history"]]
    assert len(aucs) == 3 and all(0.0 <= a <= 1.0 for a in aucs)
    assert state["best_val_auc"] == max(aucs) and aucs[state["best_epoch"] - 1] == max(aucs)


def test_a_val_split_too_small_to_judge_trains_every_round(lesion_manifest, tmp_path, monkeypatch, caplog) -> None:
    """One film of each class would pick a round by chance (an AUC of 0 or 1): every round is trained."""
    monkeypatch.setattr(detector, "MIN_VAL_PER_CLASS", 2)
    split = _with_val(lesion_manifest, 1, tmp_path / "split.csv")
    config = replace(TINY, rounds=3, patience=1)
    torch.manual_seed(5)
    expected = torch.rand(3)
    torch.manual_seed(5)
    with caplog.at_level(logging.WARNING, logger="xvision.finetune.detector"):
        detector.train_detector(split, tmp_path / "det", config, weights="random", progress=False)
    assert torch.equal(torch.rand(3), expected)  # its own seed did not replace the caller's random state
    state = json.loads((tmp_path / "det" / "state.json").read_text())
    assert [r["epoch"] for r in state["history"]] == [1, 2, 3] and state["best_epoch"] == 3
    assert not any("val_auc" in r for r in state["history"])
    assert "split.csv: the val split holds 1 lesion and 1 lesion-free films, too few" in caplog.text


class _FixedMap(torch.nn.Module):
    """Stands in for the detector: the same (1, n, n) logits for any input."""

    def __init__(self, dense: torch.Tensor) -> None:
        super().__init__()
        self.dense = dense

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.dense[None].expand(len(x), -1, -1)


def test_hot_spots_are_the_hottest_places_inside_the_border_in_image_pixels() -> None:
    from xvision.backbones.registry import get_spec

    dense = torch.zeros(32, 32)
    dense[0, 5] = 9.0  # on the border: never a hot spot (the detector's score leaves it out too)
    dense[10, 20] = 5.0
    dense[25, 3] = 4.0
    dense[7, 7] = 3.0
    sample = _sample(1024, (500.0, 500.0, 30.0))
    preprocess = get_spec(LESION_BACKBONE).preprocess
    spots = detector.hot_spots(_FixedMap(dense), [sample], preprocess, torch.device("cpu"), None, per_image=3)
    assert [centre for _, centre in spots] == [(656, 336), (112, 816), (240, 240)]  # cell centres, 32 px cells
    assert all(s is sample for s, _ in spots)


def test_hard_negatives_put_the_mined_false_positives_into_the_crops(lesion_manifest, tmp_path, monkeypatch) -> None:
    mined, crops = [], []
    real_hot_spots, real_crop = detector.hot_spots, detector.sample_crop

    def mining(*args, **kwargs):
        spots = real_hot_spots(*args, **kwargs)
        mined.append(spots)
        return spots

    def cropping(sample, centre, *args):
        crops.append((sample, centre))
        return real_crop(sample, centre, *args)

    monkeypatch.setattr(detector, "hot_spots", mining)
    monkeypatch.setattr(detector, "sample_crop", cropping)
    detector.train_detector(lesion_manifest, tmp_path / "plain", TINY, weights="random", progress=False)
    assert not mined  # off unless asked for

    crops.clear()
    hard = replace(TINY, rounds=3, hard_negatives=1.0)
    detector.train_detector(lesion_manifest, tmp_path / "hard", hard, weights="random", progress=False)
    assert [len({id(s) for s, _ in spots}) for spots in mined] == [6, 6]  # rounds 2 and 3, the 6 normal films
    per_round = hard.steps_per_round * hard.batch_size
    half = hard.batch_size // 2
    for round_ in range(3):
        others = [
            c for i, c in enumerate(crops[round_ * per_round : (round_ + 1) * per_round]) if i % hard.batch_size >= half
        ]
        if round_ == 0:  # nothing mined yet: anywhere on any training film
            assert all(centre is None for _, centre in others)
        else:  # every one holds a place mined at the start of this round
            spots = {(id(s), c) for s, c in mined[round_ - 1]}
            assert others and all((id(s), c) in spots and s.target == 0 for s, c in others)
