"""Grad-CAM heatmaps: where in a radiograph the run's evidence for a class comes from.

Grad-CAM (Selvaraju et al., 2017) on the backbone's last spatial feature map (the one its pooling reads):
each channel is weighted by the mean gradient of the class score over the map, the weighted sum is kept
where positive and upsampled to the image. The class score is the head's logit margin of the class over the
others, before temperature and threshold (they do not move the evidence). Works for every registry backbone
and any head, since both are differentiable.

A heatmap shows what the model used, not what is right: a hot border or corner is a shortcut warning.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F

from xvision.inference.predictor import Prediction, Predictor


def _last_spatial_output(model: torch.nn.Module, batch: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """Run ``model``; return its output and the last 4-D activation with more than one position."""
    seen: list[torch.Tensor] = []

    def keep(_module: torch.nn.Module, _inputs: object, output: object) -> None:
        if isinstance(output, torch.Tensor) and output.ndim == 4 and output.shape[-1] * output.shape[-2] > 1:
            output.retain_grad()
            seen.append(output)

    handles = [module.register_forward_hook(keep) for module in model.modules()]
    try:
        out = model(batch)
    finally:
        for handle in handles:
            handle.remove()
    if not seen:
        raise RuntimeError("the backbone has no spatial feature map to explain")
    return out, seen[-1]


def gradcam(predictor: Predictor, image: np.ndarray, target: str | None = None) -> np.ndarray:
    """A heatmap in [0, 1], the image's shape, for class ``target`` (default: the positive or top class)."""
    classes = predictor.classes
    batch = predictor.backbone.preprocess(image)[None].requires_grad_(True)  # gradients reach every activation
    model = predictor.backbone.model
    head = predictor.bundle.head.net_.eval()
    with torch.enable_grad():
        features, activation = _last_spatial_output(model, batch)
        logits = head(features.float())[0]
        if target is None:
            index = classes.index(predictor.positive) if predictor.positive else int(logits.argmax())
        else:
            index = classes.index(target)
        others = torch.cat([logits[:index], logits[index + 1 :]])
        score = logits[index] - (others.max() if len(others) else 0.0)
        score.backward()
    grad = activation.grad
    weights = grad.mean(dim=(2, 3), keepdim=True)
    cam = F.relu((weights * activation).sum(dim=1, keepdim=True)).detach()
    cam = F.interpolate(cam, size=image.shape, mode="bilinear", align_corners=False)[0, 0].numpy()
    peak = float(cam.max())
    return cam / peak if peak > 0 else cam


def draw_evidence(predictor: Predictor, image: np.ndarray, result: Prediction, path: str | Path, *, name: str) -> Path:
    """Write ``image`` with the Grad-CAM of the positive class (else the predicted one) over it, titled with the
    decision; random-weight runs are watermarked. What `predict --heatmaps` and the server's /heatmap draw."""
    from xvision.evaluation.plots import plot_heatmap
    from xvision.inference.bundle import UNTRAINED_WARNING

    shown = predictor.positive or result.label
    heat = gradcam(predictor, image, shown)
    title = f"{name}: {result.label}; Grad-CAM for {shown} (p={result.probabilities[shown]:.2f})"
    if not heat.any():  # e.g. a lesion detector whose every place scores below zero: say so, not a bare film
        title += f"; no evidence for {shown} anywhere"
    watermark = UNTRAINED_WARNING if predictor.untrained_backbone else None
    return plot_heatmap(image, heat, path, title=title, watermark=watermark)
