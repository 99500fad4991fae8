"""Nodule transplantation: more "lesion here" examples than a small data set holds.

With ~60-90 located nodules, the detector sees each one in a few hundred crops and learns those nodules and
their surroundings (its training loss falls to 0.2 while held-out folds stay near AUC 0.65). Transplanting
gives it the same nodules on other films, at other places:

- :func:`nodule_signal` lifts a real nodule off its film: a square patch around it, minus a plane fitted to a
  ring just outside the nodule (the local background: lung, a rib's slope, the exposure gradient), faded to
  zero beyond the nodule's edge so little of its neighbourhood travels with it;
- :func:`paste` adds that signal, rescaled (x0.8-1.25) and turned (0/90/180/270 degrees; no mirror images are
  needed, the signal has no side), at a random place of another training film's crop, inside the lung field
  where the film has a lung mask (a nodule pasted onto the heart or the abdomen is not what the detector will
  meet), and marks that place "lesion here" in the crop's lesion map.

Adding the signal in the [0, 1] intensity domain is an approximation (film density is log-exposure); real
nodules are faint (a few percent of the range), where the two agree.
"""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F

from xvision.finetune.targets import lesion_map

RING = (1.3, 1.8)  # the background plane is fitted between these multiples of the radius
FADE = (0.9, 1.3)  # the signal keeps full strength inside FADE[0] x radius and is zero beyond FADE[1]
SCALE = (0.8, 1.25)


def nodule_signal(image: torch.Tensor, centre: tuple[float, float], radius: float) -> torch.Tensor:
    """The nodule's own contribution to ``image`` (H, W) around ``centre`` (x, y): a square float patch."""
    half = math.ceil(RING[1] * radius) + 1
    cx, cy = round(centre[0]), round(centre[1])
    height, width = image.shape
    top, left = max(cy - half, 0), max(cx - half, 0)
    patch = image[top : min(cy + half + 1, height), left : min(cx + half + 1, width)].float()
    rows = torch.arange(patch.shape[0], dtype=torch.float32)[:, None] + top - centre[1]
    cols = torch.arange(patch.shape[1], dtype=torch.float32)[None, :] + left - centre[0]
    rows, cols = torch.broadcast_tensors(rows, cols)
    distance = torch.hypot(rows, cols)
    ring = (distance >= RING[0] * radius) & (distance <= RING[1] * radius)
    design = torch.stack([torch.ones_like(rows), rows / radius, cols / radius], dim=-1)
    if int(ring.sum()) >= 3:
        plane = torch.linalg.lstsq(design[ring], patch[ring][:, None]).solution
        background = (design @ plane)[..., 0]
    else:  # a nodule at the very edge of the film: no ring to fit; take the patch's median
        background = patch.median().expand_as(patch)
    fade = ((FADE[1] * radius - distance) / ((FADE[1] - FADE[0]) * radius)).clamp(0, 1)
    return (patch - background) * fade


def paste(
    image: torch.Tensor,
    maps: torch.Tensor,
    signal: torch.Tensor,
    radius: float,
    keep_off: int,
    generator: torch.Generator,
) -> tuple[torch.Tensor, torch.Tensor]:
    """Add ``signal`` (a nodule of ``radius`` px) to a copy of the crop ``image`` (S, S) at a random place at
    least ``keep_off`` px from its edges, inside the lung field when ``maps[2]`` (S/4 cells) marks one there,
    and mark it in a copy of ``maps`` (3, S/4, S/4): ``[inside, care, lung]``."""
    size = image.shape[-1]
    scale = SCALE[0] + (SCALE[1] - SCALE[0]) * float(torch.rand((), generator=generator))
    side = max(3, round(signal.shape[-1] * scale))
    signal = F.interpolate(signal[None, None], size=(side, side), mode="bilinear", align_corners=False)[0, 0]
    signal = torch.rot90(signal, int(torch.randint(4, (1,), generator=generator)))
    radius *= scale

    low, high = keep_off, size - keep_off
    cells = maps[2, low // 4 : high // 4, low // 4 : high // 4] > 0.5
    if cells.any():
        places = cells.nonzero()
        row, col = places[int(torch.randint(len(places), (1,), generator=generator))].tolist()
        y, x = 4 * (row + low // 4) + 2, 4 * (col + low // 4) + 2
    else:
        y, x = (int(torch.randint(low, max(low + 1, high), (1,), generator=generator)) for _ in range(2))

    top, left = y - side // 2, x - side // 2
    out = image.clone()
    t0, l0 = max(top, 0), max(left, 0)
    t1, l1 = min(top + side, size), min(left + side, size)
    out[t0:t1, l0:l1] = (out[t0:t1, l0:l1] + signal[t0 - top : t1 - top, l0 - left : l1 - left]).clamp(0, 1)

    inside, care = lesion_map(True, (float(x), float(y), 2 * radius), (size, size), maps.shape[-1])
    merged = maps.clone()
    merged[0] = torch.maximum(maps[0], inside)
    merged[1] = torch.maximum(maps[1] * care, merged[0])
    return out, merged
