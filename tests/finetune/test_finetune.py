"""Fine-tuning: augmentation keeps lesions and images together, lesion maps, resumable training, the recipe."""

from __future__ import annotations

import csv
import json
from dataclasses import replace
from pathlib import Path

import numpy as np
import pytest
import torch

from xvision.data.manifest import ManifestRow
from xvision.errors import ManifestError, RunError
from xvision.finetune import AugmentConfig, FineTuneConfig
from xvision.finetune import trainer as trainer_module
from xvision.finetune.augment import augment_intensity, random_affine, warp
from xvision.finetune.targets import lesion_map, lesion_of
from xvision.io import load_image

TINY = FineTuneConfig(backbone="efficientnet_lite0", epochs=2, batch_size=8)


def _centroid(image: torch.Tensor) -> np.ndarray:
    rows, cols = np.nonzero(image.numpy() > 0.5)
    return np.array([rows.mean(), cols.mean()])


def test_warp_with_identity_returns_the_image() -> None:
    image = torch.rand(2, 1, 32, 32)
    identity = torch.tensor([[[1.0, 0, 0], [0, 1.0, 0]]]).repeat(2, 1, 1)
    assert torch.allclose(warp(image, identity), image, atol=1e-5)


def test_the_lesion_map_follows_the_image_under_augmentation() -> None:
    size = 128
    yy, xx = torch.meshgrid(torch.arange(size), torch.arange(size), indexing="ij")
    disk = ((yy - 40.0) ** 2 + (xx - 90.0) ** 2 <= 64.0).float()
    images = disk.expand(4, 1, size, size).clone()
    lesions = torch.stack([lesion_map(True, (90.0, 40.0, 16.0), (size, size), size) for _ in range(4)])
    theta = random_affine(4, AugmentConfig(rotation_deg=15, translate=0.1), torch.Generator().manual_seed(3))
    moved_images, moved_lesions = warp(images, theta), warp(lesions, theta, mode="nearest")
    assert not torch.allclose(moved_images, images)  # the transform did move things
    for image, lesion in zip(moved_images, moved_lesions, strict=True):
        assert np.abs(_centroid(image[0]) - _centroid(lesion[0])).max() < 1.5


def test_intensity_augmentation_stays_in_range_and_is_reproducible() -> None:
    images = torch.rand(3, 1, 16, 16)
    first = augment_intensity(images, AugmentConfig(), torch.Generator().manual_seed(1))
    again = augment_intensity(images, AugmentConfig(), torch.Generator().manual_seed(1))
    assert first.min() >= 0 and first.max() <= 1
    assert torch.equal(first, again)
    assert not torch.allclose(first, images)


def test_lesion_map_scales_to_the_map_and_leaves_a_ring_undecided() -> None:
    maps = lesion_map(True, (512.0, 256.0, 64.0), (2048, 1024), 64)  # 2048 high, 1024 wide: axes scale apart
    inside, care = maps
    rows, cols = np.nonzero(inside.numpy())
    assert abs(rows.mean() - 8) < 1 and abs(cols.mean() - 32) < 1  # y 256/2048*64, x 512/1024*64
    assert care[8, 32] == 1 and care[8, 32 + 4] == 0  # centre decided, just outside the rim not
    assert care[60, 5] == 1
    normal = lesion_map(False, None, (100, 100), 8)
    assert normal[0].sum() == 0 and normal[1].min() == 1
    unknown = lesion_map(True, None, (100, 100), 8)
    assert unknown[1].sum() == 0  # a positive without a location gives no dense supervision


def test_lesion_columns_must_be_complete_numbers() -> None:
    assert lesion_of(ManifestRow("a.png", "nodule"), "m") is None
    assert lesion_of(ManifestRow("a.png", "nodule", extra={"lesion_x": "1", "lesion_y": "2", "lesion_diam": "3"}), "m")
    with pytest.raises(ManifestError, match="all set or all empty"):
        lesion_of(ManifestRow("a.png", "nodule", extra={"lesion_x": "1"}), "m")
    with pytest.raises(ManifestError, match="numbers"):
        lesion_of(ManifestRow("a.png", "nodule", extra={"lesion_x": "a", "lesion_y": "2", "lesion_diam": "3"}), "m")
    # float() reads these: a NaN diameter gave the film no training signal, inf made the whole film the lesion
    for diam in ("nan", "inf", "-inf"):
        row = ManifestRow("a.png", "nodule", extra={"lesion_x": "1", "lesion_y": "2", "lesion_diam": diam})
        with pytest.raises(ManifestError, match="m: lesion columns must be finite numbers"):
            lesion_of(row, "m")
    with pytest.raises(ManifestError, match="lesion_x, lesion_y not negative"):
        lesion_of(ManifestRow("a.png", "nodule", extra={"lesion_x": "-4", "lesion_y": "2", "lesion_diam": "3"}), "m")


def test_a_lesion_outside_its_image_is_reported_and_trains_without_location(lesion_manifest, caplog) -> None:
    """Coordinates from another size of the image (JSRT's 2048 px originals on a 1024 px copy) are a likely
    mistake: such a row is named and trains as a positive without a location, not with an empty map."""
    from xvision.backbones import create_backbone
    from xvision.data.manifest import read_manifest

    manifest = read_manifest(lesion_manifest)
    rows = [r for r in manifest.rows if r.get("lesion_x") is not None][:2]
    preprocess = create_backbone("efficientnet_lite0", weights="random").preprocess_config
    good = trainer_module._load_samples(manifest, rows, "nodule", preprocess, False, lung=False)
    assert all(s.lesion[0].sum() > 0 and s.lesion[1].sum() > 0 for s in good)
    width = load_image(manifest.resolve(rows[0])).shape[1]
    moved = ManifestRow(rows[0].path, rows[0].label, extra={**rows[0].extra, "lesion_x": str(width + 3.5)})
    samples = trainer_module._load_samples(manifest, [moved, rows[1]], "nodule", preprocess, False, lung=False)
    assert f"{rows[0].path}: lesion centre ({width + 3.5:g}," in caplog.text and "outside" in caplog.text
    assert samples[0].lesion[1].sum() == 0 and samples[0].target == 1.0  # no dense supervision, still positive
    assert torch.equal(samples[1].lesion, good[1].lesion) and rows[1].path not in caplog.text


def test_decoding_no_rows_shows_no_progress_bar(lesion_manifest, capsys) -> None:
    """Without a val split the val set is empty: no 'decode: 0img' bar (it printed twice per detector)."""
    from xvision.backbones import create_backbone
    from xvision.data.manifest import read_manifest

    manifest = read_manifest(lesion_manifest)
    preprocess = create_backbone("efficientnet_lite0", weights="random").preprocess_config
    assert trainer_module._load_samples(manifest, [], "nodule", preprocess, True, lung=False) == []
    assert "decode" not in capsys.readouterr().err
    assert len(trainer_module._load_samples(manifest, manifest.rows[:1], "nodule", preprocess, True, lung=False)) == 1
    assert "decode: 100%" in capsys.readouterr().err


@pytest.fixture(scope="module")
def phantom_manifest(tmp_path_factory: pytest.TempPathFactory, make_lesion_manifest) -> Path:
    """16 phantoms (8 with a nodule) with lesion columns from the generator's ground truth, one unreadable."""
    return make_lesion_manifest(tmp_path_factory.mktemp("phantoms"), 8, 4, broken=True)


def _weights(path: Path) -> dict[str, torch.Tensor]:
    from safetensors.torch import load_file

    return load_file(path)


def test_finetune_trains_the_unfrozen_stages_and_skips_bad_images(phantom_manifest, tmp_path, caplog) -> None:
    from xvision.backbones import create_backbone

    out = trainer_module.finetune(phantom_manifest, tmp_path / "ft", TINY, weights="random", progress=False)
    assert "broken.png" in caplog.text  # reported, not fatal
    tuned = _weights(out)
    start = create_backbone("efficientnet_lite0", weights="random").model.body.model.state_dict()
    assert torch.equal(tuned["conv_stem.weight"], start["conv_stem.weight"])  # frozen
    assert torch.equal(tuned["blocks.2.0.conv_pw.weight"], start["blocks.2.0.conv_pw.weight"])
    assert not torch.equal(tuned["blocks.5.0.conv_pw.weight"], start["blocks.5.0.conv_pw.weight"])
    loaded = create_backbone("efficientnet_lite0", weights=str(out))  # the registry takes the result
    assert loaded.weights.source == "file" and loaded.weights.pretrained
    state = json.loads((tmp_path / "ft" / "state.json").read_text())
    assert [r["epoch"] for r in state["history"]] == [1, 2] and state["finished"]
    assert len(list((tmp_path / "ft").glob("epoch-*.safetensors"))) <= 2


def test_an_interrupted_finetune_resumes_where_it_stopped(
    phantom_manifest, tmp_path, monkeypatch, interrupted_after_round_1
) -> None:
    whole = trainer_module.finetune(phantom_manifest, tmp_path / "whole", TINY, weights="random", progress=False)

    with interrupted_after_round_1():
        trainer_module.finetune(phantom_manifest, tmp_path / "cut", TINY, weights="random", progress=False)
    assert not (tmp_path / "cut" / "backbone.safetensors").exists()

    calls = []
    real_load = trainer_module._Checkpoints.load
    monkeypatch.setattr(
        trainer_module._Checkpoints, "load", lambda self, e, n, o: (calls.append(e), real_load(self, e, n, o))
    )
    resumed = trainer_module.finetune(phantom_manifest, tmp_path / "cut", TINY, weights="random", progress=False)
    assert calls[0] == 1  # started from the epoch-1 checkpoint, not from scratch
    a, b = _weights(whole), _weights(resumed)
    assert all(torch.allclose(a[k], b[k], atol=1e-4) for k in a)  # same result as the uninterrupted run

    with pytest.raises(RunError, match="another manifest or configuration"):
        trainer_module.finetune(phantom_manifest, tmp_path / "cut", replace(TINY, epochs=3), progress=False)


def test_fit_with_a_finetune_recipe_gives_a_run_that_predicts(phantom_manifest, tmp_path, monkeypatch) -> None:
    from xvision.evaluation.on_images import evaluate_manifest
    from xvision.inference import Predictor
    from xvision.recipes import fit, registry

    recipe = registry.get_recipe("finetune")
    small = replace(recipe, backbone="efficientnet_lite0", finetune=replace(TINY, epochs=1))
    monkeypatch.setitem(registry._RECIPES, "finetune", small)
    run = tmp_path / "run"
    fit(phantom_manifest, run, recipe="finetune", weights="random", progress=False)
    bundle = json.loads((run / "bundle.json").read_text())
    assert bundle["backbone"]["weights"]["source"] == "file"
    assert (run / "finetune" / "backbone.safetensors").is_file()
    # The run carries its backbone: predicting and evaluating need no --weights.
    predictor = Predictor(run)
    images = sorted(phantom_manifest.parent.glob("nodule/*.png"))[:2]
    results = predictor.predict_paths(images)
    assert all(r.error is None and r.label in {"normal", "nodule"} for r in results)
    with pytest.raises(TypeError, match="progres"):  # a misspelt option fails before any extraction
        evaluate_manifest(run, phantom_manifest, out_dir=tmp_path / "typo", progres=False)
    assert not (tmp_path / "typo").exists()
    metrics = evaluate_manifest(run, phantom_manifest, out_dir=tmp_path / "eval", progress=False)
    assert metrics["n"] == 16


def test_a_small_lesion_on_a_cell_corner_still_gets_positive_cells() -> None:
    # 64 px map, 4 x 4 grid of 16 px cells; a 6 px lesion centred on the corner shared by four cells.
    lesion = lesion_map(True, (32.0, 32.0, 6.0), (64, 64), 64)[None]
    silent = torch.full((1, 4, 4), -10.0)
    assert trainer_module._dense_loss(silent, lesion) > 4.0  # missing the lesion is penalised
    found = silent.clone()
    found[0, 1:3, 1:3] = 10.0  # the four cells touching the lesion
    assert trainer_module._dense_loss(found, lesion) < 0.01
    normal = lesion_map(False, None, (64, 64), 64)[None]
    assert trainer_module._dense_loss(silent, normal) < 0.01


def test_a_val_split_scores_every_epoch_and_keeps_the_best(phantom_manifest, tmp_path) -> None:
    rows = list(csv.DictReader(open(phantom_manifest, newline="")))
    with open(tmp_path / "split.csv", "w", newline="") as handle:
        writer = csv.DictWriter(handle, fieldnames=[*rows[0], "split"])
        writer.writeheader()
        for i, row in enumerate(rows):
            path = str(phantom_manifest.parent / row["path"])
            writer.writerow({**row, "path": path, "split": "val" if i % 4 == 0 else "train"})
    trainer_module.finetune(tmp_path / "split.csv", tmp_path / "ft", TINY, weights="random", progress=False)
    state = json.loads((tmp_path / "ft" / "state.json").read_text())
    losses = [record["val_loss"] for record in state["history"]]
    assert len(losses) == 2 and all(np.isfinite(losses))
    assert state["best_epoch"] == 1 + int(np.argmin(losses))


@pytest.fixture(scope="module")
def masked_manifest(phantom_manifest: Path) -> Path:
    """The phantom manifest with a ``mask`` column: each phantom's true lung fields, as a PNG."""
    from PIL import Image

    from xvision.data.phantoms import lung_mask

    folder = phantom_manifest.parent
    info = {image["path"]: image for image in json.loads((folder / "phantoms.json").read_text())["images"]}
    (folder / "masks").mkdir(exist_ok=True)
    rows = list(csv.DictReader(open(phantom_manifest, newline="")))
    path = folder / "masked.csv"
    with open(path, "w", newline="") as handle:
        writer = csv.DictWriter(handle, fieldnames=[*rows[0], "mask"])
        writer.writeheader()
        for row in rows:
            mask = ""
            if row["path"] in info:
                mask = f"masks/{Path(row['path']).name}"
                Image.fromarray(lung_mask(info[row["path"]]).astype(np.uint8) * 255).save(folder / mask)
            writer.writerow({**row, "mask": mask})
    return path


def test_pooled_over_ignores_cells_outside_and_falls_back_when_none_are_marked() -> None:
    from xvision.backbones.registry import pooled_over

    features = torch.zeros(2, 3, 8, 8)
    features[:, :, 0, 0] = 100.0  # on the film's edge, outside the lungs
    features[:, :, 4, 2] = 5.0  # inside
    cells = torch.zeros(2, 8, 8, dtype=torch.bool)
    cells[0, 3:6, 1:4] = True
    pooled = pooled_over(features, cells)
    assert pooled[0].tolist() == [5.0, 5.0, 5.0]  # the edge value cannot decide
    assert pooled[1].tolist() == [5.0, 5.0, 5.0]  # no lung cell: the film less its border, still not the edge


def test_the_lung_backbone_has_no_published_weights_but_takes_a_finetuned_file() -> None:
    from xvision.backbones import create_backbone
    from xvision.backbones.registry import get_spec
    from xvision.errors import BackboneError, WeightsNotFoundError

    assert get_spec("efficientnet_lite0_512_lung").preprocess == get_spec("efficientnet_lite0_512").preprocess
    with pytest.raises(WeightsNotFoundError, match="fine-tuning"):
        create_backbone("efficientnet_lite0_lung")
    with pytest.raises(BackboneError, match="unknown backbone"):
        get_spec("vgg16_lung")  # only the EfficientNet entries have a lung variant
    backbone = create_backbone("efficientnet_lite0_lung", weights="random")
    assert backbone.feature_dim == 1280 and not backbone.pretrained


def test_finetune_learns_the_lung_fields_and_pools_over_them(masked_manifest, tmp_path) -> None:
    from xvision.backbones import create_backbone

    config = replace(TINY, pool="auto", epochs=4)
    out = trainer_module.finetune(masked_manifest, tmp_path / "ft", config, weights="random", progress=False)
    assert trainer_module.tuned_backbone(out) == "efficientnet_lite0_lung"
    assert {"lung_unit.weight", "lung_unit.bias"} <= set(_weights(out))
    backbone = create_backbone("efficientnet_lite0_lung", weights=str(out))
    # The lung unit marks mostly lung cells: compare with the true fields of held-in phantoms.
    from xvision.backbones.registry import dense_logits
    from xvision.data.manifest import read_manifest

    manifest = read_manifest(masked_manifest)
    samples = trainer_module._load_samples(
        manifest, manifest.rows[:8], "nodule", backbone.preprocess_config, False, lung=True
    )
    model = backbone.model.model
    with torch.no_grad():
        images = torch.stack([s.image.float() for s in samples])[:, None]
        features = model.forward_features(trainer_module._to_input(images, backbone.preprocess_config))
        predicted = dense_logits(features, model.lung_unit) > 0
    truth = trainer_module.cells_of(torch.stack([s.lesion[2] for s in samples]), predicted.shape[-1])
    agreement = (predicted == truth).float().mean().item()
    assert agreement > max(truth.float().mean().item(), 1 - truth.float().mean().item())  # beats a constant


def test_lung_pooling_without_masks_warns_or_refuses(phantom_manifest, tmp_path, caplog) -> None:
    config = replace(TINY, pool="auto", epochs=1)
    out = trainer_module.finetune(phantom_manifest, tmp_path / "auto", config, weights="random", progress=False)
    assert "no lung masks" in caplog.text
    assert trainer_module.tuned_backbone(out) == "efficientnet_lite0"
    with pytest.raises(ManifestError, match="mask"):
        trainer_module.finetune(
            phantom_manifest, tmp_path / "lung", replace(config, pool="lung"), weights="random", progress=False
        )


def test_fit_finetune_lung_with_masks_predicts_images_without_masks(masked_manifest, tmp_path, monkeypatch) -> None:
    from xvision.inference import Predictor
    from xvision.recipes import fit, registry

    recipe = registry.get_recipe("finetune_lung")
    small = replace(recipe, backbone="efficientnet_lite0", finetune=replace(recipe.finetune, **_tiny_fields(1)))
    monkeypatch.setitem(registry._RECIPES, "finetune_lung", small)
    run = tmp_path / "run"
    fit(masked_manifest, run, recipe="finetune_lung", weights="random", progress=False)
    bundle = json.loads((run / "bundle.json").read_text())
    assert bundle["backbone"]["name"] == "efficientnet_lite0_lung"
    images = sorted(masked_manifest.parent.glob("normal/*.png"))[:2]
    results = Predictor(run).predict_paths(images)
    assert all(r.error is None and r.label in {"normal", "nodule"} for r in results)
    from xvision.evaluation.report import write_report

    html = write_report(run).read_text()  # the report says what fine-tuning did
    assert "Backbone fine-tuned" in html and "pool=auto" in html and "1 epochs, kept epoch 1" in html
    assert "pooled over the lung fields" in html


def _tiny_fields(epochs: int) -> dict:
    return {"backbone": TINY.backbone, "epochs": epochs, "batch_size": TINY.batch_size}


def test_a_film_given_as_its_own_lung_mask_is_not_taken_for_one(tmp_path, caplog) -> None:
    from dataclasses import replace as replace_row

    from xvision.data.manifest import Manifest, read_manifest
    from xvision.data.phantoms import make_phantom_dataset
    from xvision.finetune.trainer import _lung_field, not_a_mask
    from xvision.io import load_image

    manifest = read_manifest(make_phantom_dataset(tmp_path / "data", n_per_class=2, size=64, seed=1))
    row = manifest.rows[0]
    film = load_image(manifest.resolve(row))
    assert "grey levels, as a radiograph has" in (not_a_mask(film) or "")
    assert not_a_mask(np.zeros((64, 64), np.float32)) == "marks no lung at all (every pixel 0)"
    lungs = np.zeros((64, 64), np.float32)
    lungs[10:50, 8:28] = lungs[10:50, 36:56] = 1.0
    assert not_a_mask(lungs) is None
    assert not_a_mask(lungs / 255) is None  # JSRT's masks: 0 and 1 in an 8-bit PNG
    # The mask column naming the film itself: read as `mask > 0`, the whole film, border included, was "lung".
    film_as_mask = replace_row(row, extra={**row.extra, "mask": row.path})
    listed = Manifest(rows=[film_as_mask], root=manifest.root, columns=(*manifest.columns, "mask"))
    assert _lung_field(listed, film_as_mask, 16) is None
    assert f"no lung mask for {row.path}" in caplog.text and "is not a 0/1 mask" in caplog.text
