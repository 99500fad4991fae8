"""Train a lesion detector on full-resolution crops; the result is a weights file for the registry.

The network is EfficientNet-Lite0 (the bundled ImageNet weights) with a lesion unit: a linear unit applied at
every position of its final feature map says "lesion here / not here". It is trained at 1024 px, where a
5-30 mm nodule spans 15-85 pixels, on 256 px crops:
- half of each batch are crops that hold a lesion (from the manifest's ``lesion_x,lesion_y,lesion_diam``),
  placed **anywhere** in the crop: a lesion always at the same place teaches the network that place (through
  the zero padding at the crop's edge) instead of the lesion; this was measured (flat maps, chance AUC);
- the other half are taken anywhere on any training film (the film less its 5% border), so every kind of
  normal tissue is seen as "no lesion";
- the loss is fine-tuning's dense lesion loss (:func:`xvision.finetune.trainer._dense_loss`: cells the lesion
  touches are "here", a ring around them undecided, everything else "not here", both sides weighted
  equally), with the same chest-film augmentation (no left-right flip), stem and first three stages frozen,
  ImageNet BatchNorm statistics kept, AdamW with warm-up and cosine decay, bf16 where native.
Optionally (``DetectorConfig.paste``, off: measured worse, see docs/recipes.md) some lesion crops are made by
transplanting a training nodule into another film (:mod:`xvision.finetune.transplant`), and
(``DetectorConfig.hard_negatives``, off: a gain a second seed did not repeat) some of the other crops hold the
detector's current hottest places on lesion-free training films (:func:`hot_spots`, re-mined every round).
An image's score is the highest lesion logit over the film less its border (the registry entry
``efficientnet_lite0_1024_lesion``); prediction needs no lesion columns. With ``DetectorConfig.members`` > 1,
that many detectors are trained with consecutive seeds and the score is the highest place of their mean
map (:mod:`xvision.backbones.lesion_ensemble`).

Training runs in rounds of ``steps_per_round`` steps (the checkpoint unit; ``state.json`` calls them epochs):
a checkpoint after each, and re-running the same command resumes after the last finished round. With a
``val`` split of at least ``MIN_VAL_PER_CLASS`` films of each class, each round is scored there (ROC AUC of
the image scores) and the best round is kept (early stop after ``patience`` rounds without a better one); a
smaller val split is not used to pick a round (with a warning).
"""

from __future__ import annotations

import logging
import math
from dataclasses import replace
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch import nn

from xvision._progress import progress_bar
from xvision._rng import keeps_torch_rng
from xvision.backbones.registry import LESION_UNIT, dense_logits, get_spec, max_inside, with_unit
from xvision.data.hints import MIN_VAL_PER_CLASS
from xvision.errors import ManifestError
from xvision.finetune.augment import augment_intensity, random_affine, warp
from xvision.finetune.config import WEIGHTS_NAME, DetectorConfig
from xvision.finetune.trainer import (
    _binary_manifest,
    _dense_loss,
    _load_samples,
    _lr_factor,
    _pick_dtype,
    _Sample,
    _to_input,
    end_epoch,
    open_run,
    run_identity,
    save_tuned,
    split_rows,
    timm_body,
    write_tuned,
)
from xvision.finetune.transplant import nodule_signal, paste

log = logging.getLogger(__name__)

START_BACKBONE = "efficientnet_lite0"  # the ImageNet network the detector starts from
MARGIN = 48  # crops are cut this much larger on each side, warped, then trimmed (no black warp corners)


class DetectorNet(nn.Module):
    """A timm EfficientNet with a lesion unit; returns the dense lesion logits (N, h, w)."""

    def __init__(self, model: nn.Module) -> None:
        super().__init__()
        self.model = with_unit(model, LESION_UNIT)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return dense_logits(self.model.forward_features(x), getattr(self.model, LESION_UNIT))

    def train(self, mode: bool = True) -> DetectorNet:
        super().train(mode)
        for module in self.modules():  # keep ImageNet BatchNorm statistics (as fine-tuning does)
            if isinstance(module, nn.modules.batchnorm._BatchNorm):
                module.eval()
        return self


def lesion_centre(sample: _Sample) -> tuple[int, int] | None:
    """(x, y) in pixels of the resized image, from the sample's lesion map, or None."""
    inside = sample.lesion[0].nonzero()
    if len(inside) == 0:
        return None
    y, x = inside.float().mean(dim=0).tolist()
    return int(4 * x + 2), int(4 * y + 2)


def lesion_radius(sample: _Sample) -> float:
    """The lesion's radius in pixels of the resized image, from the area of its (1/4-scale) lesion map."""
    return 4 * math.sqrt(float(sample.lesion[0].sum()) / math.pi)


def sample_crop(
    sample: _Sample, centre: tuple[int, int] | None, crop: int, generator: torch.Generator
) -> tuple[torch.Tensor, torch.Tensor]:
    """A (crop + 2 * MARGIN)-px square of the image and its (3, ...) lesion map; holding the lesion anywhere
    at least 16 px inside the final crop when ``centre`` is given, else anywhere on the film less its border."""
    size = sample.image.shape[-1]
    big = crop + 2 * MARGIN

    def pick(low: int, high: int) -> int:
        return int(torch.randint(low, max(low + 1, high), (1,), generator=generator))

    if centre is not None:
        left = centre[0] - MARGIN - pick(16, crop - 16)
        top = centre[1] - MARGIN - pick(16, crop - 16)
    else:
        border = int(0.05 * size)
        left = pick(border - MARGIN, size - border - crop - MARGIN)
        top = pick(border - MARGIN, size - border - crop - MARGIN)
    left, top = (min(max(v, 0), size - big) // 4 * 4 for v in (left, top))  # the lesion map is at 1/4 scale
    image = sample.image[top : top + big, left : left + big].float()
    lesion = sample.lesion[:, top // 4 : (top + big) // 4, left // 4 : (left + big) // 4]
    return image, lesion


@torch.no_grad()
def _dense_maps(net: DetectorNet, samples: list[_Sample], preprocess, device: torch.device, dtype):
    """Each whole image's (n, n) lesion logits."""
    net.eval()
    for sample in samples:
        x = _to_input(sample.image.float()[None, None].to(device), preprocess)
        with torch.autocast(device.type, dtype=dtype or torch.float32, enabled=dtype is not None):
            yield net(x).float()[0]


def image_scores(net: DetectorNet, samples: list[_Sample], preprocess, device: torch.device, dtype) -> np.ndarray:
    """Each whole image's score: its highest lesion logit over the film less its border."""
    return np.array(
        [float(max_inside(dense[None, None])[0, 0]) for dense in _dense_maps(net, samples, preprocess, device, dtype)]
    )


def hot_spots(
    net: DetectorNet, samples: list[_Sample], preprocess, device: torch.device, dtype, per_image: int = 3
) -> list[tuple[_Sample, tuple[int, int]]]:
    """The detector's ``per_image`` hottest places (x, y in pixels of the resized image) on each of
    ``samples``, inside the film's 5% border: on films without a lesion, its current false positives."""
    spots = []
    for sample, dense in zip(samples, _dense_maps(net, samples, preprocess, device, dtype), strict=True):
        n = dense.shape[-1]
        d = math.ceil(0.05 * n)
        inner = dense[d : n - d, d : n - d]
        cell = sample.image.shape[-1] / n
        for index in inner.flatten().topk(min(per_image, inner.numel())).indices.tolist():
            row, col = divmod(index, inner.shape[-1])
            spots.append((sample, (int((col + d + 0.5) * cell), int((row + d + 0.5) * cell))))
    return spots


@keeps_torch_rng
def train_detector(
    manifest_path: str | Path,
    out_dir: str | Path,
    config: DetectorConfig | None = None,
    *,
    weights: str | None = None,
    restart: bool = False,
    progress: bool = True,
) -> Path:
    """Train the detector on the manifest's train split (val, if any, picks the best round); return the
    weights file. Resumable like :func:`xvision.finetune.trainer.finetune`; ``weights`` are starting weights
    for EfficientNet-Lite0 (default: the bundled ImageNet ones)."""
    from sklearn.metrics import roc_auc_score

    config = config or DetectorConfig()
    if config.members != 1:
        return _train_members(manifest_path, Path(out_dir), config, weights, restart, progress)
    out = Path(out_dir)
    manifest, positive = _binary_manifest(manifest_path)
    checkpoints, state = open_run(out, run_identity(manifest_path, config, weights), restart)
    weights_file = out / WEIGHTS_NAME
    if state is not None and state.get("finished") and weights_file.exists():
        return weights_file

    train_rows, val_rows = split_rows(manifest)
    preprocess = get_spec(config.backbone).preprocess
    if preprocess.input_size < config.crop + 2 * MARGIN:
        raise ValueError(f"crop {config.crop} px does not fit {config.backbone}'s {preprocess.input_size} px input")
    lung = config.paste > 0  # transplants go into the lung field where a row has a mask
    train = _load_samples(manifest, train_rows, positive, preprocess, progress, lung=lung)
    val = _load_samples(manifest, val_rows, positive, preprocess, progress, lung=False)
    located = [(s, c) for s in train if (c := lesion_centre(s)) is not None]
    if not located:
        raise ManifestError(
            f"{manifest.name}: the detector learns from lesion locations, and no '{positive}' training row has "
            "lesion_x, lesion_y, lesion_diam (pixels of the image); add them or use --recipe finetune"
        )
    if not any(s.target == 0 for s in train):
        raise ManifestError(f"{manifest.name}: the training split needs images of both classes")
    judge = _can_judge(val, manifest.name)
    donors = [(nodule_signal(s.image, c, r), r) for s, c in located if (r := lesion_radius(s)) > 0] if lung else []

    torch.manual_seed(config.seed)
    device = torch.device("cuda" if torch.cuda.is_available() else "cpu")
    net = DetectorNet(timm_body(START_BACKBONE, weights)).to(device, memory_format=torch.channels_last)
    model = net.model
    for module in [model.conv_stem, model.bn1, *list(model.blocks)[: config.frozen_stages]]:
        module.requires_grad_(False)
    unit = getattr(model, LESION_UNIT)
    body_params = [p for n, p in model.named_parameters() if p.requires_grad and not n.startswith(LESION_UNIT)]
    optimizer = torch.optim.AdamW(
        [{"params": body_params, "lr": config.lr}, {"params": unit.parameters(), "lr": config.head_lr}],
        weight_decay=config.weight_decay,
    )
    base_lrs = [config.lr, config.head_lr]
    total_steps = config.rounds * config.steps_per_round
    dtype = _pick_dtype(device)
    log.info("training the lesion detector on %s (%s)", device, "fp32" if dtype is None else str(dtype)[6:])

    identity = run_identity(manifest_path, config, weights)
    state = state or {**identity, "epochs_done": 0, "history": [], "best_epoch": None, "best_val_auc": None}
    state["trained"] = "lesion detector on full-resolution crops"
    if state["epochs_done"]:
        checkpoints.load(state["epochs_done"], net, optimizer)
        log.info("resuming the detector after round %d", state["epochs_done"])

    half = config.batch_size // 2
    normals = [s for s in train if s.target == 0]
    for round_ in range(state["epochs_done"] + 1, config.rounds + 1):
        generator = torch.Generator().manual_seed(config.seed * 100_003 + round_)
        # hard negatives: from round 2 on, the current detector's hottest places on lesion-free films
        mined = hot_spots(net, normals, preprocess, device, dtype) if config.hard_negatives > 0 and round_ > 1 else []
        net.train()
        losses: list[float] = []
        desc = f"detector {round_}/{config.rounds}"
        bar = progress_bar(total=config.steps_per_round, desc=desc, disable=not progress)
        for step_in_round in range(config.steps_per_round):
            step = (round_ - 1) * config.steps_per_round + step_in_round
            for group, base in zip(optimizer.param_groups, base_lrs, strict=True):
                group["lr"] = base * _lr_factor(step, config.steps_per_round, total_steps)
            crops = []
            for k in range(config.batch_size):
                transplant = k < half and bool(donors) and float(torch.rand((), generator=generator)) < config.paste
                hard = k >= half and bool(mined) and float(torch.rand((), generator=generator)) < config.hard_negatives
                if k < half and not transplant:
                    sample, centre = located[int(torch.randint(len(located), (1,), generator=generator))]
                elif hard:
                    sample, centre = mined[int(torch.randint(len(mined), (1,), generator=generator))]
                else:
                    sample, centre = train[int(torch.randint(len(train), (1,), generator=generator))], None
                crop = sample_crop(sample, centre, config.crop, generator)
                if transplant:
                    signal, radius = donors[int(torch.randint(len(donors), (1,), generator=generator))]
                    crop = paste(*crop, signal, radius, MARGIN + 16, generator)
                crops.append(crop)
            images = torch.stack([c[0] for c in crops])[:, None]
            maps = torch.stack([c[1][:2] for c in crops])
            theta = random_affine(len(crops), config.augment, generator)
            images = augment_intensity(warp(images, theta), config.augment, generator)
            maps = warp(maps, theta, mode="nearest")
            q = MARGIN // 4
            images, maps = images[..., MARGIN:-MARGIN, MARGIN:-MARGIN], maps[..., q:-q, q:-q]
            with torch.autocast(device.type, dtype=dtype or torch.float32, enabled=dtype is not None):
                dense = net(_to_input(images.to(device, non_blocking=True), preprocess))
            loss = _dense_loss(dense, maps.to(device, non_blocking=True))
            optimizer.zero_grad(set_to_none=True)
            loss.backward()
            optimizer.step()
            losses.append(float(loss.detach()))
            bar.set_postfix(loss=f"{np.mean(losses):.3f}", refresh=False)
            bar.update()
        bar.close()
        record: dict[str, Any] = {"epoch": round_, "train_loss": float(np.mean(losses))}
        if judge:
            scores = image_scores(net, val, preprocess, device, dtype)
            record["val_auc"] = float(roc_auc_score([s.target for s in val], scores))
        stop = end_epoch(
            state, record, "val_auc", checkpoints, net, optimizer, patience=config.patience, higher_is_better=True
        )
        log.info("detector round %d: %s", round_, record)
        if stop:
            log.info("early stop: no better validation AUC for %d rounds", config.patience)
            break

    checkpoints.load(state["best_epoch"], net, None)
    return save_tuned(net.model, config.backbone, weights_file, checkpoints, state)


def _can_judge(val: list[_Sample], manifest_name: str) -> bool:
    """Whether the val split can pick the best round; says why not when it has films but too few. With fewer
    than ``MIN_VAL_PER_CLASS`` of a class (a 2-film val split of a 20-film manifest) the AUC moves in steps of
    a quarter or more and picks a round by chance, often the first, leaving the detector barely trained."""
    counts = [sum(s.target == t for s in val) for t in (1, 0)]
    if min(counts) >= MIN_VAL_PER_CLASS:
        return True
    if val:
        log.warning(
            "%s: the val split holds %d lesion and %d lesion-free films, too few to pick the detector's best "
            "round (at least %d of each); training all rounds instead",
            manifest_name,
            *counts,
            MIN_VAL_PER_CLASS,
        )
    return False


def _train_members(
    manifest_path: str | Path, out: Path, config: DetectorConfig, weights: str | None, restart: bool, progress: bool
) -> Path:
    """``config.members`` detectors with seeds ``seed``, ``seed + 1``, ... in ``out/member-<k>`` (each one
    resumable on its own), then their weights as one file for the registry's ``<backbone>_x<members>``."""
    from safetensors.torch import load_file

    from xvision.backbones.lesion_ensemble import LESION_ENSEMBLE_SIZES, lesion_ensemble_name

    if config.members not in LESION_ENSEMBLE_SIZES:
        raise ValueError(f"DetectorConfig.members must be 1 or one of {LESION_ENSEMBLE_SIZES}, not {config.members}")
    state = {}
    for k in range(config.members):
        log.info("lesion detector %d of %d", k + 1, config.members)
        member = replace(config, members=1, seed=config.seed + k)
        file = train_detector(
            manifest_path, out / f"member-{k + 1}", member, weights=weights, restart=restart, progress=progress
        )
        state.update({f"members.{k}.{key}": value for key, value in load_file(file).items()})
    return write_tuned(state, lesion_ensemble_name(config.backbone, config.members), out / WEIGHTS_NAME)
