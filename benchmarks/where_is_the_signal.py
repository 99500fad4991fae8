"""Where in the film does a frozen network's image-level signal come from: the lungs, or around them?

For each image of a manifest with a ``mask`` column (lung fields), EfficientNet-Lite0 (ImageNet, frozen)
computes its stride-16 feature map at 1024 px (blocks 3, 5 and 7, 472 channels; 64 x 64 cells). Each channel
is summarised over a region and a standardised logistic regression is cross-validated on the summaries
(stratified 5-fold, 3 repeats; ROC AUC averaged over repeats):
- ``spread_*``: standard deviation over the whole film (less a 4-cell border), over the image's own lung
  mask, and over everything outside the lung atlas (the mean of all masks);
- ``max_*``: the maximum of block 5's 112 channels (what the ``best`` recipe pools) over the whole film,
  over its outer 2 cells only, and over the film less a 5% border (``efficientnet_lite0_768_inside``).

If the film outside the lungs, or its edge, predicts nodules better than the lungs do, the data carries a
shortcut that a whole-image model will learn. On JSRT it does (docs/recipes.md).

    python benchmarks/jsrt_manifest.py -o jsrt.csv
    python benchmarks/where_is_the_signal.py jsrt.csv

Ends with one line of ``name=auc`` pairs.
"""

from __future__ import annotations

import argparse
import sys

import numpy as np
import torch
import torch.nn.functional as F
from sklearn.linear_model import LogisticRegression
from sklearn.metrics import roc_auc_score
from sklearn.model_selection import StratifiedKFold, cross_val_predict
from sklearn.pipeline import make_pipeline
from sklearn.preprocessing import StandardScaler
from tqdm import tqdm

from xvision.backbones import create_backbone
from xvision.data.manifest import read_manifest
from xvision.evaluation.threshold import default_positive
from xvision.io import load_image

SIZE = 1024
GRID = SIZE // 16


@torch.no_grad()
def dense_features(model: torch.nn.Module, image: np.ndarray) -> np.ndarray:
    """(GRID, GRID, 472) features of blocks 3 (pooled to stride 16), 5 and 7 (upsampled to stride 16)."""
    x = torch.from_numpy(image)[None, None]
    x = F.interpolate(x, size=(SIZE, SIZE), mode="bilinear", antialias=True, align_corners=False)
    x = ((x - 0.5) / 0.5).expand(1, 3, SIZE, SIZE).contiguous()
    h = model.bn1(model.conv_stem(x))
    outputs = []
    for stage in model.blocks:
        h = stage(h)
        outputs.append(h)
    parts = [
        F.avg_pool2d(outputs[2], 2),
        outputs[4],
        F.interpolate(outputs[6], size=(GRID, GRID), mode="bilinear", align_corners=False),
    ]
    return torch.cat(parts, 1)[0].permute(1, 2, 0).numpy()


def cv_auc(X: np.ndarray, y: np.ndarray, repeats: int = 3, c: float = 0.1) -> float:
    scores = []
    for repeat in range(repeats):
        model = make_pipeline(StandardScaler(), LogisticRegression(C=c, max_iter=5000))
        folds = StratifiedKFold(5, shuffle=True, random_state=repeat)
        p = cross_val_predict(model, X, y, cv=folds, method="decision_function")
        scores.append(roc_auc_score(y, p))
    return float(np.mean(scores))


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("manifest")
    args = parser.parse_args(argv)
    manifest = read_manifest(args.manifest)
    if "mask" not in manifest.columns:
        print(f"error: {args.manifest} has no mask column (lung-field masks)", file=sys.stderr)
        return 2
    positive = default_positive(manifest.classes)
    model = create_backbone("efficientnet_lite0").model.body.model.eval()
    feats, masks, y = [], [], []
    for row in tqdm(manifest.rows, desc="features", unit="img"):
        feats.append(dense_features(model, load_image(manifest.resolve(row))))
        mask = load_image(manifest.root / row.get("mask"))  # type: ignore[operator]
        small = F.adaptive_avg_pool2d(torch.from_numpy(mask)[None, None], GRID)[0, 0].numpy()
        masks.append(small > 0.5 * small.max())
        y.append(int(row.label == positive))
    X, lungs, labels = np.stack(feats), np.stack(masks), np.array(y)
    atlas = lungs.mean(0) > 0.3
    border = np.zeros((GRID, GRID), bool)
    border[4:-4, 4:-4] = True
    ring = np.ones((GRID, GRID), bool)
    ring[2:-2, 2:-2] = False  # the outer 2 cells (32 px of 1024)
    margin = int(np.ceil(0.05 * GRID))
    inner = np.zeros((GRID, GRID), bool)
    inner[margin:-margin, margin:-margin] = True
    block5 = slice(40, 152)  # the 112 channels efficientnet_lite0_768(_inside) pool
    result = {
        "spread_whole": cv_auc(np.stack([x[border].std(0) for x in X]), labels),
        "spread_lungs": cv_auc(np.stack([x[m].std(0) for x, m in zip(X, lungs, strict=True)]), labels),
        "spread_outside_lungs": cv_auc(np.stack([x[~atlas & border].std(0) for x in X]), labels),
        "max_whole": cv_auc(np.stack([x[..., block5].reshape(-1, 112).max(0) for x in X]), labels, c=0.01),
        "max_outer_ring": cv_auc(np.stack([x[ring][:, block5].max(0) for x in X]), labels, c=0.01),
        "max_inside_5pct": cv_auc(np.stack([x[inner][:, block5].max(0) for x in X]), labels, c=0.01),
    }
    print(" ".join(f"{k}={v:.3f}" for k, v in result.items()))
    return 0


if __name__ == "__main__":
    sys.exit(main())
