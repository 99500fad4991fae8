"""One self-contained HTML report of a run: what data, which model, how good, where it fails, how far to trust it.

:func:`write_report` reads what the stages before it wrote, and nothing else: the run folder (``bundle.json``,
``history.csv``), the evaluation (``metrics.json``, ``predictions.csv``, ``plots/*.png``, see
docs/evaluation.md) and, when reachable, the feature store (``meta.json``, ``index.csv``) and the images
behind it for thumbnails. Every part is optional except ``bundle.json``: a run that was never evaluated, an
older ``metrics.json`` without intervals, or images that moved give a shorter report, not an error.

Images are inlined as ``data:`` URIs and the page carries its own CSS and no script, so the single file opens
offline, from an e-mail attachment or an archive, years later.
"""

from __future__ import annotations

import json
import logging
from collections import Counter, defaultdict
from datetime import datetime, timezone
from pathlib import Path
from typing import Any

from xvision._fileio import atomic_write_text
from xvision._outputs import check_output, is_xvision_report, same_file
from xvision._version import __version__
from xvision.errors import RunError
from xvision.evaluation.audit_features import describe_feature
from xvision.evaluation.report_card import model_card, num
from xvision.evaluation.report_gallery import build_gallery, png_data_uri, read_predictions
from xvision.features.store import FeatureStore

log = logging.getLogger(__name__)

REPORT_NAME = "report.html"
MULTICLASS_AUC = "ROC AUC (macro one-vs-rest)"
"""How the report names ``roc_auc`` with more than two classes: the mean of the per-class one-vs-rest AUCs."""
_HEADLINE = (
    ("roc_auc", "ROC AUC"),
    ("sensitivity", "Sensitivity"),
    ("specificity", "Specificity"),
    ("accuracy", "Accuracy"),
)
_METRICS = (
    *_HEADLINE,
    ("balanced_accuracy", "Balanced accuracy"),
    ("sensitivity_at_90_specificity", "Sensitivity at 90% specificity (cut read off this ROC curve)"),
    ("brier", "Brier score (lower is better)"),
    ("ece", "Expected calibration error (lower is better)"),
)


def write_report(
    run_dir: str | Path,
    *,
    results_dir: str | Path | None = None,
    features_dir: str | Path | None = None,
    out: str | Path | None = None,
) -> Path:
    """Write the HTML report of a run and return its path.

    Args:
        run_dir: The run folder written by ``xvision train``.
        results_dir: Where ``evaluate`` wrote ``metrics.json`` and ``plots/`` (default: ``run_dir``).
        features_dir: The feature store, for the data summary and the images (default: the one the run
            was trained on, as recorded in bundle.json).
        out: The HTML file (default: ``report.html`` in ``results_dir``).

    Raises:
        RunError: ``run_dir`` has no readable ``bundle.json``, or ``results_dir`` is given and holds no
            ``metrics.json``.
    """
    run_dir = Path(run_dir)
    results = Path(results_dir) if results_dir is not None else run_dir
    bundle = _read_json(run_dir / "bundle.json")
    if bundle is None:
        from xvision.evaluation.crossval import not_a_run

        raise RunError(not_a_run(run_dir))
    if results_dir is not None and not (results / "metrics.json").is_file():  # a typo must not look "not evaluated"
        raise RunError(f"{results}: no metrics.json; --results names the folder evaluate wrote with -o")
    out = Path(out) if out is not None else results / REPORT_NAME
    check_output(out, what="report", ours=is_xvision_report)
    metrics = _read_json(results / "metrics.json")
    _check_same_model(run_dir, results, metrics)
    store = _find_store(features_dir, bundle, metrics, run_dir)
    context = build_context(run_dir, results, bundle, metrics, store)
    return atomic_write_text(out, render(context))


def report_after_evaluate(run_dir: Path, results_dir: Path, features_dir: Path) -> Path | None:
    """Write the report at the end of ``evaluate``; a failure is logged, never raised (metrics are written)."""
    try:
        path = write_report(run_dir, results_dir=results_dir, features_dir=features_dir)
    except Exception as error:  # noqa: BLE001 - the report is a view; the numbers already exist
        log.warning(
            "could not write the HTML report (%s: %s); run `xvision report %s`", type(error).__name__, error, run_dir
        )
        return None
    log.info("report: %s", path)
    return path


def render(context: dict[str, Any]) -> str:
    """Fill the HTML template (``templates/report.html``) with a context from :func:`build_context`."""
    import jinja2

    env = jinja2.Environment(
        loader=jinja2.PackageLoader("xvision.evaluation", "templates"),
        autoescape=True,
        undefined=jinja2.StrictUndefined,
        trim_blocks=True,
        lstrip_blocks=True,
    )
    env.filters["num"] = num
    return env.get_template("report.html").render(**context)


def build_context(
    run_dir: Path,
    results: Path,
    bundle: dict[str, Any],
    metrics: dict[str, Any] | None,
    store: Path | None,
) -> dict[str, Any]:
    """Everything the template shows, with every optional part already resolved to a value or None."""
    meta = _read_json(store / "meta.json") if store else None
    index = _read_index(store / "index.csv") if store else []
    classes = list(bundle.get("classes") or (metrics or {}).get("classes") or [])
    positive = (metrics or {}).get("positive") or bundle.get("positive")
    plots = results / "plots"
    untrained = bool(bundle.get("untrained_backbone"))
    audit = _audit(bundle.get("audit"))
    manifest = (meta or {}).get("manifest") or (bundle.get("data") or {}).get("manifest")
    image_root = Path(manifest["path"]).parent if manifest and manifest.get("path") else None
    m = metrics or {}
    external = _external_manifest(m, meta, (bundle.get("data") or {}).get("manifest"))
    return {
        "title": f"Xvision report: {run_dir.resolve().name}",
        "run_dir": str(run_dir),
        "created": bundle.get("created"),
        "generated": datetime.now(timezone.utc).isoformat(timespec="seconds"),
        "xvision_version": __version__,
        "untrained": untrained,
        "banners": _banners(untrained, audit, metrics, evaluations_elsewhere(run_dir) if metrics is None else []),
        "classes": classes,
        "positive": positive,
        "metrics": metrics,
        "split": m.get("split"),
        "n": m.get("n"),
        "external": external,
        "training_manifest": (bundle.get("data") or {}).get("manifest"),
        "headline": [row for row in _metric_rows(m, _HEADLINE) if row["value"] is not None],
        "metric_rows": _metric_rows(m, _METRICS),
        "class_rows": _class_rows(m, classes),
        "auc_per_class": bool(m.get("roc_auc_per_class")),
        "interval_note": _interval_note(m),
        "confusion": _confusion(m, classes),
        "data": _data_summary(index, bundle, store),
        "manifest": manifest,
        "audit": audit,
        "provenance": _provenance(bundle, meta, store, metrics, external) + _finetune_rows(run_dir),
        "versions": sorted((bundle.get("versions") or {}).items()),
        "training": {
            "best_epoch": bundle.get("best_epoch"),
            "epochs": bundle.get("epochs"),
            "selection": bundle.get("selection"),
        },
        "threshold": _threshold(bundle, m),
        "calibration": _calibration(bundle, m),
        "plots": {
            name: png_data_uri(plots / f"{name}.png", results)
            for name in ("training_curve", "confusion_matrix", "roc", "reliability")
        },
        "gallery": build_gallery(read_predictions(results / "predictions.csv"), classes, positive, image_root)
        if metrics
        else None,
        "card": model_card(bundle, m, classes, positive, audit, index, figures=_figures(m), external=external),
    }


def _external_manifest(
    metrics: dict[str, Any], meta: dict[str, Any] | None, training: dict[str, Any] | None
) -> dict[str, Any] | None:
    """The manifest `evaluate --manifest` scored (``{"path", "sha256", "name"}``, metrics.json's ``manifest``
    with the SHA-256 its feature store recorded), or None: no such evaluation, or one of the training manifest."""
    path = metrics.get("manifest")
    if not path:
        return None
    recorded = (meta or {}).get("manifest") or {}
    sha256 = recorded.get("sha256") if recorded.get("path") == path else None
    training = training or {}
    if path == training.get("path") or (sha256 is not None and sha256 == training.get("sha256")):
        return None
    return {"path": path, "sha256": sha256, "name": Path(path).name}


def evaluations_elsewhere(run_dir: Path) -> list[Path]:
    """The run's ``eval-*`` folders (`evaluate --manifest`) that hold a finished evaluation."""
    return sorted(p for p in run_dir.glob("eval-*") if (p / "metrics.json").is_file())


def _banners(
    untrained: bool, audit: dict[str, Any] | None, metrics: dict[str, Any] | None, elsewhere: list[Path]
) -> list[dict[str, str]]:
    banners = []
    if untrained:
        banners.append(
            {
                "kind": "danger",
                "title": "UNTRAINED BACKBONE",
                "text": "The features come from a network with random weights. Every number and picture in this "
                "report is meaningless; it exists to test the pipeline.",
            }
        )
    if audit and audit.get("verdict") == "warn":
        names = "; ".join(item["meaning"] for item in audit["strongest"][:2])
        banners.append(
            {
                "kind": "warning",
                "title": "Possible shortcut in the data",
                "text": f"Image properties that should not carry the diagnosis predict the label with "
                f"cross-validated AUC {num(audit.get('auc'))} (strongest: {names}). The model may have learned "
                "them instead of the disease; see Data.",
            }
        )
    if metrics and metrics.get("overlap_with_training"):
        banners.append(
            {
                "kind": "warning",
                "title": "Evaluated on training images",
                "text": f"{metrics['overlap_with_training']} evaluated images were used in training: the figures "
                "are optimistic.",
            }
        )
    unknown = [key for key in ("overlap_with_training", "overlap_with_validation") if key in (metrics or {})]
    if metrics and any(metrics[key] is None for key in unknown):
        banners.append(
            {
                "kind": "warning",
                "title": "Overlap with training unknown",
                "text": "The run folder has no train_keys.json or val_keys.json, so whether evaluated images trained "
                "the model or chose its epoch and threshold cannot be checked: the figures may be optimistic.",
            }
        )
    if metrics and metrics.get("overlap_with_validation"):
        banners.append(
            {
                "kind": "warning",
                "title": "Evaluated on validation images",
                "text": f"{metrics['overlap_with_validation']} evaluated images were the run's validation images, "
                "which chose its epoch and threshold: the figures are optimistic.",
            }
        )
    if metrics and metrics.get("unreadable"):
        names = ", ".join(u["path"] for u in metrics["unreadable"][:3]) + (
            ", ..." if len(metrics["unreadable"]) > 3 else ""
        )
        banners.append(
            {
                "kind": "warning",
                "title": "Images left out",
                "text": f"{len(metrics['unreadable'])} images of this set could not be read ({names}) and are not "
                "in these figures; metrics.json lists them with the reason.",
            }
        )
    if metrics is None:
        banners.append(
            {
                "kind": "info",
                "title": "Not evaluated yet",
                "text": (
                    "There is no metrics.json: run `xvision evaluate RUN --features FEATURES` for results."
                    if not elsewhere
                    else "The run was evaluated on other images: "
                    + ", ".join(f"`xvision report RUN --results RUN/{p.name}`" for p in elsewhere)
                    + " reports that."
                ),
            }
        )
    return banners


def _audit(record: dict[str, Any] | None) -> dict[str, Any] | None:
    """bundle.json's ``audit`` with every key the template reads (older or partial records degrade)."""
    if not isinstance(record, dict):
        return None
    keys = ("status", "reason", "verdict", "auc", "ci_low", "ci_high", "threshold", "n_images", "folds", "model")
    out = {key: record.get(key) for key in keys}
    out["status"] = out["status"] or "done"
    out["n_skipped"] = record.get("n_skipped") or 0
    out["strongest"] = [
        {"meaning": describe_feature(str(item.get("feature"))), **item}
        for item in record.get("strongest") or []
        if isinstance(item, dict)
    ]
    return out


def _figures(metrics: dict[str, Any]) -> list[str]:
    """The headline figures as sentences for the model card, with their intervals when known."""
    return [
        f"{row['label']} {num(row['value'])}"
        + (f" (95% CI {num(row['low'])} to {num(row['high'])})" if row["low"] is not None else "")
        for row in _metric_rows(metrics, _HEADLINE)
        if row["value"] is not None
    ]


def _metric_rows(metrics: dict[str, Any], names: tuple[tuple[str, str], ...]) -> list[dict[str, Any]]:
    intervals = metrics.get("intervals") or {}
    rows = []
    for key, label in names:
        if key not in metrics:
            continue
        if key == "roc_auc" and len(metrics.get("classes") or []) > 2:
            label = MULTICLASS_AUC
        ci = intervals.get(key) or {}
        rows.append(
            {"key": key, "label": label, "value": metrics[key], "low": ci.get("ci_low"), "high": ci.get("ci_high")}
        )
    return rows


def _class_rows(metrics: dict[str, Any], classes: list[str]) -> list[dict[str, Any]]:
    if "precision" not in metrics:
        return []
    intervals = metrics.get("intervals") or {}
    rows = []
    for c in classes:
        row: dict[str, Any] = {
            "name": c,
            "f1": metrics.get("f1", {}).get(c),
            "support": metrics.get("support", {}).get(c),
            "auc": (metrics.get("roc_auc_per_class") or {}).get(c),
        }
        for key in ("precision", "recall"):
            ci = (intervals.get(key) or {}).get(c) or {}
            row[key] = {"value": metrics[key].get(c), "low": ci.get("ci_low"), "high": ci.get("ci_high")}
        rows.append(row)
    return rows


def _interval_note(metrics: dict[str, Any]) -> str | None:
    boot = metrics.get("bootstrap")
    if not boot:
        return None
    unit = "patients (groups)" if boot.get("unit") == "group" else "images"
    return (
        f"Intervals: {boot.get('level', 0.95):.0%} percentile bootstrap, {boot.get('n_resamples')} resamples of "
        f"{boot.get('n_units')} {unit} within each class (seed {boot.get('seed')})."
        + (f" Caution: {boot['caution']}." if boot.get("caution") else "")
    )


def _confusion(metrics: dict[str, Any], classes: list[str]) -> list[list[Any]] | None:
    matrix = metrics.get("confusion_matrix")
    if not matrix or len(matrix) != len(classes):
        return None
    return [[c, *row] for c, row in zip(classes, matrix, strict=True)]


def _data_summary(index: list[dict[str, str]], bundle: dict[str, Any], store: Path | None) -> dict[str, Any]:
    data = bundle.get("data") or {}
    fallback = {
        "n_train": data.get("n_train"),
        "n_val": data.get("n_val"),
        "train_per_class": data.get("train_per_class") or {},
    }
    if not index:
        return {"rows": [], "labels": [], "failed": 0, "has_groups": False, "store": None, "fallback": fallback}
    counts: Counter[tuple[str, str]] = Counter()
    groups: dict[str, set[str]] = defaultdict(set)
    failed = 0
    for number, row in enumerate(index):
        if row.get("status") != "ok":
            failed += 1
            continue
        split = row.get("split") or "(no split)"
        counts[(split, row["label"])] += 1
        groups[split].add(row.get("group") or f"\0{number}")
    labels = sorted({label for _, label in counts})
    order = {"train": 0, "val": 1, "test": 2}
    rows = [
        {
            "split": split,
            "counts": [counts[(split, label)] for label in labels],
            "total": sum(counts[(split, label)] for label in labels),
            "groups": len(groups[split]),
        }
        for split in sorted(groups, key=lambda name: (order.get(name, 3), name))
    ]
    return {
        "rows": rows,
        "labels": labels,
        "failed": failed,
        "has_groups": any(row.get("group") for row in index),
        "store": str(store),
        "fallback": fallback,
    }


def _provenance(
    bundle: dict[str, Any],
    meta: dict[str, Any] | None,
    store: Path | None,
    metrics: dict[str, Any] | None,
    external: dict[str, Any] | None,
) -> list[tuple[str, str]]:
    backbone = bundle.get("backbone") or {}
    weights = backbone.get("weights") or {}
    head = bundle.get("head") or {}
    rows = [
        ("Backbone", str(backbone.get("name"))),
        ("Weights", ", ".join(f"{k}: {v}" for k, v in weights.items())),
        ("Preprocessing", ", ".join(f"{k}: {v}" for k, v in (backbone.get("preprocess") or {}).items())),
        ("Feature dimension", str(backbone.get("feature_dim"))),
        ("Head", f"{head.get('head')}: " + ", ".join(f"{k}={v}" for k, v in (head.get("params") or {}).items())),
        ("Run created", str(bundle.get("created"))),
    ]
    if store is not None:
        rows.append(("Feature store", str(store)))
    if meta:
        made = ", ".join(f"{k}: {meta[k]}" for k in ("xvision_version", "torch_version", "dtype") if k in meta)
        if made:
            rows.append(("Features made with", made))
    if metrics:
        split, features = metrics.get("split"), metrics.get("features")
        evaluated = f"{split} split of {features}"
        if external:
            of_split = f", {split} split" if split != "all" else ""
            evaluated = f"external manifest {external['path']}{of_split} (features in {features})"
        rows.append(("Evaluated", evaluated))
    return rows


def _finetune_rows(run_dir: Path) -> list[tuple[str, str]]:
    """What fine-tuning did, from ``RUN/finetune/state.json`` (or each ``member-<k>/state.json`` of several
    detectors), for runs of a fine-tuning recipe."""
    from xvision.finetune.config import FINETUNE_DIR

    folder = run_dir / FINETUNE_DIR
    members = [state for path in sorted(folder.glob("member-*/state.json")) if (state := _read_json(path))]
    if members:
        return [
            (f"{what} (detector {k} of {len(members)})", text)
            for k, state in enumerate(members, start=1)
            for what, text in _finetune_state_rows(state)
        ]
    state = _read_json(folder / "state.json")
    return _finetune_state_rows(state) if state else []


def _finetune_state_rows(state: dict[str, Any]) -> list[tuple[str, str]]:
    config = state.get("config") or {}
    history = state.get("history") or []
    settings = ", ".join(
        f"{k}={config[k]}"
        for k in (
            "backbone",
            "pool",
            "epochs",
            "rounds",
            "steps_per_round",
            "crop",
            "lr",
            "frozen_stages",
            "lesion_weight",
            "hard_negatives",
            "seed",
        )
        if k in config
    )

    def validation(record: dict[str, Any]) -> str:
        if "val_loss" in record:
            return f" (val {record['val_loss']:.3f})"
        return f" (val AUC {record['val_auc']:.3f})" if "val_auc" in record else ""

    losses = "; ".join(f"{r['epoch']}: {r['train_loss']:.3f}{validation(r)}" for r in history)
    if state.get("trained"):  # the lesion detector counts rounds of steps, not epochs
        what = f"{state['trained']}: {len(history)} rounds, kept round {state.get('best_epoch')}; {settings}"
    else:
        what = (
            f"{len(history)} epochs, kept epoch {state.get('best_epoch')}, features pooled over the "
            f"{state.get('pooled_over', 'film')}; {settings}"
        )
    return [("Backbone fine-tuned", what), ("Fine-tuning loss by epoch", losses or "none")]


_THRESHOLD_KEYS = {
    "source": "chosen on",
    "n": "validation images",
    "val_sensitivity": "sensitivity on validation",
    "val_specificity": "specificity on validation",
    "requested_rule": "rule asked for",
}


def _threshold(bundle: dict[str, Any], metrics: dict[str, Any]) -> dict[str, Any] | None:
    from xvision.evaluation.operating import describe_threshold

    entry = metrics.get("threshold_rule") or bundle.get("threshold")
    if not isinstance(entry, dict):
        return None
    positive = metrics.get("positive") or bundle.get("positive")
    details = [(_THRESHOLD_KEYS.get(k, k), v) for k, v in entry.items() if k not in ("value", "rule")]
    return {
        "validated": entry.get("value") is not None and "validation" in str(entry.get("source", "")),
        "text": describe_threshold(entry, positive),
        "value": entry.get("value"),
        "rule": entry.get("rule"),
        "details": details,
    }


def _calibration(bundle: dict[str, Any], metrics: dict[str, Any]) -> dict[str, Any] | None:
    calibration = metrics.get("calibration")
    if not isinstance(calibration, dict):
        return None
    applied = calibration.get("applied") or bundle.get("calibration") or {"method": "none"}
    return {
        "ece": calibration.get("ece"),
        "brier": calibration.get("brier"),
        "binned": calibration.get("binned"),
        "applied": applied,
    }


def _check_same_model(run_dir: Path, results: Path, metrics: dict[str, Any] | None) -> None:
    """Refuse results that another head of this run scored (the run was trained again since)."""
    from xvision.inference.bundle import model_sha256  # here: the bundle module loads torch

    if (metrics or {}).get("kind") == "cross-validation":  # pooled fold models' figures, not this run's
        raise RunError(
            f"{results} holds a cross-validation (`xvision cv`), not an evaluation of {run_dir}; "
            f"pass the folder `xvision evaluate {run_dir}` wrote"
        )
    scored = (metrics or {}).get("model_sha256")
    if scored and (run_dir / "model.safetensors").is_file() and scored != model_sha256(run_dir):
        other = Path(str((metrics or {}).get("run") or ""))
        if other.name and (other / "bundle.json").is_file() and not same_file(other, run_dir):
            raise RunError(f"{results}: these results are an evaluation of {other}, not of {run_dir}")
        raise RunError(
            f"{results}: these results were scored by an earlier model of {run_dir} (it was trained again since); "
            "run `xvision evaluate` again for the current one"
        )


def _find_store(
    explicit: str | Path | None, bundle: dict[str, Any], metrics: dict[str, Any] | None, run_dir: Path
) -> Path | None:
    """The feature store the user named (it must be one), else the run's or the results' if still there.

    The run's own ``features/`` (where `fit` puts it) comes first: it moves with a copied or moved run, while
    bundle.json's path may by then hold another run's store. A store found by the run's record whose manifest is
    not the run's training manifest (SHA-256) is passed over with a warning: its data is not this run's."""
    if explicit is not None:
        if not (Path(explicit) / "meta.json").is_file():
            FeatureStore(explicit).read_index()  # the one-line error every command gives for such a folder
        return Path(explicit)
    trained_on = ((bundle.get("data") or {}).get("manifest") or {}).get("sha256")
    for candidate in (run_dir / "features", (bundle.get("head") or {}).get("features_dir")):
        if candidate and (Path(candidate) / "meta.json").is_file():
            made_from = ((_read_json(Path(candidate) / "meta.json") or {}).get("manifest") or {}).get("sha256")
            if trained_on and made_from and made_from != trained_on:
                log.warning(
                    "%s: a feature store of another manifest than the run was trained on (SHA-256 %.12s, not "
                    "%.12s): its data is not shown; name the run's own store with --features",
                    candidate,
                    made_from,
                    trained_on,
                )
                continue
            return Path(candidate)
    evaluated = (metrics or {}).get("features")
    if evaluated and (Path(evaluated) / "meta.json").is_file():
        return Path(evaluated)
    return None


def _read_json(path: Path) -> dict[str, Any] | None:
    try:
        value = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return None
    return value if isinstance(value, dict) else None


def _read_index(path: Path) -> list[dict[str, str]]:
    import csv

    try:
        with open(path, newline="", encoding="utf-8") as handle:
            return list(csv.DictReader(handle))
    except OSError:
        return []


__all__ = ["REPORT_NAME", "build_context", "render", "report_after_evaluate", "write_report"]
