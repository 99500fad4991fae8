"""Seeded, vectorised bootstrap confidence intervals for classification metrics.

A bootstrap resample is stored as a vector of counts: how many times each image was drawn. Whole groups
(patients) are drawn with replacement, separately within each class stratum, and each group's count is
given to all of its images. For ``B`` resamples of ``n`` images this is a ``(B, n)`` weight matrix ``W``;
every metric is then computed for all resamples at once as a weighted statistic (matrix products, cumulative
sums), which is what makes 2,000 resamples of a few hundred images take well under a second.

Intervals are percentile intervals: the ``(1 - level) / 2`` and ``(1 + level) / 2`` quantiles of the
resampled values. Resamples in which a metric is undefined (for example precision when nothing was
predicted positive) are left out of that metric's quantiles and counted in ``n_undefined``.
"""

from __future__ import annotations

import logging
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np

from xvision._checks import check_type

log = logging.getLogger(__name__)

DEFAULT_RESAMPLES = 2000
DEFAULT_LEVEL = 0.95
#: Below this many units (groups or images) in a class, intervals get a caution: a percentile bootstrap of a
#: handful of cases understates the uncertainty, down to zero width (every resample of a perfectly separated
#: set is perfectly separated). Ten per class is a common rule of thumb for resampling binary outcomes.
MIN_UNITS_PER_CLASS = 10
#: Upper bound on the entries of one block of the weight matrix (keeps memory near 32 MB for any n).
_BLOCK_ENTRIES = 4_000_000


@dataclass(frozen=True)
class BootstrapConfig:
    """How intervals are computed; recorded in every artifact they appear in."""

    n_resamples: int = DEFAULT_RESAMPLES
    level: float = DEFAULT_LEVEL
    seed: int = 0

    def __post_init__(self) -> None:
        if self.n_resamples < 1:
            raise ValueError(f"n_resamples must be at least 1, got {self.n_resamples}")
        if not 0.0 < self.level < 1.0:
            raise ValueError(f"level must lie strictly between 0 and 1, got {self.level}")


def check_bootstrap(bootstrap: object, *, optional: bool = True) -> None:
    """A TypeError unless ``bootstrap`` is a :class:`BootstrapConfig` (or None, where intervals may be off)."""
    takes = "a BootstrapConfig (from xvision.evaluation.bootstrap)" + (" or None" if optional else "")
    check_type(bootstrap, (BootstrapConfig, type(None)) if optional else BootstrapConfig, "bootstrap", takes)


def scoring_groups(shas: Sequence[str | None], groups: Sequence[str | None], what: str) -> list[str]:
    """The groups a scored set is resampled by: rows that share a group or a file (the same SHA-256 under two
    names) are one unit, as `split` and `cv` link them, so a copy is not counted as independent evidence.
    Warns, naming ``what`` was scored, when the set holds such copies: each still counts in the figures."""
    from xvision.data.split import link_groups

    known = [sha for sha in shas if sha]
    copies = len(known) - len(set(known))
    if copies:
        log.warning(
            "%d of the %s are byte-identical copies of another one (same SHA-256): each copy counts in the "
            "figures, and the intervals resample copies together",
            copies,
            what,
        )
    units = link_groups(shas, groups)
    return [f"unit {u}" for u in units.tolist()]


def group_codes(groups: Sequence[str | None] | None, n: int) -> np.ndarray:
    """Integer group id per image; an image without a group (None or "") is its own group."""
    if groups is None:
        return np.arange(n)
    if len(groups) != n:
        raise ValueError(f"got {len(groups)} groups for {n} samples")
    codes: dict[str, int] = {}
    out = np.empty(n, dtype=np.int64)
    for i, g in enumerate(groups):
        key = f"g:{g}" if g else f"i:{i}"
        out[i] = codes.setdefault(key, len(codes))
    return out


def small_sample_caution(y: np.ndarray, groups: np.ndarray, classes: Sequence[str]) -> str | None:
    """A one-line caution when some class has fewer than :data:`MIN_UNITS_PER_CLASS` resampled units.

    ``groups`` are the integer ids of :func:`group_codes`; a unit is counted in its most common class, as the
    bootstrap strata are.
    """
    y = np.asarray(y, dtype=np.int64)
    if y.size == 0:
        return None
    _, group_index = np.unique(groups, return_inverse=True)
    strata = _group_strata(y, group_index, int(group_index.max()) + 1)
    counts = np.bincount(strata, minlength=len(classes))
    few = [f"{classes[c]} {int(n)}" for c, n in enumerate(counts) if n < MIN_UNITS_PER_CLASS]
    if not few:
        return None
    return (
        f"few cases per class ({', '.join(few)}; under {MIN_UNITS_PER_CLASS}): the bootstrap understates "
        "uncertainty this small, and an interval can shrink to zero width; read the intervals as rough"
    )


def resample_weights(y: np.ndarray, groups: np.ndarray, *, n_resamples: int, seed: int) -> Iterator[np.ndarray]:
    """Yield blocks of the ``(n_resamples, n)`` count matrix, drawing groups within class strata.

    ``groups`` holds an integer id per image (see :func:`group_codes`). A group's stratum is its most
    common class, so with one image per group this is the ordinary class-stratified bootstrap: every
    resample keeps the observed number of images of each class.
    """
    y = np.asarray(y)
    _, group_index = np.unique(groups, return_inverse=True)
    n_groups = int(group_index.max()) + 1
    strata = _group_strata(y, group_index, n_groups)
    members = [np.flatnonzero(strata == s) for s in np.unique(strata)]
    rng = np.random.default_rng(seed)
    block = max(1, min(n_resamples, _BLOCK_ENTRIES // max(len(y), n_groups)))
    done = 0
    while done < n_resamples:
        b = min(block, n_resamples - done)
        counts = np.zeros((b, n_groups), dtype=np.float64)
        rows = np.arange(b)[:, None]
        for ids in members:
            size = len(ids)
            draws = rng.integers(0, size, size=(b, size))
            flat = np.bincount((draws + rows * size).ravel(), minlength=b * size)
            counts[:, ids] = flat.reshape(b, size)
        yield counts[:, group_index]
        done += b


def _group_strata(y: np.ndarray, group_index: np.ndarray, n_groups: int) -> np.ndarray:
    k = int(y.max()) + 1
    table = np.zeros((n_groups, k), dtype=np.int64)
    np.add.at(table, (group_index, y), 1)
    return table.argmax(axis=1)


# ----- weighted metrics, one value per resample (row of W) ----------------------------------------------
def _ratio(num: np.ndarray, den: np.ndarray) -> np.ndarray:
    out = np.full(num.shape, np.nan)
    np.divide(num, den, out=out, where=den > 0)
    return out


class _SortedScores:
    """Scores sorted once, with the start of each run of tied values, reused for every block of W."""

    def __init__(self, scores: np.ndarray, is_pos: np.ndarray) -> None:
        self.order = np.argsort(scores, kind="mergesort")
        s = scores[self.order]
        self.starts = np.flatnonzero(np.r_[True, s[1:] != s[:-1]])
        self.pos = is_pos[self.order].astype(np.float64)
        self.neg = 1.0 - self.pos

    def tied_counts(self, W: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        Ws = W[:, self.order]
        P = np.add.reduceat(Ws * self.pos, self.starts, axis=1)
        N = np.add.reduceat(Ws * self.neg, self.starts, axis=1)
        return P, N

    def auc(self, W: np.ndarray) -> np.ndarray:
        """Weighted Mann-Whitney AUC: P(score_pos > score_neg) + 0.5 P(tie), per row of W."""
        P, N = self.tied_counts(W)
        below = np.cumsum(N, axis=1) - N
        num = np.sum(P * (below + 0.5 * N), axis=1)
        return _ratio(num, P.sum(axis=1) * N.sum(axis=1))

    def roc_tpr(self, W: np.ndarray, fpr_grid: np.ndarray) -> np.ndarray:
        """TPR interpolated at ``fpr_grid`` for each row of W (thresholds from high to low scores)."""
        P, N = self.tied_counts(W)
        tp = np.cumsum(P[:, ::-1], axis=1)
        fp = np.cumsum(N[:, ::-1], axis=1)
        zeros = np.zeros((len(W), 1))
        tpr = np.hstack([zeros, tp]) / np.maximum(tp[:, -1:], 1e-300)
        fpr = np.hstack([zeros, fp]) / np.maximum(fp[:, -1:], 1e-300)
        return np.vstack([np.interp(fpr_grid, f, t) for f, t in zip(fpr, tpr, strict=True)])


def _quantiles(values: np.ndarray, level: float) -> tuple[float | None, float | None, int]:
    finite = values[np.isfinite(values)]
    undefined = int(values.size - finite.size)
    if finite.size == 0:
        return None, None, undefined
    low, high = np.quantile(finite, [(1 - level) / 2, (1 + level) / 2])
    return float(low), float(high), undefined


def resampled_unit(codes: np.ndarray) -> str:
    """What a resample draws, in words: "group" when some group holds several images, else "image" (groups of
    one image are images, whichever command scored them)."""
    return "group" if len(np.unique(codes)) < len(codes) else "image"


def interval(value: float | None, samples: np.ndarray, level: float) -> dict[str, Any]:
    """``{"value", "ci_low", "ci_high"}`` (plus ``n_undefined`` when some resamples had no value)."""
    if value is None:
        return {"value": None, "ci_low": None, "ci_high": None}
    low, high, undefined = _quantiles(samples, level)
    out: dict[str, Any] = {"value": float(value), "ci_low": low, "ci_high": high}
    if undefined:
        out["n_undefined"] = undefined
    return out


def bootstrap_samples(
    y: np.ndarray,
    proba: np.ndarray,
    y_pred: np.ndarray,
    *,
    positive: int | None,
    groups: np.ndarray,
    config: BootstrapConfig,
    fpr_grid: np.ndarray | None = None,
) -> dict[str, np.ndarray]:
    """Resampled values of every metric: a dict of arrays of length ``config.n_resamples``.

    Keys: ``accuracy``, ``roc_auc``, ``brier``, ``precision/<i>`` and ``recall/<i>`` per class index, and
    for two classes (``positive`` set) ``sensitivity``, ``specificity`` and, with ``fpr_grid``, ``roc_tpr``
    (an ``(n_resamples, len(fpr_grid))`` array).
    """
    y = np.asarray(y, dtype=np.int64)
    n, k = proba.shape
    onehot = np.eye(k)[y]
    pred_onehot = np.eye(k)[np.asarray(y_pred, dtype=np.int64)]
    correct = (y == y_pred).astype(np.float64)
    hits = onehot * pred_onehot  # (n, k): true class c predicted as c
    if positive is not None:
        sorted_scores = [_SortedScores(proba[:, positive], y == positive)]
        brier_per = (proba[:, positive] - (y == positive)) ** 2
    else:
        sorted_scores = [_SortedScores(proba[:, c], y == c) for c in range(k)]
        brier_per = np.sum((proba - onehot) ** 2, axis=1)

    parts: dict[str, list[np.ndarray]] = {}

    def add(name: str, values: np.ndarray) -> None:
        parts.setdefault(name, []).append(values)

    for W in resample_weights(y, groups, n_resamples=config.n_resamples, seed=config.seed):
        total = W.sum(axis=1)
        add("accuracy", _ratio(W @ correct, total))
        add("brier", _ratio(W @ brier_per, total))
        true_c, pred_c, hit_c = W @ onehot, W @ pred_onehot, W @ hits
        for c in range(k):
            add(f"precision/{c}", _ratio(hit_c[:, c], pred_c[:, c]))
            add(f"recall/{c}", _ratio(hit_c[:, c], true_c[:, c]))
        aucs = np.vstack([s.auc(W) for s in sorted_scores])
        add("roc_auc", aucs.mean(axis=0))  # macro one-vs-rest for more than two classes
        if positive is not None:
            neg = 1 - positive
            add("sensitivity", _ratio(hit_c[:, positive], true_c[:, positive]))
            add("specificity", _ratio(hit_c[:, neg], true_c[:, neg]))
            if fpr_grid is not None:
                add("roc_tpr", sorted_scores[0].roc_tpr(W, fpr_grid))
    return {name: np.concatenate(chunks, axis=0) for name, chunks in parts.items()}


def paired_auc_samples(
    y: np.ndarray,
    probas: Sequence[np.ndarray],
    *,
    positive: int | None,
    groups: np.ndarray,
    config: BootstrapConfig,
) -> np.ndarray:
    """ROC AUC of several models on the same resamples: an array ``(len(probas), n_resamples)``.

    Each resample is drawn once and scored for every model, so differences between rows are paired.
    ``positive`` set: AUC of that class's probability; None: macro one-vs-rest AUC.
    """
    y = np.asarray(y, dtype=np.int64)
    k = probas[0].shape[1]
    classes = [positive] if positive is not None else list(range(k))
    sorted_scores = [[_SortedScores(np.asarray(p)[:, c], y == c) for c in classes] for p in probas]
    blocks = [
        np.vstack([np.mean([s.auc(W) for s in model], axis=0) for model in sorted_scores])
        for W in resample_weights(y, groups, n_resamples=config.n_resamples, seed=config.seed)
    ]
    return np.concatenate(blocks, axis=1)


def metric_intervals(
    point: dict[str, Any], samples: dict[str, np.ndarray], classes: Sequence[str], level: float
) -> dict[str, Any]:
    """Pair each point estimate in ``point`` (a compute_metrics dict plus ``brier``) with its interval."""
    out: dict[str, Any] = {}
    for name in ("roc_auc", "accuracy", "sensitivity", "specificity", "brier"):
        if name in samples:
            out[name] = interval(point.get(name), samples[name], level)
    for name in ("precision", "recall"):
        out[name] = {c: interval(point[name][c], samples[f"{name}/{i}"], level) for i, c in enumerate(classes)}
    return out


def roc_band(samples: dict[str, np.ndarray], fpr_grid: np.ndarray, level: float) -> dict[str, list[float]] | None:
    """Pointwise percentile band of the ROC curve (TPR at fixed FPR), or None without two classes."""
    tpr = samples.get("roc_tpr")
    if tpr is None:
        return None
    low, high = np.quantile(tpr, [(1 - level) / 2, (1 + level) / 2], axis=0)
    return {
        "fpr": [round(float(v), 6) for v in fpr_grid],
        "tpr_low": [round(float(v), 6) for v in low],
        "tpr_high": [round(float(v), 6) for v in high],
    }
