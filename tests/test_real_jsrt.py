"""The pipeline on real chest radiographs (../shared/data/jsrt; skipped where absent)."""

from __future__ import annotations

import csv
import json

import numpy as np
import pytest

from xvision.cli.main import main

pytestmark = [pytest.mark.slow, pytest.mark.realdata]


def test_pipeline_on_real_jsrt_radiographs(jsrt_dir, tmp_path, capsys) -> None:
    manifest = tmp_path / "manifest.csv"
    with open(jsrt_dir / "labels.csv", newline="") as source, open(manifest, "w", newline="") as out:
        writer = csv.writer(out)
        writer.writerow(["path", "label", "group"])
        for row in csv.DictReader(source):
            writer.writerow([str(jsrt_dir / row["file"]), row["label"], row["study_id"]])
    assert main(["split", str(manifest), "--test", "0.2", "--val", "0.15", "--seed", "0"]) == 0
    assert main(["extract", str(manifest), "--backbone", "efficientnet_lite0", "-o", str(tmp_path / "f")]) == 0
    assert main(["train", str(tmp_path / "f"), "-o", str(tmp_path / "run")]) == 0
    assert main(["evaluate", str(tmp_path / "run"), "--features", str(tmp_path / "f")]) == 0
    metrics = json.loads((tmp_path / "run" / "metrics.json").read_text())
    cm = np.array(metrics["confusion_matrix"])
    assert 25 <= metrics["n"] <= 35 and cm.sum() == metrics["n"]
    assert metrics["warning"] is None and metrics["weights"]["pretrained"] is True
    assert metrics["overlap_with_training"] == 0
    assert metrics["roc_auc"] is not None
    assert len(list((tmp_path / "run" / "checkpoints").glob("epoch-*.safetensors"))) == 20

    image = jsrt_dir / "images" / "JPCLN001.png"
    capsys.readouterr()
    assert main(["predict", str(tmp_path / "run"), str(image), "--json"]) == 0
    result = json.loads(capsys.readouterr().out)[0]
    assert result["predicted"] in ("nodule", "normal")
