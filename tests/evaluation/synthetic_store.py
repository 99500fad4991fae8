"""Synthetic feature stores: CNN-code-like vectors written straight into a FEATURES_DIR, no backbone needed."""

from __future__ import annotations

import hashlib
from pathlib import Path

import numpy as np

from xvision.features.store import FeatureStore, IndexRow

BACKBONE = {
    "name": "synthetic",
    "weights": {"source": "file", "name": "synthetic.safetensors", "sha256": "0" * 64, "pretrained": True},
    "preprocess": {"input_size": 8, "resize": "squash", "interpolation": "bilinear", "mean": [0.5], "std": [0.5]},
}


def make_store(
    root: Path,
    *,
    n_groups: int = 40,
    per_group: int = 2,
    dim: int = 32,
    signal: float = 1.0,
    splits: tuple[float, float] | None = (0.25, 0.25),
    classes: tuple[str, ...] = ("nodule", "normal"),
    seed: int = 0,
    backbone_name: str = "synthetic",
) -> Path:
    """Write a store of ``n_groups`` patients x ``per_group`` images; labels alternate by patient.

    Class ``c`` shifts the first few dimensions by ``signal * c``; images of one patient share a patient
    effect, so groups matter. ``splits`` = (val, test) fractions of patients; None leaves no split column.
    Content hashes are derived from ``seed`` and the image number, so two stores with the same seed hold
    the same "images" (for matching by SHA-256) whatever their backbone name.
    """
    rng = np.random.default_rng(seed)
    k = len(classes)
    rows, vectors = [], []
    order = rng.permutation(n_groups)
    for g in range(n_groups):
        label = g % k
        if splits is None:
            split = ""
        else:
            position = order[g] / n_groups
            split = "val" if position < splits[0] else "test" if position < splits[0] + splits[1] else "train"
        patient = rng.normal(scale=0.5, size=dim)
        for v in range(per_group):
            x = rng.normal(size=dim) + patient
            x[: min(4, dim)] += signal * label
            key = hashlib.sha256(f"{seed}-{g}-{v}".encode()).hexdigest()
            rows.append(
                IndexRow(
                    path=f"{classes[label]}/P{g:03d}_v{v}.png",
                    label=classes[label],
                    group=f"P{g:03d}",
                    split=split,
                    sha256=key,
                    status="ok",
                    error="",
                    extra={},
                )
            )
            vectors.append(np.abs(x))  # CNN codes come after a ReLU: non-negative
    store = FeatureStore(root)
    store.write_meta({"backbone": {**BACKBONE, "name": backbone_name, "feature_dim": dim}, "manifest": None})
    store.append([r.sha256 for r in rows], np.asarray(vectors, dtype=np.float32))
    store.write_index(rows)
    return root
