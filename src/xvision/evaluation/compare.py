"""`xvision compare`: is run A's ROC AUC different from run B's on the same images?

Both runs score the same images of one split: with one feature store when both runs share a backbone, or
with a second store (``features_b``) when they do not, images then being matched by content (SHA-256).
The difference ``AUC_A - AUC_B`` gets a paired bootstrap interval (each resample scores both runs on the
same images, whole groups drawn within classes, as in ``evaluate``) and, for two classes, DeLong's test.

Two `xvision cv` folders are compared the same way on their pooled out-of-fold predictions
(:func:`compare_cv`): how much one recipe or ingredient buys over another, with a paired interval.
"""

from __future__ import annotations

import csv
import json
import logging
from pathlib import Path
from typing import Any

import numpy as np

from xvision._outputs import same_file
from xvision._text import nfc
from xvision.errors import FeatureStoreError, RunError
from xvision.evaluation.bootstrap import (
    BootstrapConfig,
    check_bootstrap,
    group_codes,
    paired_auc_samples,
    resampled_unit,
    scoring_groups,
    small_sample_caution,
)
from xvision.evaluation.crossval import is_cv_dir
from xvision.evaluation.delong import delong_test
from xvision.evaluation.evaluate import warn_seen_images
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
    check_bootstrap(bootstrap, optional=False)
    _warn_if_same(run_a, run_b)
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
    seen = {
        name: warn_seen_images(keys, run, "compared images", f"run {name.upper()}")
        for name, run in (("a", a), ("b", b))
    }
    overlap = {name: trained for name, (trained, _) in seen.items()}

    proba_a, proba_b = a.predict_proba(X_a), b.predict_proba(X_b)
    positive = a.positive if len(classes) == 2 else None
    groups = scoring_groups([r.sha256 for r in rows], [r.group for r in rows], "compared images")
    scored = compare_scores(y, proba_a, proba_b, classes, positive, groups, bootstrap)
    if scored is None:
        raise FeatureStoreError(f"{features}: split {split!r} lacks a class, so ROC AUC is undefined")
    return {
        "run_a": str(run_a),
        "run_b": str(run_b),
        "features": str(features),
        "features_b": None if features_b is None else str(features_b),
        "split": split or "all",
        **scored,
        "overlap_with_training": overlap,
        "overlap_with_validation": {name: validated for name, (_, validated) in seen.items()},
        "warning": "UNTRAINED BACKBONE" if a.untrained_backbone or b.untrained_backbone else None,
    }


def compare_scores(
    y: np.ndarray,
    proba_a: np.ndarray,
    proba_b: np.ndarray,
    classes: list[str],
    positive: str | None,
    groups: list[str | None],
    bootstrap: BootstrapConfig,
) -> dict[str, Any] | None:
    """AUCs of two sets of probabilities for the same images, their difference with a paired bootstrap
    interval (whole ``groups`` drawn within classes) and, for two classes, DeLong's test; None when a class
    is missing (AUC undefined)."""
    binary = len(classes) == 2
    pos = classes.index(positive) if binary and positive else None
    auc_a = compute_metrics(y, proba_a, classes)["roc_auc"]
    auc_b = compute_metrics(y, proba_b, classes)["roc_auc"]
    if auc_a is None or auc_b is None:
        return None
    codes = group_codes(groups, len(y))
    samples = paired_auc_samples(y, [proba_a, proba_b], positive=pos, groups=codes, config=bootstrap)
    diff = samples[0] - samples[1]
    diff = diff[np.isfinite(diff)]
    low, high = np.quantile(diff, [(1 - bootstrap.level) / 2, (1 + bootstrap.level) / 2])
    result: dict[str, Any] = {
        "n": int(len(y)),
        "classes": classes,
        "positive": positive if binary else None,
        "auc_a": float(auc_a),
        "auc_b": float(auc_b),
        "difference": {"value": float(auc_a - auc_b), "ci_low": float(low), "ci_high": float(high)},
        "bootstrap": {
            "method": "paired percentile",
            "level": bootstrap.level,
            "n_resamples": bootstrap.n_resamples,
            "seed": bootstrap.seed,
            "stratified_by": "class",
            "unit": resampled_unit(codes),
            "n_units": int(len(np.unique(codes))),
        },
    }
    caution = small_sample_caution(y, codes, classes)
    if caution:
        result["bootstrap"]["caution"] = caution
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


def compare_cv(cv_a: str | Path, cv_b: str | Path, *, bootstrap: BootstrapConfig = DEFAULT_BOOTSTRAP) -> dict[str, Any]:
    """Compare the pooled out-of-fold predictions of two `xvision cv` folders on the images both scored.

    Every out-of-fold probability comes from a model that never saw its image, so the two sets are
    compared as two runs' probabilities on one test set are: paired by image (by SHA-256 where both files
    have it, else by path), with the same interval and test. With ``--repeats``, the first repeat of each.
    """
    check_bootstrap(bootstrap, optional=False)
    _warn_if_same(cv_a, cv_b)
    a, b = _read_cv(cv_a), _read_cv(cv_b)
    if a["classes"] != b["classes"] or a["positive"] != b["positive"]:
        raise RunError(
            f"the cross-validations predict different classes or positive classes ({a['classes']}, "
            f"{a['positive']!r} vs {b['classes']}, {b['positive']!r}); compare like with like"
        )
    key = "sha256" if all(r["sha256"] for r in a["rows"] + b["rows"]) else "path"
    where = {r[key]: r for r in b["rows"]}
    pairs = [(r, where[r[key]]) for r in a["rows"] if r[key] in where]
    if not pairs:
        raise RunError(f"{cv_a} and {cv_b} share no scored image (matched by {key}); compare like with like")
    left_out = len(a["rows"]) + len(b["rows"]) - 2 * len(pairs)
    if left_out:
        log.warning("%d image(s) scored by only one of the cross-validations are left out", left_out)
    disagree = [ra["path"] for ra, rb in pairs if ra["label"] != rb["label"]]
    if disagree:
        raise RunError(f"{len(disagree)} image(s) carry different labels in the two, e.g. {disagree[0]}")
    classes = a["classes"]
    y = np.array([classes.index(ra["label"]) for ra, _ in pairs])
    proba_a = np.array([[float(ra[f"p_{c}"]) for c in classes] for ra, _ in pairs])
    proba_b = np.array([[float(rb[f"p_{c}"]) for c in classes] for _, rb in pairs])
    shas, values = [ra["sha256"] or None for ra, _ in pairs], [ra["group"] or None for ra, _ in pairs]
    groups = scoring_groups(shas, values, "compared images")
    scored = compare_scores(y, proba_a, proba_b, classes, a["positive"], groups, bootstrap)
    if scored is None:
        raise RunError("the images both cross-validations scored lack a class, so ROC AUC is undefined")
    repeats = {"a": a["repeats"], "b": b["repeats"]}
    return {
        "cv_a": str(cv_a),
        "cv_b": str(cv_b),
        "kind": "cross-validation",
        "repeats": repeats,
        "matched_by": key,
        **scored,
        "warning": a["warning"] or b["warning"],
    }


def _warn_if_same(a: str | Path, b: str | Path) -> None:
    if same_file(Path(a), Path(b)):
        log.warning("%s is both A and B: the difference is 0 and p = 1 by construction", a)


def _read_cv(cv_dir: str | Path) -> dict[str, Any]:
    """Classes, positive class, watermark and the first repeat's rows of an `xvision cv` folder."""
    if not is_cv_dir(cv_dir):
        raise RunError(f"{cv_dir}: not an `xvision cv` output folder (no metrics.json of a cross-validation)")
    metrics = json.loads((Path(cv_dir) / "metrics.json").read_text(encoding="utf-8"))
    with open(Path(cv_dir) / "oof_predictions.csv", newline="", encoding="utf-8") as handle:
        # NFC: folders written before manifests were read in NFC may hold decomposed class names (xvision._text)
        rows = [{nfc(k): nfc(v) for k, v in r.items()} for r in csv.DictReader(handle) if r["repeat"] == "1"]
    return {
        "classes": [nfc(c) for c in metrics["classes"]],
        "positive": nfc(metrics.get("positive")),
        "warning": metrics.get("warning"),
        "rows": rows,
        "repeats": int((metrics.get("cv") or {}).get("repeats") or 1),
    }
