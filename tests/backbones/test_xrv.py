"""torchxrayvision backbones: X-ray normalisation, one channel, weights converted without unpickling here."""

from __future__ import annotations

import os
import sys
import types

import numpy as np
import pytest
import torch

from xvision.backbones import create_backbone
from xvision.backbones.xrv import convert, main, xrv_densenet121
from xvision.errors import WeightsNotFoundError


def test_xrv_input_is_one_channel_scaled_to_plus_minus_1024() -> None:
    backbone = create_backbone("xrv_densenet121_all", weights="random")
    image = np.linspace(0, 1, 64 * 64, dtype=np.float32).reshape(64, 64)
    x = backbone.preprocess(image)
    assert x.shape == (1, 224, 224)
    assert x.min() == pytest.approx(-1024, abs=30) and x.max() == pytest.approx(1024, abs=30)
    assert backbone.extract(x[None]).shape == (1, 1024)


def test_missing_weights_say_how_to_convert(monkeypatch, tmp_path) -> None:
    monkeypatch.setenv("TORCH_HOME", str(tmp_path))
    with pytest.raises(WeightsNotFoundError, match=r"xvision backbones --convert xrv_densenet121_all"):
        create_backbone("xrv_densenet121_all")


def test_converted_weights_resolve_from_the_cache(monkeypatch, tmp_path) -> None:
    monkeypatch.setenv("TORCH_HOME", str(tmp_path))
    torch.manual_seed(7)
    published = xrv_densenet121()
    published.register_buffer("op_threshs", torch.rand(18))  # torchxrayvision's extra buffer is dropped

    class FakeModels:
        @staticmethod
        def DenseNet(weights: str) -> torch.nn.Module:  # noqa: N802 - torchxrayvision's name
            assert weights == "densenet121-res224-all"
            return published

    monkeypatch.setitem(sys.modules, "torchxrayvision", types.SimpleNamespace(models=FakeModels))
    assert main(["xrv_densenet121_all"]) == 0
    backbone = create_backbone("xrv_densenet121_all")
    assert backbone.pretrained and backbone.weights.source == "torch-hub-cache"
    conv0 = backbone.model.body[0].conv0.weight
    assert torch.equal(conv0, published.features.conv0.weight)


def test_convert_refuses_other_backbones_and_a_missing_package(monkeypatch, capsys) -> None:
    with pytest.raises(WeightsNotFoundError, match="not a torchxrayvision backbone"):
        convert("efficientnet_lite0")
    monkeypatch.setitem(sys.modules, "torchxrayvision", None)
    assert main(["xrv_resnet50_512_all"]) == 1
    assert "pip install torchxrayvision" in capsys.readouterr().err


def test_extraction_runs_end_to_end_with_a_one_channel_backbone(tmp_path) -> None:
    from xvision.data.phantoms import make_phantom_dataset
    from xvision.features.extract import extract_manifest
    from xvision.features.store import FeatureStore

    manifest = make_phantom_dataset(tmp_path / "data", n_per_class=2, size=64, seed=1)
    extract_manifest(manifest, tmp_path / "features", backbone="xrv_densenet121_all", weights="random", progress=False)
    store = FeatureStore(tmp_path / "features")
    assert len(store.read_index()) == 4
    assert store.read_meta()["backbone"]["preprocess"]["channels"] == 1


def test_the_cli_converts_and_python_dash_m_reaches_the_same_code(monkeypatch, tmp_path) -> None:
    """`python -m xvision.backbones.xrv` ran a second copy of the module whose classes were not the registry's,
    so it called every xrv backbone "not a torchxrayvision backbone"."""
    import subprocess

    from xvision.cli.main import main as cli

    monkeypatch.setenv("TORCH_HOME", str(tmp_path / "torch"))
    published = xrv_densenet121()

    class FakeModels:
        @staticmethod
        def DenseNet(weights: str) -> torch.nn.Module:  # noqa: N802 - torchxrayvision's name
            return published

    monkeypatch.setitem(sys.modules, "torchxrayvision", types.SimpleNamespace(models=FakeModels))
    assert cli(["backbones", "--convert", "xrv_densenet121_all", "-o", str(tmp_path / "x.safetensors")]) == 0
    assert create_backbone("xrv_densenet121_all", weights=str(tmp_path / "x.safetensors")).pretrained
    assert cli(["backbones", "--convert", "efficientnet_lite0"]) == 2  # one line, not a traceback

    # Without the package (a stand-in that fails to import), -m gets as far as saying so.
    (tmp_path / "stub").mkdir()
    (tmp_path / "stub" / "torchxrayvision.py").write_text("raise ImportError('not installed')\n")
    run = subprocess.run(
        [sys.executable, "-m", "xvision.backbones.xrv", "xrv_densenet121_all"],
        capture_output=True,
        text=True,
        env={**os.environ, "PYTHONPATH": str(tmp_path / "stub")},
    )
    assert run.returncode == 1 and "converting needs the torchxrayvision package" in run.stderr, run.stderr
