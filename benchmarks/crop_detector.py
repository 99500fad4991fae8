"""A nodule detector trained on crops at full resolution: does direct lesion supervision find JSRT nodules?

The idea (a CAD-style alternative to `finetune`): train EfficientNet-Lite0 (ImageNet, bundled weights; stem and
first three stages frozen, BatchNorm statistics kept) at the images' full 1024 px on 256 px crops, half of
them holding a nodule (anywhere in the crop), half taken at random from any training film, with the same
dense "lesion here / not here" loss as fine-tuning (``xvision.finetune.trainer._dense_loss``) on the 8 x 8
positions of each crop, and the same augmentation. An image's score is its highest position logit over the
film less its 5% border (the network runs once over the whole 1024 px film, 32 x 32 positions).

Pitfall found on the way, kept in the sampler: a nodule placed at a fixed place in its crop (the centre
+-64 px) teaches the network that place, through the zero padding, instead of the nodule: its maps came out
flat except for one fixed cell. Nodules are now placed uniformly in the crop.

Grouped, stratified k-fold on the manifest (one model per fold); prints per-fold AUC and the share of
nodule films whose top position lies on the nodule, and ends with one line
``folds=... steps=... oof_auc=... ci_low=... ci_high=... top_on_nodule=... seconds_per_fold=...``.

    python benchmarks/jsrt_manifest.py -o jsrt.csv
    python benchmarks/crop_detector.py jsrt.csv --folds 3 --steps 400
"""

from __future__ import annotations

import argparse
import math
import sys
import time

import numpy as np
import torch
import torch.nn.functional as F
from finetune_ablation import bootstrap_auc
from sklearn.metrics import roc_auc_score
from sklearn.model_selection import StratifiedGroupKFold
from torch import nn

from xvision.backbones.registry import create_backbone, get_spec, max_inside
from xvision.data.manifest import read_manifest
from xvision.evaluation.threshold import default_positive
from xvision.finetune.augment import augment_intensity, random_affine, warp
from xvision.finetune.config import AugmentConfig
from xvision.finetune.targets import lesion_map, lesion_of
from xvision.finetune.trainer import _dense_loss, _to_input
from xvision.io import load_image

SIZE, CROP, MARGIN = 1024, 256, 48  # crops are cut MARGIN px larger on each side, warped, then trimmed
BIG = CROP + 2 * MARGIN


def load(manifest_path: str) -> tuple[list[torch.Tensor], list, np.ndarray, list[str]]:
    manifest = read_manifest(manifest_path)
    positive = default_positive(manifest.classes)
    images, lesions, labels, groups = [], [], [], []
    for row in manifest.rows:
        image = load_image(manifest.resolve(row)).astype(np.float32)
        height, width = image.shape
        image = torch.from_numpy(image / max(1.0, float(image.max())))[None, None]
        images.append(F.interpolate(image, size=(SIZE, SIZE), mode="area")[0, 0].half())
        lesion = lesion_of(row, f"{manifest.name}: {row.path}")
        if lesion is not None:
            lesion = (lesion[0] * SIZE / width, lesion[1] * SIZE / height, lesion[2] * SIZE / max(width, height))
        lesions.append(lesion)
        labels.append(int(row.label == positive))
        groups.append(row.group or row.path)
    return images, lesions, np.array(labels), groups


def crop(image: torch.Tensor, lesion, positive: bool, with_lesion: bool, g: torch.Generator):
    def pick(low: int, high: int) -> int:
        return int(torch.randint(low, high, (1,), generator=g))

    border = int(0.05 * SIZE)
    if with_lesion:  # the nodule anywhere in the final crop (see the module docstring)
        left, top = int(lesion[0]) - MARGIN - pick(16, CROP - 16), int(lesion[1]) - MARGIN - pick(16, CROP - 16)
    else:
        left, top = (
            pick(border - MARGIN, SIZE - border - CROP - MARGIN),
            pick(border - MARGIN, SIZE - border - CROP - MARGIN),
        )
    left, top = min(max(left, 0), SIZE - BIG), min(max(top, 0), SIZE - BIG)
    local = None if lesion is None else (lesion[0] - left, lesion[1] - top, lesion[2])
    return image[top : top + BIG, left : left + BIG].float(), lesion_map(positive, local, (BIG, BIG), BIG // 4)


def train(net: nn.Module, unit: nn.Linear, data, index: list[int], steps: int, batch: int, seed: int) -> None:
    images, lesions, labels, _ = data
    g = torch.Generator().manual_seed(seed)
    with_lesion = [i for i in index if lesions[i] is not None]
    body = [p for p in net.parameters() if p.requires_grad]
    optimizer = torch.optim.AdamW(
        [{"params": body, "lr": 3e-4}, {"params": unit.parameters(), "lr": 1e-3}], weight_decay=1e-4
    )
    augment = AugmentConfig(translate=0.0)
    preprocess = get_spec("efficientnet_lite0").preprocess
    warmup, losses, start = max(1, steps // 20), [], time.time()
    for step in range(steps):
        factor = (step + 1) / warmup if step < warmup else 0.5 * (1 + math.cos(math.pi * step / steps))
        for group, base in zip(optimizer.param_groups, (3e-4, 1e-3), strict=True):
            group["lr"] = base * factor
        crops, maps = [], []
        for k in range(batch):
            pool = with_lesion if k < batch // 2 else index
            i = pool[int(torch.randint(len(pool), (1,), generator=g))]
            image, lesion_maps = crop(images[i], lesions[i], bool(labels[i]), k < batch // 2, g)
            crops.append(image)
            maps.append(lesion_maps)
        theta = random_affine(batch, augment, g)
        x = augment_intensity(warp(torch.stack(crops)[:, None], theta), augment, g)
        maps = warp(torch.stack(maps), theta, mode="nearest")
        q = MARGIN // 4
        x, maps = x[..., MARGIN:-MARGIN, MARGIN:-MARGIN], maps[..., q:-q, q:-q]
        dense = unit(net.forward_features(_to_input(x, preprocess)).permute(0, 2, 3, 1))[..., 0]
        loss = _dense_loss(dense, maps)
        optimizer.zero_grad(set_to_none=True)
        loss.backward()
        optimizer.step()
        losses.append(loss.item())
        if (step + 1) % 50 == 0:
            print(f"  step {step + 1}: loss {np.mean(losses[-50:]):.3f} ({time.time() - start:.0f} s)", flush=True)


@torch.no_grad()
def score(net: nn.Module, unit: nn.Linear, data, index: list[int]) -> tuple[np.ndarray, list[bool]]:
    images, lesions, _, _ = data
    preprocess = get_spec("efficientnet_lite0").preprocess
    net.eval()
    scores, on_nodule = [], []
    for i in index:
        features = net.forward_features(_to_input(images[i].float()[None, None], preprocess))
        dense = unit(features.permute(0, 2, 3, 1))[..., 0]  # (1, n, n)
        inner = max_inside(dense[:, None])[0, 0]
        scores.append(float(inner))
        if lesions[i] is not None:
            n = dense.shape[-1]
            row, col = divmod(int(dense[0].argmax()), n)
            x, y, diam = lesions[i]
            distance = math.hypot((col + 0.5) * SIZE / n - x, (row + 0.5) * SIZE / n - y)
            on_nodule.append(distance <= max(diam / 2, SIZE / n))
    return np.array(scores), on_nodule


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("manifest")
    parser.add_argument("--folds", type=int, default=3)
    parser.add_argument("--steps", type=int, default=400, help="training steps per fold")
    parser.add_argument("--batch", type=int, default=12)
    parser.add_argument("--seed", type=int, default=0)
    args = parser.parse_args(argv)
    data = load(args.manifest)
    labels, groups = data[2], data[3]
    if not any(lesion is not None for lesion in data[1]):
        print(
            "error: the manifest has no lesion_x,lesion_y,lesion_diam: nothing to train a detector on", file=sys.stderr
        )
        return 2
    folds = StratifiedGroupKFold(args.folds, shuffle=True, random_state=args.seed)
    oof, hits, times = np.zeros(len(labels)), [], []
    for k, (train_index, test_index) in enumerate(folds.split(np.zeros(len(labels)), labels, groups)):
        start = time.time()
        torch.manual_seed(args.seed * 1000 + k)
        backbone = create_backbone("efficientnet_lite0")
        if not backbone.pretrained:
            print("error: the EfficientNet-Lite0 ImageNet weights were not found", file=sys.stderr)
            return 2
        net = backbone.model.body.model
        for module in [net.conv_stem, net.bn1, *list(net.blocks)[:3]]:
            module.requires_grad_(False)
        net.eval()  # BatchNorm keeps its ImageNet statistics; nothing here uses dropout
        unit = nn.Linear(net.num_features, 1)
        train(net, unit, data, list(train_index), args.steps, args.batch, args.seed * 1000 + k)
        scores, on_nodule = score(net, unit, data, list(test_index))
        oof[test_index], times = scores, [*times, time.time() - start]
        hits += on_nodule
        auc = roc_auc_score(labels[test_index], scores)
        print(f"fold {k + 1}: AUC {auc:.3f}, top position on the nodule {sum(on_nodule)}/{len(on_nodule)}", flush=True)
    auc, low, high = bootstrap_auc(labels, oof)
    print(
        f"folds={args.folds} steps={args.steps} oof_auc={auc:.3f} ci_low={low:.3f} ci_high={high:.3f} "
        f"top_on_nodule={np.mean(hits):.3f} seconds_per_fold={np.median(times):.0f}"
    )
    return 0


if __name__ == "__main__":
    sys.exit(main())
