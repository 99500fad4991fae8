"""The fast default path: reference equality when forced, the accuracy guard, dedupe across manifests."""

from __future__ import annotations

import csv
import logging
import warnings
from dataclasses import replace
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image
from scipy import ndimage

from xvision.backbones import create_backbone
from xvision.backbones.runtime import ExecutionPlan
from xvision.errors import AccuracyGuardError
from xvision.features import extract as extract_module
from xvision.features.extract import extract_manifest
from xvision.features.guard import AccuracyWarning, cosine_rows
from xvision.features.store import FeatureStore
from xvision.io import load_image

TINY = "timm:mobilenetv3_small_050"


@pytest.fixture(scope="module")
def backbone():
    return create_backbone(TINY, weights="random")


def _radiograph_like(rng: np.random.Generator, size: tuple[int, int]) -> np.ndarray:
    """Smooth structure plus mild noise, 8-bit: something reduced decoding should barely change."""
    smooth = ndimage.gaussian_filter(rng.normal(size=size), sigma=min(size) / 20)
    smooth = (smooth - smooth.min()) / (np.ptp(smooth) + 1e-9)
    noisy = smooth * 220 + rng.normal(scale=4, size=size) + 10
    return np.clip(noisy, 0, 255).astype(np.uint8)


def _write_images(root: Path, names: list[str], *, size: tuple[int, int] = (600, 520), seed: int = 0) -> None:
    root.mkdir(parents=True, exist_ok=True)
    for i, name in enumerate(names):
        rng = np.random.default_rng(seed * 1000 + i)
        Image.fromarray(_radiograph_like(rng, size)).save(root / name)


def _manifest(path: Path, names: list[str]) -> Path:
    with open(path, "w", newline="") as handle:
        writer = csv.writer(handle)
        writer.writerow(["path", "label", "group"])
        for i, name in enumerate(names):
            writer.writerow([f"images/{name}", "normal" if i % 2 else "nodule", Path(name).stem])
    return path


@pytest.fixture
def dataset(tmp_path: Path) -> tuple[Path, list[str]]:
    names = [f"img{i}.png" for i in range(10)]
    _write_images(tmp_path / "images", names)
    return _manifest(tmp_path / "manifest.csv", names), names


def test_precision_fp32_is_exactly_the_reference(tmp_path, dataset, backbone) -> None:
    manifest, names = dataset
    report = extract_manifest(manifest, tmp_path / "feats", backbone=backbone, progress=False, precision="fp32")
    assert report.plan["engine"] == "eager" and report.plan["precision"] == "fp32"
    assert report.guard is None
    X, rows = FeatureStore(tmp_path / "feats").load()
    images = [load_image(tmp_path / "images" / name) for name in names]
    batch = torch.stack([backbone.preprocess(image) for image in images])
    assert np.array_equal(X, backbone.extract(batch))
    meta = FeatureStore(tmp_path / "feats").read_meta()
    assert meta["extraction"]["plan"]["precision"] == "fp32" and meta["extraction"]["accuracy_guard"] is None
    assert meta["extraction"]["plan"]["reduced_decode"] is False


def test_default_path_records_plan_and_guard(tmp_path, dataset, backbone) -> None:
    manifest, _ = dataset
    report = extract_manifest(manifest, tmp_path / "feats", backbone=backbone, progress=False)
    meta = FeatureStore(tmp_path / "feats").read_meta()
    plan = meta["extraction"]["plan"]
    assert set(plan) >= {"engine", "precision", "channels_last", "workers", "threads", "device", "batch_size"}
    assert plan == report.plan and plan["reduced_decode"] is True
    guard = meta["extraction"]["accuracy_guard"]
    assert guard["n"] == 2 and guard["threshold"] == 0.999  # small job: the smallest sample
    assert 0.99 < guard["cosine_min"] <= 1.0 + 1e-6
    assert meta["extraction"]["hardware"]["cpu_capability"]
    X, _ = FeatureStore(tmp_path / "feats").load()
    assert X.shape == (10, backbone.feature_dim) and report.extracted == 10


class _NoisyRunner:
    """A deliberately bad engine: the reference features plus large noise."""

    def __init__(self, backbone) -> None:
        self.plan = ExecutionPlan(engine="broken-test-engine", precision="bf16", reduced_decode=False, workers=0)
        self.backbone = backbone
        self.calls = 0

    def __call__(self, batch: np.ndarray) -> np.ndarray:
        self.calls += 1
        clean = self.backbone.extract(torch.from_numpy(batch))
        return clean + np.random.default_rng(0).normal(scale=np.abs(clean).mean() * 3, size=clean.shape)


def test_accuracy_guard_warns_on_a_bad_engine(tmp_path, dataset, backbone, monkeypatch) -> None:
    manifest, _ = dataset
    monkeypatch.setattr(extract_module, "make_runner", lambda model, extract, plan: _NoisyRunner(backbone))
    with pytest.warns(AccuracyWarning, match="ACCURACY GUARD FAILED"):  # asked for: kept, and warned about
        report = extract_manifest(manifest, tmp_path / "feats", backbone=backbone, progress=False, precision="bf16")
    assert report.guard["passed"] is False and report.guard["cosine_min"] < 0.999
    meta = FeatureStore(tmp_path / "feats").read_meta()
    assert meta["extraction"]["accuracy_guard"]["passed"] is False
    assert meta["extraction"]["plan"]["engine"] == "broken-test-engine"


def test_strict_fails_when_the_guard_fails(tmp_path, dataset, backbone, monkeypatch) -> None:
    manifest, _ = dataset
    runner = _NoisyRunner(backbone)
    monkeypatch.setattr(extract_module, "make_runner", lambda model, extract, plan: runner)
    with pytest.warns(AccuracyWarning), pytest.raises(AccuracyGuardError, match="--precision fp32"):
        extract_manifest(manifest, tmp_path / "feats", backbone=backbone, progress=False, strict=True, precision="bf16")
    assert runner.calls == 1  # only the guard's sample ran; nothing else was extracted
    assert not FeatureStore(tmp_path / "feats").keys()


def test_automatic_precision_falls_back_to_fp32_when_the_guard_fails(
    tmp_path, dataset, backbone, monkeypatch, caplog
) -> None:
    manifest, names = dataset
    real_make_runner = extract_module.make_runner
    noisy = _NoisyRunner(backbone)
    noisy.plan = ExecutionPlan(precision="bf16", channels_last=True, reduced_decode=True, workers=0)
    built = []

    def make_runner(model, extract, plan):
        built.append(plan)
        return noisy if len(built) == 1 else real_make_runner(model, extract, plan)

    monkeypatch.setattr(extract_module, "make_runner", make_runner)
    with warnings.catch_warnings(), caplog.at_level(logging.INFO, logger="xvision"):
        warnings.simplefilter("error", AccuracyWarning)  # the automatic choice must not end in a failed guard
        report = extract_manifest(manifest, tmp_path / "feats", backbone=backbone, progress=False)
    assert built[1] == replace(noisy.plan, precision="fp32")  # the same path otherwise
    assert "extracting in fp32 instead" in caplog.text
    assert report.plan["precision"] == "fp32" and report.guard["passed"]
    assert report.rejected["plan"]["precision"] == "bf16" and not report.rejected["accuracy_guard"]["passed"]
    meta = FeatureStore(tmp_path / "feats").read_meta()
    assert meta["extraction"]["rejected_plan"] == report.rejected
    assert meta["extraction"]["plan"]["precision"] == "fp32"
    X, rows = FeatureStore(tmp_path / "feats").load()
    images = [load_image(tmp_path / "images" / name) for name in names]
    reference = backbone.extract(torch.stack([backbone.preprocess(image) for image in images]))
    order = [names.index(Path(row.path).name) for row in rows]
    assert cosine_rows(X, reference[order]).min() > 0.999  # none of the noisy runner's features were kept


def test_second_manifest_extracts_only_new_content(tmp_path, backbone, monkeypatch) -> None:
    first = [f"a{i}.png" for i in range(6)]
    _write_images(tmp_path / "images", first, seed=1)
    second_new = [f"b{i}.png" for i in range(4)]
    _write_images(tmp_path / "images", second_new, seed=2)
    # The second manifest repeats three images of the first, one of them renamed (same bytes).
    (tmp_path / "images" / "renamed.png").write_bytes((tmp_path / "images" / "a5.png").read_bytes())
    second = ["a0.png", "a1.png", "renamed.png", *second_new]

    seen: list[int] = []
    real = extract_module.make_runner

    def counting(model, extract, plan):
        runner = real(model, extract, plan)

        class Counting:
            def __init__(self) -> None:
                self.plan = runner.plan

            def __call__(self, batch):
                seen.append(len(batch))
                return runner(batch)

        return Counting()

    monkeypatch.setattr(extract_module, "make_runner", counting)
    out = tmp_path / "feats"
    a = extract_manifest(_manifest(tmp_path / "a.csv", first), out, backbone=backbone, progress=False)
    assert a.extracted == 6 and sum(seen) == 6
    seen.clear()
    b = extract_manifest(_manifest(tmp_path / "b.csv", second), out, backbone=backbone, progress=False)
    assert b.reused == 3 and b.extracted == 4
    assert sum(seen) == 4  # images actually run through the network: only the new content
    store = FeatureStore(out)
    assert len(store.keys()) == 10
    X, rows = store.load()
    assert [Path(r.path).name for r in rows] == second and X.shape[0] == 7


def test_fp16_storage_halves_the_disk_and_round_trips(tmp_path, dataset, backbone) -> None:
    manifest, _ = dataset
    extract_manifest(manifest, tmp_path / "f32", backbone=backbone, progress=False, precision="fp32")
    extract_manifest(
        manifest, tmp_path / "f16", backbone=backbone, progress=False, precision="fp32", storage_dtype="float16"
    )
    X32, _ = FeatureStore(tmp_path / "f32").load()
    store16 = FeatureStore(tmp_path / "f16")
    X16, _ = store16.load()
    assert store16.dtype == "float16" and X16.dtype == np.float32
    assert np.allclose(X16, X32, rtol=1e-3, atol=1e-3 * np.abs(X32).max())
    size = {name: sum(p.stat().st_size for p in (tmp_path / name / "shards").iterdir()) for name in ("f32", "f16")}
    assert size["f16"] < 0.6 * size["f32"]


def test_storage_dtype_of_an_existing_store_cannot_change(tmp_path, dataset, backbone) -> None:
    from xvision.errors import FeatureStoreError

    manifest, _ = dataset
    extract_manifest(manifest, tmp_path / "feats", backbone=backbone, progress=False, precision="fp32")
    with pytest.raises(FeatureStoreError, match="float32"):
        extract_manifest(manifest, tmp_path / "feats", backbone=backbone, progress=False, storage_dtype="float16")


def test_engine_fallback_is_recorded(tmp_path, dataset, backbone, monkeypatch) -> None:
    """An optional engine that fails on its first batch falls back to eager, and meta.json says so."""
    from xvision.backbones import runtime

    class Broken:
        def __init__(self, model, plan) -> None:
            self.plan = plan

        def __call__(self, batch):
            raise RuntimeError("no compiler here")

    monkeypatch.setattr(runtime, "TorchRunner", _wrap_first(runtime.TorchRunner, Broken))
    manifest, _ = dataset
    report = extract_manifest(manifest, tmp_path / "feats", backbone=backbone, progress=False, engine="compile")
    assert report.plan["engine"] == "eager"
    meta = FeatureStore(tmp_path / "feats").read_meta()
    assert meta["extraction"]["plan"]["engine"] == "eager"
    assert FeatureStore(tmp_path / "feats").load()[0].shape[0] == 10


def _wrap_first(real, broken):
    """A TorchRunner factory whose first instance is broken (the compiled one), later ones real."""
    made = {"n": 0}

    def factory(model, plan):
        made["n"] += 1
        return broken(model, plan) if made["n"] == 1 else real(model, replace(plan))

    return factory


@pytest.mark.gpu
def test_cuda_extraction_agrees_with_the_reference(tmp_path, dataset, backbone) -> None:
    if not torch.cuda.is_available():
        pytest.skip("needs a CUDA device")
    manifest, _ = dataset
    report = extract_manifest(manifest, tmp_path / "gpu", backbone=backbone, progress=False, device="cuda")
    assert report.plan["device"] == "cuda" and report.plan["precision"] in ("bf16", "fp16")
    assert report.guard["passed"] and report.guard["cosine_min"] >= 0.999
    extract_manifest(manifest, tmp_path / "cpu", backbone=backbone, progress=False, precision="fp32")
    X_gpu, _ = FeatureStore(tmp_path / "gpu").load()
    X_cpu, _ = FeatureStore(tmp_path / "cpu").load()
    from xvision.features.guard import cosine_rows

    assert cosine_rows(X_gpu, X_cpu).min() > 0.99


def test_a_score_is_extracted_in_fp32_unless_asked_otherwise(tmp_path, dataset, backbone, monkeypatch) -> None:
    """A backbone whose feature is one number (a lesion score) ranks images by it: bf16 is not used for it
    automatically, even where the CPU has native bf16 and a vector backbone gets bf16."""
    from torch import nn

    from xvision.backbones import runtime
    from xvision.backbones.registry import Backbone

    bf16_cpu = replace(runtime.detect_hardware(), cpu_bf16=True, cuda=False, openvino=False)
    monkeypatch.setattr(runtime, "detect_hardware", lambda: bf16_cpu)
    torch.manual_seed(0)
    scorer = Backbone(
        backbone.spec, nn.Sequential(backbone.model, nn.Linear(backbone.feature_dim, 1)), backbone.weights
    )
    manifest, names = dataset
    vector = extract_manifest(manifest, tmp_path / "vector", backbone=backbone, progress=False)
    assert vector.plan["precision"] == "bf16"  # the stand-in hardware is what the automatic choice sees
    score = extract_manifest(manifest, tmp_path / "score", backbone=scorer, progress=False)
    assert score.plan["precision"] == "fp32" and score.rejected is None
    X, rows = FeatureStore(tmp_path / "score").load()
    images = [load_image(tmp_path / "images" / name) for name in names]
    reference = scorer.extract(torch.stack([scorer.preprocess(image) for image in images]))
    order = [names.index(Path(row.path).name) for row in rows]
    assert X.shape == (10, 1) and np.allclose(X, reference[order], rtol=1e-4, atol=1e-5)
    asked = extract_manifest(manifest, tmp_path / "asked", backbone=scorer, progress=False, precision="bf16")
    assert asked.plan["precision"] == "bf16"
    assert asked.guard["measure"] == "correlation" and asked.guard["n"] == 8  # not 2: a correlation needs more


def test_a_short_job_is_timed_before_an_engine_is_chosen(tmp_path, dataset, backbone, monkeypatch) -> None:
    """From OpenVINO's image count up, one eager pass is timed: a job that eager finishes in well under a
    second is not sent to an engine that first spends seconds converting the model."""
    from xvision.backbones import runtime

    with_openvino = replace(runtime.detect_hardware(), cpu_bf16=False, cuda=False, openvino=True)
    monkeypatch.setattr(runtime, "detect_hardware", lambda: with_openvino)
    _, names = dataset
    first = tmp_path / "images" / names[0]
    n = runtime.OPENVINO_MIN_IMAGES + 2
    assert runtime.choose_plan(n, threads=1).engine == "openvino"  # by the image count alone
    options = dict(precision="auto", engine="auto", device="auto", batch_size=None, workers=None, threads=1)
    assert extract_module._plan_for(backbone, first, n, **options).engine == "eager"
    monkeypatch.setattr(extract_module, "estimate_seconds_per_image", lambda *args: 1.0)  # a slow network
    assert extract_module._plan_for(backbone, first, n, **options).engine == "openvino"
