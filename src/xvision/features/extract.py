"""Batched, resumable extraction of CNN codes from the images of a manifest into a FeatureStore."""

from __future__ import annotations

import logging
import os
import time
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch.utils.data import DataLoader, Dataset

from xvision._fileio import sha256_file
from xvision._version import __version__
from xvision.backbones import Backbone, PreprocessConfig, preprocess_image
from xvision.errors import FeatureStoreError, ImageLoadError, XvisionError
from xvision.features.store import FeatureStore, IndexRow
from xvision.io import load_image

log = logging.getLogger(__name__)


@dataclass
class ExtractionReport:
    """What one extraction run did."""

    total: int = 0
    extracted: int = 0
    reused: int = 0
    failed: list[tuple[str, str]] = field(default_factory=list)
    interrupted: bool = False


class _ImageDataset(Dataset):
    """Loads and preprocesses images in worker processes; a bad image yields its error, not an exception."""

    def __init__(self, items: list[tuple[str, Path]], config: PreprocessConfig) -> None:
        self.items = items
        self.config = config

    def __len__(self) -> int:
        return len(self.items)

    def __getitem__(self, index: int) -> tuple[str, np.ndarray | None, str]:
        key, path = self.items[index]
        try:
            # numpy, not a tensor: tensors cross process boundaries through shared-memory file descriptors,
            # whose sharer thread prints tracebacks when the job is interrupted mid-transfer.
            return key, preprocess_image(load_image(path), self.config).numpy(), ""
        except ImageLoadError as error:
            return key, None, error.reason
        except Exception as error:  # noqa: BLE001 - one bad image must never kill a long job
            return key, None, f"{type(error).__name__}: {error}"


_Batch = list[tuple[str, "np.ndarray | None", str]]


def _collate(batch: _Batch) -> _Batch:
    return batch


def default_workers(n_images: int) -> int:
    """Decode in parallel processes only when there is enough work to pay for starting them."""
    if n_images < 64:
        return 0
    return max(1, min(4, (os.cpu_count() or 1)))


def _batches(
    items: list[tuple[str, Path]], config: PreprocessConfig, batch_size: int, workers: int
) -> Iterator[_Batch]:
    dataset = _ImageDataset(items, config)
    loader = DataLoader(
        dataset,
        batch_size=batch_size,
        shuffle=False,
        num_workers=workers,
        collate_fn=_collate,
        prefetch_factor=2 if workers else None,  # bounded queue: memory stays flat on large sets
        persistent_workers=False,
    )
    yield from loader


def extract_features(
    rows: list[dict[str, Any]],
    backbone: Backbone,
    out_dir: str | Path,
    *,
    batch_size: int = 16,
    workers: int | None = None,
    strict: bool = False,
    shard_size: int = 256,
    progress: bool = True,
    manifest_info: dict[str, Any] | None = None,
) -> ExtractionReport:
    """Extract features for ``rows`` into ``out_dir``, resuming from what is already stored.

    Args:
        rows: one dict per image with ``abspath`` (Path), ``path``, ``label``, ``group``, ``split``,
            ``extra`` (dict) and optionally a precomputed ``sha256``.
        backbone: the feature extractor; must match the store's backbone if the store exists.
        strict: raise on the first unreadable image instead of reporting and skipping it.
        shard_size: images per shard; finished shards survive an interruption.
    """
    from tqdm.auto import tqdm

    store = FeatureStore(out_dir)
    description = backbone.describe()
    _check_or_init_meta(store, description, manifest_info)

    report = ExtractionReport(total=len(rows))
    hashes: dict[str, str] = {}
    failures: dict[str, str] = {}
    for row in rows:
        path = Path(row["abspath"])
        if row.get("sha256"):
            hashes[str(path)] = row["sha256"]
            continue
        try:
            hashes[str(path)] = sha256_file(path)
        except OSError as error:
            reason = "file not found" if isinstance(error, FileNotFoundError) else f"cannot read ({error})"
            if strict:
                raise ImageLoadError(path, reason) from None
            failures[str(path)] = reason

    stored = store.keys()
    todo: dict[str, Path] = {}
    for row in rows:
        key = hashes.get(str(row["abspath"]))
        if key is None:
            continue
        if key in stored:
            report.reused += 1
        elif key not in todo:
            todo[key] = Path(row["abspath"])
    key_failures: dict[str, str] = {}
    pending_keys: list[str] = []
    pending: list[np.ndarray] = []

    def flush() -> None:
        if pending_keys:
            store.append(list(pending_keys), np.concatenate(pending, axis=0))
            pending_keys.clear()
            pending.clear()

    last_flush = time.monotonic()
    items = list(todo.items())
    workers = default_workers(len(items)) if workers is None else workers
    bar = tqdm(total=len(items), desc="extract", unit="img", disable=not progress or not items)
    try:
        with torch.inference_mode():
            for batch in _batches(items, backbone.preprocess_config, batch_size, workers):
                good = [(k, t) for k, t, err in batch if t is not None]
                for key, tensor, err in batch:
                    if tensor is None:
                        path = todo[key]
                        if strict:
                            raise ImageLoadError(path, err)
                        log.warning("skipped %s: %s", path, err)
                        key_failures[key] = err
                if good:
                    feats = backbone.extract(torch.from_numpy(np.stack([t for _, t in good])))
                    pending_keys.extend(k for k, _ in good)
                    pending.append(feats)
                    report.extracted += len(good)
                # Flush by size, and by time so that a hard kill loses at most a minute of work.
                if len(pending_keys) >= shard_size or (pending_keys and time.monotonic() - last_flush > 60):
                    flush()
                    last_flush = time.monotonic()
                bar.update(len(batch))
    except KeyboardInterrupt:
        report.interrupted = True
        flush()
        bar.close()
        log.warning("interrupted: %d images stored; re-run the same command to continue", report.extracted)
        raise
    except XvisionError:
        flush()
        raise
    flush()
    bar.close()

    index_rows = []
    for row in rows:
        path = str(row["abspath"])
        key = hashes.get(path, "")
        error = failures.get(path) or key_failures.get(key, "")
        index_rows.append(
            IndexRow(
                path=str(row["path"]),
                label=str(row["label"]),
                group=str(row.get("group") or ""),
                split=str(row.get("split") or ""),
                sha256=key,
                status="failed" if error else "ok",
                error=error,
                extra=dict(row.get("extra") or {}),
            )
        )
        if error:
            report.failed.append((path, error))
    store.write_index(index_rows)
    return report


def _check_or_init_meta(store: FeatureStore, description: dict[str, Any], manifest: dict[str, Any] | None) -> None:
    if store.exists():
        meta = store.read_meta()
        old = meta["backbone"]
        same = (
            old["name"] == description["name"]
            and old["weights"] == description["weights"]
            and old["preprocess"] == description["preprocess"]
        )
        if not same:
            raise FeatureStoreError(
                f"{store.root}: holds features from backbone '{old['name']}' "
                f"(weights {old['weights']['name']}), not '{description['name']}' "
                f"(weights {description['weights']['name']}); choose another -o folder"
            )
        if manifest is not None and meta.get("manifest") != manifest:
            meta["manifest"] = manifest
            store.write_meta({k: v for k, v in meta.items() if k not in ("format", "format_version")})
        return
    if store.root.exists() and any(store.root.iterdir()):
        raise FeatureStoreError(f"{store.root}: folder exists and is not a feature store; choose another -o folder")
    store.write_meta(
        {
            "backbone": description,
            "xvision_version": __version__,
            "torch_version": torch.__version__,
            "dtype": "float32",
            "manifest": manifest,
        }
    )


def extract_manifest(
    manifest_path: str | Path,
    out_dir: str | Path,
    *,
    backbone: str | Backbone = "vgg16",
    weights: str | None = None,
    **options: Any,
) -> ExtractionReport:
    """Read a manifest, refuse leaky splits, and extract every image's features into ``out_dir``.

    ``options`` are passed to :func:`extract_features` (batch_size, workers, strict, shard_size, progress).
    """
    from dataclasses import replace

    from xvision.backbones import create_backbone
    from xvision.data.manifest import read_manifest
    from xvision.data.split import check_no_leakage

    manifest = read_manifest(manifest_path)
    rows: list[dict[str, Any]] = []
    hashes: dict[str, str] = {}
    for row in manifest.rows:
        path = manifest.resolve(row)
        try:
            hashes[str(path)] = sha256_file(path)
        except OSError:
            pass  # reported and skipped by extract_features
        rows.append(
            {
                "abspath": path,
                "path": row.path,
                "label": row.label,
                "group": row.group or "",
                "split": row.split or "",
                "extra": dict(row.extra),
                "sha256": hashes.get(str(path)),
            }
        )
    if manifest.has_splits:
        readable = replace(manifest, rows=[r for r in manifest.rows if str(manifest.resolve(r)) in hashes])
        check_no_leakage(readable, hashes=hashes)
    model = backbone if isinstance(backbone, Backbone) else create_backbone(backbone, weights=weights)
    info = {"path": str(Path(manifest_path).resolve()), "sha256": sha256_file(manifest_path)}
    return extract_features(rows, model, out_dir, manifest_info=info, **options)
