"""The built-in demo: the main job, offline, on real bundled EfficientNet-Lite0 weights."""

from __future__ import annotations

import json

import pytest

from xvision.cli.main import main

pytestmark = pytest.mark.slow


def test_demo_runs_the_whole_pipeline_offline(tmp_path, capsys) -> None:
    out = tmp_path / "demo"
    assert main(["demo", "-o", str(out), "--n-per-class", "20"]) == 0
    printed = capsys.readouterr().out
    assert "accuracy" in printed and str(out / "run" / "metrics.json") in printed
    metrics = json.loads((out / "run" / "metrics.json").read_text())
    assert metrics["backbone"] == "efficientnet_lite0" and metrics["weights"]["pretrained"] is True
    assert metrics["warning"] is None
    for name in ("confusion_matrix", "training_curve", "roc", "predictions"):
        assert (out / "run" / "plots" / f"{name}.png").is_file()
    assert len(list((out / "run" / "checkpoints").glob("*.safetensors"))) == 20
    # a second run reuses every stored feature instead of extracting again
    assert main(["demo", "-o", str(out), "--n-per-class", "20"]) == 0


def test_the_demos_next_step_names_xvision_as_it_was_run(monkeypatch) -> None:
    from xvision.cli.demo_cmd import _program

    monkeypatch.setattr("sys.argv", [".venv/bin/xvision", "demo"])  # the README's command, no venv activated
    assert _program() == ".venv/bin/xvision"
    monkeypatch.setattr("sys.argv", ["xvision", "demo"])
    assert _program() == "xvision"
    monkeypatch.setattr("sys.argv", ["/usr/lib/python3/-m", "demo"])  # python -m xvision: the plain name
    assert _program() == "xvision"
