"""Without a validation split `fit` decides at 0.5. Would a threshold tuned on the training images do better?

For each fold run of an `xvision cv MANIFEST --recipe NAME` folder, this re-trains the fold's head (same
parameters) in an inner 5-fold cross-validation on that fold's training features, picks Youden's threshold
on those inner out-of-fold probabilities (the way scikit-learn's TunedThresholdClassifierCV tunes one), and
applies it to the fold's held-out probabilities. It prints the pooled sensitivity, specificity and balanced
accuracy at 0.5 and at the tuned thresholds, ending with one line
``recipe=... default_balacc=... tuned_balacc=... default_sens=... default_spec=... tuned_sens=... tuned_spec=...``.
Two classes; the positive class is the run's own.

    xvision cv jsrt.csv --recipe best -o cv_best
    python benchmarks/threshold_without_val.py cv_best
"""

from __future__ import annotations

import argparse
import csv
import json
import sys
from pathlib import Path

import numpy as np
from sklearn.model_selection import StratifiedKFold

from xvision.evaluation.threshold import ThresholdRule, choose_threshold
from xvision.features.dataset import load_split
from xvision.heads import MLPClassifier


def tuned_threshold(run: Path, positive: str, classes: list[str]) -> float:
    """Youden's threshold on inner 5-fold (fewer on tiny folds) out-of-fold probabilities of the run's head on
    its training split."""
    params = json.loads((run / "bundle.json").read_text())["head"]["params"]
    params["hidden"] = tuple(params["hidden"])
    train = load_split(run / "features", "train", mmap=False)
    X, labels = np.asarray(train.X), np.asarray(train.labels)
    y = (labels == positive).astype(int)
    oof = np.zeros(len(y))
    splits = min(5, int(np.bincount(y, minlength=2).min()))  # 5, or fewer on tiny folds
    if splits < 2:
        raise SystemExit(f"{run}: a class has fewer than 2 training images; no inner cross-validation")
    for fit_idx, held in StratifiedKFold(splits, shuffle=True, random_state=0).split(X, y):
        head = MLPClassifier(**params).fit(X[fit_idx], labels[fit_idx], classes=classes)
        oof[held] = head.predict_proba(X[held])[:, classes.index(positive)]
    return choose_threshold(y, oof, ThresholdRule.parse("youden"))["value"]


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("cv_dir", type=Path, help="an `xvision cv MANIFEST --recipe NAME` output folder")
    args = parser.parse_args(argv)
    folds = sorted((args.cv_dir / "folds").glob("repeat-1-fold-*"))
    if not folds:
        print(f"error: no folds/repeat-1-fold-* in {args.cv_dir}", file=sys.stderr)
        return 2
    ys, scores, cuts = [], [], []
    for fold in folds:
        run = fold / "run"
        bundle = json.loads((run / "bundle.json").read_text())
        positive, classes = bundle["positive"], bundle["classes"]
        cut = tuned_threshold(run, positive, classes)
        with open(run / "predictions.csv", newline="", encoding="utf-8") as handle:
            rows = list(csv.DictReader(handle))
        ys.append(np.array([r["label"] == positive for r in rows]))
        scores.append(np.array([float(r[f"p_{positive}"]) for r in rows]))
        cuts.append(cut)
        print(f"{fold.name}: tuned threshold {cut:.3f}", flush=True)
    y = np.concatenate(ys)
    figures = {}
    for name, thresholds in (("default", [0.5] * len(cuts)), ("tuned", cuts)):
        decided = np.concatenate([s >= t for s, t in zip(scores, thresholds, strict=True)])
        sens, spec = decided[y].mean(), 1 - decided[~y].mean()
        figures[name] = (sens, spec, (sens + spec) / 2)
        print(f"{name}: sensitivity {sens:.3f}, specificity {spec:.3f}, balanced accuracy {(sens + spec) / 2:.3f}")
    recipe = json.loads((args.cv_dir / "cv_recipe.json").read_text())["recipe"]
    (ds, dp, db), (ts, tp, tb) = figures["default"], figures["tuned"]
    print(
        f"recipe={recipe} default_balacc={db:.3f} tuned_balacc={tb:.3f} default_sens={ds:.3f} "
        f"default_spec={dp:.3f} tuned_sens={ts:.3f} tuned_spec={tp:.3f}"
    )
    return 0


if __name__ == "__main__":
    sys.exit(main())
