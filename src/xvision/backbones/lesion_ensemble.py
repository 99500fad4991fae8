"""Several lesion detectors as one backbone: the image's feature is the highest place of their mean map.

Trained on ~150 films, one detector's held-out ROC AUC moves by +-0.05 with its random seed alone (crop
sampling and the lesion unit's start; docs/recipes.md). Averaging detectors trained with different seeds
removes part of that variance, as ensembles do. The members start from the same ImageNet weights and never
train their stem and first stages (``DetectorConfig.frozen_stages``), so those are identical: they run once
for all members, and a second member adds a quarter to a half of one network's prediction time, not all
of it (1.15 s against 0.91 s per 1024 px film on 2 idle cores).

Weights: one safetensors file whose keys are ``members.<k>.<timm key>`` (written by
:func:`xvision.finetune.detector.train_detector` with ``DetectorConfig.members``), registry name
``efficientnet_lite0_1024_lesion_x<k>``.
"""

from __future__ import annotations

from collections.abc import Callable

import torch
from torch import nn

LESION_ENSEMBLE_SIZES = (2, 3)


def lesion_ensemble_name(base: str, members: int) -> str:
    """The registry name of ``members`` detectors of backbone ``base``."""
    return f"{base}_x{members}"


class LesionMembers(nn.Module):
    """``n`` timm EfficientNets, each with its lesion unit (state dict keys ``members.<k>.<key>``)."""

    def __init__(self, build: Callable[[], nn.Module], n: int) -> None:
        super().__init__()
        self.members = nn.ModuleList(build() for _ in range(n))


class MemberFeatures(nn.Identity):
    """The members' final feature maps side by side, (N, members x C, h, w): a module, so that Grad-CAM (the
    last spatial module output) explains all members at once, each channel weighted by its own gradient."""


def _stages(model: nn.Module) -> list[nn.Module]:
    """A timm EfficientNet's ``forward_features`` as a list of stages: stem, each block stage, head conv."""
    return [nn.Sequential(model.conv_stem, model.bn1), *model.blocks, nn.Sequential(model.conv_head, model.bn2)]


def _same(a: nn.Module, b: nn.Module) -> bool:
    sa, sb = a.state_dict(), b.state_dict()
    return sa.keys() == sb.keys() and all(torch.equal(sa[k], sb[k]) for k in sa)


class LesionEnsembleScore(nn.Module):
    """One feature per image: the highest position, over the film less its 5% border, of the members' mean
    lesion map (their lesion logits averaged position by position).

    Averaging the maps, not each member's own highest position, asks the members to agree on a place: a
    nodule is where both look, while each seed's false positives (a rib crossing, the chest wall) tend to lie
    in different places (on JSRT the two are the same within noise: docs/recipes.md).

    Leading stages whose weights are the same in every member (found when the weights are loaded) run once.
    """

    def __init__(self, model: LesionMembers) -> None:
        super().__init__()
        self.model = model
        self.features = MemberFeatures()
        self._stages = [_stages(member) for member in model.members]  # a plain list: already registered
        first = self._stages[0]
        shared = 0
        while shared < len(first) - 1 and all(_same(first[shared], other[shared]) for other in self._stages[1:]):
            shared += 1
        self.shared_stages = shared

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        from xvision.backbones.registry import LESION_UNIT, dense_logits, max_inside

        for stage in self._stages[0][: self.shared_stages]:
            x = stage(x)
        features = []
        for stages in self._stages:
            y = x
            for stage in stages[self.shared_stages :]:
                y = stage(y)
            features.append(y)
        features = self.features(torch.cat(features, dim=1)).split(features[0].shape[1], dim=1)
        units = [getattr(member, LESION_UNIT) for member in self.model.members]
        maps = torch.stack([dense_logits(f, unit) for f, unit in zip(features, units, strict=True)], dim=1)
        return max_inside(maps.mean(dim=1, keepdim=True))
