"""What a fine-tuning run is made of (kept free of torch so the recipe registry imports it cheaply)."""

from __future__ import annotations

from dataclasses import asdict, dataclass, field
from typing import Any

FINETUNE_BACKBONE = "efficientnet_lite0_512"
WEIGHTS_NAME = "backbone.safetensors"
FINETUNE_DIR = "finetune"  # inside a run folder; `predict` and `evaluate` find the weights there


@dataclass(frozen=True)
class AugmentConfig:
    """Augmentation ranges; see :mod:`xvision.finetune.augment` for why these and no left-right flip."""

    rotation_deg: float = 8.0
    scale: tuple[float, float] = (0.9, 1.1)
    translate: float = 0.05
    brightness: float = 0.08  # added, in [0, 1] units
    contrast: tuple[float, float] = (0.85, 1.15)
    gamma: tuple[float, float] = (0.8, 1.25)
    noise_std: float = 0.02


@dataclass(frozen=True)
class FineTuneConfig:
    backbone: str = FINETUNE_BACKBONE
    epochs: int = 12
    batch_size: int = 8
    lr: float = 3e-4
    head_lr: float = 1e-3
    weight_decay: float = 1e-4
    frozen_stages: int = 3
    lesion_weight: float = 1.0
    # "inside": max-pool over the film less its 5% border; "lung": over the cells a lung unit (trained from
    # the manifest's `mask` column) marks as lung field, so nothing outside the lungs can decide an image;
    # "auto": "lung" when the training rows have masks, else "inside" (with a warning).
    pool: str = "inside"
    patience: int = 4
    seed: int = 0
    augment: AugmentConfig = field(default_factory=AugmentConfig)

    def __post_init__(self) -> None:
        if self.pool not in ("inside", "lung", "auto"):
            raise ValueError(f"pool must be 'inside', 'lung' or 'auto', got {self.pool!r}")

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


@dataclass(frozen=True)
class DetectorConfig:
    """Training a lesion detector on full-resolution crops (:mod:`xvision.finetune.detector`).

    A "round" is ``steps_per_round`` steps: the unit of checkpoints, resume and early stopping.
    """

    backbone: str = "efficientnet_lite0_1024_lesion"
    rounds: int = 8
    steps_per_round: int = 50
    batch_size: int = 12  # half crops holding a lesion, half taken anywhere on the film
    crop: int = 256
    lr: float = 3e-4
    head_lr: float = 1e-3
    weight_decay: float = 1e-4
    frozen_stages: int = 3
    patience: int = 3
    seed: int = 0
    # Share of the lesion crops made by transplanting a training nodule onto another training film
    # (:mod:`xvision.finetune.transplant`); the rest show the nodules where they are. Off: with 0.5 the
    # held-out AUC fell from 0.65 to 0.58 on JSRT (docs/recipes.md).
    paste: float = 0.0
    # Share of the other crops taken at the detector's current hottest places on lesion-free training films
    # (re-mined at the start of every round from the second on; ribs, vessel crossings, the chest wall).
    # Off: with 0.5, five folds gave mean fold AUC 0.677 against 0.650, and a second seed did not repeat it
    # (0.589 and 0.796 on its first two folds): seed noise (docs/recipes.md).
    hard_negatives: float = 0.0
    # Detectors trained one after another with seeds seed, seed + 1, ... (in member-<k> folders); the image
    # score is the highest place of their mean lesion map (registry ``<backbone>_x<members>``, 2 or 3):
    # averaging removes part of the +-0.05 that one detector's held-out AUC owes to its seed alone.
    members: int = 1
    augment: AugmentConfig = field(default_factory=lambda: AugmentConfig(translate=0.0))

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)
