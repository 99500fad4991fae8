"""Cross-validate the lesion detector alone (``xvision.finetune.detector``): does it find the nodules?

The `detect` recipe (and so `best`) trains ``train_detector`` and then a one-feature head that only
calibrates the detector's score. This script skips the head: per grouped, stratified fold it trains the
detector on the other folds with ``train_detector`` itself and scores the held-out films with the detector's
own image score (highest lesion logit over the film less its border). It prints per-fold ROC AUC and the
share of nodule films whose top-scoring position lies on the nodule (a random position would hit well under
1 time in 100), and ends with one line::

    folds=... repeats=... config=... mean_fold_auc=... oof_auc=... ci_low=... ci_high=... top_on_nodule=...
    seconds_per_fold=...

The pooled out-of-fold AUC mixes five models' score scales; the mean of the per-fold AUCs does not, so both
are printed. ``--set key=value`` changes a field of :class:`xvision.finetune.DetectorConfig` (the honest way
to tune it: every setting is judged on held-out folds); ``--repeats`` reruns the folds with other fold
seeds, since with ~150 images one split's figure moves by +-0.05.

    python benchmarks/jsrt_manifest.py -o jsrt.csv
    python benchmarks/crop_detector.py jsrt.csv -o cv_detector --folds 5
    python benchmarks/crop_detector.py jsrt.csv -o cv_detector_800 --set rounds=16

Fold runs already finished are reused (each is an ordinary resumable detector folder): run the folds side by
side with ``--only-fold K``, then once more without it to score them all together.
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import math
import sys
import time
from pathlib import Path

import numpy as np
import torch
from finetune_ablation import bootstrap_auc
from sklearn.metrics import roc_auc_score
from sklearn.model_selection import StratifiedGroupKFold

from xvision.backbones.registry import LESION_BACKBONE, create_backbone, get_spec, max_inside
from xvision.data.manifest import read_manifest, write_manifest
from xvision.evaluation.threshold import default_positive
from xvision.finetune import DetectorConfig, train_detector
from xvision.finetune.detector import DetectorNet, _dense_maps, lesion_centre, lesion_radius
from xvision.finetune.trainer import _load_samples, _pick_dtype, tuned_backbone


def configure(overrides: list[str]) -> DetectorConfig:
    """DetectorConfig with ``key=value`` overrides, each value parsed as its field's type."""
    config = DetectorConfig()
    for item in overrides:
        key, _, value = item.partition("=")
        if key not in {f.name for f in dataclasses.fields(config)} or key in ("augment", "backbone"):
            raise SystemExit(f"error: --set {item}: not a DetectorConfig number field")
        config = dataclasses.replace(config, **{key: type(getattr(config, key))(value)})
    return config


def detector_nets(weights: Path) -> list[DetectorNet]:
    """The detector(s) in a weights file ``train_detector`` wrote, loaded as `predict` loads them."""
    tuned = create_backbone(tuned_backbone(weights), weights=str(weights)).model.model
    return [DetectorNet(member).eval() for member in getattr(tuned, "members", [tuned])]


def score_fold(weights: Path, manifest_path: Path) -> tuple[np.ndarray, np.ndarray, list[bool]]:
    """(labels, scores, top position on the nodule for each nodule film) for the test rows."""
    manifest = read_manifest(manifest_path)
    positive = default_positive(manifest.classes)
    preprocess = get_spec(LESION_BACKBONE).preprocess
    rows = [row for row in manifest.rows if row.split == "test"]
    samples = _load_samples(manifest, rows, positive, preprocess, False, lung=False)
    device = torch.device("cuda" if torch.cuda.is_available() else "cpu")
    dtype = _pick_dtype(device)
    nets = [net.to(device) for net in detector_nets(weights)]
    maps = zip(*(_dense_maps(net, samples, preprocess, device, dtype) for net in nets), strict=True)
    scores, on_nodule = [], []
    for sample, member_maps in zip(samples, maps, strict=True):
        dense = torch.stack(member_maps).mean(0)  # several: their mean map, as the registry pools them
        scores.append(float(max_inside(dense[None, None])[0, 0]))  # as image_scores, the detector's own
        centre = lesion_centre(sample)
        if centre is not None:
            n, size = dense.shape[-1], sample.image.shape[-1]
            row, col = divmod(int(dense.argmax()), n)
            distance = math.hypot((col + 0.5) * size / n - centre[0], (row + 0.5) * size / n - centre[1])
            on_nodule.append(distance <= max(lesion_radius(sample), size / n))
    return np.array([s.target for s in samples], dtype=int), np.array(scores), on_nodule


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("manifest")
    parser.add_argument("-o", "--out", required=True, help="folder for the fold runs (reused when run again)")
    parser.add_argument("--folds", type=int, default=5)
    parser.add_argument("--repeats", type=int, default=1, help="fold splits, each with its own seed")
    parser.add_argument("--seed", type=int, default=0, help="first fold seed (the detector's own: --set seed=N)")
    parser.add_argument("--set", action="append", default=[], metavar="KEY=VALUE", help="a DetectorConfig field")
    parser.add_argument("--weights", help="starting weights for EfficientNet-Lite0 (default: the bundled ones)")
    parser.add_argument("--threads", type=int, help="torch CPU threads (for several runs side by side)")
    parser.add_argument(
        "--only-fold", type=int, help="train and score just this fold (1-based), e.g. one process per fold"
    )
    args = parser.parse_args(argv)
    if args.only_fold is not None and not 1 <= args.only_fold <= args.folds:
        parser.error(f"--only-fold {args.only_fold}: choose 1 to {args.folds}")
    if args.threads:
        torch.set_num_threads(args.threads)
    config = configure(args.set)
    manifest = read_manifest(args.manifest)
    positive = default_positive(manifest.classes)
    y = np.array([row.label == positive for row in manifest.rows], dtype=int)
    groups = [row.group or row.path for row in manifest.rows]
    out = Path(args.out)

    fold_aucs, hits, times, pooled, held_out = [], [], [], [], []
    for repeat in range(args.repeats):
        folds = StratifiedGroupKFold(args.folds, shuffle=True, random_state=args.seed + repeat)
        labels_r, scores_r = [], []
        for number, (_, test) in enumerate(folds.split(np.zeros(len(y)), y, groups), start=1):
            if args.only_fold and number != args.only_fold:
                continue
            start = time.perf_counter()
            test_set = set(test.tolist())
            splits = {row.path: "test" if i in test_set else "train" for i, row in enumerate(manifest.rows)}
            fold_dir = out / f"repeat-{repeat + 1}" / f"fold-{number}"
            fold_manifest = write_manifest(manifest.with_splits(splits), fold_dir / "manifest.csv")
            weights = train_detector(fold_manifest, fold_dir / "detector", config, weights=args.weights, progress=False)
            labels, scores, on_nodule = score_fold(weights, fold_manifest)
            times.append(time.perf_counter() - start)
            labels_r.append(labels)
            scores_r.append(scores)
            hits += on_nodule
            fold_aucs.append(roc_auc_score(labels, scores))
            held_out.append(
                {"repeat": repeat + 1, "fold": number, "labels": labels.tolist(), "scores": scores.tolist()}
            )
            print(
                f"repeat {repeat + 1} fold {number}: AUC {fold_aucs[-1]:.3f}, top position on the nodule "
                f"{sum(on_nodule)}/{len(on_nodule)} ({times[-1]:.0f} s)",
                flush=True,
            )
        pooled.append(bootstrap_auc(np.concatenate(labels_r), np.concatenate(scores_r)))
    auc, low, high = np.median(np.array(pooled), axis=0)
    changed = ",".join(args.set) or "default"
    summary = {
        "config": dataclasses.asdict(config),
        "fold_aucs": fold_aucs,
        "mean_fold_auc": float(np.mean(fold_aucs)),
        "oof_auc_per_repeat": [list(p) for p in pooled],
        "top_on_nodule": float(np.mean(hits)),
        "held_out": held_out,  # per fold, the test images' labels and scores (manifest order), for ensembles
    }
    (out / "summary.json").write_text(json.dumps(summary, indent=2) + "\n")
    print(
        f"folds={args.folds} repeats={args.repeats} config={changed} mean_fold_auc={np.mean(fold_aucs):.3f} "
        f"oof_auc={auc:.3f} ci_low={low:.3f} ci_high={high:.3f} top_on_nodule={np.mean(hits):.3f} "
        f"seconds_per_fold={np.median(times):.0f}"
    )
    return 0


if __name__ == "__main__":
    sys.exit(main())
