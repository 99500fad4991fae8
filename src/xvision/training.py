"""`xvision train`: fit the head on a feature store and write a run folder (see inference.bundle)."""

from __future__ import annotations

import csv
import io
import logging
import math
import shutil
from dataclasses import dataclass, field
from datetime import datetime, timezone
from pathlib import Path
from typing import Any

from xvision._checks import check_type
from xvision._fileio import atomic_write_json, atomic_write_text, sha256_file
from xvision._outputs import check_not_linked
from xvision.data.hints import warn_imbalance, warn_small_validation
from xvision.errors import FeatureStoreError, RunError
from xvision.evaluation.audit import audit_for_run
from xvision.evaluation.operating import CALIBRATION_METHODS, check_positive, check_threshold_rule, fit_operating_point
from xvision.evaluation.threshold import ThresholdRule
from xvision.features.dataset import FeatureSet, load_split
from xvision.features.store import FeatureStore
from xvision.heads import MLPClassifier
from xvision.heads.mlp import save_net
from xvision.inference.bundle import UNTRAINED_WARNING, environment_versions, model_sha256, write_bundle_info

log = logging.getLogger(__name__)

HISTORY_COLUMNS = ("epoch", "train_loss", "train_accuracy", "val_loss", "val_accuracy")


@dataclass
class TrainSummary:
    run_dir: Path
    classes: list[str]
    n_train: int
    n_val: int
    best_epoch: int
    epochs: int
    history: list[dict[str, float]]
    untrained_backbone: bool
    #: bundle.json's ``positive``, ``calibration`` and ``threshold`` (see xvision.evaluation.operating).
    operating: dict[str, Any] = field(default_factory=dict)


_FIT_INPUTS = {"features", "finetune"}
_UNFINISHED_HEAD = {"checkpoints", "history.csv"}


def check_run_dir(run_dir: Path, overwrite: bool) -> bool:
    """Raise unless a run may be written into ``run_dir``; return whether it holds a previous run.

    `xvision fit` keeps the run's own feature store in RUN_DIR/features and a fine-tuned backbone in
    RUN_DIR/finetune; those alone are not a previous run (an interrupted `fit` resumes from them). Nor is a
    head whose training was interrupted (epoch checkpoints and history, no bundle.json): it is trained
    again without ``overwrite``, so the fine-tuning and features before it are kept."""
    entries = {p.name for p in run_dir.iterdir()} if run_dir.exists() else set()
    if not entries - _FIT_INPUTS:
        return False
    if entries <= _FIT_INPUTS | _UNFINISHED_HEAD and not (run_dir / "bundle.json").exists():
        return True
    if not overwrite:
        raise RunError(f"{run_dir}: folder exists and is not empty; choose another -o or pass --overwrite")
    if not (run_dir / "bundle.json").exists() and not (run_dir / "history.csv").exists():
        raise RunError(f"{run_dir}: not a run folder; refusing to overwrite it")
    return True


#: The previous head, removed first by an overwrite (bundle.json, the mark of a finished run, first of all).
#: history.csv stays until the new one replaces it: with it, a folder whose cleanup was interrupted is still
#: known for a run folder (`--overwrite` goes on), not refused as "not a run folder".
_PREVIOUS_HEAD = ("bundle.json", "model.safetensors", "config.json", "train_keys.json")
#: What a previous run's evaluation left in RUN_DIR: the new head would otherwise be reported with the old
#: head's figures (``xvision report`` reads them). ``eval-*`` folders of ``evaluate --manifest`` go too: their
#: figures are the old model's, and their features may come from a backbone the new fit trains again.
_STALE_RESULTS = ("metrics.json", "predictions.csv", "report.html", "val_keys.json", "plots")


#: ``train --checkpoints``: every epoch, or only the last and the best so far.
CHECKPOINT_POLICIES = ("all", "best")


def check_checkpoints(policy: str) -> None:
    """Raise ValueError unless ``policy`` is one of :data:`CHECKPOINT_POLICIES`."""
    if policy not in CHECKPOINT_POLICIES:
        raise ValueError(f"checkpoints must be one of {', '.join(CHECKPOINT_POLICIES)}, got {policy!r}")


#: Above this many bytes of checkpoints in all, ``--checkpoints all`` says what it will write.
_LARGE_CHECKPOINTS = 1 << 30


def _keep_checkpoints(folder: Path, policy: str, epoch: int, history: list[dict[str, float]]) -> None:
    if policy == "all":
        return
    losses = [h["val_loss"] for h in history]
    best = (
        epoch
        if all(math.isnan(v) for v in losses)
        else 1 + min((i for i, v in enumerate(losses) if not math.isnan(v)), key=lambda i: losses[i])
    )
    keep = {f"epoch-{epoch:03d}.safetensors", f"epoch-{best:03d}.safetensors"}
    for old in folder.glob("epoch-*.safetensors"):
        if old.name not in keep:
            old.unlink(missing_ok=True)


def _warn_if_checkpoints_are_large(size: int, epochs: int) -> None:
    if size * epochs > _LARGE_CHECKPOINTS:
        log.warning(
            "each checkpoint is %.0f MB: %d epochs write %.1f GB; --checkpoints best keeps only the last and the best",
            size / 1e6,
            epochs,
            size * epochs / 1e9,
        )


def _prepare_run_dir(run_dir: Path, overwrite: bool) -> None:
    check_not_linked(run_dir / "checkpoints")  # to keep checkpoints on another disk, link the whole run folder
    if check_run_dir(run_dir, overwrite):
        # bundle.json first: it marks a finished run, and is written last. An overwrite interrupted part-way left
        # the old bundle and head beside the new history and checkpoints, which every command took for one run.
        for old in _PREVIOUS_HEAD:
            (run_dir / old).unlink(missing_ok=True)
        for old in (run_dir / "checkpoints").glob("epoch-*.safetensors"):
            old.unlink()
        evaluations = sorted(p for p in run_dir.glob("eval-*") if p.is_dir())
        named = (["its own (metrics.json)"] if (run_dir / "metrics.json").exists() else []) + [
            p.name for p in evaluations
        ]
        if named:
            log.warning(
                "%s: removing %d evaluation(s) of the previous model: %s; evaluate the new one again",
                run_dir,
                len(named),
                ", ".join(named),
            )
        for stale in [run_dir / name for name in _STALE_RESULTS] + evaluations:
            if stale.is_dir() and not stale.is_symlink():
                shutil.rmtree(stale)
            else:  # a file, or a link (removed, never what it leads to)
                stale.unlink(missing_ok=True)
    (run_dir / "checkpoints").mkdir(parents=True, exist_ok=True)


def _history_csv(history: list[dict[str, float]]) -> str:
    buffer = io.StringIO()
    writer = csv.writer(buffer, lineterminator="\n")
    writer.writerow(HISTORY_COLUMNS)
    for record in history:
        writer.writerow(
            ["" if isinstance(record[c], float) and math.isnan(record[c]) else record[c] for c in HISTORY_COLUMNS]
        )
    return buffer.getvalue()


def _load_training_data(features_dir: Path) -> tuple[FeatureSet, FeatureSet | None]:
    index = FeatureStore(features_dir).read_index()
    has_splits = any(r.split for r in index)
    if not has_splits:
        log.warning(
            "%s has no split column: training on all images, with no validation set; "
            "assign splits with `xvision split` to evaluate on held-out images",
            features_dir,
        )
        return load_split(features_dir, None), None
    unassigned = sum(1 for r in index if not r.split and r.status == "ok")
    if unassigned:
        log.warning(
            "%s: %d image(s) have no split and are left out of training and validation; run `xvision split` on "
            "the manifest (it fills the empty ones) and extract again",
            features_dir,
            unassigned,
        )
    train = load_split(features_dir, "train")
    val = load_split(features_dir, "val") if any(r.split == "val" and r.status == "ok" for r in index) else None
    if val is None:
        log.warning("no validation split: keeping the last epoch's model")
    _warn_manifest_changed(features_dir, train.meta.get("manifest") or {})
    return train, val


def _warn_manifest_changed(features_dir: Path, manifest: dict[str, Any]) -> None:
    """Labels and splits come from the store's index, as the manifest was when it was extracted: a label fixed or
    a split made in the manifest since then was ignored without a word."""
    path, recorded = manifest.get("path"), manifest.get("sha256")
    if not path or not recorded or not Path(path).is_file():
        return
    try:
        now = sha256_file(path)
    except OSError:
        return
    if now != recorded:
        log.warning(
            "%s has changed since it was extracted into %s: labels and splits are taken as they were then; run "
            "`xvision extract %s -o %s` again (it reuses every stored feature) to train on the manifest as it is now",
            path,
            features_dir,
            path,
            features_dir,
        )


def train_run(
    features_dir: str | Path,
    run_dir: str | Path,
    *,
    head: MLPClassifier | None = None,
    overwrite: bool = False,
    progress: bool = True,
    threshold_rule: str = "youden",
    calibrate: str = "none",
    positive: str | None = None,
    audit: bool | dict[str, Any] = True,
    recipe: str | None = None,
    checkpoints: str = "all",
) -> TrainSummary:
    """Train the head on the ``train`` split (``val`` picks the epoch) and write a run folder.

    On the validation split, after training, ``calibrate="temperature"`` fits a temperature and
    ``threshold_rule`` (``youden``, ``sensitivity:T`` or ``specificity:T``) picks the decision threshold on
    the probability of the ``positive`` class; both are stored in bundle.json. Without a validation
    split the threshold is 0.5 (and the bundle says so); temperature scaling then refuses to run.
    Before training, ``audit`` runs the shortcut audit on the store's images (when reachable) and its
    verdict is stored as bundle.json's ``audit``; a record already made for the same images
    (:func:`~xvision.evaluation.audit.audit_record`) is stored as it is. ``recipe`` (`xvision fit`'s, after
    any fallback) is recorded as bundle.json's ``recipe`` (``null`` for `xvision train`). ``checkpoints``:
    ``"all"`` keeps one per epoch (the seed recipe's record of training); ``"best"`` keeps only the last
    epoch's and the best one so far, since a 25,088-d VGG16 head is 52 MB a checkpoint.
    """
    check_type(head, (MLPClassifier, type(None)), "head", "an MLPClassifier (xvision.MLPClassifier(...)) or None")
    check_checkpoints(checkpoints)
    from xvision._progress import progress_bar

    features_dir, run_dir = Path(features_dir), Path(run_dir)
    head = head or MLPClassifier()
    train, val = _load_training_data(features_dir)
    classes = sorted(set(train.labels))
    if len(classes) < 2:
        raise FeatureStoreError(
            f"{features_dir}: the training split holds only class {classes[0]!r}; a classifier needs two"
        )
    if val is not None:
        unknown = sorted(set(val.labels) - set(classes))
        if unknown:
            raise FeatureStoreError(f"{features_dir}: validation labels {unknown} never occur in training")
        warn_small_validation(val.labels, features_dir)
    fitted = val is not None and len(classes) == 2  # with more classes the decision is the most probable one
    # `fit` fixes the recipe's head, so only the data can change there: a val split.
    cure = None if recipe is None else "give the manifest a val split (`xvision split MANIFEST --val 0.1`)"
    warn_imbalance(train.labels, features_dir, threshold_fitted=fitted, class_weight=head.class_weight, cure=cure)
    _check_operating_options(features_dir, classes, val, threshold_rule, calibrate, positive)
    check_run_dir(run_dir, overwrite)  # before the audit, which reads every image: a taken folder fails at once
    audit_record = audit if isinstance(audit, dict) else audit_for_run(features_dir, enabled=audit)
    _prepare_run_dir(run_dir, overwrite)
    backbone = train.meta["backbone"]
    untrained = not backbone["weights"]["pretrained"]
    if untrained:
        log.warning("%s: features come from randomly initialised weights", UNTRAINED_WARNING)

    bar = progress_bar(total=head.epochs, desc="train", unit="epoch", disable=not progress)

    def on_epoch(epoch: int, record: dict[str, float], model: MLPClassifier) -> None:
        if not math.isfinite(record["train_loss"]):
            raise RunError(  # before the head is saved: the same command with a lower --lr starts afresh
                f"training diverged at epoch {epoch} (loss {record['train_loss']}); run again with a lower --lr "
                f"(it was {model.lr:g})"
            )
        saved = save_net(
            run_dir / "checkpoints" / f"epoch-{epoch:03d}.safetensors",
            model.net_,
            {**model._metadata(), "epoch": str(epoch)},
        )
        _keep_checkpoints(run_dir / "checkpoints", checkpoints, epoch, model.history_)
        if epoch == 1 and checkpoints == "all":
            _warn_if_checkpoints_are_large(Path(saved).stat().st_size, model.epochs)
        atomic_write_text(run_dir / "history.csv", _history_csv(model.history_))
        shown = {"loss": f"{record['train_loss']:.3f}"}
        if not math.isnan(record["val_loss"]):
            shown["val_loss"] = f"{record['val_loss']:.3f}"
        bar.set_postfix(shown, refresh=False)  # drawn with the next update, as often as the bar allows
        bar.update(1)

    try:
        head.fit(
            train.X,
            train.labels,
            X_val=None if val is None else val.X,
            y_val=None if val is None else val.labels,
            classes=classes,
            on_epoch=on_epoch,
        )
    finally:
        bar.close()
    head.save(run_dir / "model.safetensors")
    operating = fit_operating_point(
        None if val is None else [classes.index(label) for label in val.labels],
        None if val is None else head.predict_proba(val.X),
        classes,
        rule=threshold_rule,
        calibrate=calibrate,
        positive=positive,
    )
    atomic_write_json(run_dir / "train_keys.json", sorted(set(train.keys)))
    if val is not None:  # evaluate warns when a "held-out" figure is measured on these
        atomic_write_json(run_dir / "val_keys.json", sorted(set(val.keys)))
    config = {"head": "mlp", "params": head.get_params(), "features_dir": str(features_dir.resolve())}
    atomic_write_json(run_dir / "config.json", config)
    counts = {c: train.labels.count(c) for c in classes}
    write_bundle_info(
        run_dir,
        {
            "created": datetime.now(timezone.utc).isoformat(timespec="seconds"),
            "recipe": recipe,
            "classes": classes,
            "backbone": backbone,
            "model_sha256": model_sha256(run_dir),  # a head copied in from another run is refused on loading
            "untrained_backbone": untrained,
            "warning": UNTRAINED_WARNING if untrained else None,
            "head": config,
            "best_epoch": head.best_epoch_,
            "epochs": head.epochs,
            "selection": "lowest validation loss" if val is not None else "last epoch (no validation split)",
            **operating,
            "audit": audit_record,
            "data": {
                "n_train": len(train.rows),
                "n_val": 0 if val is None else len(val.rows),
                "train_per_class": counts,
                "manifest": train.meta.get("manifest"),
                # how the training features were computed (precision, engine, threads): kept when features/ is not
                "extraction_plan": (train.meta.get("extraction") or {}).get("plan"),
            },
            "versions": environment_versions(),
        },
    )
    return TrainSummary(
        run_dir=run_dir,
        classes=classes,
        n_train=len(train.rows),
        n_val=0 if val is None else len(val.rows),
        best_epoch=head.best_epoch_,
        epochs=head.epochs,
        history=head.history_,
        untrained_backbone=untrained,
        operating=operating,
    )


def _check_operating_options(
    features_dir: Path,
    classes: list[str],
    val: FeatureSet | None,
    threshold_rule: str,
    calibrate: str,
    positive: str | None,
) -> None:
    """Refuse bad threshold/calibration options before spending time on training."""
    try:
        ThresholdRule.parse(threshold_rule)
    except ValueError as error:
        raise RunError(str(error)) from None
    if calibrate not in CALIBRATION_METHODS:
        raise RunError(f"unknown calibration {calibrate!r}; use one of {', '.join(CALIBRATION_METHODS)}")
    if calibrate != "none" and val is None:
        raise RunError(
            f"{features_dir}: --calibrate {calibrate} is fitted on the validation split and there is none; "
            "assign one with `xvision split --val 0.1` or drop --calibrate"
        )
    check_positive(positive, classes)
    check_threshold_rule(threshold_rule, classes)


def read_history(run_dir: str | Path) -> list[dict[str, Any]]:
    path = Path(run_dir) / "history.csv"
    with open(path, newline="", encoding="utf-8") as handle:
        return list(csv.DictReader(handle))


__all__ = ["TrainSummary", "read_history", "train_run"]
