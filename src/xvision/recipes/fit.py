"""Run a recipe end to end: manifest -> features (RUN/features) -> head (RUN) -> test metrics."""

from __future__ import annotations

import json
import logging
import numbers
import shlex
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any

from xvision._fileio import sha256_file
from xvision.data.manifest import Manifest, ManifestRow, read_manifest
from xvision.data.split import check_readable_splits
from xvision.errors import ManifestError, RunError, XvisionError
from xvision.features.extract import extract_manifest
from xvision.finetune.config import DetectorConfig
from xvision.heads import MLPClassifier
from xvision.recipes.registry import DEFAULT_RECIPE, get_recipe, recipe_for_classes

log = logging.getLogger(__name__)


@dataclass
class FitResult:
    run_dir: Path
    recipe: str
    metrics: dict[str, Any] | None  # test-split metrics, when the manifest has a test split


def fit(
    manifest: str | Path,
    run_dir: str | Path,
    *,
    recipe: str = DEFAULT_RECIPE,
    backbone: str | None = None,
    weights: str | None = None,
    seed: int = 0,
    overwrite: bool = False,
    progress: bool = True,
    audit: dict[str, Any] | None = None,
    checkpoints: str = "all",
) -> FitResult:
    """Fit ``recipe`` on the manifest's train (and val) split; evaluate on its test split if there is one.

    Without a split column every image trains the model (no held-out estimate: `xvision cv MANIFEST` gives one).
    ``backbone`` overrides the recipe's (e.g. when VGG16 weights are not available offline). A recipe that
    fine-tunes trains its backbone first into ``RUN/finetune`` (resumable; ``weights`` then gives the starting
    weights) and extracts features with the result. ``audit``: a shortcut-audit record already made for the
    manifest's images (:func:`~xvision.evaluation.audit.audit_record`), stored instead of auditing again.
    ``checkpoints``: the head's, as :func:`~xvision.training.train_run` keeps them.
    """
    from xvision.evaluation.evaluate import evaluate_run
    from xvision.training import check_checkpoints, check_run_dir, train_run

    # Checked before minutes of extraction or fine-tuning, not when the head is trained after them.
    if isinstance(seed, bool) or not isinstance(seed, numbers.Integral):
        raise TypeError(f"seed must be an integer, got {seed!r}")
    if not 0 <= seed < 2**31:  # numpy's range is [0, 2**32 - 1]; folds and members add to the seed
        raise ValueError(f"seed must lie in [0, 2**31 - 1], got {seed}")
    check_checkpoints(checkpoints)
    chosen = get_recipe(recipe)
    # A finished or half-finished run is taken as this command's only without --weights or with random weights
    # recorded as such: a weights file could hold anything.
    may_be_ours = not overwrite and weights in (None, "random")
    if may_be_ours and _trained_not_evaluated(Path(run_dir), manifest, weights):
        log.warning("%s: the head was trained on this manifest and not evaluated (interrupted?): evaluating", run_dir)
        ran = json.loads((Path(run_dir) / "bundle.json").read_text(encoding="utf-8")).get("recipe") or chosen.name
        return FitResult(Path(run_dir), ran, evaluate_run(run_dir, Path(run_dir) / "features", split="test"))
    if may_be_ours:
        done = _already_fitted(Path(run_dir), manifest, chosen, backbone=backbone, seed=seed, weights=weights)
        if done is not None:
            return done
    if not overwrite:
        _refuse_another_fit(Path(run_dir), weights_file=weights not in (None, "random"))
    check_run_dir(Path(run_dir), overwrite)  # before minutes of training, not after
    checked, train_rows = _check_trainable(manifest, splits=chosen.finetune is not None)  # else extraction does
    chosen = recipe_for_classes(chosen, checked.classes, manifest)
    if chosen.finetune is not None:  # the recipes that read lesion columns; the others never look at them
        _check_lesion_columns(checked.columns, manifest)
    if isinstance(chosen.finetune, DetectorConfig) and not _has_lesions(train_rows, manifest):
        hint = _lesion_column_hint(checked.columns, shlex.quote(str(manifest)))
        # Asked for by name, the detector is not swapped; nor when columns look like misnamed lesion locations
        # (a silent swap would train the weaker recipe for minutes): only the default adapts, and only then.
        if not chosen.without_lesions or hint:
            other = "finetune_lung" if hint else "best"  # best would refuse these columns too
            raise ManifestError(
                f"{manifest}: recipe {chosen.name!r} learns from lesion locations and the manifest has none "
                f"(columns lesion_x, lesion_y, lesion_diam, in pixels of the image){hint}; add them, or use "
                f"--recipe {other}, which fine-tunes on whole films without them"
            )
        log.warning(
            "recipe %r learns from lesion locations and %s has none (lesion_x, lesion_y, lesion_diam): "
            "running recipe %r instead",
            chosen.name,
            Path(manifest).name,
            chosen.without_lesions,
        )
        chosen = get_recipe(chosen.without_lesions)
    run = Path(run_dir)
    features = run / "features"
    if chosen.finetune is not None:
        if backbone is not None:
            raise XvisionError(f"recipe {chosen.name!r} fine-tunes {chosen.backbone}; --backbone cannot change it")
        from xvision.finetune.config import FINETUNE_DIR
        from xvision.finetune.detector import train_detector
        from xvision.finetune.trainer import finetune, tuned_backbone

        config = replace(chosen.finetune, seed=seed)
        trainer = train_detector if isinstance(config, DetectorConfig) else finetune
        tuned = trainer(manifest, run / FINETUNE_DIR, config, weights=weights, restart=overwrite, progress=progress)
        weights, backbone = str(tuned), tuned_backbone(tuned)  # `<name>_lung` when it learnt the lung fields
    extract_manifest(manifest, features, backbone=backbone or chosen.backbone, weights=weights, progress=progress)
    head = MLPClassifier(**{**chosen.head, "seed": seed})
    train_run(
        features,
        run,
        head=head,
        overwrite=overwrite,
        progress=progress,
        recipe=chosen.name,
        audit=audit or True,
        checkpoints=checkpoints,
    )
    metrics = None
    if any(row.split == "test" for row in checked.rows):
        metrics = evaluate_run(run, features, split="test")
    return FitResult(run, chosen.name, metrics)


def _already_fitted(
    run: Path, manifest_path: str | Path, chosen: Any, *, backbone: str | None, seed: int, weights: str | None = None
) -> FitResult | None:
    """The finished result when ``run`` already holds this recipe (same backbone and seed) fitted on this very
    manifest (same SHA-256) and, with a test split, evaluated: running the same command again then has nothing
    to redo. A report that an interruption left unwritten is written now. Anything else is None, and the
    folder is then refused as usual (``weights``: None or "random"; a weights file is never taken as the same, and
    the caller does not ask)."""
    from xvision.evaluation.report import REPORT_NAME, report_after_evaluate

    metrics_path = run / "metrics.json"
    bundle = _bundle_fitted_on(run, manifest_path)
    if bundle is None:
        return None
    ran = {chosen.name, chosen.without_lesions} - {None}
    if chosen.more_classes and len(read_manifest(manifest_path).classes) > 2:  # what recipe_for_classes runs
        ran = {chosen.more_classes}
    if bundle.get("recipe") not in ran:
        return None
    # A frozen recipe without --backbone means its own backbone (a `seed` run on EfficientNet-Lite0 is not the
    # VGG16 `seed`); a fine-tuning recipe records the network it trained, which --backbone cannot change.
    wanted = backbone if backbone is not None or chosen.finetune is not None else chosen.backbone
    if wanted is not None and (bundle.get("backbone") or {}).get("name") != wanted:
        return None
    if ((bundle.get("head") or {}).get("params") or {}).get("seed") != seed:
        return None
    # Random weights asked for and recorded, or neither: a run of random features is not the pretrained fit asked
    # for (it answered "nothing to redo" with the untrained run's figures), nor the reverse.
    if _random_run(bundle) != (weights == "random"):
        return None
    has_test = any(row.split == "test" for row in read_manifest(manifest_path).rows)
    if has_test and not metrics_path.is_file():
        return None  # _trained_not_evaluated's case
    metrics = json.loads(metrics_path.read_text(encoding="utf-8")) if has_test else None
    if has_test and not (run / REPORT_NAME).exists():
        report_after_evaluate(run, run, run / "features")
    log.warning(
        "%s: already holds recipe %r fitted on this manifest; nothing to redo (--overwrite fits it again)",
        run,
        bundle["recipe"],
    )
    return FitResult(run, bundle["recipe"], metrics)


def _trained_not_evaluated(run: Path, manifest_path: str | Path, weights: str | None) -> bool:
    """Whether ``run`` holds a head trained on this very manifest (same SHA-256), from random weights exactly
    when ``weights`` is "random", that has a test split and was not yet evaluated: `fit` was interrupted in the
    seconds between the two, and only the evaluation is left."""
    bundle = None if (run / "metrics.json").exists() else _bundle_fitted_on(run, manifest_path)
    if bundle is None or _random_run(bundle) != (weights == "random"):
        return False
    return any(row.split == "test" for row in read_manifest(manifest_path).rows)


def _random_run(bundle: dict[str, Any]) -> bool:
    return ((bundle.get("backbone") or {}).get("weights") or {}).get("source") == "random"


def _refuse_another_fit(run: Path, *, weights_file: bool = False) -> None:
    """A finished run that is not this command's (another recipe, backbone, seed or manifest): say what it holds,
    not only that the folder is taken."""
    try:
        bundle = json.loads((run / "bundle.json").read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return  # not a run: check_run_dir says what to do
    if not isinstance(bundle, dict) or not bundle.get("recipe"):
        return
    seed = ((bundle.get("head") or {}).get("params") or {}).get("seed")
    manifest = ((bundle.get("data") or {}).get("manifest") or {}).get("path")
    held = f"recipe {bundle['recipe']!r} (backbone {(bundle.get('backbone') or {}).get('name')}, seed {seed})"
    if weights_file:  # it may be this very command's run: which weights file trained it cannot be told
        raise RunError(
            f"{run}: holds {held} fitted on {manifest}; with --weights FILE, whether it was fitted from the same "
            "weights cannot be told: pass --overwrite to fit again, or choose another -o"
        )
    raise RunError(
        f"{run}: holds {held} fitted on {manifest}, not what this command asks for; choose another -o, pass "
        "--overwrite (`fit`) or delete that folder"
    )


def _bundle_fitted_on(run: Path, manifest_path: str | Path) -> dict[str, Any] | None:
    """``run``'s bundle.json when its head was trained on this very manifest (same SHA-256), else None."""
    bundle_path = run / "bundle.json"
    if not bundle_path.is_file() or not Path(manifest_path).is_file():
        return None
    try:
        bundle = json.loads(bundle_path.read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return None
    recorded = (bundle.get("data") or {}).get("manifest") if isinstance(bundle, dict) else None
    if not isinstance(recorded, dict) or recorded.get("sha256") != sha256_file(manifest_path):
        return None
    return bundle


def _check_trainable(manifest_path: str | Path, *, splits: bool) -> tuple[Manifest, list[ManifestRow]]:
    """The manifest and its training rows, once those are known to hold two classes or more and
    (``splits``) its splits not to leak: fine-tuning would otherwise run for minutes before extraction found
    out. Training rows are those fine-tuning trains on (``split_rows``: every row without a split column)."""
    from xvision.finetune.trainer import split_rows

    manifest = read_manifest(manifest_path)
    if splits:
        check_readable_splits(manifest)
    train_rows, _ = split_rows(manifest)
    trained = {row.label for row in train_rows}
    if len(trained) < 2:
        found = f"only class {next(iter(trained))!r}" if trained else "no images"
        raise ManifestError(f"{manifest.name}: the training rows hold {found}; a classifier needs two classes")
    return manifest, train_rows


def _lesion_column_hint(columns: tuple[str, ...], manifest_name: str) -> str:
    """Columns that look like a lesion's place under other names (JSRT's nodule_x, nodule_y, nodule_diam_px)."""
    from xvision.finetune.targets import LESION_COLUMNS

    looks = [
        c for c in columns if c not in LESION_COLUMNS and (c.lower().endswith(("_x", "_y")) or "diam" in c.lower())
    ]
    if not looks:
        return ""
    hint = f"; if {', '.join(looks)} give the lesion's centre and diameter in pixels, rename them to those names"
    guess = [
        [c for c in looks if test(c.lower())]
        for test in (lambda c: c.endswith("_x"), lambda c: c.endswith("_y"), lambda c: "diam" in c)
    ]
    if all(len(found) == 1 for found in guess):  # one of each: say the exact command
        pairs = " ".join(f"--column {mine}={found[0]}" for mine, found in zip(LESION_COLUMNS, guess, strict=True))
        hint += f" (`xvision manifest {manifest_name} {pairs} -o renamed.csv` does)"
    return hint


def _check_lesion_columns(columns: tuple[str, ...], manifest: str | Path) -> None:
    """Lesion columns come as all three: with one missing, every row read as "half-filled"."""
    from xvision.finetune.targets import LESION_COLUMNS

    present = [c for c in LESION_COLUMNS if c in columns]
    if present and len(present) < len(LESION_COLUMNS):
        missing = [c for c in LESION_COLUMNS if c not in columns]
        raise ManifestError(
            f"{manifest}: has the column(s) {', '.join(present)} but no {', '.join(missing)}; a lesion's place "
            f"takes all three (lesion_x, lesion_y, lesion_diam, in pixels of the image)"
            f"{_lesion_column_hint(columns, shlex.quote(str(manifest)))}"
        )


def _has_lesions(train_rows: list[ManifestRow], manifest: str | Path) -> bool:
    """Whether any training row carries a lesion location. Every row is checked first, so a half-filled or
    non-numeric location is refused before any work (and before the run folder is made)."""
    from xvision.finetune.targets import lesion_of

    lesions = [lesion_of(row, f"{manifest}: {row.path}") for row in train_rows]  # every row, not the first few
    return any(lesion is not None for lesion in lesions)
