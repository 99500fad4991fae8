"""Read a feature store as labelled, split data, refusing leaky splits."""

from __future__ import annotations

import logging
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from xvision.data.manifest import Manifest, ManifestRow
from xvision.data.split import check_no_leakage
from xvision.errors import FeatureStoreError
from xvision.features.array import FeatureArray
from xvision.features.store import FeatureStore, IndexRow

log = logging.getLogger(__name__)

MMAP_THRESHOLD_BYTES = 1 << 30
"""Splits larger than this (as float32) are memory-mapped instead of loaded, unless told otherwise."""


@dataclass
class FeatureSet:
    """Features with their index rows, all from one store.

    ``X`` is a ``numpy`` array, or for large splits a memory-mapped :class:`FeatureArray` that reads rows on
    demand (``X[indices]`` and ``np.asarray(X)`` give arrays; ``MLPClassifier.fit`` streams from it).
    """

    X: np.ndarray | FeatureArray
    rows: list[IndexRow]
    meta: dict[str, Any]

    @property
    def labels(self) -> list[str]:
        return [r.label for r in self.rows]

    @property
    def keys(self) -> list[str]:
        return [r.sha256 for r in self.rows]


def check_index_leakage(store: FeatureStore, rows: list[IndexRow]) -> None:
    """Refuse a store whose split puts a group, or identical image content, in two splits."""
    usable = [r for r in rows if r.sha256]
    manifest = Manifest(
        rows=[
            ManifestRow(path=r.path, label=r.label, group=r.group or None, split=r.split or None, extra=r.extra)
            for r in usable
        ],
        root=store.root,
        columns=("path", "label", "group", "split"),
        source=store.index_path,
    )
    hashes = {str(manifest.resolve(m)): r.sha256 for m, r in zip(manifest.rows, usable, strict=True)}
    check_no_leakage(manifest, group_by="group", hashes=hashes)


def load_split(features_dir: str | Path, split: str | None, *, mmap: bool | None = None) -> FeatureSet:
    """The successfully extracted images of one split (all of them when ``split`` is None).

    ``mmap``: ``True`` for a lazy memory-mapped ``X``, ``False`` to load it into memory, ``None`` (default) to
    memory-map only splits larger than :data:`MMAP_THRESHOLD_BYTES`.
    """
    store = FeatureStore(features_dir)
    meta = store.read_meta()
    index = store.read_index()
    if any(r.split for r in index):
        check_index_leakage(store, index)
    rows = [r for r in index if r.status == "ok" and (split is None or r.split == split)]
    if split is not None and not rows:
        present = sorted({r.split for r in index if r.split}) or ["none"]
        raise FeatureStoreError(
            f"{store.index_path}: no images in split {split!r} (splits present: {', '.join(present)}); "
            "use --split all for every image, or assign splits with `xvision split` and extract again "
            "(stored images are not recomputed)"
        )
    keys = [r.sha256 for r in rows]
    if mmap is None:
        mmap = len(keys) * int(meta["backbone"]["feature_dim"]) * 4 > MMAP_THRESHOLD_BYTES
    return FeatureSet(X=store.open(keys) if mmap else store.get(keys), rows=rows, meta=meta)


def unreadable_images(features_dir: str | Path, split: str | None) -> list[dict[str, str]]:
    """The images of ``split`` (None: all) that extraction could not read, ``{"path", "label", "error"}`` each:
    they are in no figure, so every figure's maker records and warns about them."""
    unreadable = [
        {"path": r.path, "label": r.label, "error": r.error}
        for r in FeatureStore(features_dir).read_index()
        if r.status != "ok" and (split is None or r.split == split)
    ]
    if unreadable:
        shown = "; ".join(f"{u['path']}: {u['error']}" for u in unreadable[:3])
        shown += "; ..." if len(unreadable) > 3 else ""
        log.warning("%d image(s) could not be read and are left out of these figures (%s)", len(unreadable), shown)
    return unreadable
