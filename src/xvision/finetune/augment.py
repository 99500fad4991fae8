"""Augmentation suited to chest radiographs, applied to a batch and to its lesion maps alike.

Chosen for PA chest films:
- small rotations (+-8 degrees), scale (0.9-1.1) and translation (+-5% of the side): patient positioning
  varies by about that much; larger rotations produce films no scanner makes;
- brightness, contrast and gamma: exposure and processing differ between machines and sites;
- Gaussian noise: quantum noise varies with dose.
No left-right flip: the heart, aortic knob and gastric bubble sit on the patient's left, and a flipped film
is anatomically wrong (situs inversus is rare); a model should not have to learn that both are normal.

Geometric transforms go through one affine grid per image, so a lesion map sampled with the same grid
stays on the lesion.
"""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F

from xvision.finetune.config import AugmentConfig


def _uniform(n: int, low: float, high: float, generator: torch.Generator) -> torch.Tensor:
    return low + (high - low) * torch.rand(n, generator=generator)


def random_affine(n: int, config: AugmentConfig, generator: torch.Generator) -> torch.Tensor:
    """``n`` affine matrices (n, 2, 3) for :func:`torch.nn.functional.affine_grid` (output -> input coords)."""
    angle = _uniform(n, -config.rotation_deg, config.rotation_deg, generator) * (math.pi / 180.0)
    scale = _uniform(n, *config.scale, generator)
    shift = _uniform(2 * n, -2 * config.translate, 2 * config.translate, generator).view(n, 2)  # grid is [-1, 1]
    cos, sin = torch.cos(angle) / scale, torch.sin(angle) / scale
    return torch.stack([torch.stack([cos, -sin, shift[:, 0]], 1), torch.stack([sin, cos, shift[:, 1]], 1)], 1)


def warp(batch: torch.Tensor, theta: torch.Tensor, *, mode: str = "bilinear") -> torch.Tensor:
    """Resample (N, C, H, W) with the affine matrices; outside the film becomes 0 (air, black)."""
    grid = F.affine_grid(theta, list(batch.shape), align_corners=False)
    return F.grid_sample(batch, grid, mode=mode, padding_mode="zeros", align_corners=False)


def augment_intensity(batch: torch.Tensor, config: AugmentConfig, generator: torch.Generator) -> torch.Tensor:
    """Gamma, contrast, brightness and noise on images in [0, 1] (N, 1, H, W); the result stays in [0, 1]."""
    n = batch.shape[0]
    shape = (n, 1, 1, 1)
    gamma = _uniform(n, *config.gamma, generator).view(shape)
    contrast = _uniform(n, *config.contrast, generator).view(shape)
    brightness = _uniform(n, -config.brightness, config.brightness, generator).view(shape)
    out = batch.clamp(0.0, 1.0) ** gamma
    mean = out.mean(dim=(2, 3), keepdim=True)
    out = (out - mean) * contrast + mean + brightness
    if config.noise_std > 0:
        out = out + config.noise_std * torch.randn(out.shape, generator=generator)
    return out.clamp_(0.0, 1.0)
