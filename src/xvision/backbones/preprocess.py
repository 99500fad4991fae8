"""Turn Xvision's image array (float32, 2-D, [0, 1], display polarity) into a backbone's input tensor.

Each backbone carries a :class:`PreprocessConfig`; callers never hard-code sizes or normalisation.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass
from typing import Any

import numpy as np
import torch
import torch.nn.functional as F

IMAGENET_MEAN = (0.485, 0.456, 0.406)
IMAGENET_STD = (0.229, 0.224, 0.225)


@dataclass(frozen=True)
class PreprocessConfig:
    """How a radiograph becomes a network input.

    ``resize="squash"`` resizes the whole radiograph to ``input_size`` x ``input_size`` without cropping: the
    lung apices and costophrenic angles sit near the border of a chest film, and a centre crop would cut them
    off (this is also what the seed recipe did). The grayscale image is replicated to ``channels`` channels,
    then normalised with ``mean`` and ``std`` per channel.
    """

    input_size: int = 224
    resize: str = "squash"
    interpolation: str = "bilinear"
    mean: tuple[float, ...] = IMAGENET_MEAN
    std: tuple[float, ...] = IMAGENET_STD
    channels: int = 3

    def to_dict(self) -> dict[str, Any]:
        out = asdict(self)
        out["mean"] = list(self.mean)
        out["std"] = list(self.std)
        return out

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> PreprocessConfig:
        return cls(
            input_size=int(data["input_size"]),
            resize=str(data.get("resize", "squash")),
            interpolation=str(data.get("interpolation", "bilinear")),
            mean=tuple(float(v) for v in data["mean"]),
            std=tuple(float(v) for v in data["std"]),
            channels=int(data.get("channels", 3)),
        )


def preprocess_image(image: np.ndarray, config: PreprocessConfig) -> torch.Tensor:
    """Return a float32 tensor of shape (channels, size, size) ready for the backbone."""
    if image.ndim != 2:
        raise ValueError(f"expected a 2-D grayscale image, got shape {image.shape}")
    if config.resize != "squash":
        raise ValueError(f"unknown resize mode {config.resize!r}")
    tensor = torch.from_numpy(np.ascontiguousarray(image, dtype=np.float32))[None, None]
    size = config.input_size
    if tensor.shape[-2:] != (size, size):
        mode = "bicubic" if config.interpolation == "bicubic" else "bilinear"
        # antialias: radiographs arrive at 1-4 megapixels; plain bilinear downsampling would alias rib edges.
        tensor = F.interpolate(tensor, size=(size, size), mode=mode, antialias=True, align_corners=False)
        tensor = tensor.clamp_(0.0, 1.0)
    tensor = tensor[0].expand(config.channels, size, size)
    mean = torch.tensor(config.mean, dtype=torch.float32).view(-1, 1, 1)
    std = torch.tensor(config.std, dtype=torch.float32).view(-1, 1, 1)
    return ((tensor - mean) / std).contiguous()
