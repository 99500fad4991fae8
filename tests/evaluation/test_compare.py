"""Comparing two runs on the same images: paired bootstrap interval and DeLong, across backbones by SHA-256."""

from __future__ import annotations

import shutil
from pathlib import Path

import numpy as np
import pytest
from synthetic_store import make_store

from xvision.errors import FeatureStoreError, RunError
from xvision.evaluation.bootstrap import BootstrapConfig
from xvision.evaluation.compare import compare_runs
from xvision.evaluation.delong import delong_test
from xvision.evaluation.evaluate import evaluate_run
from xvision.features.dataset import load_split
from xvision.features.store import FeatureStore
from xvision.heads import MLPClassifier
from xvision.inference.bundle import load_bundle
from xvision.training import train_run

BOOT = BootstrapConfig(n_resamples=500, seed=0)


@pytest.fixture(scope="module")
def two_runs(tmp_path_factory) -> tuple[Path, Path, Path, Path]:
    """Run A on store A; run B (weaker head) on store B: the same images seen by another 'backbone'."""
    root = tmp_path_factory.mktemp("compare")
    store_a = make_store(root / "fa", n_groups=60, per_group=2, dim=16, signal=1.5, seed=9)
    store_b = make_store(root / "fb", n_groups=60, per_group=2, dim=16, signal=1.5, seed=9, backbone_name="other")
    train_run(store_a, root / "A", head=MLPClassifier(hidden=(32,), epochs=15, lr=0.05), progress=False)
    train_run(store_b, root / "B", head=MLPClassifier(hidden=(32,), epochs=1, lr=0.001), progress=False)
    return root / "A", root / "B", store_a, store_b


def test_difference_interval_and_delong(two_runs, tmp_path) -> None:
    run_a, run_b, store_a, store_b = two_runs
    result = compare_runs(run_a, run_b, store_a, features_b=store_b, bootstrap=BOOT)
    eval_a = evaluate_run(run_a, store_a, out_dir=tmp_path / "ea", bootstrap=None)
    eval_b = evaluate_run(run_b, store_b, out_dir=tmp_path / "eb", bootstrap=None)
    assert result["n"] == eval_a["n"] == eval_b["n"]
    assert result["auc_a"] == pytest.approx(eval_a["roc_auc"]) and result["auc_b"] == pytest.approx(eval_b["roc_auc"])
    d = result["difference"]
    assert d["value"] == pytest.approx(result["auc_a"] - result["auc_b"])
    assert d["ci_low"] <= d["value"] <= d["ci_high"]
    assert result["bootstrap"]["unit"] == "group" and result["bootstrap"]["n_units"] == result["n"] // 2

    test = load_split(store_a, "test")
    a, b = load_bundle(run_a), load_bundle(run_b)
    pos = a.classes.index(a.positive)
    y = np.array([a.classes.index(label) for label in test.labels]) == pos
    expected = delong_test(y, a.predict_proba(test.X)[:, pos], b.predict_proba(test.X)[:, pos])
    assert result["delong"]["p_value"] == pytest.approx(expected.p_value)
    assert result["delong"]["difference"] == pytest.approx(d["value"])


def test_same_run_twice_gives_zero_difference(two_runs) -> None:
    run_a, _, store_a, _ = two_runs
    result = compare_runs(run_a, run_a, store_a, bootstrap=BOOT)
    assert result["difference"] == {"value": 0.0, "ci_low": 0.0, "ci_high": 0.0}
    assert result["delong"]["p_value"] == 1.0


def test_another_backbone_needs_its_own_store(two_runs) -> None:
    run_a, run_b, store_a, _ = two_runs
    with pytest.raises(RunError, match="--features-b"):
        compare_runs(run_a, run_b, store_a, bootstrap=BOOT)


def test_images_are_matched_by_content(two_runs, caplog, tmp_path) -> None:
    run_a, run_b, store_a, original_b = two_runs
    store_b = Path(shutil.copytree(original_b, tmp_path / "fb"))
    store = FeatureStore(store_b)
    rows = store.read_index()
    test_rows = [r for r in rows if r.split == "test"]
    dropped = {test_rows[0].sha256, test_rows[1].sha256}
    kept = [r for r in rows if r.sha256 not in dropped]
    # Store B lists its rows in another order and under other split names: only content matters.
    for r in kept:
        r.split = ""
    store.write_index(kept[::-1])
    result = compare_runs(run_a, run_b, store_a, features_b=store_b, bootstrap=BOOT)
    assert result["n"] == len(test_rows) - 2
    assert "left out of the comparison" in caplog.text

    compared = next(r for r in kept if r.sha256 in {t.sha256 for t in test_rows})
    compared.label = "nodule" if compared.label == "normal" else "normal"
    store.write_index(kept)
    with pytest.raises(FeatureStoreError, match="another label"):
        compare_runs(run_a, run_b, store_a, features_b=store_b, bootstrap=BOOT)
