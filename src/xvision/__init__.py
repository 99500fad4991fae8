"""Xvision: deep transfer learning on chest X-rays.

The public API, shared with the CLI (each ``xvision`` command is a thin wrapper over one of these)::

    load_image(path)                                   -> float32 (H, W) in [0, 1], display polarity
    load_radiograph(path)                              -> the same, refusing blank images, masks, CT/MR DICOMs
    read_manifest / build_manifest / assign_splits / check_no_leakage
    create_backbone(name, weights=None)                -> Backbone (model + preprocessing + weights identity)
    extract_manifest(manifest, out_dir, backbone=...)  -> FEATURES_DIR (resumable)
    MLPClassifier(...).fit(X, y)                       the seed head as a scikit-learn-style estimator
    train_run(features_dir, run_dir)                   -> RUN_DIR (model bundle)
    evaluate_run(run_dir, features_dir, split="test")  -> metrics dict (+ metrics.json, plots)
    fit(manifest, run_dir, recipe="best")              -> a named recipe end to end (list_recipes())
    evaluate_manifest(run_dir, manifest)               -> metrics on images the run has never seen
    cross_validate(features_dir, out_dir, config=CVConfig(...))
                                                       -> pooled out-of-fold metrics of the head
    cross_validate_recipe(manifest, out_dir, recipe=)  -> the same for a whole recipe (fit once per fold)
    compare_runs(run_a, run_b, features) / compare_cv(cv_a, cv_b)
                                                       -> AUC difference, paired interval, DeLong
    Predictor(run_dir).predict_paths(paths)            -> predictions
"""

from __future__ import annotations

import importlib
from typing import Any

from xvision._version import __version__
from xvision.errors import XvisionError

# The API is imported on first use: `import xvision` (and so `xvision --help`) must not wait for torch.
_EXPORTS = {
    "create_backbone": "xvision.backbones",
    "list_backbones": "xvision.backbones",
    "assign_splits": "xvision.data",
    "build_manifest": "xvision.data",
    "check_no_leakage": "xvision.data",
    "read_manifest": "xvision.data",
    "write_manifest": "xvision.data",
    "evaluate_run": "xvision.evaluation.evaluate",
    "evaluate_manifest": "xvision.evaluation.on_images",
    "CVConfig": "xvision.evaluation.crossval",
    "cross_validate": "xvision.evaluation.crossval",
    "cross_validate_recipe": "xvision.evaluation.crossval_recipe",
    "compare_runs": "xvision.evaluation.compare",
    "compare_cv": "xvision.evaluation.compare",
    "fit": "xvision.recipes",
    "list_recipes": "xvision.recipes",
    "extract_manifest": "xvision.features.extract",
    "MLPClassifier": "xvision.heads",
    "Predictor": "xvision.inference",
    "load_bundle": "xvision.inference",
    "load_image": "xvision.io",
    "load_radiograph": "xvision.io",
    "train_run": "xvision.training",
}


def __getattr__(name: str) -> Any:
    if name in _EXPORTS:
        value = getattr(importlib.import_module(_EXPORTS[name]), name)
        globals()[name] = value
        return value
    raise AttributeError(f"module 'xvision' has no attribute {name!r}")


def __dir__() -> list[str]:
    return sorted({*globals(), *_EXPORTS})


__all__ = [
    "CVConfig",
    "MLPClassifier",
    "Predictor",
    "XvisionError",
    "__version__",
    "assign_splits",
    "build_manifest",
    "check_no_leakage",
    "compare_cv",
    "compare_runs",
    "create_backbone",
    "cross_validate",
    "cross_validate_recipe",
    "evaluate_manifest",
    "evaluate_run",
    "extract_manifest",
    "fit",
    "list_backbones",
    "list_recipes",
    "load_bundle",
    "load_image",
    "load_radiograph",
    "read_manifest",
    "train_run",
    "write_manifest",
]
