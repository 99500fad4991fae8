"""The on-disk feature store: CNN codes keyed by image content, with the metadata to check them.

Layout of a FEATURES_DIR::

    meta.json                 backbone (name, weights identity, preprocessing), feature_dim, xvision version
    shards/shard-000000.safetensors   "features" (n, d) float32; metadata "keys" = JSON list of image SHA-256
    index.csv                 the manifest rows (path, label, group, split, extras) + sha256, status, error

Shards are written atomically and only ever added, so an interrupted extraction keeps every finished shard
and a re-run extracts only images whose content hash is not stored yet. Nothing is pickled.
"""

from __future__ import annotations

import csv
import io
import json
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from xvision._fileio import atomic_write, atomic_write_json, atomic_write_text
from xvision.errors import FeatureStoreError

FORMAT = "xvision-features"
FORMAT_VERSION = 1
INDEX_COLUMNS = ("path", "label", "group", "split", "sha256", "status", "error")


@dataclass
class IndexRow:
    """One manifest row as the store saw it."""

    path: str
    label: str
    group: str
    split: str
    sha256: str
    status: str  # "ok" | "failed"
    error: str
    extra: dict[str, str]


class FeatureStore:
    """Read and append CNN codes in a FEATURES_DIR."""

    def __init__(self, root: str | Path) -> None:
        self.root = Path(root)
        self.shard_dir = self.root / "shards"
        self._keys: dict[str, tuple[Path, int]] | None = None

    # ----- metadata ---------------------------------------------------------------------------------
    @property
    def meta_path(self) -> Path:
        return self.root / "meta.json"

    @property
    def index_path(self) -> Path:
        return self.root / "index.csv"

    def exists(self) -> bool:
        return self.meta_path.is_file()

    def read_meta(self) -> dict[str, Any]:
        if not self.meta_path.is_file():
            raise FeatureStoreError(
                f"{self.root}: not a feature store (no meta.json); create one with `xvision extract`"
            )
        try:
            meta = json.loads(self.meta_path.read_text(encoding="utf-8"))
        except (OSError, json.JSONDecodeError) as error:
            raise FeatureStoreError(f"{self.meta_path}: unreadable ({error})") from None
        if meta.get("format") != FORMAT:
            raise FeatureStoreError(f"{self.meta_path}: not an Xvision feature store")
        return meta

    def write_meta(self, meta: dict[str, Any]) -> None:
        atomic_write_json(self.meta_path, {"format": FORMAT, "format_version": FORMAT_VERSION, **meta})

    # ----- shards -----------------------------------------------------------------------------------
    def keys(self) -> dict[str, tuple[Path, int]]:
        """Map image SHA-256 -> (shard file, row) for every stored vector."""
        if self._keys is None:
            from safetensors import safe_open

            keys: dict[str, tuple[Path, int]] = {}
            for shard in sorted(self.shard_dir.glob("shard-*.safetensors")):
                try:
                    with safe_open(str(shard), framework="numpy") as handle:
                        shard_keys = json.loads(handle.metadata()["keys"])
                except Exception as error:  # noqa: BLE001 - a corrupt shard is a store problem
                    raise FeatureStoreError(
                        f"{shard}: corrupt shard ({type(error).__name__}); delete it and re-run extract"
                    ) from None
                for row, key in enumerate(shard_keys):
                    keys.setdefault(key, (shard, row))
            self._keys = keys
        return self._keys

    def append(self, keys: list[str], features: np.ndarray) -> Path:
        """Write one new shard atomically and return its path."""
        from safetensors.numpy import save

        if len(keys) != features.shape[0]:
            raise ValueError("one key per feature row is required")
        self.shard_dir.mkdir(parents=True, exist_ok=True)
        number = len(list(self.shard_dir.glob("shard-*.safetensors")))
        path = self.shard_dir / f"shard-{number:06d}.safetensors"
        while path.exists():
            number += 1
            path = self.shard_dir / f"shard-{number:06d}.safetensors"
        payload = save(
            {"features": np.ascontiguousarray(features, dtype=np.float32)},
            metadata={"keys": json.dumps(keys)},
        )
        atomic_write(path, lambda tmp: tmp.write_bytes(payload))
        if self._keys is not None:
            for row, key in enumerate(keys):
                self._keys.setdefault(key, (path, row))
        return path

    def get(self, keys: list[str]) -> np.ndarray:
        """Stack the vectors for ``keys`` (in order), reading each shard once."""
        from safetensors import safe_open

        stored = self.keys()
        missing = [k for k in keys if k not in stored]
        if missing:
            raise FeatureStoreError(f"{self.root}: {len(missing)} images have no stored features; re-run extract")
        by_shard: dict[Path, list[tuple[int, int]]] = {}
        for position, key in enumerate(keys):
            shard, row = stored[key]
            by_shard.setdefault(shard, []).append((position, row))
        dim = int(self.read_meta()["backbone"]["feature_dim"])
        out = np.empty((len(keys), dim), dtype=np.float32)
        for shard, pairs in by_shard.items():
            with safe_open(str(shard), framework="numpy") as handle:
                block = handle.get_tensor("features")
            positions, rows = zip(*pairs, strict=True)
            out[list(positions)] = block[list(rows)]
        return out

    # ----- index ------------------------------------------------------------------------------------
    def write_index(self, rows: list[IndexRow]) -> None:
        extra_columns: list[str] = []
        for row in rows:
            for name in row.extra:
                if name not in extra_columns and name not in INDEX_COLUMNS:
                    extra_columns.append(name)
        buffer = io.StringIO()
        writer = csv.writer(buffer, lineterminator="\n")
        writer.writerow([*INDEX_COLUMNS, *extra_columns])
        for row in rows:
            writer.writerow(
                [row.path, row.label, row.group, row.split, row.sha256, row.status, row.error]
                + [row.extra.get(name, "") for name in extra_columns]
            )
        atomic_write_text(self.index_path, buffer.getvalue())

    def read_index(self) -> list[IndexRow]:
        if not self.index_path.is_file():
            raise FeatureStoreError(
                f"{self.index_path}: missing; the extraction did not finish; re-run `xvision extract`"
            )
        with open(self.index_path, newline="", encoding="utf-8") as handle:
            reader = csv.DictReader(handle)
            rows = []
            for record in reader:
                extra = {k: v for k, v in record.items() if k not in INDEX_COLUMNS and k is not None}
                rows.append(IndexRow(**{c: record.get(c) or "" for c in INDEX_COLUMNS}, extra=extra))
        return rows

    def load(self, split: str | None = None) -> tuple[np.ndarray, list[IndexRow]]:
        """Features and index rows of the successfully extracted images (optionally one split)."""
        rows = [r for r in self.read_index() if r.status == "ok" and (split is None or r.split == split)]
        return self.get([r.sha256 for r in rows]), rows
