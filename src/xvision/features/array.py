"""Memory-mapped reads of feature shards, and a lazy row view over many shards.

A shard is a safetensors file: an 8-byte little-endian header length, a JSON header, then the raw
``features`` tensor. Mapping that tensor straight from the file lets training on 100k x 25,088 features
stream from the page cache instead of loading everything into memory.
"""

from __future__ import annotations

import json
import struct
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import numpy as np

from xvision.errors import FeatureStoreError

_DTYPES = {"F32": np.float32, "F16": np.float16}


def map_shard(path: str | Path, name: str = "features") -> np.memmap:
    """The tensor ``name`` of a safetensors shard as a read-only memory map (no copy, no full read)."""
    path = Path(path)
    try:
        with open(path, "rb") as handle:
            (header_len,) = struct.unpack("<Q", handle.read(8))
            header = json.loads(handle.read(header_len))
        entry = header[name]
        dtype = _DTYPES[entry["dtype"]]
        start, end = entry["data_offsets"]
        shape = tuple(int(v) for v in entry["shape"])
    except Exception as error:  # noqa: BLE001 - any failure here is a corrupt shard
        raise FeatureStoreError(
            f"{path}: corrupt shard ({type(error).__name__}); delete it and re-run extract"
        ) from None
    if end - start != int(np.prod(shape)) * np.dtype(dtype).itemsize:
        raise FeatureStoreError(f"{path}: corrupt shard (size mismatch); delete it and re-run extract")
    if end == start:  # numpy cannot map zero bytes
        return np.zeros(shape, dtype)  # type: ignore[return-value]
    return np.memmap(path, dtype=dtype, mode="r", offset=8 + header_len + start, shape=shape)


class FeatureArray:
    """Rows of a feature store in a chosen order, read on demand from memory-mapped shards.

    Behaves like a read-only 2-D float32 array for what training and evaluation need: ``shape``, ``len``,
    integer / slice / index-array / boolean-mask row indexing (returning ``numpy`` arrays), ``np.asarray``
    (which loads everything) and :meth:`chunks`.
    """

    ndim = 2
    dtype = np.dtype(np.float32)

    def __init__(self, shards: list[Path], shard_index: np.ndarray, row_index: np.ndarray, dim: int) -> None:
        self._paths = list(shards)
        self._maps: dict[int, np.memmap] = {}
        self._shard = np.asarray(shard_index, dtype=np.int64)
        self._row = np.asarray(row_index, dtype=np.int64)
        self.shape = (len(self._shard), int(dim))

    def __len__(self) -> int:
        return self.shape[0]

    def __repr__(self) -> str:
        return f"FeatureArray(shape={self.shape}, shards={len(self._paths)})"

    def _map(self, shard: int) -> np.memmap:
        if shard not in self._maps:
            self._maps[shard] = map_shard(self._paths[shard])
        return self._maps[shard]

    def _positions(self, index: Any) -> np.ndarray:
        if isinstance(index, tuple):
            raise IndexError("FeatureArray supports row indexing only; index columns on the result")
        if isinstance(index, slice):
            return np.arange(len(self))[index]
        positions = np.asarray(index)
        if positions.dtype == bool:
            if positions.shape != (len(self),):
                raise IndexError("boolean mask must have one entry per row")
            return np.flatnonzero(positions)
        return np.where(positions < 0, positions + len(self), positions).astype(np.int64)

    def take(self, positions: np.ndarray) -> np.ndarray:
        """Rows at ``positions`` (in that order) as float32, reading each shard's rows in file order."""
        positions = np.asarray(positions, dtype=np.int64)
        out = np.empty((len(positions), self.shape[1]), dtype=np.float32)
        if len(positions) == 0:
            return out
        shards = self._shard[positions]
        rows = self._row[positions]
        order = np.lexsort((rows, shards))
        bounds = np.flatnonzero(np.diff(shards[order])) + 1
        for group in np.split(order, bounds):
            block = self._map(int(shards[group[0]]))
            out[group] = block[rows[group]]
        return out

    def __getitem__(self, index: Any) -> np.ndarray:
        if np.isscalar(index) and not isinstance(index, (bool, np.bool_)):
            return self.take(self._positions([index]))[0]
        return self.take(self._positions(index))

    def __array__(self, dtype: Any = None, copy: Any = None) -> np.ndarray:
        out = self.take(np.arange(len(self)))
        return out if dtype is None else out.astype(dtype, copy=False)

    def chunks(self, size: int = 1024) -> Iterator[np.ndarray]:
        """Consecutive blocks of rows, ``size`` at a time (for statistics and prediction)."""
        for start in range(0, len(self), size):
            yield self.take(np.arange(start, min(start + size, len(self))))
