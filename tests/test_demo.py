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


def test_the_demo_refuses_a_folder_that_is_not_an_earlier_demo(tmp_path, capsys) -> None:
    """Into a class folder of the user's own data, its phantoms would have been labelled as that class."""
    own = tmp_path / "mine" / "normal"
    own.mkdir(parents=True)
    (own / "film.png").write_bytes(b"not touched")
    assert main(["demo", "-o", str(own), "--n-per-class", "10"]) == 2
    assert "is not empty and not an earlier demo" in capsys.readouterr().err
    assert sorted(p.name for p in own.iterdir()) == ["film.png"]
    from xvision.demo import DEMO_MARK, run_demo
    from xvision.errors import RunError

    # A demo made before the mark existed (data with its phantoms.json, and a run) is still an earlier demo.
    old = tmp_path / "old-demo"
    (old / "data").mkdir(parents=True)
    (old / "data" / "phantoms.json").write_text("{}")
    (old / "run").mkdir()
    (old / "run" / "bundle.json").write_text("{}")
    from xvision.demo import _check_demo_folder

    _check_demo_folder(old)
    assert (old / DEMO_MARK).is_file()

    (tmp_path / "file").write_text("x")
    with pytest.raises(RunError, match="is a file; the demo needs a folder"):
        run_demo(tmp_path / "file")
