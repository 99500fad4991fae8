"""Feature store reads that scale: memory-mapped shards, lazy row views, fp16 storage, streaming training."""

from __future__ import annotations

import numpy as np
import pytest

from xvision.errors import FeatureStoreError
from xvision.features.array import FeatureArray, map_shard
from xvision.features.dataset import load_split
from xvision.features.store import FeatureStore, IndexRow
from xvision.heads import MLPClassifier


def _store(root, n: int = 50, dim: int = 12, shard: int = 7, dtype: str = "float32", seed: int = 0):
    """A store of ``n`` random vectors in shards of ``shard``, labelled a/b with a learnable signal."""
    store = FeatureStore(root)
    store.write_meta({"backbone": {"name": "test", "feature_dim": dim}, "dtype": dtype})
    rng = np.random.default_rng(seed)
    X = rng.normal(size=(n, dim)).astype(np.float32) * 3
    keys = [f"{i:064x}" for i in range(n)]
    labels = ["a" if i % 3 else "b" for i in range(n)]
    X[np.array(labels) == "b", :2] += 4.0
    for start in range(0, n, shard):
        store.append(keys[start : start + shard], X[start : start + shard])
    store.write_index([IndexRow(f"{i}.png", labels[i], f"g{i}", "train", keys[i], "ok", "", {}) for i in range(n)])
    return FeatureStore(root), X, keys, labels


def test_memory_mapped_reads_equal_loaded_reads(tmp_path) -> None:
    store, X, keys, _ = _store(tmp_path)
    order = list(np.random.default_rng(1).permutation(keys))
    lazy = store.open(order)
    assert isinstance(lazy, FeatureArray) and lazy.shape == (50, 12) and len(lazy) == 50
    loaded = store.get(order)
    expected = X[[keys.index(k) for k in order]]
    assert np.array_equal(loaded, expected)
    assert np.array_equal(np.asarray(lazy), expected)
    assert np.array_equal(lazy[3:17], expected[3:17])
    assert np.array_equal(lazy[[5, 0, 49, 5]], expected[[5, 0, 49, 5]])
    mask = np.arange(50) % 4 == 0
    assert np.array_equal(lazy[mask], expected[mask])
    assert np.array_equal(lazy[-1], expected[-1])
    assert np.array_equal(np.concatenate(list(lazy.chunks(8))), expected)


def test_shards_are_mapped_not_read(tmp_path) -> None:
    store, X, keys, _ = _store(tmp_path)
    first = sorted(store.shard_dir.iterdir())[0]
    mapped = map_shard(first)
    assert isinstance(mapped, np.memmap) and not mapped.flags.writeable
    assert np.array_equal(mapped, X[:7])


def test_fp16_store_round_trip(tmp_path) -> None:
    store, X, keys, _ = _store(tmp_path, dtype="float16")
    assert store.dtype == "float16"
    assert map_shard(sorted(store.shard_dir.iterdir())[0]).dtype == np.float16
    got = store.get(keys)
    assert got.dtype == np.float32 and np.allclose(got, X, rtol=1e-3, atol=1e-3)
    assert np.array_equal(np.asarray(store.open(keys)), got)


def test_fp16_store_clips_instead_of_overflowing(tmp_path) -> None:
    store = FeatureStore(tmp_path)
    store.write_meta({"backbone": {"name": "t", "feature_dim": 2}, "dtype": "float16"})
    store.append(["k"], np.array([[1e6, -1e6]], dtype=np.float32))
    assert np.isfinite(store.get(["k"])).all()


def test_missing_keys_are_a_clear_error(tmp_path) -> None:
    store, _, keys, _ = _store(tmp_path)
    with pytest.raises(FeatureStoreError, match="re-run extract"):
        store.open([*keys[:2], "f" * 64])


def test_shard_numbers_continue_after_reopening(tmp_path) -> None:
    store, _, _, _ = _store(tmp_path, n=21, shard=7)
    reopened = FeatureStore(tmp_path)
    path = reopened.append(["x" * 64], np.zeros((1, 12), np.float32))
    assert path.name == "shard-000003.safetensors"


def test_load_split_memory_maps_on_request_and_training_streams(tmp_path) -> None:
    _store(tmp_path, n=60)
    lazy = load_split(tmp_path, "train", mmap=True)
    eager = load_split(tmp_path, "train", mmap=False)
    assert isinstance(lazy.X, FeatureArray) and isinstance(eager.X, np.ndarray)
    a = MLPClassifier(hidden=(16,), epochs=3, lr=0.05).fit(lazy.X, lazy.labels)
    b = MLPClassifier(hidden=(16,), epochs=3, lr=0.05).fit(eager.X, eager.labels)
    assert np.allclose(a.predict_proba(lazy.X), b.predict_proba(eager.X), atol=1e-6)
    assert [r["train_loss"] for r in a.history_] == pytest.approx([r["train_loss"] for r in b.history_], rel=1e-6)


def test_a_wrong_folder_is_named_for_what_it_is(tmp_path) -> None:
    with pytest.raises(FeatureStoreError, match="no such feature folder"):
        FeatureStore(tmp_path / "nope").read_index()
    run = tmp_path / "run"
    run.mkdir()
    (run / "bundle.json").write_text("{}")
    with pytest.raises(FeatureStoreError, match="a run folder, not a feature folder"):
        FeatureStore(run).read_index()
    (tmp_path / "half").mkdir()  # an extraction stopped before its index: re-run it
    (tmp_path / "half" / "meta.json").write_text("{}")
    with pytest.raises(FeatureStoreError, match="the extraction did not finish"):
        FeatureStore(tmp_path / "half").read_index()
    (tmp_path / "images").mkdir()  # `xvision train images/`: a folder that was never a store
    (tmp_path / "images" / "a.png").write_bytes(b"")
    with pytest.raises(FeatureStoreError, match=r"images: not a feature store \(no meta.json\)"):
        FeatureStore(tmp_path / "images").read_index()
