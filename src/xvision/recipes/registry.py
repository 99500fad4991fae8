"""The recipes and what each is made of."""

from __future__ import annotations

from dataclasses import dataclass, field, replace
from typing import Any

from xvision.errors import XvisionError
from xvision.finetune.config import DetectorConfig, FineTuneConfig

DEFAULT_RECIPE = "best"


@dataclass(frozen=True)
class Recipe:
    name: str
    description: str
    backbone: str
    head: dict[str, Any] = field(default_factory=dict)  # MLPClassifier parameters
    # Train the backbone first (xvision.finetune): end to end on whole films, or as a lesion detector on crops.
    finetune: FineTuneConfig | DetectorConfig | None = None
    # For a detector recipe: the recipe to run instead, with a warning, when the manifest has no lesion
    # locations to learn from (None: refuse such a manifest). Columns that look like misnamed locations
    # (nodule_x, ...) are refused either way (recipes.fit).
    without_lesions: str | None = None


# A linear head, standardised and strongly regularised: 150 images cannot support a 512-512 MLP.
_LINEAR_HEAD: dict[str, Any] = {
    "hidden": (),
    "lr": 0.01,
    "momentum": 0.9,
    "weight_decay": 1e-1,
    "batch_size": 20,
    "epochs": 60,
    "standardize": True,
}

_FINETUNE = Recipe(
    name="finetune",
    description="EfficientNet-Lite0 at 512 px fine-tuned end to end (last four stages), features max-pooled "
    "over the film less its border, lesion-supervised where the manifest has lesion_x/lesion_y/lesion_diam; "
    "linear head",
    backbone="efficientnet_lite0_512",
    head=_LINEAR_HEAD,
    finetune=FineTuneConfig(),
)

# Two detectors (seeds seed and seed + 1), scored at the highest place of their mean map: one detector's AUC moves by
# +-0.05 with its seed alone on ~150 films. On JSRT's five folds the pair's mean fold AUC was 0.665 against
# 0.653 and 0.648 alone. It costs twice the training (fit on 148 films: 17 min on 2 AVX2 cores, 6 min on 2
# cores with native bf16) and 1.3x the prediction time (1.15 s per 1024 px film on the AVX2 cores; the frozen
# stages run once): within the 30 min / 2 s bounds.
_DETECT = Recipe(
    name="detect",
    description="a nodule detector: EfficientNet-Lite0 trained at 1024 px on 256 px crops to say 'lesion here' "
    "at every position (needs lesion_x/lesion_y/lesion_diam to train, not to predict), two of them with "
    "different seeds; the image's score is the highest position of their mean map over the film less its "
    "border; linear head",
    backbone="efficientnet_lite0_1024_lesion_x2",
    head=_LINEAR_HEAD,
    finetune=DetectorConfig(members=2),
)

_RECIPES = {
    recipe.name: recipe
    for recipe in [
        Recipe(
            name="seed",
            description="the original recipe: VGG16 pool5 (25,088-d at 224 px), raw features, 512-512 MLP, "
            "SGD lr 0.01, batch 20, 20 epochs",
            backbone="vgg16",
            head={"hidden": (512, 512), "lr": 0.01, "batch_size": 20, "epochs": 20, "standardize": False},
        ),
        Recipe(
            name="lite0",
            description="EfficientNet-Lite0 global-average features (1,280-d at 224 px), standardised, "
            "the seed's 512-512 MLP",
            backbone="efficientnet_lite0",
            head={"hidden": (512, 512), "lr": 0.01, "batch_size": 20, "epochs": 20, "standardize": True},
        ),
        Recipe(
            name="lite0_768",
            description="frozen EfficientNet-Lite0 at 768 px, stride-16 features max-pooled over the whole film "
            "(112-d), linear head. On JSRT its signal comes from the film border, not the lungs (docs/recipes.md)",
            backbone="efficientnet_lite0_768",
            head=_LINEAR_HEAD,
        ),
        _FINETUNE,
        _DETECT,
        # Pooling over predicted lung fields measured no worse than over the film (within noise,
        # docs/recipes.md) and makes the evidence lie in the lungs by construction: no film border, marker
        # or abdomen can decide an image. Without masks in the manifest it is `finetune`, with a warning.
        replace(
            _FINETUNE,
            name="finetune_lung",
            description="as `finetune`, but features max-pooled over the lung fields that a unit trained from "
            "the manifest's `mask` column predicts (prediction needs no masks); without masks, as `finetune`",
            finetune=replace(_FINETUNE.finetune, pool="auto"),
        ),
        # The default: the only recipe here whose figure on JSRT is clearly above chance once the film border
        # is out of play (cross-validated AUC about 0.66 against 0.54-0.57, docs/recipes.md), and whose top
        # position lands on the nodule in about a quarter of the nodule films. It needs lesion locations to
        # train; without them it runs `finetune_lung`, with a warning.
        replace(
            _DETECT,
            name="best",
            description="`detect`; without lesion columns, `finetune_lung`",
            without_lesions="finetune_lung",
        ),
    ]
}


def list_recipes() -> list[Recipe]:
    return list(_RECIPES.values())


def get_recipe(name: str) -> Recipe:
    try:
        return _RECIPES[name]
    except KeyError:
        raise XvisionError(
            f"unknown recipe {name!r}; choose one of: {', '.join(_RECIPES)} (see `xvision recipes`)"
        ) from None
