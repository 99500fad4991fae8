"""Pretrained networks and the preprocessing each expects."""

from xvision.backbones.preprocess import PreprocessConfig, preprocess_image
from xvision.backbones.registry import (
    DEFAULT_BACKBONE,
    Backbone,
    BackboneSpec,
    build_classifier,
    create_backbone,
    get_spec,
    list_backbones,
)
from xvision.backbones.weights import WeightsIdentity

__all__ = [
    "DEFAULT_BACKBONE",
    "Backbone",
    "BackboneSpec",
    "PreprocessConfig",
    "WeightsIdentity",
    "build_classifier",
    "create_backbone",
    "get_spec",
    "list_backbones",
    "preprocess_image",
]
