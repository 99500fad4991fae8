"""The on-disk feature store: CNN codes keyed by image content, with the metadata to check them.

Layout of a FEATURES_DIR::

    meta.json                 backbone (name, weights identity, preprocessing), feature_dim, storage dtype,
                              xvision version, the extraction plan and its accuracy-guard result
    shards/shard-000000.safetensors   "features" (n, d) float32 or float16; metadata "keys" = JSON list of
                              image SHA-256
    index.csv                 the manifest rows (path, label, group, split, extras) + sha256, status, error
    .lock                     locked while an extraction writes to the store (a second one waits)

Shards are written atomically and only ever added, so an interrupted extraction keeps every finished shard
and a re-run extracts only images whose content hash is not stored yet, whichever manifest it comes from.
``dtype: float16`` halves the disk; reads always return float32. Reads are memory-mapped: :meth:`get` copies
only the requested rows, and :meth:`open` returns a lazy :class:`~xvision.features.array.FeatureArray` so
training on 100k x 25,088 features streams from disk. Nothing is pickled.
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
from xvision._text import nfc
from xvision.errors import FeatureStoreError
from xvision.features.array import FeatureArray, map_shard

FORMAT = "xvision-features"
FORMAT_VERSION = 1
STORAGE_DTYPES = ("float32", "float16")
_FLOAT16_MAX = float(np.finfo(np.float16).max)
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

    def __post_init__(self) -> None:
        self.label, self.group = nfc(self.label), nfc(self.group)  # stores written before manifests were NFC


class FeatureStore:
    """Read and append CNN codes in a FEATURES_DIR."""

    def __init__(self, root: str | Path) -> None:
        self.root = Path(root)
        self.shard_dir = self.root / "shards"
        self._keys: dict[str, tuple[Path, int]] | None = None
        self._next_shard: int | None = None
        self._dtype: str | None = None

    # ----- metadata ---------------------------------------------------------------------------------
    @property
    def meta_path(self) -> Path:
        return self.root / "meta.json"

    @property
    def index_path(self) -> Path:
        return self.root / "index.csv"

    @property
    def lock_path(self) -> Path:
        """Held by the extraction writing to the store (:func:`xvision._fileio.exclusive_lock`)."""
        return self.root / ".lock"

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
        meta = {k: v for k, v in meta.items() if k not in ("format", "format_version")}
        atomic_write_json(self.meta_path, {"format": FORMAT, "format_version": FORMAT_VERSION, **meta})
        self._dtype = None

    @property
    def dtype(self) -> str:
        """How vectors are stored on disk: ``float32`` (default) or ``float16``."""
        if self._dtype is None:
            dtype = str(self.read_meta().get("dtype", "float32"))
            if dtype not in STORAGE_DTYPES:
                raise FeatureStoreError(f"{self.meta_path}: unknown dtype {dtype!r}; upgrade xvision")
            self._dtype = dtype
        return self._dtype

    # ----- shards -----------------------------------------------------------------------------------
    def keys(self) -> dict[str, tuple[Path, int]]:
        """Map image SHA-256 -> (shard file, row) for every stored vector."""
        if self._keys is None:
            from safetensors import safe_open

            keys: dict[str, tuple[Path, int]] = {}
            dim = (self.read_meta().get("backbone") or {}).get("feature_dim")
            for shard in sorted(self.shard_dir.glob("shard-*.safetensors")):
                try:
                    with safe_open(str(shard), framework="numpy") as handle:
                        shard_keys = json.loads(handle.metadata()["keys"])
                        shape = handle.get_slice("features").get_shape()
                except Exception as error:  # noqa: BLE001 - a corrupt shard is a store problem
                    raise FeatureStoreError(
                        f"{shard}: corrupt shard ({type(error).__name__}); delete it and re-run extract"
                    ) from None
                if len(shape) != 2 or shape[0] != len(shard_keys) or (isinstance(dim, int) and shape[1] != dim):
                    raise FeatureStoreError(
                        f"{shard}: holds {'x'.join(map(str, shape))} features for {len(shard_keys)} images, and "
                        f"meta.json says {dim} per image: the shard or meta.json comes from another store; "
                        "extract again into a new folder"
                    )
                for row, key in enumerate(shard_keys):
                    keys.setdefault(key, (shard, row))
            self._keys = keys
        return self._keys

    def append(self, keys: list[str], features: np.ndarray) -> Path:
        """Write one new shard atomically, in the store's dtype, and return its path."""
        from safetensors.numpy import save

        if len(keys) != features.shape[0]:
            raise ValueError("one key per feature row is required")
        self.shard_dir.mkdir(parents=True, exist_ok=True)
        if self._next_shard is None:
            numbers = [int(p.stem.split("-")[1]) for p in self.shard_dir.glob("shard-*.safetensors")]
            self._next_shard = max(numbers, default=-1) + 1
        path = self.shard_dir / f"shard-{self._next_shard:06d}.safetensors"
        while path.exists():  # another writer got there first
            self._next_shard += 1
            path = self.shard_dir / f"shard-{self._next_shard:06d}.safetensors"
        self._next_shard += 1
        if self.dtype == "float16":
            # Clip, not overflow to inf: activations beyond 65504 are vanishingly rare but must stay finite.
            features = np.clip(features, -_FLOAT16_MAX, _FLOAT16_MAX).astype(np.float16)
        payload = save(
            {"features": np.ascontiguousarray(features, dtype=np.dtype(self.dtype))},
            metadata={"keys": json.dumps(keys)},
        )
        atomic_write(path, lambda tmp: tmp.write_bytes(payload))
        if self._keys is not None:
            for row, key in enumerate(keys):
                self._keys.setdefault(key, (path, row))
        return path

    def open(self, keys: list[str]) -> FeatureArray:
        """A lazy, memory-mapped float32 view of the vectors for ``keys`` (in order); nothing is read yet."""
        stored = self.keys()
        missing = [k for k in keys if k not in stored]
        if missing:
            raise FeatureStoreError(f"{self.root}: {len(missing)} images have no stored features; re-run extract")
        shard_ids: dict[Path, int] = {}
        shard_index = np.empty(len(keys), dtype=np.int64)
        row_index = np.empty(len(keys), dtype=np.int64)
        for position, key in enumerate(keys):
            shard, row = stored[key]
            shard_index[position] = shard_ids.setdefault(shard, len(shard_ids))
            row_index[position] = row
        dim = int(self.read_meta()["backbone"]["feature_dim"])
        return FeatureArray(list(shard_ids), shard_index, row_index, dim)

    def get(self, keys: list[str]) -> np.ndarray:
        """Stack the vectors for ``keys`` (in order) as float32, copying only those rows from mapped shards."""
        return self.open(keys).take(np.arange(len(keys)))

    def read_shard(self, path: str | Path) -> np.ndarray:
        """One shard's features as a read-only memory map in the stored dtype."""
        return map_shard(path)

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
            folder = self.index_path.parent
            if not folder.is_dir():
                raise FeatureStoreError(f"{folder}: no such feature folder (made by `xvision extract`)")
            if (folder / "bundle.json").is_file():
                raise FeatureStoreError(
                    f"{folder}: a run folder, not a feature folder; its features are in the folder `xvision extract` "
                    "wrote (for `xvision fit`, RUN/features)"
                )
            if not (folder / "meta.json").is_file():  # a folder of images, an empty folder: never a store
                raise FeatureStoreError(
                    f"{folder}: not a feature store (no meta.json); create one with `xvision extract`"
                )
            raise FeatureStoreError(
                f"{self.index_path}: missing; the extraction did not finish; re-run `xvision extract`"
            )
        try:
            with open(self.index_path, newline="", encoding="utf-8") as handle:
                reader = csv.DictReader(handle)
                missing = [c for c in ("path", "label", "sha256", "status") if c not in (reader.fieldnames or [])]
                if missing:
                    raise FeatureStoreError(
                        f"{self.index_path}: no column {', '.join(missing)}; the file was edited or is not an "
                        "Xvision index: re-run `xvision extract`"
                    )
                rows = []
                for record in reader:
                    extra = {k: v for k, v in record.items() if k not in INDEX_COLUMNS and k is not None}
                    rows.append(IndexRow(**{c: record.get(c) or "" for c in INDEX_COLUMNS}, extra=extra))
        except UnicodeDecodeError:
            raise FeatureStoreError(
                f"{self.index_path}: not UTF-8 text; the file was edited or damaged: re-run `xvision extract`"
            ) from None
        if not rows:
            raise FeatureStoreError(f"{self.index_path}: lists no images; re-run `xvision extract`")
        return rows

    def load(self, split: str | None = None, *, mmap: bool = False) -> tuple[np.ndarray | FeatureArray, list[IndexRow]]:
        """Features and index rows of the successfully extracted images (optionally one split).

        ``mmap=True`` returns a lazy :class:`FeatureArray` instead of loading the features into memory.
        """
        rows = [r for r in self.read_index() if r.status == "ok" and (split is None or r.split == split)]
        keys = [r.sha256 for r in rows]
        return (self.open(keys) if mmap else self.get(keys)), rows
