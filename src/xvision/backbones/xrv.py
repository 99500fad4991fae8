"""Chest X-ray backbones: torchxrayvision's DenseNet-121 and ResNet-50 (Cohen et al., MIDL 2022).

These networks were trained on hundreds of thousands of chest radiographs (NIH, PadChest, CheXpert,
MIMIC-CXR, ...), one grayscale channel, with their own normalisation: pixel values mapped to [-1024, 1024]
(here ``mean=0.5, std=1/2048`` on Xvision's [0, 1] images, the same mapping). The architectures are
torchvision's with a one-channel first convolution, so their state dicts load here without the package.

Weights. torchxrayvision publishes them as pickled PyTorch files, which can execute code when loaded; Xvision
never unpickles a downloaded file. Convert them once, with the package that published them, where you
trust it::

    pip install torchxrayvision
    xvision backbones --convert xrv_densenet121_all        # writes the cache file named below

The resolved order is then as for every backbone: ``--weights FILE`` (safetensors or a plain state dict),
then the converted file in the torch hub cache (``$TORCH_HOME/hub/checkpoints/``); otherwise a clear error
with these instructions. Tests use random weights.
"""

from __future__ import annotations

import sys
from dataclasses import dataclass
from pathlib import Path

import torch
from torch import nn

from xvision._fileio import atomic_write, sha256_file
from xvision.backbones.weights import StateDict, WeightsIdentity, load_state_dict_file
from xvision.errors import WeightsNotFoundError

XRV_MEAN = (0.5,)
XRV_STD = (1.0 / 2048.0,)
N_PATHOLOGIES = 18


def xrv_densenet121() -> nn.Module:
    from torchvision.models import densenet121

    model = densenet121(weights=None, num_classes=N_PATHOLOGIES)
    model.features.conv0 = nn.Conv2d(1, 64, kernel_size=7, stride=2, padding=3, bias=False)
    return model


def xrv_resnet50() -> nn.Module:
    from torchvision.models import resnet50

    model = resnet50(weights=None, num_classes=N_PATHOLOGIES)
    model.conv1 = nn.Conv2d(1, 64, kernel_size=7, stride=2, padding=3, bias=False)
    return model


@dataclass(frozen=True)
class ConvertedWeights:
    """Weights that must be converted from a pickled original by the user (see the module docstring)."""

    xrv_name: str  # torchxrayvision's weights name
    filename: str  # the converted safetensors file in the torch hub cache

    def cache_path(self) -> Path:
        return Path(torch.hub.get_dir()) / "checkpoints" / self.filename

    def resolve(self, backbone: str) -> tuple[StateDict, WeightsIdentity]:
        cached = self.cache_path()
        if not cached.is_file():
            raise WeightsNotFoundError(
                f"chest X-ray weights for backbone '{backbone}' are not converted yet: run "
                f"`pip install torchxrayvision && xvision backbones --convert {backbone}` where a network "
                f"exists (writes {cached}), or pass --weights FILE.safetensors"
            )
        state = load_state_dict_file(cached)
        identity = WeightsIdentity(
            source="torch-hub-cache", name=self.filename, sha256=sha256_file(cached), pretrained=True
        )
        return state, identity


def convert(backbone: str, out: Path | None = None) -> Path:
    """Load torchxrayvision's published weights with torchxrayvision itself; save them as safetensors."""
    from safetensors.torch import save

    from xvision.backbones.registry import get_spec

    spec = get_spec(backbone)
    source = spec.weights
    if not isinstance(source, ConvertedWeights):
        raise WeightsNotFoundError(f"backbone '{backbone}' is not a torchxrayvision backbone")
    try:
        import torchxrayvision as xrv
    except ImportError:
        raise WeightsNotFoundError(
            "converting needs the torchxrayvision package: pip install torchxrayvision"
        ) from None
    if source.xrv_name.startswith("densenet"):
        original = xrv.models.DenseNet(weights=source.xrv_name)
    else:
        original = xrv.models.ResNet(weights=source.xrv_name).model
    target = spec.build()
    wanted = target.state_dict()
    state = {k: v.detach().contiguous() for k, v in original.state_dict().items() if k in wanted}
    target.load_state_dict(state)  # fails loudly if the architectures ever drift apart
    payload = save(state, metadata={"source": f"torchxrayvision:{source.xrv_name}"})
    return atomic_write(out or source.cache_path(), lambda tmp: tmp.write_bytes(payload))


def main(argv: list[str] | None = None) -> int:
    args = sys.argv[1:] if argv is None else argv
    usage = "usage: python -m xvision.backbones.xrv BACKBONE [OUT.safetensors]"
    if args[:1] in (["-h"], ["--help"]):
        print(usage)
        return 0
    if len(args) not in (1, 2):
        print(usage, file=sys.stderr)
        return 2
    try:
        path = convert(args[0], Path(args[1]) if len(args) == 2 else None)
    except WeightsNotFoundError as error:
        print(f"error: {error}", file=sys.stderr)
        return 1
    print(f"wrote {path}")
    return 0


if __name__ == "__main__":
    # `python -m xvision.backbones.xrv` (the command earlier versions documented) runs a second copy of this
    # file as `__main__`, whose ConvertedWeights is not the registry's: hand over to the imported module.
    from xvision.backbones import xrv

    sys.exit(xrv.main())
