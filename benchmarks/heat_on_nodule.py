"""Does a run's Grad-CAM heat sit on the nodule? A number instead of a few pictures.

For every nodule image of a manifest's split that has a lesion location and a lung mask, this computes the
run's Grad-CAM for the positive class (``xvision.inference.heatmap``) and asks where the lesion centre's heat
ranks among the heat of all lung pixels (percentile: 50 = what a random lung point gets, 100 = the hottest
point). It prints each image's percentile and ends with one line:
``images=... median_percentile=... top10_fraction=... above_50=... below_50=... sign_test_p=...``
(top10_fraction: share of nodules whose centre lies in the hottest 10% of the lungs, chance 0.10; the sign
test asks whether more centres lie above the lungs' median heat than below, two-sided; scipy comes with
scikit-learn).

    xvision cv jsrt.csv --recipe best -o cv_best
    fold=cv_best/folds/repeat-1-fold-1
    python benchmarks/heat_on_nodule.py $fold/run $fold/manifest.csv --split test
"""

from __future__ import annotations

import argparse
import sys

import numpy as np
from scipy.stats import binomtest

from xvision.data.manifest import read_manifest
from xvision.finetune.targets import lesion_of
from xvision.inference import Predictor
from xvision.inference.heatmap import gradcam
from xvision.io import load_image


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("run")
    parser.add_argument("manifest")
    parser.add_argument("--split", default=None, help="only rows of this split (default: all rows)")
    args = parser.parse_args(argv)

    manifest = read_manifest(args.manifest)
    predictor = Predictor(args.run)
    positive = predictor.positive
    percentiles = []
    for row in manifest.rows:
        if (args.split and row.split != args.split) or row.label != positive:
            continue
        lesion = lesion_of(row, f"{manifest.name}: {row.path}")
        mask_path = manifest.resolve_column(row, "mask")
        if lesion is None or mask_path is None:
            continue
        image = load_image(manifest.resolve(row))
        lungs = load_image(mask_path) > 0
        heat = gradcam(predictor, image)
        x, y, _ = lesion
        at = heat[min(int(y), heat.shape[0] - 1), min(int(x), heat.shape[1] - 1)]
        lung_heat = heat[lungs]  # mid-rank for ties: a sparse map is zero over most of the lungs, and "<=" would
        # rank a cold nodule centre as hot as the zeros' top
        percentile = 100.0 * float(np.mean(lung_heat < at) + 0.5 * np.mean(lung_heat == at))
        percentiles.append(percentile)
        print(f"{row.path}: heat at the nodule centre = percentile {percentile:.0f} of the lungs' heat", flush=True)
    if not percentiles:
        print("error: no nodule image with lesion columns and a mask in that split", file=sys.stderr)
        return 2
    values = np.array(percentiles)
    above, below = int(np.sum(values > 50)), int(np.sum(values < 50))
    sign_p = binomtest(above, above + below).pvalue if above + below else 1.0  # H0: no pull toward the nodule
    print(
        f"images={len(values)} median_percentile={np.median(values):.1f} "
        f"top10_fraction={np.mean(values >= 90):.2f} above_50={above} below_50={below} sign_test_p={sign_p:.3f}"
    )
    return 0


if __name__ == "__main__":
    sys.exit(main())
