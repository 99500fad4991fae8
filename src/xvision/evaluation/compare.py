"""`xvision compare`: is run A's ROC AUC different from run B's on the same images?

Both runs score the same images of one split: with one feature store when both runs share a backbone, or
with a second store (``features_b``) when they do not, images then being matched by content (SHA-256).
The difference ``AUC_A - AUC_B`` gets a paired bootstrap interval (each resample scores both runs on the
same images, whole groups drawn within classes, as in ``evaluate``) and, for two classes, DeLong's test.
"""

from __future__ import annotations

import logging
from pathlib import Path
from typing import Any

import numpy as np

from xvision.errors import FeatureStoreError, RunError
from xvision.evaluation.bootstrap import BootstrapConfig, group_codes, paired_auc_samples
from xvision.evaluation.delong import delong_test
from xvision.evaluation.metrics import compute_metrics
from xvision.evaluation.scoring import DEFAULT_BOOTSTRAP
from xvision.features.dataset import load_split
from xvision.inference.bundle import RunBundle, check_same_backbone, load_bundle

log = logging.getLogger(__name__)


def compare_runs(
    run_a: str | Path,
    run_b: str | Path,
    features: str | Path,
    *,
    features_b: str | Path | None = None,
    split: str | None = "test",
    bootstrap: BootstrapConfig = DEFAULT_BOOTSTRAP,
) -> dict[str, Any]:
    """Compare the AUCs of two runs on ``split`` of ``features`` (images matched in ``features_b``).

    Returns a JSON-ready dict: ``auc_a``, ``auc_b``, ``difference`` (A - B) with a paired bootstrap
    ``{"value", "ci_low", "ci_high"}``, ``delong`` (two classes) and the data it was computed on.
    """
    a, b = load_bundle(run_a), load_bundle(run_b)
    if a.classes != b.classes:
        raise RunError(f"the runs predict different classes ({a.classes} vs {b.classes}); compare like with like")
    data = load_split(features, split)
    check_same_backbone(a.backbone, data.meta["backbone"], f"{features} (for {run_a})")
    classes = a.classes
    unknown = sorted(set(data.labels) - set(classes))
    if unknown:
        raise FeatureStoreError(f"{features}: labels {unknown} are not classes of the runs ({', '.join(classes)})")
    rows, X_a = data.rows, data.X
    if features_b is None:
        _check_backbone_b(b, data.meta["backbone"], features, run_b)
        X_b = data.X
    else:
        rows, X_a, X_b = _match_by_content(data, features_b, b, run_b)
    y = np.array([classes.index(r.label) for r in rows])
    keys = {r.sha256 for r in rows}
    overlap = {"a": len(keys & a.train_keys()), "b": len(keys & b.train_keys())}
    for name, count in overlap.items():
        if count:
            log.warning("%d compared images were used to train run %s: its AUC is optimistic", count, name.upper())

    proba_a, proba_b = a.predict_proba(X_a), b.predict_proba(X_b)
    binary = len(classes) == 2
    pos = classes.index(a.positive) if binary and a.positive else None
    auc_a = compute_metrics(y, proba_a, classes)["roc_auc"]
    auc_b = compute_metrics(y, proba_b, classes)["roc_auc"]
    if auc_a is None or auc_b is None:
        raise FeatureStoreError(f"{features}: split {split!r} lacks a class, so ROC AUC is undefined")
    codes = group_codes([r.group for r in rows], len(rows))
    samples = paired_auc_samples(y, [proba_a, proba_b], positive=pos, groups=codes, config=bootstrap)
    diff = samples[0] - samples[1]
    diff = diff[np.isfinite(diff)]
    low, high = np.quantile(diff, [(1 - bootstrap.level) / 2, (1 + bootstrap.level) / 2])
    result: dict[str, Any] = {
        "run_a": str(run_a),
        "run_b": str(run_b),
        "features": str(features),
        "features_b": None if features_b is None else str(features_b),
        "split": split or "all",
        "n": int(len(y)),
        "classes": classes,
        "positive": a.positive if binary else None,
        "auc_a": float(auc_a),
        "auc_b": float(auc_b),
        "difference": {"value": float(auc_a - auc_b), "ci_low": float(low), "ci_high": float(high)},
        "bootstrap": {
            "method": "paired percentile",
            "level": bootstrap.level,
            "n_resamples": bootstrap.n_resamples,
            "seed": bootstrap.seed,
            "stratified_by": "class",
            "unit": "group" if any(r.group for r in rows) else "image",
            "n_units": int(len(np.unique(codes))),
        },
        "overlap_with_training": overlap,
        "warning": "UNTRAINED BACKBONE" if a.untrained_backbone or b.untrained_backbone else None,
    }
    if binary:
        assert pos is not None
        result["delong"] = delong_test(y == pos, proba_a[:, pos], proba_b[:, pos], level=bootstrap.level).to_dict()
    else:
        result["delong"] = None
        result["delong_note"] = "DeLong's test is computed for two classes only; see the bootstrap interval"
    return result


def _check_backbone_b(b: RunBundle, found: dict[str, Any], features: str | Path, run_b: str | Path) -> None:
    try:
        check_same_backbone(b.backbone, found, f"{features} (for {run_b})")
    except RunError as error:
        raise RunError(f"{error}; pass run B's feature store with --features-b") from None


def _match_by_content(
    data: Any, features_b: str | Path, b: RunBundle, run_b: str | Path
) -> tuple[list[Any], np.ndarray, np.ndarray]:
    store_b = load_split(features_b, None)
    check_same_backbone(b.backbone, store_b.meta["backbone"], f"{features_b} (for {run_b})")
    where = {row.sha256: i for i, row in enumerate(store_b.rows)}
    keep = [i for i, row in enumerate(data.rows) if row.sha256 in where]
    missing = len(data.rows) - len(keep)
    if not keep:
        raise FeatureStoreError(f"{features_b}: none of the images to compare has features; extract them first")
    if missing:
        log.warning("%d images have no features in %s and are left out of the comparison", missing, features_b)
    rows = [data.rows[i] for i in keep]
    idx_b = [where[row.sha256] for row in rows]
    disagree = [r.path for r, j in zip(rows, idx_b, strict=True) if store_b.rows[j].label != r.label]
    if disagree:
        raise FeatureStoreError(
            f"{features_b}: {len(disagree)} image(s) carry another label than in the first store, e.g. {disagree[0]}"
        )
    return rows, data.X[keep], store_b.X[idx_b]
