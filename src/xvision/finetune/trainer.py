"""Fine-tune a backbone end to end on a manifest, resumably; the result is a weights file for the registry.

The network is the registry backbone ``efficientnet_lite0_512`` (EfficientNet-Lite0 at 512 px, final
1,280-d features max-pooled over the film less its 5% border) with one linear unit on top. Max pooling lets
one small lesion decide an image. Where the manifest has lesion locations (see
:mod:`xvision.finetune.targets`), the same linear unit applied at every position of the 16 x 16 feature
map is also trained to say "lesion here / not here" (a dense auxiliary loss); prediction never needs the
locations.

Choices, for small chest X-ray sets on a CPU:
- the stem and the first three block stages stay frozen (generic edges and textures; freezing them halves
  the cost of a step); every BatchNorm keeps its ImageNet statistics (batches of 8 are too small to
  re-estimate them);
- class balance through the positive class's loss weight (negatives / positives);
- AdamW, linear warm-up over the first epoch, then cosine decay;
- bf16 autocast where the hardware runs it natively (AMX/AVX512-BF16 CPUs, recent GPUs), fp32 elsewhere;
- early stopping on the validation loss when the manifest has a ``val`` split (patience 4), otherwise a
  fixed number of epochs;
- a checkpoint after every epoch (model and optimiser, safetensors; the latest and the best are kept) and
  ``state.json``: re-running the same command resumes after the last finished epoch.
"""

from __future__ import annotations

import json
import logging
import math
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

from xvision._fileio import atomic_write, atomic_write_json, sha256_file, stable_safetensors
from xvision._progress import progress_bar
from xvision._rng import keeps_torch_rng
from xvision.backbones.preprocess import PreprocessConfig, preprocess_image
from xvision.backbones.registry import (
    LUNG_SUFFIX,
    LUNG_UNIT,
    dense_logits,
    max_inside,
    pooled_over,
    with_lung_unit,
)
from xvision.data.manifest import Manifest, read_manifest
from xvision.errors import BackboneError, ImageLoadError, ManifestError, RunError
from xvision.evaluation.threshold import default_positive
from xvision.finetune.augment import augment_intensity, random_affine, warp
from xvision.finetune.config import WEIGHTS_NAME, FineTuneConfig
from xvision.finetune.targets import lesion_map, lesion_of
from xvision.io import load_image, load_radiograph

log = logging.getLogger(__name__)


@dataclass
class _Sample:
    image: torch.Tensor  # (size, size) float16 in [0, 1]
    target: float
    lesion: torch.Tensor  # (3, size/4, size/4): lesion inside, lesion care, lung field (see _load_samples)
    has_lung: bool  # the row has a lung mask (channel 2 is meaningful)


class FineTuneNet(nn.Module):
    """A timm EfficientNet with one linear unit over max-pooled features; also returns the dense logit map.

    The dense map covers the whole film, so the lesion loss also teaches "no lesion on the border".
    With ``lung=True`` a second linear unit says, at every position, "this cell touches the lung field"
    (trained from the manifest's ``mask`` column), and the image's features are max-pooled over those cells
    only; without it, over the film less its 5% border (scanner and anonymisation marks live on the edge).
    """

    def __init__(self, model: nn.Module, *, lung: bool = False) -> None:
        super().__init__()
        # The lung unit lives on the timm model, so the saved weights fit the registry's `<name>_lung` entry.
        self.model = with_lung_unit(model) if lung else model
        self.classifier = nn.Linear(model.num_features, 1)

    @property
    def lung(self) -> nn.Linear | None:
        return getattr(self.model, LUNG_UNIT, None)

    def forward(
        self, x: torch.Tensor, known: tuple[torch.Tensor, torch.Tensor] | None = None
    ) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor | None]:
        """(image logit, dense lesion logits, dense lung logits or None).

        ``known`` = (lung coverage (N, s, s) in [0, 1], which (N,) bool): for the images that have a mask, the
        true lung cells are pooled over instead of the predicted ones (training). Without a lung unit the
        pooling is the efficientnet_lite0_512 backbone's: the film less its 5% border.
        """
        features = self.model.forward_features(x)
        dense = dense_logits(features, self.classifier)
        if self.lung is None:
            return self.classifier(max_inside(features))[:, 0], dense, None
        lung = dense_logits(features, self.lung)
        cells = lung.detach() > 0
        if known is not None:
            cells = torch.where(known[1][:, None, None], cells_of(known[0], lung.shape[-2:]), cells)
        return self.classifier(pooled_over(features, cells))[:, 0], dense, lung

    def freeze(self, stages: int) -> None:
        frozen = [self.model.conv_stem, self.model.bn1, *list(self.model.blocks)[:stages]]
        for module in frozen:
            for param in module.parameters():
                param.requires_grad_(False)

    def train(self, mode: bool = True) -> FineTuneNet:
        super().train(mode)
        for module in self.modules():  # keep ImageNet BatchNorm statistics (see the module docstring)
            if isinstance(module, nn.modules.batchnorm._BatchNorm):
                module.eval()
        return self


def _pick_dtype(device: torch.device) -> torch.dtype | None:
    from xvision.backbones.runtime import detect_hardware

    hardware = detect_hardware()
    if device.type == "cuda":  # fp16 would need loss scaling; GPUs without bf16 train in fp32
        return torch.bfloat16 if hardware.cuda_bf16 else None
    return torch.bfloat16 if hardware.cpu_bf16 else None


def _load_samples(
    manifest: Manifest, rows: list, positive: str, preprocess: PreprocessConfig, progress: bool, *, lung: bool
) -> list[_Sample]:
    """Decode every image once, resized as the backbone resizes it but kept in [0, 1] with one channel (the
    augmentation works on that); a bad image is reported and skipped. With ``lung``, a row's ``mask`` (lung
    field, nonzero = lung) is read too; a missing or unreadable mask is reported and the row trains without
    one."""
    resize_only = replace(preprocess, channels=1, mean=(0.0,), std=(1.0,))
    size = preprocess.input_size // 4
    samples = []
    # not rows: no empty bar when there is no validation split
    for row in progress_bar(rows, desc="decode", unit="img", disable=not progress or not rows):
        path = manifest.resolve(row)
        try:
            image = load_radiograph(path)
        except ImageLoadError as error:
            log.warning("skipped: %s", error)
            continue
        where = f"{manifest.name}: {row.path}"
        lesion = _inside_image(lesion_of(row, where), image.shape, where)
        lesion = lesion_map(row.label == positive, lesion, image.shape, size)
        field = _lung_field(manifest, row, size) if lung else None
        resized = preprocess_image(image, resize_only)[0]
        channel = field if field is not None else torch.zeros(size, size)
        samples.append(
            _Sample(resized.half(), float(row.label == positive), torch.cat([lesion, channel[None]]), field is not None)
        )
    return samples


def _inside_image(
    lesion: tuple[float, float, float] | None, shape: tuple[int, int], where: str
) -> tuple[float, float, float] | None:
    """The lesion, unless its centre lies outside the image: then a warning, and the row trains without a
    location (as a positive row without lesion columns does). The likely cause is coordinates measured on
    another size of the image (JSRT's 2048 px originals against a 1024 px copy)."""
    if lesion is None or (0 <= lesion[0] < shape[1] and 0 <= lesion[1] < shape[0]):
        return lesion
    log.warning(
        "%s: lesion centre (%g, %g) lies outside the %d x %d image (lesion_x, lesion_y are in pixels of the "
        "image as stored); trained without its location",
        where,
        lesion[0],
        lesion[1],
        shape[1],
        shape[0],
    )
    return None


def _lung_field(manifest: Manifest, row, size: int) -> torch.Tensor | None:
    """The row's lung mask as a (size, size) coverage map in [0, 1], or None."""
    mask_path = manifest.resolve_column(row, "mask")
    if mask_path is None:
        return None
    try:
        mask = load_image(mask_path)
    except ImageLoadError as error:
        log.warning("no lung mask for %s: %s", row.path, error)
        return None
    reason = not_a_mask(mask)
    if reason is not None:
        log.warning("no lung mask for %s: %s %s", row.path, mask_path, reason)
        return None
    binary = torch.from_numpy((mask > 0).astype(np.float32))[None, None]
    return F.interpolate(binary, size=(size, size), mode="area")[0, 0]


#: A lung mask holds two values (0 and one for lung) save a few smoothed edge pixels: at least this share of its
#: pixels sits on its two commonest grey levels. A radiograph given by mistake spreads over hundreds of levels.
MASK_TWO_LEVEL_SHARE = 0.9


def not_a_mask(mask: np.ndarray) -> str | None:
    """Why ``mask`` (load_image's array) cannot be a lung mask, or None: a film given as its own mask would mark
    the whole film, border included, as lung."""
    counts = np.bincount(np.round(mask * 255).astype(np.uint8).ravel(), minlength=256)
    share = float(np.sort(counts)[-2:].sum()) / mask.size
    if share < MASK_TWO_LEVEL_SHARE:
        return f"is not a 0/1 mask ({int((counts > 0).sum())} grey levels, as a radiograph has)"
    if not (mask > 0).any():
        return "marks no lung at all (every pixel 0)"
    return None


def _to_input(images: torch.Tensor, preprocess: PreprocessConfig) -> torch.Tensor:
    """(N, 1, S, S) in [0, 1] -> the backbone's normalised input, as its preprocessing would make it."""
    mean = torch.tensor(preprocess.mean, device=images.device).view(1, -1, 1, 1)
    std = torch.tensor(preprocess.std, device=images.device).view(1, -1, 1, 1)
    x = images.expand(-1, preprocess.channels, -1, -1)
    return ((x - mean) / std).contiguous(memory_format=torch.channels_last)


def cells_of(field: torch.Tensor, grid: int | tuple[int, int]) -> torch.Tensor:
    """(N, s, s) lung coverage -> (N, *grid) bool: the cells that touch the lung field."""
    return F.adaptive_max_pool2d(field[:, None], grid)[:, 0] > 0.5


def _dense_loss(dense: torch.Tensor, lesion: torch.Tensor) -> torch.Tensor:
    grid = dense.shape[-2:]
    # A cell is "lesion" when it touches the lesion: a 5 mm nodule covers a fraction of one cell, and a
    # coverage threshold would leave it without any positive cell when it straddles a cell border.
    inside = F.adaptive_max_pool2d(lesion[:, 0:1], grid)[:, 0] > 0.5
    care = (F.adaptive_avg_pool2d(lesion[:, 1:2], grid)[:, 0] > 0.99) | inside
    negative = care & ~inside
    losses = F.binary_cross_entropy_with_logits(dense.float(), inside.float(), reduction="none")
    total = dense.new_zeros((), dtype=torch.float32)
    if inside.any():  # lesion cells are a few in thousands: weigh both sides equally
        total = total + 0.5 * losses[inside].mean()
    if negative.any():
        total = total + (0.5 if inside.any() else 1.0) * losses[negative].mean()
    return total


class _Checkpoints:
    """``epoch-NNN.safetensors`` (model, classifier, optimiser) and ``state.json`` in the fine-tune folder."""

    def __init__(self, folder: Path) -> None:
        self.folder = folder
        self.state_path = folder / "state.json"

    def read_state(self) -> dict[str, Any] | None:
        if not self.state_path.exists():
            return None
        return json.loads(self.state_path.read_text(encoding="utf-8"))

    def save(self, epoch: int, net: nn.Module, optimizer: torch.optim.Optimizer, state: dict[str, Any]) -> None:
        from safetensors.torch import save

        tensors = {f"net.{k}": v.detach().cpu().contiguous() for k, v in net.state_dict().items()}
        for index, slots in optimizer.state_dict()["state"].items():
            for name, value in slots.items():
                tensors[f"optim.{index}.{name}"] = torch.as_tensor(value).detach().cpu().contiguous()
        payload = save(tensors)
        atomic_write(self.folder / f"epoch-{epoch:03d}.safetensors", lambda tmp: tmp.write_bytes(payload))
        atomic_write_json(self.state_path, state)
        keep = {f"epoch-{epoch:03d}.safetensors", f"epoch-{state.get('best_epoch', epoch):03d}.safetensors"}
        for old in self.folder.glob("epoch-*.safetensors"):
            if old.name not in keep:
                old.unlink()

    def load(self, epoch: int, net: nn.Module, optimizer: torch.optim.Optimizer | None) -> None:
        from safetensors.torch import load_file

        tensors = load_file(self.folder / f"epoch-{epoch:03d}.safetensors")
        net.load_state_dict({k[4:]: v for k, v in tensors.items() if k.startswith("net.")})
        if optimizer is not None:
            slots: dict[int, dict[str, torch.Tensor]] = {}
            for key, value in tensors.items():
                if key.startswith("optim."):
                    _, index, name = key.split(".", 2)
                    slots.setdefault(int(index), {})[name] = value
            state = optimizer.state_dict()
            state["state"] = slots
            optimizer.load_state_dict(state)


def _lr_factor(step: int, steps_per_epoch: int, total_steps: int) -> float:
    warmup = max(1, steps_per_epoch)
    if step < warmup:
        return (step + 1) / warmup
    progress = (step - warmup) / max(1, total_steps - warmup)
    return 0.5 * (1.0 + math.cos(math.pi * min(1.0, progress)))


@torch.no_grad()
def _validate(
    net: FineTuneNet,
    samples: list[_Sample],
    preprocess: PreprocessConfig,
    batch_size: int,
    device: torch.device,
    dtype: torch.dtype | None,
) -> float:
    net.eval()
    losses = []
    for start in range(0, len(samples), batch_size):
        chunk = samples[start : start + batch_size]
        images = torch.stack([s.image.float() for s in chunk])[:, None].to(device)
        targets = torch.tensor([s.target for s in chunk], device=device)
        with torch.autocast(device.type, dtype=dtype or torch.float32, enabled=dtype is not None):
            logits, _, _ = net(_to_input(images, preprocess))
        losses.append(F.binary_cross_entropy_with_logits(logits.float(), targets, reduction="sum").item())
    return sum(losses) / max(1, len(samples))


def tuned_backbone(weights_file: str | Path) -> str:
    """The registry name to extract features with, for a weights file :func:`finetune` wrote."""
    from safetensors import safe_open

    with safe_open(str(weights_file), framework="pt") as handle:
        return (handle.metadata() or {})["backbone"]


@keeps_torch_rng
def finetune(
    manifest_path: str | Path,
    out_dir: str | Path,
    config: FineTuneConfig | None = None,
    *,
    weights: str | None = None,
    restart: bool = False,
    progress: bool = True,
) -> Path:
    """Fine-tune on the manifest's train split (val for early stopping); return the backbone weights file.

    ``out_dir`` holds checkpoints and ``state.json``; calling again with the same manifest and config resumes
    after the last finished epoch (or returns at once when training had finished). ``weights`` are the
    starting weights (default: the registry's pretrained ones). ``restart`` discards a previous run in
    ``out_dir`` made with another manifest or configuration instead of refusing.
    """
    from xvision.backbones.registry import get_spec

    config = config or FineTuneConfig()
    out = Path(out_dir)
    manifest, positive = _binary_manifest(manifest_path)
    identity = run_identity(manifest_path, config, weights)
    checkpoints, state = open_run(out, identity, restart)
    weights_file = out / WEIGHTS_NAME
    if state is not None and state.get("finished") and weights_file.exists():
        return weights_file

    train_rows, val_rows = split_rows(manifest)
    preprocess = get_spec(config.backbone).preprocess
    masks = config.pool != "inside"
    train = _load_samples(manifest, train_rows, positive, preprocess, progress, lung=masks)
    val = _load_samples(manifest, val_rows, positive, preprocess, progress, lung=masks)
    n_pos = sum(s.target for s in train)
    if n_pos == 0 or n_pos == len(train):
        raise ManifestError(f"{manifest.name}: the training split needs images of both classes")
    lung = masks and any(s.has_lung for s in train)
    if masks and not lung:
        hint = "add a 'mask' column (a lung-field image per row, nonzero = lung)"
        if config.pool == "lung":
            raise ManifestError(f"{manifest.name}: pooling over the lung fields needs lung masks to learn them: {hint}")
        log.warning("%s has no lung masks: pooling over the film less its border (%s)", manifest.name, hint)

    torch.manual_seed(config.seed)
    timm_model = timm_body(config.backbone, weights)
    device = torch.device("cuda" if torch.cuda.is_available() else "cpu")
    net = FineTuneNet(timm_model, lung=lung).to(device, memory_format=torch.channels_last)
    net.freeze(config.frozen_stages)
    head_params = [p for unit in (net.classifier, net.lung) if unit is not None for p in unit.parameters()]
    body_params = [p for n, p in net.model.named_parameters() if p.requires_grad and not n.startswith(LUNG_UNIT)]
    optimizer = torch.optim.AdamW(
        [{"params": body_params, "lr": config.lr}, {"params": head_params, "lr": config.head_lr}],
        weight_decay=config.weight_decay,
    )
    base_lrs = [config.lr, config.head_lr]
    steps_per_epoch = math.ceil(len(train) / config.batch_size)
    total_steps = steps_per_epoch * config.epochs
    pos_weight = torch.tensor((len(train) - n_pos) / n_pos, device=device)
    dtype = _pick_dtype(device)
    log.info("fine-tuning on %s (%s)", device, "fp32" if dtype is None else str(dtype).replace("torch.", ""))

    state = state or {**identity, "epochs_done": 0, "history": [], "best_epoch": None, "best_val_loss": None}
    state["pooled_over"] = "lung fields" if lung else "film less its border"
    if state["epochs_done"]:
        checkpoints.load(state["epochs_done"], net, optimizer)
        log.info("resuming fine-tuning after epoch %d", state["epochs_done"])

    for epoch in range(state["epochs_done"] + 1, config.epochs + 1):
        generator = torch.Generator().manual_seed(config.seed * 100_003 + epoch)
        order = torch.randperm(len(train), generator=generator).tolist()
        net.train()
        running = []
        bar = progress_bar(total=steps_per_epoch, desc=f"fine-tune {epoch}/{config.epochs}", disable=not progress)
        for step_in_epoch, start in enumerate(range(0, len(order), config.batch_size)):
            step = (epoch - 1) * steps_per_epoch + step_in_epoch
            for group, base in zip(optimizer.param_groups, base_lrs, strict=True):
                group["lr"] = base * _lr_factor(step, steps_per_epoch, total_steps)
            chunk = [train[i] for i in order[start : start + config.batch_size]]
            images = torch.stack([s.image.float() for s in chunk])[:, None]
            lesions = torch.stack([s.lesion for s in chunk])
            targets = torch.tensor([s.target for s in chunk], device=device)
            theta = random_affine(len(chunk), config.augment, generator)
            images = augment_intensity(warp(images, theta), config.augment, generator).to(device, non_blocking=True)
            lesions = warp(lesions, theta, mode="nearest").to(device, non_blocking=True)
            has = torch.tensor([s.has_lung for s in chunk], device=device)
            known = (lesions[:, 2], has) if lung else None  # the true lung field, where a mask exists
            with torch.autocast(device.type, dtype=dtype or torch.float32, enabled=dtype is not None):
                logits, dense, lung_logits = net(_to_input(images, preprocess), known)
            loss = F.binary_cross_entropy_with_logits(logits.float(), targets, pos_weight=pos_weight)
            if config.lesion_weight > 0:
                loss = loss + config.lesion_weight * _dense_loss(dense, lesions[:, :2])
            if lung_logits is not None and has.any():  # the lung unit learns "this cell touches the lung field"
                truth = cells_of(lesions[has, 2], lung_logits.shape[-2:])
                loss = loss + F.binary_cross_entropy_with_logits(lung_logits[has].float(), truth.float())
            optimizer.zero_grad(set_to_none=True)
            loss.backward()
            optimizer.step()
            running.append(float(loss.detach()))
            bar.set_postfix(loss=f"{np.mean(running):.3f}", refresh=False)
            bar.update()
        bar.close()
        record: dict[str, Any] = {"epoch": epoch, "train_loss": float(np.mean(running))}
        if val:
            record["val_loss"] = _validate(net, val, preprocess, config.batch_size, device, dtype)
        stop = end_epoch(state, record, "val_loss", checkpoints, net, optimizer, patience=config.patience)
        log.info("fine-tune epoch %d: %s", epoch, record)
        if stop:
            log.info("early stop: no better validation loss for %d epochs", config.patience)
            break

    checkpoints.load(state["best_epoch"], net, None)
    return save_tuned(net.model, config.backbone + (LUNG_SUFFIX if lung else ""), weights_file, checkpoints, state)


def end_epoch(
    state: dict[str, Any],
    record: dict[str, Any],
    key: str,
    checkpoints: _Checkpoints,
    net: nn.Module,
    optimizer: torch.optim.Optimizer,
    *,
    patience: int,
    higher_is_better: bool = False,
) -> bool:
    """Record a finished epoch, keep the best one by ``record[key]`` (the latest when the record has no
    ``key``: no validation), checkpoint; True when ``patience`` epochs passed without a better one."""
    epoch, value = record["epoch"], record.get(key)
    if value is None:
        state["best_epoch"] = epoch
    else:
        best = state.get(f"best_{key}")
        if best is None or (value > best if higher_is_better else value < best):
            state[f"best_{key}"], state["best_epoch"] = value, epoch
    state["history"].append(record)
    state["epochs_done"] = epoch
    checkpoints.save(epoch, net, optimizer, state)
    return value is not None and epoch - state["best_epoch"] >= patience


def timm_body(name: str, weights: str | None) -> nn.Module:
    """The timm EfficientNet inside registry backbone ``name``, with ``weights`` resolved as everywhere else."""
    from xvision.backbones.registry import create_backbone

    backbone = create_backbone(name, weights=weights)
    if not backbone.pretrained:
        log.warning("fine-tuning from randomly initialised weights: a small data set cannot train a network")
    timm_model = getattr(getattr(backbone.model, "body", None), "model", None)
    if timm_model is None or not hasattr(timm_model, "blocks"):
        raise BackboneError(f"fine-tuning supports the EfficientNet backbones of the registry, not '{name}'")
    return timm_model


def _binary_manifest(manifest_path: str | Path) -> tuple[Manifest, str]:
    manifest = read_manifest(manifest_path)
    if len(manifest.classes) != 2:
        raise ManifestError(f"{manifest.name}: fine-tuning needs exactly two classes, found {manifest.classes}")
    return manifest, default_positive(manifest.classes)


def run_identity(manifest_path: str | Path, config: Any, weights: str | None) -> dict[str, Any]:
    """What a fine-tuning folder was made from; resuming needs the same."""
    return {
        "manifest_sha256": sha256_file(manifest_path),
        "config": json.loads(json.dumps(config.to_dict())),
        "initial_weights": sha256_file(weights) if weights not in (None, "random") else weights or "pretrained",
    }


def open_run(out: Path, identity: dict[str, Any], restart: bool) -> tuple[_Checkpoints, dict[str, Any] | None]:
    """The folder's checkpoints and its state to resume from (None: start afresh). A folder holding another
    run is refused, or emptied with ``restart``."""
    out.mkdir(parents=True, exist_ok=True)
    checkpoints = _Checkpoints(out)
    state = checkpoints.read_state()
    if state is not None and {k: state.get(k) for k in identity} != identity:
        if not restart:
            raise RunError(
                f"{out}: holds a fine-tuning run of another manifest or configuration; "
                "use another folder or pass --overwrite"
            )
        for old in [*out.glob("epoch-*.safetensors"), checkpoints.state_path, out / WEIGHTS_NAME]:
            old.unlink(missing_ok=True)
        state = None
    return checkpoints, state


def split_rows(manifest: Manifest) -> tuple[list, list]:
    """(train rows, validation rows): without a split column every row trains."""
    if not manifest.has_splits:
        return list(manifest.rows), []
    return [r for r in manifest.rows if r.split == "train"], [r for r in manifest.rows if r.split == "val"]


def save_tuned(
    model: nn.Module, backbone: str, weights_file: Path, checkpoints: _Checkpoints, state: dict[str, Any]
) -> Path:
    """Write the tuned timm model's weights for the registry entry ``backbone``; mark the run finished."""
    write_tuned(model.state_dict(), backbone, weights_file)
    state["finished"] = True
    atomic_write_json(checkpoints.state_path, state)
    return weights_file


def write_tuned(tensors: dict[str, torch.Tensor], backbone: str, weights_file: Path) -> Path:
    """Write fine-tuned weights atomically, marked with the registry entry that loads them (read back by
    :func:`tuned_backbone`).

    A file that already holds these weights and marks is left alone. Runs and feature stores know the file
    by its SHA-256: re-running a finished `fit` (which rebuilds a detector ensemble's file from its
    members) must not touch it. (Files written before :func:`~xvision._fileio.stable_safetensors` may hold
    the same weights in other bytes; they are kept too.)"""
    from safetensors.torch import save

    tuned = {k: v.detach().cpu().contiguous() for k, v in tensors.items()}
    metadata = {"format": "xvision-finetuned", "backbone": backbone}
    if _holds(weights_file, tuned, metadata):
        return weights_file
    payload = stable_safetensors(save(tuned, metadata=metadata))
    atomic_write(weights_file, lambda tmp: tmp.write_bytes(payload))
    return weights_file


def _holds(path: Path, tensors: dict[str, torch.Tensor], metadata: dict[str, str]) -> bool:
    """Whether the safetensors file at ``path`` holds exactly these tensors and metadata."""
    from safetensors import safe_open

    if not path.is_file():
        return False
    try:
        with safe_open(str(path), framework="pt") as handle:
            if handle.metadata() != metadata or set(handle.keys()) != set(tensors):
                return False
            for key, value in tensors.items():
                stored = handle.get_tensor(key)
                if stored.dtype != value.dtype or not torch.equal(stored, value):
                    return False
            return True
    except Exception:  # noqa: BLE001 - unreadable or not safetensors: rewrite it
        return False
