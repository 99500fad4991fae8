"""The recipes and what each is made of."""

from __future__ import annotations

import logging
from collections.abc import Sequence
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any

from xvision.errors import ManifestError, XvisionError
from xvision.finetune.config import DetectorConfig, FineTuneConfig

log = logging.getLogger(__name__)

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
    # For a recipe that fine-tunes (a two-class network): the recipe to run instead, with a warning, when the
    # manifest has more than two classes (None: refuse such a manifest).
    more_classes: str | None = None

    @property
    def two_classes_only(self) -> bool:
        return self.finetune is not None


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
            description="`detect`; without lesion columns, `finetune_lung`; with more than two classes, `lite0`",
            without_lesions="finetune_lung",
            more_classes="lite0",
        ),
    ]
}


def list_recipes() -> list[Recipe]:
    return list(_RECIPES.values())


def recipe_for_classes(recipe: Recipe, classes: Sequence[str], manifest: str | Path) -> Recipe:
    """``recipe``, or, for a manifest of more than two classes, the recipe it runs instead (with a warning);
    a fine-tuning recipe named for such a manifest is refused: its networks learn one finding against normal."""
    if not recipe.two_classes_only or len(classes) <= 2:
        return recipe
    if recipe.more_classes is not None:
        log.warning(
            "recipe %r fine-tunes for two classes and %s has %d (%s): running recipe %r instead",
            recipe.name,
            Path(manifest).name,
            len(classes),
            ", ".join(classes),
            recipe.more_classes,
        )
        return get_recipe(recipe.more_classes)
    names = [r.name for r in _RECIPES.values() if not r.two_classes_only]
    any_number = f"{', '.join(names[:-1])} or {names[-1]}" if len(names) > 1 else names[0]
    raise ManifestError(
        f"{manifest}: recipe {recipe.name!r} fine-tunes for two classes and the manifest has {len(classes)} "
        f"({', '.join(classes)}); use --recipe {any_number}, which train any number of classes"
    )


def get_recipe(name: str) -> Recipe:
    try:
        return _RECIPES[name]
    except KeyError:
        raise XvisionError(
            f"unknown recipe {name!r}; choose one of: {', '.join(_RECIPES)} (see `xvision recipes`)"
        ) from None
