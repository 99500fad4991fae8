"""Cross-validate a whole recipe (fine-tuning included) on a manifest: the evidence behind docs/recipes.md.

`xvision cv` cross-validates a head on a fixed feature store. A recipe that fine-tunes its backbone must
retrain the backbone in every fold, so this script runs `xvision fit` once per fold instead: grouped,
stratified folds; each fold's manifest has the held-out images as its test split; the out-of-fold
probabilities are pooled and scored with the same code as `xvision evaluate` (bootstrap intervals).

    python benchmarks/jsrt_manifest.py -o jsrt.csv
    python benchmarks/cv_recipe.py jsrt.csv --recipe finetune --folds 5 -o cv_finetune
    python benchmarks/cv_recipe.py jsrt.csv --recipe best --members 1 -o cv_best_one   # one detector

Folds already finished are reused when the command is run again (each fold is an ordinary run folder), and
an interrupted fold resumes (its finished training rounds and extracted features are kept). To score
finished folds again with trained networks kept (e.g. after a change to extraction), delete everything in
their ``fold-N/run`` but ``finetune/`` and run the same command.
Ends with one line: ``recipe=... auc=... ci_low=... ci_high=... sens_at_90spec=... minutes=...``.
"""

from __future__ import annotations

import argparse
import csv
import json
import shutil
import sys
import time
from pathlib import Path

import numpy as np
from sklearn.model_selection import StratifiedGroupKFold

from xvision.data.manifest import read_manifest, write_manifest
from xvision.evaluation.scoring import score_predictions
from xvision.evaluation.threshold import default_positive
from xvision.recipes import fit


def sensitivity_at_specificity(y: np.ndarray, score: np.ndarray, specificity: float) -> float:
    """Sensitivity with the threshold at the ``specificity`` quantile of the negatives' scores."""
    cut = np.quantile(score[y == 0], specificity)
    return float(np.mean(score[y == 1] > cut))


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("manifest")
    parser.add_argument("--recipe", default="best")
    parser.add_argument("--folds", type=int, default=5)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("-o", "--out", required=True)
    parser.add_argument(
        "--only-fold", type=int, help="run just this fold (1-based), e.g. to spread folds over machines"
    )
    parser.add_argument(
        "--members", type=int, help="detectors of a detect/best run (default: the recipe's; 1 = one detector)"
    )
    parser.add_argument("--weights", help="starting weights for the recipe's backbone (default: its usual ones)")
    args = parser.parse_args(argv)
    if args.only_fold is not None and not 1 <= args.only_fold <= args.folds:
        parser.error(f"--only-fold {args.only_fold}: choose 1 to {args.folds}")
    if args.members is not None:
        from dataclasses import replace

        from xvision.recipes import registry

        recipe = registry.get_recipe(args.recipe)
        registry._RECIPES[args.recipe] = replace(recipe, finetune=replace(recipe.finetune, members=args.members))

    manifest = read_manifest(args.manifest)
    positive = default_positive(manifest.classes)
    y = np.array([row.label == positive for row in manifest.rows], dtype=int)
    groups = [row.group or row.path for row in manifest.rows]
    folds = StratifiedGroupKFold(args.folds, shuffle=True, random_state=args.seed)
    out = Path(args.out)
    started = time.perf_counter()
    oof = np.full(len(y), np.nan)
    for number, (_, test) in enumerate(folds.split(np.zeros(len(y)), y, groups), start=1):
        if args.only_fold and number != args.only_fold:
            continue
        test_set = set(test.tolist())
        splits = {row.path: "test" if i in test_set else "train" for i, row in enumerate(manifest.rows)}
        fold_dir = out / f"fold-{number}"
        fold_manifest = write_manifest(manifest.with_splits(splits), fold_dir / "manifest.csv")
        run = fold_dir / "run"
        if not (run / "predictions.csv").exists():
            # An unfinished fold resumes: finished detector rounds or epochs (finetune/) and extracted features
            # are kept, anything of a head is redone.
            for leftover in run.iterdir() if run.exists() else ():
                if leftover.name not in ("features", "finetune"):
                    shutil.rmtree(leftover) if leftover.is_dir() else leftover.unlink()
            fit(fold_manifest, run, recipe=args.recipe, weights=args.weights, seed=args.seed)
        with open(run / "predictions.csv", newline="", encoding="utf-8") as handle:
            scores = {r["path"]: float(r[f"p_{positive}"]) for r in csv.DictReader(handle)}
        for i in test:
            oof[i] = scores[manifest.rows[i].path]
        print(f"fold {number}: done ({(time.perf_counter() - started) / 60:.1f} min)", flush=True)

    done = ~np.isnan(oof)
    proba = np.stack([1 - oof[done], oof[done]], axis=1)
    metrics = score_predictions(
        y[done],
        proba,
        ["other", positive],
        positive=positive,
        threshold=None,
        groups=[groups[i] for i in np.flatnonzero(done)],
    )
    auc = metrics["intervals"]["roc_auc"]
    sens = sensitivity_at_specificity(y[done], oof[done], 0.9)
    minutes = (time.perf_counter() - started) / 60
    (out / "summary.json").write_text(
        json.dumps(
            {"recipe": args.recipe, "roc_auc": auc, "sens_at_90spec": sens, "n": int(done.sum()), "minutes": minutes},
            indent=2,
        )
        + "\n"
    )
    print(
        f"recipe={args.recipe} auc={auc['value']:.3f} ci_low={auc['ci_low']:.3f} ci_high={auc['ci_high']:.3f} "
        f"sens_at_90spec={sens:.2f} "
        f"n={int(done.sum())} minutes={minutes:.1f}"
    )
    return 0


if __name__ == "__main__":
    sys.exit(main())
