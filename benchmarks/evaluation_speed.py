"""Benchmark: how long the evaluation numbers take, against the bare work inside them, measured in this run.

Two figures, each the median of ``--runs`` runs:

1. ``xvision cv`` on 148 images x 1,280-d features (74 patients, 5 folds, 20 epochs of the default 512-512
   head, 2,000 bootstrap resamples, plots): the whole command (``cross_validate``) against the five bare
   ``MLPClassifier.fit`` + ``predict_proba`` calls on the same folds. The ratio is what the command adds
   (grouped folds, threshold, bootstrap, plots, atomic writes). The goal is under 60 s on 2 cores.
2. ``score_predictions`` on 300 images of 150 patients, 2,000 patient-level resamples (AUC, sensitivity,
   specificity, ... with intervals) against the loop a first version writes: 2,000 calls of scikit-learn's
   ``roc_auc_score`` on resampled patients (the AUC alone). The goal is about a second.

    python benchmarks/evaluation_speed.py [--runs 3]

Ends with one line: ``cv_s=... bare_fits_s=... cv_ratio=... bootstrap_s=... naive_auc_s=... bootstrap_ratio=...``.
Speed goals live here, not in timed tests: the test suite checks what these commands compute.
"""

from __future__ import annotations

import argparse
import hashlib
import statistics
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

from xvision.evaluation import score_predictions
from xvision.evaluation.crossval import cross_validate
from xvision.features.store import FeatureStore, IndexRow
from xvision.heads import MLPClassifier

CLASSES = ("nodule", "normal")
BACKBONE = {
    "name": "synthetic",
    "weights": {"source": "file", "name": "synthetic.safetensors", "sha256": "0" * 64, "pretrained": True},
    "preprocess": {"input_size": 8, "resize": "squash", "interpolation": "bilinear", "mean": [0.5], "std": [0.5]},
}


def write_store(root: Path, n_patients: int = 74, per_patient: int = 2, dim: int = 1280) -> Path:
    """CNN-code-like vectors (non-negative, a patient effect, a weak class shift) in a feature store."""
    rng = np.random.default_rng(1)
    rows, vectors = [], []
    for g in range(n_patients):
        label = g % 2
        patient = rng.normal(scale=0.5, size=dim)
        for v in range(per_patient):
            x = rng.normal(size=dim) + patient
            x[:4] += 0.8 * label
            sha = hashlib.sha256(f"{g}-{v}".encode()).hexdigest()
            path = f"{CLASSES[label]}/P{g:03d}_v{v}.png"
            rows.append(IndexRow(path, CLASSES[label], f"P{g:03d}", "", sha, "ok", "", {}))
            vectors.append(np.abs(x))
    store = FeatureStore(root)
    store.write_meta({"backbone": {**BACKBONE, "feature_dim": dim}, "manifest": None})
    store.append([r.sha256 for r in rows], np.asarray(vectors, dtype=np.float32))
    store.write_index(rows)
    return root


def time_cv(store: Path, out: Path) -> float:
    start = time.perf_counter()
    cross_validate(store, out, progress=False)
    return time.perf_counter() - start


def time_bare_fits(store: Path) -> float:
    """The five fits of the cv's first repeat, on the same grouped folds, and nothing else."""
    import torch
    from sklearn.model_selection import StratifiedGroupKFold

    from xvision.features.dataset import load_split

    data = load_split(store, None)
    y = np.array([sorted(CLASSES).index(label) for label in data.labels])
    groups = np.array([row.group for row in data.rows])
    folds = StratifiedGroupKFold(n_splits=5, shuffle=True, random_state=0).split(data.X, y, groups)
    threads = torch.get_num_threads()
    torch.set_num_threads(1)  # as cross_validate does
    try:
        start = time.perf_counter()
        for train, test in folds:
            MLPClassifier().fit(data.X[train], y[train]).predict_proba(data.X[test])
        return time.perf_counter() - start
    finally:
        torch.set_num_threads(threads)


def scores(rng: np.random.Generator) -> tuple[np.ndarray, np.ndarray, list[str]]:
    y = np.r_[np.zeros(200, dtype=int), np.ones(100, dtype=int)]
    s = rng.normal(size=300) + 1.0 * y
    groups = [f"P{i // 2}" for i in range(300)]
    return y, s, groups


def time_bootstrap(y: np.ndarray, s: np.ndarray, groups: list[str]) -> float:
    p = 1 / (1 + np.exp(-s))
    proba = np.c_[1 - p, p]
    start = time.perf_counter()
    score_predictions(y, proba, ["normal", "nodule"], groups=groups)
    return time.perf_counter() - start


def time_naive_auc(y: np.ndarray, s: np.ndarray, groups: list[str]) -> float:
    from sklearn.metrics import roc_auc_score

    units = sorted(set(groups))
    members = {u: [i for i, g in enumerate(groups) if g == u] for u in units}
    rng = np.random.default_rng(0)
    start = time.perf_counter()
    for _ in range(2000):
        drawn = rng.choice(len(units), len(units))
        index = [i for u in drawn for i in members[units[u]]]
        if len(set(y[index])) == 2:
            roc_auc_score(y[index], s[index])
    return time.perf_counter() - start


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--runs", type=int, default=3)
    args = parser.parse_args(argv)
    cv, bare, boot, naive = [], [], [], []
    with tempfile.TemporaryDirectory() as tmp:
        store = write_store(Path(tmp) / "features")
        y, s, groups = scores(np.random.default_rng(0))
        for run in range(args.runs):
            cv.append(time_cv(store, Path(tmp) / f"cv{run}"))
            bare.append(time_bare_fits(store))
            boot.append(time_bootstrap(y, s, groups))
            naive.append(time_naive_auc(y, s, groups))
            print(
                f"run {run + 1}: cv {cv[-1]:.1f} s, bare fits {bare[-1]:.1f} s, "
                f"bootstrap {boot[-1]:.2f} s, naive AUC loop {naive[-1]:.2f} s",
                file=sys.stderr,
            )
    cv_s, bare_s = statistics.median(cv), statistics.median(bare)
    boot_s, naive_s = statistics.median(boot), statistics.median(naive)
    print(
        f"cv_s={cv_s:.1f} bare_fits_s={bare_s:.1f} cv_ratio={cv_s / bare_s:.2f} "
        f"bootstrap_s={boot_s:.2f} naive_auc_s={naive_s:.2f} bootstrap_ratio={boot_s / naive_s:.2f}"
    )
    return 0


if __name__ == "__main__":
    sys.exit(main())
