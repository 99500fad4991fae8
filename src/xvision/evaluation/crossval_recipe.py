"""`xvision cv MANIFEST --recipe NAME`: cross-validate a whole recipe, fine-tuning included.

:func:`~xvision.evaluation.crossval.cross_validate` trains heads on one fixed feature store. A recipe that
fine-tunes its backbone must retrain the backbone in every fold (a backbone tuned on all images has seen
every fold's test images), so this runs `xvision fit` once per fold instead, on a manifest whose held-out
images are the fold's test split. Folds are made as `cv` makes them (grouped by ``group_by`` and by
identical content, stratified by label); the out-of-fold probabilities are pooled and scored with the same
code, with the same outputs.

Each fold is an ordinary run folder, ``OUT/folds/repeat-R-fold-K/run`` (its manifest beside it). Run the
same command again after an interruption: finished folds are kept, and an unfinished fold resumes where
`fit` resumes (finished training rounds and extracted features are kept). ``OUT/cv_recipe.json`` records
what the folds were made from; another manifest, recipe or setting is refused rather than mixed in.
"""

from __future__ import annotations

import csv
import json
import logging
import os
from dataclasses import asdict, replace
from pathlib import Path
from typing import Any

import numpy as np

from xvision._checks import check_type
from xvision._fileio import atomic_write_json, sha256_file
from xvision.data.hints import IMBALANCE_CURE
from xvision.data.manifest import Manifest, read_manifest, write_manifest
from xvision.data.split import group_values, link_groups, readable_hashes
from xvision.errors import ManifestError, RunError
from xvision.evaluation.audit import audit_record
from xvision.evaluation.bootstrap import BootstrapConfig, check_bootstrap
from xvision.evaluation.crossval import (
    RECIPE_SETTINGS_FILE,
    CVConfig,
    check_enough_groups,
    combine_repeats,
    inner_split,
    oof_row,
    threshold_summary,
    write_cv_outputs,
)
from xvision.evaluation.report import REPORT_NAME, report_after_evaluate
from xvision.evaluation.scoring import DEFAULT_BOOTSTRAP, score_predictions
from xvision.evaluation.threshold import default_positive

log = logging.getLogger(__name__)

SETTINGS_FILE = RECIPE_SETTINGS_FILE


def cross_validate_recipe(
    manifest_path: str | Path,
    out_dir: str | Path,
    *,
    recipe: str | None = None,
    backbone: str | None = None,
    weights: str | None = None,
    config: CVConfig = CVConfig(),  # noqa: B008 - frozen, never mutated
    bootstrap: BootstrapConfig | None = DEFAULT_BOOTSTRAP,
    progress: bool = True,
    only_fold: int | None = None,
) -> dict[str, Any] | None:
    """Cross-validate ``recipe`` (default: `fit`'s) on the manifest; write ``out_dir`` as `cv` does and
    return the metrics dict. ``backbone`` and ``weights`` are passed to every fold's `fit`; ``config``'s
    threshold rule, calibration and positive class are `fit`'s own (``youden``, none, the default).

    ``only_fold`` (1-based, counting on across repeats) fits just that fold and returns None: to spread the
    folds over processes or machines that share ``out_dir``; a call without it then pools them."""
    check_type(config, CVConfig, "config", "a CVConfig (xvision.CVConfig(folds=..., ...))")
    check_bootstrap(bootstrap)
    from xvision.recipes import DEFAULT_RECIPE, fit, get_recipe
    from xvision.recipes.registry import recipe_for_classes

    chosen = get_recipe(recipe or DEFAULT_RECIPE)
    if (config.threshold_rule, config.calibrate, config.positive) != ("youden", "none", None):
        raise RunError("a recipe fixes its own threshold rule, calibration and positive class (as `fit` does)")
    manifest, hashes, y, classes, groups = _folds_input(manifest_path, config)
    chosen = recipe_for_classes(chosen, classes, manifest_path)  # said once, and before the folder is claimed
    if config.inner_val > 0:  # its refusal comes before the output folder is claimed, not inside fold 1
        for repeat in range(config.repeats):
            for train_idx, _ in _splits(y, groups, config, repeat):
                inner_split(y, groups, train_idx, config.inner_val, config.seed + repeat)
    out = Path(os.path.abspath(out_dir))  # fold manifests' relative image paths resolve against it
    _claim(out, manifest_path, chosen.name, backbone, weights, config)
    positive = default_positive(classes) if len(classes) == 2 else None

    per_repeat: list[dict[str, Any]] = []
    scored: list[np.ndarray] = []  # per repeat: the rows that got a probability (unreadable ones do not)
    probas: list[np.ndarray] = []
    oof: list[list[Any]] = []
    details: list[dict[str, Any]] = []
    unreadable: dict[str, dict[str, str]] = {}
    audit: dict[str, Any] | None = None  # the same images in every fold: audited once, when a fold is fitted
    total = config.folds * config.repeats
    if only_fold is not None and not 1 <= only_fold <= total:
        raise RunError(f"only_fold {only_fold}: choose 1 to {total}")
    for repeat in range(config.repeats):
        proba = np.full((len(y), len(classes)), np.nan)
        decisions = np.zeros(len(y), dtype=np.int64)
        fold_of = np.zeros(len(y), dtype=np.int64)
        for fold, (train_idx, test_idx) in enumerate(_splits(y, groups, config, repeat), start=1):
            fit_idx, val_idx = train_idx, np.array([], dtype=np.int64)
            if config.inner_val > 0:
                fit_idx, val_idx = inner_split(y, groups, train_idx, config.inner_val, config.seed + repeat)
            fold_dir = out / "folds" / f"repeat-{repeat + 1}-fold-{fold}"
            fold_manifest = _fold_manifest(manifest, fit_idx, val_idx, test_idx, fold_dir / "manifest.csv")
            run = fold_dir / "run"
            if only_fold is not None and only_fold != repeat * config.folds + fold:
                continue
            number = f"fold {repeat * config.folds + fold} of {total}"
            if not (run / "predictions.csv").is_file():  # folds evaluated before metrics.json came last: redo
                (run / "metrics.json").unlink(missing_ok=True)
            if (run / "metrics.json").is_file():
                log.info("cv: %s: finished on an earlier call, kept", number)
                if not (run / REPORT_NAME).exists():  # interrupted between the fold's metrics and its report
                    report_after_evaluate(run, run, run / "features")
            else:
                if audit is None:
                    audit = audit_record(manifest)
                log.info("cv: %s: fitting recipe %r, %d images held out", number, chosen.name, len(test_idx))
                # The folds replace the manifest's splits: a validation split comes from --inner-val here.
                advice = IMBALANCE_CURE.set(
                    "pass --inner-val 0.2 (a validation split in every fold picks its threshold)"
                )
                try:
                    fit(
                        fold_manifest,
                        run,
                        recipe=chosen.name,
                        backbone=backbone,
                        weights=weights,
                        seed=config.seed + repeat,
                        progress=progress,
                        audit=audit,
                        checkpoints="best",  # per-epoch heads of every fold would be gigabytes for VGG16 features
                    )
                finally:
                    IMBALANCE_CURE.reset(advice)
            if only_fold is not None:
                return None
            fold_result = _read_fold(fold_dir, manifest, test_idx, classes)
            proba[test_idx] = fold_result["proba"]
            decisions[test_idx] = fold_result["decisions"]
            fold_of[test_idx] = fold
            for item in fold_result["unreadable"]:
                unreadable.setdefault(item["path"], item)
            details.append(
                {
                    "repeat": repeat + 1,
                    "fold": fold,
                    "n_train": len(fit_idx),
                    "n_val": len(val_idx),
                    **fold_result["detail"],
                }
            )
        rows = np.flatnonzero(~np.isnan(proba[:, 0]))
        if len(rows) == 0:
            raise ManifestError(f"{manifest.name}: no image could be scored in any fold")
        metrics = score_predictions(
            y[rows],
            proba[rows],
            classes,
            positive=positive,
            groups=[str(g) for g in groups[rows]],
            bootstrap=bootstrap,
            y_pred=decisions[rows],
        )
        per_repeat.append(metrics)
        scored.append(rows)
        probas.append(proba[rows])
        oof += [
            oof_row(
                repeat + 1,
                int(fold_of[i]),
                manifest.rows[i].path,
                manifest.rows[i].label,
                manifest.rows[i].group,
                hashes.get(str(manifest.resolve(manifest.rows[i])), ""),
                classes[decisions[i]],
                proba[i],
            )
            for i in rows
        ]

    metrics = combine_repeats(per_repeat)
    metrics = {
        "kind": "cross-validation",
        "manifest": str(manifest_path),
        "recipe": chosen.name,
        "recipes_run": sorted({d["recipe"] for d in details}),
        "split": config.split or "all",
        "backbone": details[0]["backbone"],
        "weights": details[0]["weights"],
        "warning": next((d["warning"] for d in details if d["warning"]), None),
        "cv": {**asdict(config), "n_groups": int(len(np.unique(groups))), "fit_per_fold": True},
        "unreadable": list(unreadable.values()),
        **metrics,
        "threshold_rule": threshold_summary(config, [d["threshold"] for d in details], metrics.get("positive")),
        "folds_detail": [{k: v for k, v in d.items() if k not in ("weights", "warning")} for d in details],
    }
    if "threshold" in metrics:  # two classes: one value when every fold used the same threshold
        metrics["threshold"] = metrics["threshold_rule"]["value"]
    metrics["calibration"]["applied"] = {"method": "none", "fitted_on": None}
    write_cv_outputs(out, metrics, oof, classes, per_repeat[0], y[scored[0]], probas[0], watermark=metrics["warning"])
    return metrics


def _folds_input(
    manifest_path: str | Path, config: CVConfig
) -> tuple[Manifest, dict[str, str], np.ndarray, list[str], np.ndarray]:
    """The manifest (its ``config.split`` rows), its readable files' hashes, class index per row, the
    classes, and the unit per row that folds keep together; checked before any fold starts."""
    manifest = read_manifest(manifest_path)
    if config.split:
        if not any(row.split == config.split for row in manifest.rows):
            raise ManifestError(f"{manifest.name}: no rows in split {config.split!r}; use --split all for every row")
        manifest = manifest.subset(config.split)
    classes = sorted(manifest.labels)
    if len(classes) < 2:
        found = f"only class {classes[0]!r}" if classes else "no images"
        raise ManifestError(f"{manifest.name}: the rows hold {found}; a classifier needs two classes")
    hashes = readable_hashes(manifest)  # the manifest's own splits, if any, are replaced by the folds'
    digests = [hashes.get(str(manifest.resolve(row))) for row in manifest.rows]
    groups = link_groups(digests, group_values(manifest, config.group_by))
    y = np.array([classes.index(row.label) for row in manifest.rows])
    check_enough_groups(y, groups, classes, config.folds, error=ManifestError)
    return manifest, hashes, y, classes, groups


def _splits(y: np.ndarray, groups: np.ndarray, config: CVConfig, repeat: int) -> list[tuple[np.ndarray, np.ndarray]]:
    from sklearn.model_selection import StratifiedGroupKFold

    splitter = StratifiedGroupKFold(n_splits=config.folds, shuffle=True, random_state=config.seed + repeat)
    return list(splitter.split(np.zeros(len(y)), y, groups))


def _fold_manifest(
    manifest: Manifest, fit_idx: np.ndarray, val_idx: np.ndarray, test_idx: np.ndarray, path: Path
) -> Path:
    """Write the fold's manifest: the same rows (paths rewritten to point at the same files), split assigned."""
    split = {int(i): "train" for i in fit_idx} | {int(i): "val" for i in val_idx} | {int(i): "test" for i in test_idx}
    rows = [replace(row, split=split[i]) for i, row in enumerate(manifest.rows)]
    columns = manifest.columns if "split" in manifest.columns else (*manifest.columns, "split")
    # Relative paths: the cv folder and the images moved together (another disk, a colleague's machine) give
    # the same fold manifests, so an interrupted cv resumes there instead of refusing every fitted fold.
    return write_manifest(replace(manifest, rows=rows, columns=columns), path, relative=True)


def _read_fold(fold_dir: Path, manifest: Manifest, test_idx: np.ndarray, classes: list[str]) -> dict[str, Any]:
    """The finished fold's test probabilities and decisions (rows of ``test_idx``, NaN where the image could
    not be read), its unreadable images (as the manifest names them) and what the fold's run was."""
    run = fold_dir / "run"
    by_file: dict[str, tuple[list[float], str]] = {}
    with open(run / "predictions.csv", newline="", encoding="utf-8") as handle:
        for line in csv.DictReader(handle):
            key = os.path.normpath(fold_dir / line["path"])
            by_file[key] = ([float(line[f"p_{c}"]) for c in classes], line["predicted"])
    proba = np.full((len(test_idx), len(classes)), np.nan)
    decisions = np.zeros(len(test_idx), dtype=np.int64)
    for k, i in enumerate(test_idx):
        found = by_file.get(str(manifest.resolve(manifest.rows[i])))
        if found is not None:
            proba[k], decisions[k] = found[0], classes.index(found[1])
    run_metrics = json.loads((run / "metrics.json").read_text(encoding="utf-8"))
    names = {str(manifest.resolve(row)): row.path for row in manifest.rows}
    unreadable = [
        {**item, "path": names.get(os.path.normpath(fold_dir / item["path"]), item["path"])}
        for item in run_metrics.get("unreadable") or []
    ]
    bundle = json.loads((run / "bundle.json").read_text(encoding="utf-8"))
    detail = {
        "n_test": int(np.sum(~np.isnan(proba[:, 0]))),
        "recipe": bundle.get("recipe") or "unrecorded",  # runs of xvision <= 2026-11-27 did not record it
        "backbone": bundle["backbone"]["name"],
        "weights": bundle["backbone"]["weights"],
        "warning": bundle.get("warning"),
        "threshold": (bundle.get("threshold") or {}).get("value"),
        "roc_auc": run_metrics.get("roc_auc"),  # of this fold's held-out images alone
    }
    return {"proba": proba, "decisions": decisions, "unreadable": unreadable, "detail": detail}


def _claim(
    out: Path,
    manifest_path: str | Path,
    recipe: str,
    backbone: str | None,
    weights: str | None,
    config: CVConfig,
) -> None:
    """Record what the folds in ``out`` are made from, or refuse when they were made from something else."""
    settings = {
        "manifest_sha256": sha256_file(manifest_path),
        "recipe": recipe,
        "backbone": backbone,
        "weights": weights,
        "cv": asdict(config),
    }
    recorded = out / SETTINGS_FILE
    # The record is looked for first, so that processes started together on one folder (only_fold) agree.
    if recorded.is_file():
        before = json.loads(recorded.read_text(encoding="utf-8"))
        flat = {**{k: v for k, v in settings.items() if k != "cv"}, **settings["cv"]}
        flat_before = {**{k: v for k, v in before.items() if k != "cv"}, **(before.get("cv") or {})}
        changed = sorted(k.replace("_sha256", " (its SHA-256)") for k in flat if flat_before.get(k) != flat[k])
        started = any(run.exists() for run in (out / "folds").glob("*/run"))
        if changed and not started:  # e.g. the first fold failed on missing weights: nothing to keep
            log.info("%s: no fold had started; starting afresh with these settings", out)
            atomic_write_json(recorded, settings)
            return
        if changed:
            raise RunError(
                f"{out}: holds the folds of another cross-validation (different {', '.join(changed)}); "
                "choose another -o, or delete the folder to start afresh"
            )
        log.info("%s: continuing the folds already there", out)
        return
    if out.exists() and any(entry.name != SETTINGS_FILE for entry in out.iterdir()):
        raise RunError(f"{out}: folder exists and is not empty; choose another -o")
    atomic_write_json(recorded, settings)
