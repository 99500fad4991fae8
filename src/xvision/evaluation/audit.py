"""The shortcut audit: do features that should not carry the diagnosis predict the label anyway?

A model trained on chest X-rays learns whatever separates the classes, including a burned-in marker, the
scanner of one hospital or the size of an anonymisation patch. The audit computes such nuisance features for
every image (:mod:`xvision.evaluation.audit_features`), fits a deliberately simple model on them with grouped,
stratified cross-validation, and reports its out-of-fold ROC AUC with a bootstrap interval. Above the
threshold (default 0.60) it warns and names the features that separate the classes best.

Only out-of-fold predictions are scored, so a clean data set sits near 0.5; the features that are named are
ranked by their single-feature AUC on all images (no fitting), as an explanation rather than a second test.
"""

from __future__ import annotations

import logging
import warnings
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any, Literal

import numpy as np

from xvision.data.manifest import Manifest, ManifestRow, read_manifest
from xvision.data.split import group_values
from xvision.errors import ManifestError, XvisionError
from xvision.evaluation.audit_features import FeatureTable, describe_feature, feature_table

log = logging.getLogger(__name__)

AuditModel = Literal["logistic", "tree"]
DEFAULT_THRESHOLD = 0.60
STRONGEST = 5
"""How many features a report names."""


@dataclass(frozen=True)
class AuditConfig:
    """How the audit is run; recorded in every result.

    Attributes:
        threshold: Warn when the cross-validated AUC exceeds this.
        folds: Cross-validation folds (fewer when a class has fewer groups).
        repeats: Cross-validation is repeated with reshuffled folds and the out-of-fold scores averaged,
            which steadies the estimate on small sets.
        group_by: Manifest column whose images are never split between folds (``None``: every image alone).
        model: ``"logistic"`` (L2 logistic regression on standardised features) or ``"tree"`` (shallow
            gradient-boosted trees, which also catch non-monotone effects).
        n_resamples: Bootstrap resamples of the AUC interval (whole groups, within classes).
        level: Confidence level of the interval.
        seed: Seeds folds, model and bootstrap.
    """

    threshold: float = DEFAULT_THRESHOLD
    folds: int = 5
    repeats: int = 5
    group_by: str | None = "group"
    model: AuditModel = "logistic"
    n_resamples: int = 1000
    level: float = 0.95
    seed: int = 0

    def __post_init__(self) -> None:
        if not 0.0 <= self.threshold <= 1.0:
            raise ValueError(f"threshold must lie in [0, 1], got {self.threshold}")
        if self.folds < 2:
            raise ValueError(f"folds must be at least 2, got {self.folds}")
        if self.repeats < 1:
            raise ValueError(f"repeats must be at least 1, got {self.repeats}")
        if self.model not in ("logistic", "tree"):
            raise ValueError(f"model must be 'logistic' or 'tree', got {self.model!r}")


@dataclass
class AuditResult:
    """What the audit found. ``warn`` is True when ``auc`` exceeds ``config.threshold``."""

    manifest: str
    classes: list[str]
    counts: dict[str, int]
    n_images: int
    n_groups: int
    n_features: int
    folds: int
    auc: float | None
    ci_low: float | None
    ci_high: float | None
    warn: bool
    strongest: list[dict[str, Any]]
    skipped: list[dict[str, str]]
    config: AuditConfig
    note: str | None = None
    feature_names: list[str] = field(default_factory=list, repr=False)

    @property
    def verdict(self) -> str:
        """``"warn"``, ``"pass"`` or ``"undetermined"`` (too few readable images to cross-validate)."""
        if self.auc is None:
            return "undetermined"
        return "warn" if self.warn else "pass"

    def to_dict(self) -> dict[str, Any]:
        """A JSON-ready dict (what ``audit.json`` and ``bundle.json``'s ``audit`` hold)."""
        out = asdict(self)
        out.pop("feature_names")
        return {"verdict": self.verdict, **out}

    def headline(self) -> str:
        """The verdict in one line."""
        if self.auc is None:
            return f"shortcut audit undetermined: {self.note}"
        auc = _interval_text(self.auc, self.ci_low, self.ci_high, self.config.level)
        if self.warn:
            return (
                f"WARNING: possible shortcut: cross-validated AUC {auc} > {self.config.threshold:.2f}; "
                "the label can be predicted from image properties unrelated to the disease"
            )
        return f"no shortcut found: cross-validated AUC {auc} <= {self.config.threshold:.2f}"

    def summary(self) -> str:
        """A few lines for people: what was audited, how, the verdict and the strongest features."""
        lines = [f"{self.manifest}: {self.n_images} images ({_counts_text(self.counts)}), {self.n_groups} groups"]
        if self.skipped:
            lines.append(f"{len(self.skipped)} unreadable image(s) skipped, e.g. {self.skipped[0]['path']}")
        if self.auc is not None:
            model = "logistic regression" if self.config.model == "logistic" else "gradient-boosted trees"
            lines.append(
                f"{model} on {self.n_features} features that should not carry the diagnosis, "
                f"{self.folds}-fold grouped cross-validation x{self.config.repeats}"
            )
        lines.append(self.headline())
        if self.strongest:
            lines.append("strongest features (single-feature AUC):")
            lines.extend(
                f"  {item['auc']:.3f}  {item['meaning']}; {item['direction']}  [{item['feature']}]"
                for item in self.strongest
            )
        return "\n".join(lines)


def audit_manifest(
    manifest: str | Path | Manifest,
    config: AuditConfig | None = None,
    *,
    progress: bool = False,
) -> AuditResult:
    """Run the shortcut audit on every image of a manifest.

    Unreadable images are logged, listed in ``skipped`` and left out.

    Raises:
        ManifestError: The manifest cannot be read, fewer than two classes remain, or ``group_by`` is not
            one of its columns.
    """
    config = config or AuditConfig()
    if not isinstance(manifest, Manifest):
        manifest = read_manifest(manifest)
    if len(manifest.labels) < 2:
        raise ManifestError(f"{manifest.name}: only class {manifest.labels[0]!r}; the audit needs two or more")
    groups_all = group_values(manifest, config.group_by)
    table = feature_table(manifest.paths(), progress=progress)
    rows = [manifest.rows[i] for i in table.kept]
    skipped = [{"path": manifest.rows[i].path, "reason": reason} for i, reason in table.failures]
    classes = sorted({row.label for row in rows})
    groups = [groups_all[i] for i in table.kept]
    y = np.array([classes.index(row.label) for row in rows], dtype=np.int64)
    counts = {c: int(np.sum(y == i)) for i, c in enumerate(classes)}
    n_groups = len({g if g is not None else f"\0{i}" for i, g in enumerate(groups)})
    base = {
        "manifest": manifest.name,
        "classes": classes,
        "counts": counts,
        "n_images": len(rows),
        "n_groups": n_groups,
        "n_features": table.X.shape[1],
        "skipped": skipped,
        "config": config,
        "feature_names": table.names,
    }
    folds = _usable_folds(y, groups, config.folds)
    if len(classes) < 2 or folds < 2:
        note = "fewer than two readable images (or groups) in some class; nothing to cross-validate"
        return AuditResult(**base, folds=0, auc=None, ci_low=None, ci_high=None, warn=False, strongest=[], note=note)
    if folds < config.folds:
        log.warning("a class has only %d groups: using %d folds instead of %d", folds, folds, config.folds)
    proba = out_of_fold_proba(table.X, y, groups, config, folds)
    if np.ptp(proba, axis=0).max() < 1e-9:  # every image got the same score: the model learnt nothing to judge
        note = f"the {config.model} model predicted the same for every image; too few images for it to judge"
        return AuditResult(
            **base, folds=folds, auc=None, ci_low=None, ci_high=None, warn=False, strongest=[], note=note
        )
    auc = macro_auc(y, proba)
    low, high = _auc_interval(y, proba, groups, config)
    return AuditResult(
        **base,
        folds=folds,
        auc=auc,
        ci_low=low,
        ci_high=high,
        warn=auc > config.threshold,
        strongest=strongest_features(table, y, classes),
    )


def audit_for_run(features_dir: str | Path, *, enabled: bool = True) -> dict[str, Any]:
    """Audit the images behind a feature store before training; the record for bundle.json's ``audit``.

    The images are found through the store's ``meta.json`` (the manifest's folder) and ``index.csv`` (the
    manifest's rows). The record is ``{"status": "done", "verdict", "auc", "ci_low", "ci_high", ...}``, or
    ``{"status": "skipped" | "off", "reason"}`` when the audit was switched off or the images cannot be
    reached. A warning is logged, never raised: the verdict is for people to weigh.
    """
    if not enabled:
        return {"status": "off", "reason": "switched off (--no-audit)"}
    from xvision.features.store import FeatureStore

    try:
        store = FeatureStore(features_dir)
        manifest = _store_manifest(store.read_meta(), store.read_index())
    except XvisionError as error:
        return _skipped(str(error))
    except Exception as error:  # noqa: BLE001 - a pre-flight check must not stop a training run
        return _failed(error)
    if manifest is None:
        return _skipped("the feature store does not record its manifest's location")
    return audit_record(manifest)


def audit_record(manifest: str | Path | Manifest) -> dict[str, Any]:
    """Audit a manifest's images as training does (:func:`audit_for_run`) and return the same record;
    `xvision cv MANIFEST --recipe` makes it once and hands it to every fold's `fit`."""
    try:
        if not isinstance(manifest, Manifest):
            manifest = read_manifest(manifest)
        reachable = sum(path.is_file() for path in manifest.paths())
        if reachable < len(manifest.rows) / 2:
            return _skipped(f"only {reachable} of {len(manifest.rows)} images are reachable from {manifest.root}")
        log.info(
            "auditing %d images for shortcuts, as `xvision audit` does",
            len(manifest.rows),
        )
        result = audit_manifest(manifest)
    except XvisionError as error:
        return _skipped(str(error))
    except Exception as error:  # noqa: BLE001 - a pre-flight check must not stop a training run
        return _failed(error)
    if result.warn:
        for line in result.summary().splitlines():  # the counts and the strongest features are information
            if line.startswith("WARNING: "):
                log.warning("audit: %s", line.removeprefix("WARNING: "))  # the log level says it already
            else:
                log.info("audit: %s", line)
    else:
        log.info("audit: %s", result.headline())
    record = result.to_dict()
    keep = ("verdict", "auc", "ci_low", "ci_high", "n_images", "n_groups", "folds", "strongest", "note")
    return {
        "status": "done",
        **{key: record[key] for key in keep},
        "threshold": result.config.threshold,
        "model": result.config.model,
        "n_skipped": len(result.skipped),
        "manifest": str(manifest.source or manifest.root),
    }


def _failed(error: Exception) -> dict[str, Any]:
    log.warning("shortcut audit failed (%s: %s); training goes on", type(error).__name__, error)
    return {"status": "skipped", "reason": f"the audit failed: {type(error).__name__}: {error}"}


def _store_manifest(meta: dict[str, Any], index: list[Any]) -> Manifest | None:
    location = (meta.get("manifest") or {}).get("path")
    rows = [r for r in index if r.status == "ok"]
    if not location or not rows:
        return None
    manifest_rows = [ManifestRow(path=r.path, label=r.label, group=r.group or None) for r in rows]
    return Manifest(rows=manifest_rows, root=Path(location).parent, source=Path(location))


def _skipped(reason: str) -> dict[str, Any]:
    log.info("shortcut audit skipped: %s", reason)
    return {"status": "skipped", "reason": reason}


def out_of_fold_proba(
    X: np.ndarray, y: np.ndarray, groups: list[str | None], config: AuditConfig, folds: int
) -> np.ndarray:
    """Class probabilities of every image from models that never saw its group, averaged over repeats."""
    from sklearn.model_selection import StratifiedGroupKFold
    from threadpoolctl import threadpool_limits

    codes = _group_codes(groups)
    k = int(y.max()) + 1
    total = np.zeros((len(y), k))
    # The data are tiny: BLAS/OpenMP threads only add start-up cost and contend with other processes.
    with threadpool_limits(limits=1), warnings.catch_warnings():
        warnings.simplefilter("ignore")  # convergence chatter on tiny folds says nothing useful
        for repeat in range(config.repeats):
            splitter = StratifiedGroupKFold(n_splits=folds, shuffle=True, random_state=config.seed + repeat)
            for train, test in splitter.split(X, y, codes):
                model = _make_model(config.model, config.seed + repeat, len(train)).fit(X[train], y[train])
                proba = np.zeros((len(test), k))
                proba[:, model.classes_] = model.predict_proba(X[test])
                total[test] += proba
    return total / config.repeats


def macro_auc(y: np.ndarray, scores: np.ndarray) -> float:
    """ROC AUC of class-1 scores for two classes, macro one-vs-rest AUC for more."""
    from sklearn.metrics import roc_auc_score

    k = scores.shape[1]
    if k == 2:
        return float(roc_auc_score(y == 1, scores[:, 1]))
    return float(np.mean([roc_auc_score(y == c, scores[:, c]) for c in range(k)]))


def strongest_features(table: FeatureTable, y: np.ndarray, classes: list[str]) -> list[dict[str, Any]]:
    """The features that best separate one class from the rest on their own, strongest first.

    Each entry: ``feature`` (column name), ``meaning`` (in words), ``auc`` (single-feature ROC AUC, oriented
    to be >= 0.5) and ``direction`` (which class has the higher values).
    """
    from sklearn.metrics import roc_auc_score

    ranked = []
    pairs = [(1, 0)] if len(classes) == 2 else [(c, None) for c in range(len(classes))]
    for j, name in enumerate(table.names):
        column = table.X[:, j]
        if np.ptp(column) == 0:
            continue
        best = (0.0, "")
        for positive, negative in pairs:
            auc = float(roc_auc_score(y == positive, column))
            strength = max(auc, 1.0 - auc)
            if strength > best[0]:
                rest = classes[negative] if negative is not None else "the other classes"
                high, low = (classes[positive], rest) if auc >= 0.5 else (rest, classes[positive])
                best = (strength, f"higher in {high} than in {low}")
        ranked.append(
            {"feature": name, "meaning": describe_feature(name), "auc": round(best[0], 4), "direction": best[1]}
        )
    ranked.sort(key=lambda item: -item["auc"])
    return ranked[:STRONGEST]


def _make_model(kind: AuditModel, seed: int, n_train: int) -> Any:
    from sklearn.pipeline import make_pipeline
    from sklearn.preprocessing import StandardScaler

    if kind == "tree":
        from sklearn.ensemble import HistGradientBoostingClassifier

        # scikit-learn's default leaf of 20 images cannot split a fold of a few dozen: scale it to the fold.
        leaf = int(np.clip(n_train // 10, 2, 20))
        return HistGradientBoostingClassifier(
            max_depth=2, max_iter=100, learning_rate=0.1, min_samples_leaf=leaf, random_state=seed
        )
    from sklearn.linear_model import LogisticRegression

    return make_pipeline(StandardScaler(), LogisticRegression(C=0.1, max_iter=2000))


def _usable_folds(y: np.ndarray, groups: list[str | None], wanted: int) -> int:
    codes = _group_codes(groups)
    per_class = [len(set(codes[y == c])) for c in np.unique(y)]
    return min(wanted, min(per_class)) if per_class else 0


def _group_codes(groups: list[str | None]) -> np.ndarray:
    index: dict[str, int] = {}
    return np.array([index.setdefault(g if g else f"\0{i}", len(index)) for i, g in enumerate(groups)])


def _auc_interval(
    y: np.ndarray, proba: np.ndarray, groups: list[str | None], config: AuditConfig
) -> tuple[float | None, float | None]:
    from xvision.evaluation.bootstrap import BootstrapConfig, bootstrap_samples

    samples = bootstrap_samples(
        y,
        proba,
        np.argmax(proba, axis=1),
        positive=1 if proba.shape[1] == 2 else None,
        groups=_group_codes(groups),
        config=BootstrapConfig(n_resamples=config.n_resamples, level=config.level, seed=config.seed),
    )["roc_auc"]
    finite = samples[np.isfinite(samples)]
    if finite.size == 0:
        return None, None
    low, high = np.quantile(finite, [(1 - config.level) / 2, (1 + config.level) / 2])
    return float(low), float(high)


def _counts_text(counts: dict[str, int]) -> str:
    return ", ".join(f"{n} {c}" for c, n in counts.items())


def _interval_text(value: float, low: float | None, high: float | None, level: float) -> str:
    if low is None or high is None:
        return f"{value:.3f}"
    return f"{value:.3f} ({level:.0%} CI {low:.3f}-{high:.3f})"


__all__ = [
    "DEFAULT_THRESHOLD",
    "AuditConfig",
    "AuditResult",
    "audit_for_run",
    "audit_manifest",
    "macro_auc",
    "out_of_fold_proba",
    "strongest_features",
]
