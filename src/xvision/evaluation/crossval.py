"""`xvision cv`: k-fold cross-validation of the head on a feature store, for data too small to split.

Folds are grouped and stratified (scikit-learn's ``StratifiedGroupKFold``): images sharing a group (the
``--group-by`` column, a patient id) or identical content (the same SHA-256) never fall on both sides of a
fold. Each fold trains a fresh head with the same recipe as ``train``; the out-of-fold (OOF) predictions
of all folds are pooled and scored once, with bootstrap intervals over the pooled images.

Inside each fold's training part, ``inner_val > 0`` holds out that fraction (grouped, stratified) as the
fold's validation split, which then does what it does in ``train``: picks the epoch, fits the temperature
(``calibrate``) and picks the threshold (``threshold_rule``). With ``inner_val = 0`` (the default) every
fold trains for the full number of epochs and decides at 0.5, like ``train`` without a validation split.

With ``repeats > 1`` the whole procedure runs again with new fold assignments (and head seeds). Each
repeat's pooled metrics are reported; the headline figures are their means, and each interval is the
mean of the repeats' interval bounds (every repeat is bootstrapped with the same seed, so on the same
resamples of the same images). See docs/evaluation.md.
"""

from __future__ import annotations

import contextlib
import copy
import csv
import io
import json
import logging
from collections.abc import Iterator, Sequence
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

import numpy as np

from xvision._checks import check_type
from xvision._fileio import atomic_write_json, atomic_write_text, csv_float
from xvision._outputs import check_writable
from xvision._text import nfc
from xvision.data.hints import warn_imbalance
from xvision.data.split import link_groups
from xvision.errors import FeatureStoreError, RunError
from xvision.evaluation.bootstrap import BootstrapConfig, check_bootstrap
from xvision.evaluation.calibration import apply_temperature
from xvision.evaluation.metrics import compute_metrics
from xvision.evaluation.operating import check_positive, check_threshold_rule, fit_operating_point
from xvision.evaluation.scoring import DEFAULT_BOOTSTRAP, draw_plots, score_predictions
from xvision.evaluation.threshold import ThresholdRule, decide
from xvision.features.dataset import FeatureSet, load_split, unreadable_images
from xvision.features.store import IndexRow
from xvision.heads import MLPClassifier
from xvision.inference.bundle import UNTRAINED_WARNING, environment_versions

log = logging.getLogger(__name__)

#: Scalar figures summarised across repeats.
REPEAT_FIELDS = (
    *("accuracy", "balanced_accuracy", "roc_auc", "sensitivity", "specificity", "sensitivity_at_90_specificity"),
    *("ece", "brier"),
)


@dataclass(frozen=True)
class CVConfig:
    """How the folds are made and what each fold's validation part (if any) decides."""

    folds: int = 5
    repeats: int = 1
    group_by: str | None = "group"
    seed: int = 0
    inner_val: float = 0.0
    threshold_rule: str = "youden"
    calibrate: str = "none"
    positive: str | None = None
    split: str | None = None

    def __post_init__(self) -> None:
        if self.folds < 2:
            raise ValueError(f"folds must be at least 2, got {self.folds}")
        if self.repeats < 1:
            raise ValueError(f"repeats must be at least 1, got {self.repeats}")
        if not 0.0 <= self.inner_val < 0.5:
            raise ValueError(f"inner_val must lie in [0, 0.5), got {self.inner_val}")
        ThresholdRule.parse(self.threshold_rule)
        if self.calibrate != "none" and self.inner_val == 0:
            raise ValueError(f"--calibrate {self.calibrate} is fitted on each fold's validation part: set --inner-val")


def is_cv_dir(path: str | Path) -> bool:
    """Whether ``path`` holds the output of `xvision cv` (metrics.json of kind "cross-validation")."""
    metrics = Path(path) / "metrics.json"
    if not metrics.is_file():
        return False
    try:
        return json.loads(metrics.read_text(encoding="utf-8")).get("kind") == "cross-validation"
    except (ValueError, OSError):
        return False


def not_a_run(path: str | Path) -> str:
    """The error for a folder without bundle.json, pointing a cv folder's user at what it holds."""
    if not Path(path).exists():
        return f"{path}: no such run folder; create one with `xvision fit` or `xvision train`"
    message = f"{path}: not a run folder (no readable bundle.json); create one with `xvision fit` or `xvision train`"
    if is_cv_dir(path):
        message += (
            f"; {path} holds a cross-validation (`xvision cv`): its figures are its metrics.json and plots/, "
            "and a recipe's folds are runs in its folds/ folder"
        )
    return message


RECIPE_SETTINGS_FILE = "cv_recipe.json"  # what `xvision cv MANIFEST --recipe` records (crossval_recipe)


def _refuse_other_output(out: Path) -> None:
    """Refuse an ``out`` that holds anything but an earlier feature-store cv, which is recomputed (seconds).

    A run folder or a recipe cv given by mistake would otherwise lose its metrics.json and plots.
    """
    if out.exists() and not out.is_dir():
        raise RunError(f"{out}: exists and is not a folder; choose another -o")
    if not out.is_dir() or not any(out.iterdir()):
        return
    if is_cv_dir(out) and not (out / RECIPE_SETTINGS_FILE).exists() and not (out / "bundle.json").exists():
        return
    raise RunError(
        f"{out}: folder exists and is not empty (not an earlier `xvision cv FEATURES_DIR` output); choose another -o"
    )


def _warn_if_replacing(
    out: Path, features_dir: Path, config: CVConfig, params: dict[str, Any], bootstrap: BootstrapConfig | None
) -> None:
    """Say which settings differ when ``out`` holds an earlier feature-store cv that this one replaces."""
    try:
        earlier = json.loads((out / "metrics.json").read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return
    now = {
        "features": str(features_dir),
        **asdict(config),
        **{**params, "hidden": list(params["hidden"])},
        "bootstrap": bootstrap.n_resamples if bootstrap else 0,
    }
    before = {
        "features": earlier.get("features"),
        **(earlier.get("cv") or {}),
        **((earlier.get("head") or {}).get("params") or {}),
        "bootstrap": (earlier.get("bootstrap") or {}).get("n_resamples", 0),
    }
    changed = [f"{key} {before.get(key)!r} -> {value!r}" for key, value in now.items() if before.get(key) != value]
    if changed:
        log.warning("%s: replacing an earlier cross-validation with other settings (%s)", out, ", ".join(changed))


def cv_groups(data: FeatureSet, group_by: str | None) -> np.ndarray:
    """Group id per image: images linked by the ``group_by`` column or by identical SHA-256 share one."""

    def value(row: IndexRow) -> str:
        return (row.group if group_by == "group" else nfc(row.extra.get(group_by, ""))) if group_by else ""

    values = [value(row) for row in data.rows]
    return link_groups([row.sha256 for row in data.rows], values)


def cross_validate(
    features_dir: str | Path,
    out_dir: str | Path,
    *,
    head_params: dict[str, Any] | None = None,
    config: CVConfig = CVConfig(),  # noqa: B008 - frozen, never mutated
    bootstrap: BootstrapConfig | None = DEFAULT_BOOTSTRAP,
    progress: bool = True,
) -> dict[str, Any]:
    """Cross-validate the head on ``features_dir`` and write ``out_dir``; return the metrics dict.

    ``out_dir`` receives ``metrics.json``, ``oof_predictions.csv`` (every repeat) and ``plots/``
    (confusion matrix, ROC with band, reliability diagram, of the first repeat).
    """
    check_type(config, CVConfig, "config", "a CVConfig (xvision.CVConfig(folds=..., ...))")
    check_bootstrap(bootstrap)
    from sklearn.model_selection import StratifiedGroupKFold

    from xvision._progress import progress_bar

    features_dir, out = Path(features_dir), Path(out_dir)
    _refuse_other_output(out)
    data = load_split(features_dir, config.split)
    classes = sorted(set(data.labels))
    if len(classes) < 2:
        raise FeatureStoreError(f"{features_dir}: only class {classes[0]!r} is present; a classifier needs two")
    if config.group_by and config.group_by != "group" and not any(config.group_by in r.extra for r in data.rows):
        raise FeatureStoreError(f"{features_dir}: no column {config.group_by!r} in index.csv for --group-by")
    check_positive(config.positive, classes)
    check_threshold_rule(config.threshold_rule, classes)
    y = np.array([classes.index(label) for label in data.labels])
    groups = cv_groups(data, config.group_by)
    check_enough_groups(y, groups, classes, config.folds)
    check_writable(out)  # after the checks of what was asked, before every fold is trained
    params = {**MLPClassifier().get_params(), **(head_params or {})}
    params["hidden"] = tuple(params["hidden"])
    fitted = config.inner_val > 0 and len(classes) == 2
    cure = "use --class-weight balanced, or --inner-val 0.2 (a validation split in every fold picks its threshold)"
    warn_imbalance(data.labels, features_dir, threshold_fitted=fitted, class_weight=params["class_weight"], cure=cure)
    _warn_if_replacing(out, features_dir, config, params, bootstrap)

    per_repeat: list[dict[str, Any]] = []
    oof_rows: list[list[Any]] = []
    fold_details: list[dict[str, Any]] = []
    probas: list[np.ndarray] = []
    bar = progress_bar(total=config.folds * config.repeats, desc="cv", unit="fold", disable=not progress)
    with _torch_threads(1), contextlib.closing(bar):
        for repeat in range(config.repeats):
            splitter = StratifiedGroupKFold(n_splits=config.folds, shuffle=True, random_state=config.seed + repeat)
            proba = np.zeros((len(y), len(classes)))
            decisions = np.zeros(len(y), dtype=np.int64)
            fold_of = np.zeros(len(y), dtype=np.int64)
            for fold, (train_idx, test_idx) in enumerate(splitter.split(data.X, y, groups), start=1):
                head = MLPClassifier(**{**params, "seed": int(params["seed"]) + repeat})
                result = _run_fold(head, data.X, y, groups, train_idx, test_idx, classes, config, repeat)
                proba[test_idx], decisions[test_idx], fold_of[test_idx] = result["proba"], result["decisions"], fold
                fold_details.append({"repeat": repeat + 1, "fold": fold, **result["detail"]})
                bar.update(1)
            probas.append(proba)
            metrics = score_predictions(
                y,
                proba,
                classes,
                positive=fold_details[-1]["positive"],
                groups=[str(g) for g in groups],
                bootstrap=bootstrap,
                y_pred=decisions,
            )
            per_repeat.append(metrics)
            oof_rows += _oof_rows(data, repeat + 1, fold_of, decisions, proba, classes)

    metrics = combine_repeats(per_repeat)
    backbone = data.meta["backbone"]
    watermark = None if backbone["weights"]["pretrained"] else UNTRAINED_WARNING
    thresholds = [d["threshold"] for d in fold_details]
    metrics = {
        "kind": "cross-validation",
        "features": str(features_dir),
        "split": config.split or "all",
        "backbone": backbone["name"],
        "weights": backbone["weights"],
        "warning": watermark,
        "cv": {**asdict(config), "n_groups": int(len(np.unique(groups)))},
        "unreadable": unreadable_images(features_dir, config.split),
        "head": {"head": "mlp", "params": {**params, "hidden": list(params["hidden"])}},
        **metrics,
        "threshold_rule": threshold_summary(config, thresholds, metrics.get("positive")),
        "folds_detail": [{k: v for k, v in d.items() if k != "positive"} for d in fold_details],
    }
    if "threshold" in metrics:  # two classes: one value when every fold used the same threshold
        metrics["threshold"] = metrics["threshold_rule"]["value"]
    metrics["calibration"]["applied"] = {"method": config.calibrate, "fitted_on": "each fold's validation part"}
    write_cv_outputs(out, metrics, oof_rows, classes, per_repeat[0], y, probas[0], watermark=watermark)
    return metrics


def write_cv_outputs(
    out: Path,
    metrics: dict[str, Any],
    oof_rows: list[list[Any]],
    classes: list[str],
    first_repeat: dict[str, Any],
    y: np.ndarray,
    proba: np.ndarray,
    *,
    watermark: str | None,
) -> None:
    """Write ``metrics.json``, ``oof_predictions.csv`` (rows as :func:`oof_row` makes them) and ``plots/``
    (of the first repeat: its metrics, labels ``y`` and probabilities ``proba``)."""
    atomic_write_json(out / "metrics.json", {**metrics, "versions": environment_versions()})
    atomic_write_text(out / "oof_predictions.csv", _oof_csv(oof_rows, classes))
    repeats = metrics["cv"]["repeats"]
    label = f"pooled out-of-fold, n={len(y)}" + (f", repeat 1 of {repeats}" if repeats > 1 else "")
    draw_plots(first_repeat, y, proba, out / "plots", label=label, watermark=watermark)


@contextlib.contextmanager
def _torch_threads(n: int) -> Iterator[None]:
    """Train the folds' small heads on ``n`` intra-op threads, restoring the setting afterwards.

    A head's mini-batches (20 x a few thousand) are too small to gain from threads; on a shared or busy
    machine, torch's threads then mostly wait for each other (5 to 15 times slower measured on 2 cores).
    """
    import torch

    previous = torch.get_num_threads()
    torch.set_num_threads(n)
    try:
        yield
    finally:
        torch.set_num_threads(previous)


def check_enough_groups(
    y: np.ndarray, groups: np.ndarray, classes: Sequence[str], folds: int, error: type[Exception] = FeatureStoreError
) -> None:
    """Raise ``error`` unless every class has at least ``folds`` groups (each fold needs every class)."""
    for c, name in enumerate(classes):
        n_groups = len(np.unique(groups[y == c]))
        if n_groups < folds:
            raise error(
                f"class {name!r} has {n_groups} group(s), fewer than --folds {folds}: every fold needs each "
                "class; lower --folds or add images"
            )


def _run_fold(
    head: MLPClassifier,
    X: np.ndarray,
    y: np.ndarray,
    groups: np.ndarray,
    train_idx: np.ndarray,
    test_idx: np.ndarray,
    classes: list[str],
    config: CVConfig,
    repeat: int,
) -> dict[str, Any]:
    fit_idx, val_idx = train_idx, np.array([], dtype=np.int64)
    if config.inner_val > 0:
        fit_idx, val_idx = inner_split(y, groups, train_idx, config.inner_val, config.seed + repeat)
    missing = sorted(set(range(len(classes))) - set(y[fit_idx].tolist()))
    if missing:
        raise RunError(f"a fold's training part has no {classes[missing[0]]!r} images; lower --folds")
    labels = np.asarray(classes)
    has_val = len(val_idx) > 0
    head.fit(
        X[fit_idx],
        labels[y[fit_idx]],
        X_val=X[val_idx] if has_val else None,
        y_val=labels[y[val_idx]] if has_val else None,
        classes=classes,
    )
    operating = fit_operating_point(
        y[val_idx] if has_val else None,
        head.predict_proba(X[val_idx]) if has_val else None,
        classes,
        rule=config.threshold_rule,
        calibrate=config.calibrate,
        positive=config.positive,
        source="fold's validation part",
    )
    temperature = operating["calibration"].get("temperature")
    proba = apply_temperature(head.predict_proba(X[test_idx]), temperature)
    positive = operating["positive"]
    threshold = operating["threshold"]["value"]
    decisions = decide(proba, positive=None if positive is None else classes.index(positive), threshold=threshold)
    detail = {
        "n_train": int(len(fit_idx)),
        "n_val": int(len(val_idx)),
        "n_test": int(len(test_idx)),
        "best_epoch": int(head.best_epoch_),
        "threshold": threshold,
        "temperature": temperature,
        "positive": positive,
        "roc_auc": compute_metrics(y[test_idx], proba, classes, positive=positive)["roc_auc"],  # this fold alone
    }
    return {"proba": proba, "decisions": decisions, "detail": detail}


def inner_split(
    y: np.ndarray, groups: np.ndarray, train_idx: np.ndarray, fraction: float, seed: int
) -> tuple[np.ndarray, np.ndarray]:
    from sklearn.model_selection import StratifiedGroupKFold

    n_splits = max(2, round(1 / fraction))
    inner = StratifiedGroupKFold(n_splits=n_splits, shuffle=True, random_state=seed)
    try:
        fit_pos, val_pos = next(inner.split(train_idx, y[train_idx], groups[train_idx]))
    except ValueError:  # more inner folds than images: scikit-learn's message is a traceback about n_splits
        part_y, part_groups = y[train_idx], groups[train_idx]
        fewest = min(len(np.unique(part_groups[part_y == c])) for c in np.unique(part_y))
        smallest = next((h / 100 for h in range(1, 50) if max(2, round(100 / h)) <= fewest), None)
        cure = f"use --inner-val {smallest:.2f} or more" if smallest else "add images or use --inner-val 0"
        raise RunError(
            f"--inner-val {fraction:g} holds out 1/{n_splits} of each fold's training part, too little for its "
            f"images (a class there has {fewest} patients): {cure}"
        ) from None
    return train_idx[fit_pos], train_idx[val_pos]


def threshold_summary(config: CVConfig, thresholds: list[float | None], positive: str | None) -> dict[str, Any]:
    if positive is None:
        return {"value": None, "rule": "argmax", "note": "more than two classes: the most probable is predicted"}
    if config.inner_val == 0:
        return {
            "value": 0.5,
            "rule": "default 0.5",
            "requested_rule": config.threshold_rule,
            "source": "none",
            "note": "no validation part inside the folds (--inner-val 0): the default threshold 0.5 is used",
        }
    values = [t for t in thresholds if t is not None]
    return {
        "value": None,
        "rule": config.threshold_rule,
        "source": "each fold's validation part",
        "per_fold": values,
        "mean": float(np.mean(values)),
        "note": "each fold's test images are cut at that fold's own threshold",
    }


def combine_repeats(per_repeat: list[dict[str, Any]]) -> dict[str, Any]:
    """One repeat: its metrics. Several: means of every figure and interval bound, plus each repeat."""
    first = per_repeat[0]
    summary = [{"repeat": i + 1, **{k: m.get(k) for k in REPEAT_FIELDS if k in m}} for i, m in enumerate(per_repeat)]
    if len(per_repeat) == 1:
        return {**first, "repeats": summary}
    combined = copy.deepcopy(first)
    for key in REPEAT_FIELDS:
        if key in first:
            combined[key] = _mean([m[key] for m in per_repeat])
    for key in ("precision", "recall", "f1", "roc_auc_per_class"):
        if key in first:
            combined[key] = {c: _mean([m[key][c] for m in per_repeat]) for c in first[key]}
    cms = np.array([m["confusion_matrix"] for m in per_repeat], dtype=float)
    combined["confusion_matrix"] = np.round(cms.mean(axis=0), 3).tolist()
    combined["calibration"]["ece"], combined["calibration"]["brier"] = combined["ece"], combined["brier"]
    combined["calibration"]["bins_note"] = "bins of the first repeat; ece and brier are means over repeats"
    if "intervals" in first:
        combined["intervals"] = _mean_intervals([m["intervals"] for m in per_repeat])
    if "roc_band" in first:
        combined["roc_band"] = {
            "fpr": first["roc_band"]["fpr"],
            **{
                key: np.round(np.mean([m["roc_band"][key] for m in per_repeat], axis=0), 6).tolist()
                for key in ("tpr_low", "tpr_high")
            },
        }
    combined["repeats"] = summary
    combined["repeat_summary"] = {
        key: _spread([r[key] for r in summary]) for key in REPEAT_FIELDS if key in first and first[key] is not None
    }
    return combined


def _mean(values: list[float | None]) -> float | None:
    return None if any(v is None for v in values) else float(np.mean(values))


def _spread(values: list[float]) -> dict[str, float]:
    a = np.asarray(values, dtype=float)
    return {"mean": float(a.mean()), "sd": float(a.std(ddof=1)), "min": float(a.min()), "max": float(a.max())}


def _mean_intervals(intervals: list[dict[str, Any]]) -> dict[str, Any]:
    out: dict[str, Any] = {}
    for key, first in intervals[0].items():
        if "value" in first:
            out[key] = {f: _mean([iv[key][f] for iv in intervals]) for f in ("value", "ci_low", "ci_high")}
        else:
            out[key] = _mean_intervals([iv[key] for iv in intervals])
    return out


def _oof_rows(
    data: FeatureSet,
    repeat: int,
    fold_of: np.ndarray,
    decisions: np.ndarray,
    proba: np.ndarray,
    classes: list[str],
) -> list[list[Any]]:
    return [
        oof_row(repeat, int(f), row.path, row.label, row.group, row.sha256, classes[int(d)], p)
        for row, f, d, p in zip(data.rows, fold_of, decisions, proba, strict=True)
    ]


def oof_row(
    repeat: int, fold: int, path: str, label: str, group: str | None, sha256: str, predicted: str, proba: np.ndarray
) -> list[Any]:
    """One line of ``oof_predictions.csv``."""
    return [repeat, fold, path, label, group or "", sha256, predicted, *[csv_float(v) for v in proba]]


def _oof_csv(rows: list[list[Any]], classes: list[str]) -> str:
    buffer = io.StringIO()
    writer = csv.writer(buffer, lineterminator="\n")
    writer.writerow(["repeat", "fold", "path", "label", "group", "sha256", "predicted", *[f"p_{c}" for c in classes]])
    writer.writerows(rows)
    return buffer.getvalue()
