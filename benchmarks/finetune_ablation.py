"""Which fine-tuning ingredients pay: grouped k-fold CV of the fine-tuned network's own scores.

`benchmarks/cv_recipe.py` measures a whole recipe (fine-tuning, extraction, head) and costs about 50
minutes per configuration on a 2-core CPU. This script measures only the fine-tuned network, so that many
configurations fit in one sitting (on a GPU when one is present): for each configuration and fold it runs
:func:`xvision.finetune.finetune` on the training folds (resumable, like any fine-tuning run) and scores the
held-out images several ways:

- ``pooled``: the network's image logit (its linear unit over its own max pooling: the film less its
  border, or the predicted lung cells with ``pool="lung"``) - what the recipes' features carry;
- ``dense_max``: the largest per-cell lesion logit inside the film less its border;
- ``dense_lung``: the largest per-cell lesion logit over the true lung cells (the manifest's masks: an
  upper bound for a lung segmenter);
- ``head``: a logistic regression on the pooled features of the training folds, as a recipe's head would
  see them.

    python benchmarks/jsrt_manifest.py -o jsrt.csv
    python benchmarks/finetune_ablation.py jsrt.csv --config base --config lung -o ablation

Per configuration it prints pooled out-of-fold ROC AUC (bootstrap 95% interval) and the per-fold AUCs,
and writes ``OUT/CONFIG/seed-SEED/summary.json``.
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from dataclasses import replace
from pathlib import Path

import numpy as np
import torch
from sklearn.linear_model import LogisticRegression
from sklearn.metrics import roc_auc_score
from sklearn.model_selection import StratifiedGroupKFold
from sklearn.pipeline import make_pipeline
from sklearn.preprocessing import StandardScaler

from xvision._fileio import atomic_write_json
from xvision.backbones import registry
from xvision.backbones.registry import (
    MaxPooledInside,
    create_backbone,
    dense_logits,
    get_spec,
    max_inside,
    pooled_over,
)
from xvision.data.manifest import read_manifest, write_manifest
from xvision.evaluation.threshold import default_positive
from xvision.finetune import trainer
from xvision.finetune.config import FineTuneConfig

# Resolutions beyond the registry's 512 px entry, for this comparison only.
for _size in (768, 1024):
    registry._REGISTRY.setdefault(
        f"efficientnet_lite0_{_size}ft",
        registry._lite0_spec(
            f"efficientnet_lite0_{_size}ft",
            f"EfficientNet-Lite0 at {_size} px, final features (ablation only)",
            lambda m: MaxPooledInside(registry._TimmForwardFeatures(m)),
            input_size=_size,
            interpolation="bilinear",
        ),
    )

BASE = FineTuneConfig()
CONFIGS: dict[str, FineTuneConfig] = {
    "base": BASE,
    "lung": replace(BASE, pool="lung"),
    "no_lesion": replace(BASE, lesion_weight=0.0),
    "lesion3": replace(BASE, lesion_weight=3.0),
    "r768": replace(BASE, backbone="efficientnet_lite0_768ft"),
    "r768_lung": replace(BASE, backbone="efficientnet_lite0_768ft", pool="lung"),
    "r1024_lung": replace(BASE, backbone="efficientnet_lite0_1024ft", pool="lung"),
    "unfreeze1": replace(BASE, frozen_stages=1),
    "long24": replace(BASE, epochs=24),
    "lung_long24": replace(BASE, pool="lung", epochs=24),
    "lung_lesion3": replace(BASE, pool="lung", lesion_weight=3.0),
    "lung_unfreeze1": replace(BASE, pool="lung", frozen_stages=1),
}


@torch.no_grad()
def score_fold(net: trainer.FineTuneNet, samples: list, preprocess, device: torch.device) -> dict[str, np.ndarray]:
    """Every score of the module docstring (but ``head``) plus the pooled features, for held-out samples."""
    net.eval()
    out: dict[str, list] = {"pooled": [], "dense_max": [], "dense_lung": [], "features": [], "lung_iou": []}
    for start in range(0, len(samples), 8):
        chunk = samples[start : start + 8]
        images = torch.stack([s.image.float() for s in chunk])[:, None].to(device)
        lesions = torch.stack([s.lesion for s in chunk]).to(device)
        x = trainer._to_input(images, preprocess)
        features = net.model.forward_features(x).float()
        dense = dense_logits(features, net.classifier)
        cells = trainer.cells_of(lesions[:, 2], dense.shape[-1])
        has = torch.tensor([s.has_lung for s in chunk], device=device)
        if net.lung is None:
            pooled = max_inside(features)
            out["lung_iou"].append(torch.full((len(chunk),), float("nan")))
        else:
            predicted = dense_logits(features, net.lung) > 0
            pooled = pooled_over(features, predicted)
            iou = (predicted & cells).flatten(1).sum(1) / (predicted | cells).flatten(1).sum(1).clamp(min=1)
            out["lung_iou"].append(torch.where(has, iou.float(), float("nan")).cpu())
        out["pooled"].append(net.classifier(pooled)[:, 0].cpu())
        out["features"].append(pooled.cpu())
        inside = max_inside(dense[:, None])[:, 0]
        out["dense_max"].append(inside.cpu())
        cells = torch.where(has[:, None, None], cells, torch.ones_like(cells))
        out["dense_lung"].append(dense.masked_fill(~cells, float("-inf")).amax(dim=(-2, -1)).cpu())
    return {k: torch.cat(v).numpy() for k, v in out.items()}


def bootstrap_auc(y: np.ndarray, s: np.ndarray, rounds: int = 2000, seed: int = 0) -> tuple[float, float, float]:
    rng = np.random.default_rng(seed)
    values = []
    for _ in range(rounds):
        take = rng.integers(0, len(y), len(y))
        if 0 < y[take].sum() < len(take):
            values.append(roc_auc_score(y[take], s[take]))
    return float(roc_auc_score(y, s)), float(np.quantile(values, 0.025)), float(np.quantile(values, 0.975))


def run_config(name: str, manifest_path: Path, out: Path, folds: int, seed: int, device: torch.device) -> dict:
    config = replace(CONFIGS[name], seed=seed)
    manifest = read_manifest(manifest_path)
    positive = default_positive(manifest.classes)
    y = np.array([row.label == positive for row in manifest.rows], dtype=int)
    groups = [row.group or row.path for row in manifest.rows]
    splitter = StratifiedGroupKFold(folds, shuffle=True, random_state=seed)
    preprocess = get_spec(config.backbone).preprocess
    scores: dict[str, np.ndarray] = {}
    per_fold: dict[str, list[float]] = {}
    started = time.perf_counter()
    for number, (train_idx, test_idx) in enumerate(splitter.split(np.zeros(len(y)), y, groups), start=1):
        fold_dir = out / name / f"seed-{seed}" / f"fold-{number}"  # seeds may run side by side
        test_set = set(test_idx.tolist())
        splits = {row.path: "test" if i in test_set else "train" for i, row in enumerate(manifest.rows)}
        fold_manifest = write_manifest(manifest.with_splits(splits), fold_dir / "manifest.csv")
        trainer.finetune(fold_manifest, fold_dir / "ft", config, progress=False)
        state = json.loads((fold_dir / "ft" / "state.json").read_text())
        timm_model = create_backbone(config.backbone, weights="random").model.body.model
        net = trainer.FineTuneNet(timm_model, lung=config.pool == "lung").to(device)
        trainer._Checkpoints(fold_dir / "ft").load(state["best_epoch"], net, None)
        net.to(device)
        rows = [manifest.rows[i] for i in train_idx], [manifest.rows[i] for i in test_idx]
        sets = [trainer._load_samples(manifest, r, positive, preprocess, False, lung=True) for r in rows]
        train_scores = score_fold(net, sets[0], preprocess, device)
        test_scores = score_fold(net, sets[1], preprocess, device)
        head = make_pipeline(StandardScaler(), LogisticRegression(C=0.1, max_iter=2000))
        head.fit(train_scores["features"], y[train_idx])
        test_scores["head"] = head.decision_function(test_scores["features"])
        if config.pool == "lung":
            print(f"{name} fold {number}: lung-cell IoU {np.nanmean(test_scores['lung_iou']):.3f}", flush=True)
        for key, values in test_scores.items():
            if key in ("features", "lung_iou"):
                continue
            scores.setdefault(key, np.full(len(y), np.nan))[test_idx] = values
            per_fold.setdefault(key, []).append(float(roc_auc_score(y[test_idx], values)))
        aucs = " ".join(f"{key}={values[-1]:.3f}" for key, values in per_fold.items())
        print(f"{name} seed {seed} fold {number}: {aucs} ({(time.perf_counter() - started) / 60:.1f} min)", flush=True)
    summary = {"config": config.to_dict(), "minutes": (time.perf_counter() - started) / 60, "scores": {}}
    for key, values in scores.items():
        auc, low, high = bootstrap_auc(y, values)
        summary["scores"][key] = {"auc": auc, "ci": [low, high], "per_fold": per_fold[key]}
        print(
            f"config={name} score={key} auc={auc:.3f} ci=[{low:.3f},{high:.3f}] "
            f"folds={','.join(f'{v:.2f}' for v in per_fold[key])}",
            flush=True,
        )
    atomic_write_json(out / name / f"seed-{seed}" / "summary.json", summary)
    return summary


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("manifest", type=Path)
    parser.add_argument("--config", action="append", choices=sorted(CONFIGS), help="repeatable; default: all")
    parser.add_argument("--folds", type=int, default=5)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--epochs", type=int, help="override every configuration's epochs (smoke tests)")
    parser.add_argument("-o", "--out", type=Path, required=True)
    args = parser.parse_args(argv)
    if args.epochs:
        for key, config in CONFIGS.items():
            CONFIGS[key] = replace(config, epochs=args.epochs)
    device = torch.device("cuda" if torch.cuda.is_available() else "cpu")
    for name in args.config or list(CONFIGS):
        run_config(name, args.manifest, args.out, args.folds, args.seed, device)
    return 0


if __name__ == "__main__":
    sys.exit(main())
