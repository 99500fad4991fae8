"""Would the detector gain from looking only inside the lungs? Pool its map several ways on held-out films.

The `detect` recipe scores a film by the highest "lesion here" logit over the film less its 5% border. Its
top position lies on the nodule in only about a quarter of nodule films; if the other maxima sit outside the
lungs (shoulders, abdomen, the mediastinum), pooling over the lung fields would help, and would be worth a
lung model at prediction time. This script measures that upper bound with the manifest's true lung masks
(``mask`` column), on the fold runs that ``xvision cv MANIFEST --recipe best`` leaves (each fold's detector was
trained without its test films):

    xvision cv jsrt.csv --recipe best --folds 5 -o cv_best
    python benchmarks/detector_pooling.py cv_best

Pooling ways: ``inside`` (the product's), ``lung`` (max over cells a dilated true lung mask touches),
``top4`` (mean of the 4 highest cells inside), ``lse`` (log-sum-exp inside), ``mirror1`` / ``mirror2`` (the
highest place of the map less the highest logit within 1 / 2 cells of its left-right mirror image: ribs and
vessels come in pairs, a nodule does not), ``centred`` (the highest place less the film's median logit).
Prints per-fold ROC AUC for each and the mean over folds, ending with one line ``inside=... lung=... ...``
(mean fold AUC).

``--shifts`` adds test-time shifts: the film also goes through the detectors moved by part of a map cell (32
px), and ``shift2`` / ``shift6`` score it by the mean of ``inside`` over 2 / 6 placements (six times the
network time).
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F
from crop_detector import detector_nets
from sklearn.metrics import roc_auc_score

from xvision.backbones.preprocess import preprocess_image
from xvision.backbones.registry import LESION_BACKBONE, get_spec, max_inside
from xvision.data.manifest import read_manifest
from xvision.evaluation.threshold import default_positive
from xvision.finetune.config import FINETUNE_DIR, WEIGHTS_NAME
from xvision.finetune.trainer import _lung_field
from xvision.io import load_image

WAYS = ("inside", "lung", "top4", "lse", "mirror1", "mirror2", "centred")


SHIFTS = ((0, 0), (16, 16), (0, 16), (16, 0), (8, 8), (24, 24))
"""(down, right) pixels; ``shift2`` uses the first two."""


def shifted(x: torch.Tensor, down: int, right: int) -> torch.Tensor:
    """The image moved down and right, the edge rows and columns repeated into the gap."""
    if not (down or right):
        return x
    return F.pad(x, (right, 0, down, 0), mode="replicate")[..., : x.shape[-2], : x.shape[-1]]


def pool(dense: torch.Tensor, lung: torch.Tensor | None) -> dict[str, float]:
    """dense: (n, n) logits; lung: (n, n) coverage in [0, 1] or None."""
    n = dense.shape[-1]
    d = int(np.ceil(0.05 * n))
    inside = dense[d : n - d, d : n - d].flatten()
    out = {
        "inside": float(max_inside(dense[None, None])[0, 0]),
        "top4": float(inside.topk(4).values.mean()),
        "lse": float(torch.logsumexp(inside, 0)),
    }
    # Left-right comparison: ribs, vessels and the chest wall come in mirrored pairs, a nodule does not. A
    # cell's evidence less the highest logit near its mirror image (1 or 2 cells of slack: the spine is
    # rarely at the film's centre).
    mirrored = dense.flip(-1)
    for slack in (1, 2):
        near = F.max_pool2d(mirrored[None, None], 2 * slack + 1, 1, slack)[0, 0]
        out[f"mirror{slack}"] = float(max_inside((dense - near)[None, None])[0, 0])
    out["centred"] = out["inside"] - float(inside.median())  # a film whose whole map runs high
    if lung is not None:
        cells = F.max_pool2d((lung > 0)[None, None].float(), 3, 1, 1)[0, 0] > 0  # one cell of slack
        out["lung"] = float(dense[cells].max()) if cells.any() else out["inside"]
    return out


@torch.no_grad()
def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("cv_dir", type=Path, help="an `xvision cv MANIFEST --recipe detect` (or best) output folder")
    parser.add_argument("--shifts", action="store_true", help="also score test-time shifts (6x slower)")
    args = parser.parse_args(argv)
    ways = WAYS + (("shift2", "shift6") if args.shifts else ())
    folds = sorted(args.cv_dir.glob("folds/repeat-1-fold-*")) or sorted(args.cv_dir.glob("fold-*"))  # or older
    if not folds:
        print(f"error: no folds/repeat-1-fold-* folders in {args.cv_dir}", file=sys.stderr)
        return 2
    preprocess = get_spec(LESION_BACKBONE).preprocess
    per_fold: dict[str, list[float]] = {way: [] for way in ways}
    for fold in folds:
        weights = fold / "run" / FINETUNE_DIR / WEIGHTS_NAME
        manifest = read_manifest(fold / "manifest.csv")
        positive = default_positive(manifest.classes)
        nets = detector_nets(weights)
        labels, scores = [], {way: [] for way in ways}
        for row in (r for r in manifest.rows if r.split == "test"):
            x = preprocess_image(load_image(manifest.resolve(row)), preprocess)[None]  # as `predict` does
            maps = [net(x)[0] for net in nets]
            lung = _lung_field(manifest, row, maps[0].shape[-1])
            pooled = pool(torch.stack(maps).mean(0), lung)  # several detectors: their mean map, as the registry
            if args.shifts:
                tops = [pooled["inside"]] + [
                    float(max_inside(torch.stack([net(shifted(x, *move))[0] for net in nets]).mean(0)[None, None]))
                    for move in SHIFTS[1:]
                ]
                pooled["shift2"], pooled["shift6"] = float(np.mean(tops[:2])), float(np.mean(tops))
            for way in ways:
                scores[way].append(pooled.get(way, np.nan))
            labels.append(int(row.label == positive))
        line = []
        for way in ways:
            values = np.array(scores[way])
            auc = roc_auc_score(labels, values) if not np.isnan(values).any() else np.nan
            per_fold[way].append(auc)
            line.append(f"{way} {auc:.3f}")
        print(f"{fold.name}: " + ", ".join(line), flush=True)
    print(" ".join(f"{way}={np.nanmean(per_fold[way]):.3f}" for way in ways))
    return 0


if __name__ == "__main__":
    sys.exit(main())
