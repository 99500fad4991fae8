"""Xvision: deep transfer learning on chest X-rays.

The public API, shared with the CLI (each ``xvision`` command is a thin wrapper over one of these)::

    load_image(path)                                   -> float32 (H, W) in [0, 1], display polarity
    read_manifest / build_manifest / assign_splits / check_no_leakage
    create_backbone(name, weights=None)                -> Backbone (model + preprocessing + weights identity)
    extract_manifest(manifest, out_dir, backbone=...)  -> FEATURES_DIR (resumable)
    MLPClassifier(...).fit(X, y)                       the seed head as a scikit-learn-style estimator
    train_run(features_dir, run_dir)                   -> RUN_DIR (model bundle)
    evaluate_run(run_dir, features_dir, split="test")  -> metrics dict (+ metrics.json, plots)
    Predictor(run_dir).predict_paths(paths)            -> predictions
"""

from xvision._version import __version__
from xvision.backbones import create_backbone, list_backbones
from xvision.data import assign_splits, build_manifest, check_no_leakage, read_manifest, write_manifest
from xvision.errors import XvisionError
from xvision.evaluation.evaluate import evaluate_run
from xvision.features.extract import extract_manifest
from xvision.heads import MLPClassifier
from xvision.inference import Predictor, load_bundle
from xvision.io import load_image
from xvision.training import train_run

__all__ = [
    "MLPClassifier",
    "Predictor",
    "XvisionError",
    "__version__",
    "assign_splits",
    "build_manifest",
    "check_no_leakage",
    "create_backbone",
    "evaluate_run",
    "extract_manifest",
    "list_backbones",
    "load_bundle",
    "load_image",
    "read_manifest",
    "train_run",
    "write_manifest",
]
