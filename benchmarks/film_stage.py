"""Would a film-level ranking stage after the crop training help the detector? Measured on held-out folds.

The `detect` recipe (and so `best`) trains its detectors on 256 px crops; a film is then scored by its
highest "lesion here" logit. Its limit is false maxima on normal films (docs/recipes.md), and crops never
compare a nodule with the hottest place of another, whole film. This script adds that comparison as a
second stage, starting from each fold's finished detector in the folder ``xvision cv MANIFEST --recipe
best`` leaves (trained without the fold's test films), and scores the test films before and after:

- each step takes two nodule films and two normal films of the fold's training split, whole, at 1024 px,
  with mild augmentation (rotation +-4 degrees, scale 0.95-1.05, the usual intensity changes);
- the loss is a pairwise ranking loss, softplus(normal film's highest logit over the film less its border -
  nodule film's highest logit on its lesion cells), averaged over the four pairs, plus the crop training's
  dense lesion loss on the same whole films (so the map keeps its meaning);
- AdamW (the lesion unit at 3x the body's learning rate), cosine decay over ``--steps``, stem and first
  three stages frozen, BatchNorm statistics kept, bf16 where native.

    xvision cv jsrt.csv --recipe best --folds 5 -o cv_best
    python benchmarks/film_stage.py cv_best --member 1 --steps 200 --lr 1e-4

Prints each fold's held-out ROC AUC before and after (the detector's own score, as the network scores it in
training: bf16 where native) and ends with one line ``before=... after=...`` (mean fold AUC).
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F
from crop_detector import detector_nets
from sklearn.metrics import roc_auc_score

from xvision.backbones.registry import LESION_BACKBONE, LESION_UNIT, get_spec, max_inside
from xvision.data.manifest import read_manifest
from xvision.evaluation.threshold import default_positive
from xvision.finetune.augment import augment_intensity, random_affine, warp
from xvision.finetune.config import AugmentConfig
from xvision.finetune.detector import DetectorNet, _dense_maps
from xvision.finetune.trainer import _dense_loss, _load_samples, _pick_dtype, _Sample, _to_input

AUGMENT = AugmentConfig(rotation_deg=4.0, scale=(0.95, 1.05), translate=0.0)  # whole films: small black wedges


def film_scores(net: DetectorNet, samples: list[_Sample], preprocess, device, dtype) -> np.ndarray:
    return np.array(
        [float(max_inside(d[None, None])[0, 0]) for d in _dense_maps(net, samples, preprocess, device, dtype)]
    )


def film_stage(
    net: DetectorNet, train: list[_Sample], steps: int, lr: float, seed: int, preprocess, device, dtype
) -> None:
    """Train ``net`` in place for ``steps`` steps of two nodule films against two normal films."""
    model = net.model
    for module in [model.conv_stem, model.bn1, *list(model.blocks)[:3]]:
        module.requires_grad_(False)
    unit = [p for n, p in model.named_parameters() if p.requires_grad and n.startswith(LESION_UNIT)]
    body = [p for n, p in model.named_parameters() if p.requires_grad and not n.startswith(LESION_UNIT)]
    optimizer = torch.optim.AdamW([{"params": body, "lr": lr}, {"params": unit, "lr": 3 * lr}], weight_decay=1e-4)
    net.to(device, memory_format=torch.channels_last)
    generator = torch.Generator().manual_seed(seed)
    nodules = [s for s in train if s.target == 1 and s.lesion[0].sum() > 0]
    normals = [s for s in train if s.target == 0]
    for step in range(steps):
        net.train()
        for group, base in zip(optimizer.param_groups, [lr, 3 * lr], strict=True):
            group["lr"] = base * 0.5 * (1 + np.cos(np.pi * step / steps))
        batch = [nodules[int(torch.randint(len(nodules), (1,), generator=generator))] for _ in range(2)]
        batch += [normals[int(torch.randint(len(normals), (1,), generator=generator))] for _ in range(2)]
        images = torch.stack([s.image.float() for s in batch])[:, None]
        maps = torch.stack([s.lesion[:2] for s in batch])
        theta = random_affine(4, AUGMENT, generator)
        images = augment_intensity(warp(images, theta), AUGMENT, generator)
        maps = warp(maps, theta, mode="nearest")
        with torch.autocast(device.type, dtype=dtype or torch.float32, enabled=dtype is not None):
            dense = net(_to_input(images.to(device), preprocess))
        dense = dense.float()
        maps = maps.to(device)
        inside = F.adaptive_max_pool2d(maps[:, 0:1], dense.shape[-2:])[:, 0] > 0.5
        nodule_score = torch.stack(
            [dense[i][inside[i]].max() if inside[i].any() else max_inside(dense[i][None, None])[0, 0] for i in (0, 1)]
        )
        normal_score = max_inside(dense[2:, None])[:, 0]
        rank = F.softplus(normal_score[None, :] - nodule_score[:, None]).mean()
        loss = rank + _dense_loss(dense, maps)
        optimizer.zero_grad(set_to_none=True)
        loss.backward()
        optimizer.step()


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("cv_dir", type=Path, help="an `xvision cv MANIFEST --recipe best` output folder")
    parser.add_argument("--member", type=int, default=1, help="which of each fold's detectors to start from")
    parser.add_argument("--steps", type=int, default=200)
    parser.add_argument("--lr", type=float, default=1e-4)
    parser.add_argument("--only-fold", type=int, help="just this fold (1-based)")
    parser.add_argument("--json", type=Path, help="write the per-fold labels and scores here")
    args = parser.parse_args(argv)
    fold_dirs = sorted((args.cv_dir / "folds").glob(f"repeat-1-fold-{args.only_fold or '*'}"))
    if not fold_dirs:
        parser.error(f"{args.cv_dir}: no folds/repeat-1-fold-K (run `xvision cv MANIFEST --recipe best` first)")
    preprocess = get_spec(LESION_BACKBONE).preprocess
    device = torch.device("cuda" if torch.cuda.is_available() else "cpu")
    dtype = _pick_dtype(device)
    results = []
    for fold_dir in fold_dirs:
        start = time.perf_counter()
        number = int(fold_dir.name.rsplit("-", 1)[1])
        manifest = read_manifest(fold_dir / "manifest.csv")
        positive = default_positive(manifest.classes)
        rows = {split: [r for r in manifest.rows if r.split == split] for split in ("train", "test")}
        train = _load_samples(manifest, rows["train"], positive, preprocess, False, lung=False)
        test = _load_samples(manifest, rows["test"], positive, preprocess, False, lung=False)
        y = np.array([s.target for s in test])
        weights = fold_dir / "run" / "finetune" / f"member-{args.member}" / "backbone.safetensors"
        net = detector_nets(weights)[0].to(device)
        before = film_scores(net, test, preprocess, device, dtype)
        film_stage(net, train, args.steps, args.lr, 1000 + number, preprocess, device, dtype)
        after = film_scores(net, test, preprocess, device, dtype)
        results.append(
            {"fold": number, "before": roc_auc_score(y, before), "after": roc_auc_score(y, after), "y": y.tolist()}
        )
        results[-1] |= {"scores_before": before.tolist(), "scores_after": after.tolist()}
        print(
            f"fold {number}: AUC before {results[-1]['before']:.3f}, after {results[-1]['after']:.3f} "
            f"({time.perf_counter() - start:.0f} s)",
            flush=True,
        )
    if args.json:
        args.json.write_text(json.dumps(results, indent=2) + "\n")
    print(f"before={np.mean([r['before'] for r in results]):.3f} after={np.mean([r['after'] for r in results]):.3f}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
