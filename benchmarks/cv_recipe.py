"""Cross-validate a whole recipe (fine-tuning included) on a manifest: the evidence behind docs/recipes.md.

The product command is `xvision cv MANIFEST --recipe NAME -o OUT` (`fit` once per fold; see
docs/evaluation.md). This script runs the same code and adds what only the measurements need:

    python benchmarks/jsrt_manifest.py -o jsrt.csv
    python benchmarks/cv_recipe.py jsrt.csv --recipe finetune --folds 5 -o cv_finetune
    python benchmarks/cv_recipe.py jsrt.csv --recipe best --members 1 -o cv_best_one   # one detector
    python benchmarks/cv_recipe.py jsrt.csv --recipe best -o cv_best --only-fold 3     # one fold per process

Finished folds are reused when the command is run again, and an unfinished fold resumes. Ends with one
line: ``recipe=... auc=... ci_low=... ci_high=... sens_at_90spec=... n=... minutes=...``.
"""

from __future__ import annotations

import argparse
import sys
import time
from dataclasses import replace

from xvision.evaluation.crossval import CVConfig
from xvision.evaluation.crossval_recipe import cross_validate_recipe
from xvision.recipes import registry


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("manifest")
    parser.add_argument("--recipe", default="best")
    parser.add_argument("--folds", type=int, default=5)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("-o", "--out", required=True)
    parser.add_argument("--only-fold", type=int, help="fit just this fold (1-based), e.g. one process per fold")
    parser.add_argument(
        "--members", type=int, help="detectors of a detect/best run (default: the recipe's; 1 = one detector)"
    )
    parser.add_argument("--weights", help="starting weights for the recipe's backbone (default: its usual ones)")
    args = parser.parse_args(argv)
    if args.members is not None:
        recipe = registry.get_recipe(args.recipe)
        registry._RECIPES[args.recipe] = replace(recipe, finetune=replace(recipe.finetune, members=args.members))

    started = time.perf_counter()
    metrics = cross_validate_recipe(
        args.manifest,
        args.out,
        recipe=args.recipe,
        weights=args.weights,
        config=CVConfig(folds=args.folds, seed=args.seed),
        only_fold=args.only_fold,
    )
    minutes = (time.perf_counter() - started) / 60
    if metrics is None:
        print(f"fold {args.only_fold}: done ({minutes:.1f} min)")
        return 0
    auc = metrics["intervals"]["roc_auc"]
    print(
        f"recipe={args.recipe} auc={auc['value']:.3f} ci_low={auc['ci_low']:.3f} ci_high={auc['ci_high']:.3f} "
        f"sens_at_90spec={metrics['sensitivity_at_90_specificity']:.2f} n={metrics['n']} minutes={minutes:.1f}"
    )
    return 0


if __name__ == "__main__":
    sys.exit(main())
