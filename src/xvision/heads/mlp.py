"""The seed's classifier head as a scikit-learn-style estimator: features -> 512 -> 512 -> classes.

Differences from the original tool, each a fix: mini-batches are reshuffled every epoch from a seeded
generator; there is no batch normalisation (the original used batch statistics at test time, so a one-image
batch gave input-independent output) -- inputs are instead standardised with fixed statistics learned on the
training set, which behave identically whatever the batch; and the model kept is the epoch with the lowest
validation loss when a validation set is given.

Training is plain mini-batch SGD, made fast without changing what is computed:

- denormal floats are flushed to zero while training: ReLU units that die leave gradients decaying into
  denormals, which x86 CPUs handle about 100x slower than normal floats;
- with ``momentum=0`` (the seed) the wide first layer (25,088 x 512) is never given a gradient. Its SGD
  update ``W <- W - lr g^T x`` has rank at most the batch size, so it is deferred over a block of
  ``DEFERRED_STEPS`` batches: the block's first-layer outputs come from one matrix product with ``W`` as it
  was at the block's start, each batch's outputs are corrected exactly for the updates of the batches
  before it in the block (``- lr (x x_i^T) g_i``, a product of small matrices), and at the block's end
  all its updates go into ``W`` at once with one ``addmm_``. The arithmetic is plain SGD's, in another
  order; the 51 MB weight matrix is streamed twice per block instead of five times per batch, and the
  products are large enough to run at the CPU's arithmetic speed instead of its memory speed;
- the remaining parameters use the multi-tensor (``foreach``) SGD update;
- on a machine that other processes keep busy (more than half its cores) training uses one thread (see
  :mod:`xvision._threads`); one or two threads gave bit-identical models in our tests;
- ``X`` may be a memory-mapped :class:`~xvision.features.array.FeatureArray`: batches are gathered from disk
  and the standardisation statistics are computed in chunks, so memory stays flat.
"""

from __future__ import annotations

import copy
import itertools
import json
import math
from collections.abc import Callable, Iterator, Sequence
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch import nn

from xvision._fileio import atomic_write, stable_safetensors
from xvision._rng import keeps_torch_rng
from xvision._threads import auto_threads, torch_threads
from xvision.errors import NotFittedError, RunError
from xvision.features.array import FeatureArray


class MLPNet(nn.Module):
    """Fixed input standardisation, then Linear+ReLU blocks, then a linear output layer."""

    def __init__(self, n_features: int, hidden: Sequence[int], n_classes: int) -> None:
        super().__init__()
        self.register_buffer("mean", torch.zeros(n_features))
        self.register_buffer("scale", torch.ones(n_features))
        layers: list[nn.Module] = []
        width = n_features
        for size in hidden:
            layers += [nn.Linear(width, size), nn.ReLU()]
            width = size
        layers.append(nn.Linear(width, n_classes))
        self.layers = nn.Sequential(*layers)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.layers((x - self.mean) / self.scale)


EpochCallback = Callable[[int, dict[str, float], "MLPClassifier"], None]


_PARAMS = ("hidden", "lr", "momentum", "weight_decay", "batch_size", "epochs", "standardize", "seed", "class_weight")
CLASS_WEIGHTS = (None, "balanced")


class MLPClassifier:
    """Multi-layer perceptron on CNN codes, trained with plain mini-batch SGD (the seed recipe).

    Parameters are keyword-only and stored as given; ``fit`` learns ``classes_``, ``net_``, ``history_``,
    ``best_epoch_`` and ``n_features_in_``. ``class_weight="balanced"`` weights each class's loss by
    ``n_samples / (n_classes * count)`` on the training labels (scikit-learn's rule), in training and in the
    validation loss that picks the epoch, so a rare class counts as much as a common one; ``None`` (the
    seed's) weights every image alike.
    """

    def __init__(
        self,
        *,
        hidden: Sequence[int] = (512, 512),
        lr: float = 0.01,
        momentum: float = 0.0,
        weight_decay: float = 0.0,
        batch_size: int = 20,
        epochs: int = 20,
        standardize: bool = True,
        seed: int = 0,
        class_weight: str | None = None,
    ) -> None:
        self.hidden = hidden
        self.lr = lr
        self.momentum = momentum
        self.weight_decay = weight_decay
        self.batch_size = batch_size
        self.epochs = epochs
        self.standardize = standardize
        self.seed = seed
        self.class_weight = class_weight

    _estimator_type = "classifier"  # scikit-learn < 1.6 reads this; later versions __sklearn_tags__

    def get_params(self, deep: bool = True) -> dict[str, Any]:
        """The constructor's parameters as given (scikit-learn's ``clone`` relies on that; ``deep`` is moot)."""
        return {name: getattr(self, name) for name in _PARAMS}

    def set_params(self, **params: Any) -> MLPClassifier:
        unknown = sorted(set(params) - set(_PARAMS))
        if unknown:
            raise ValueError(f"MLPClassifier has no parameter(s) {unknown}; they are {list(_PARAMS)}")
        for name, value in params.items():
            setattr(self, name, value)
        return self

    def __sklearn_tags__(self) -> Any:
        # Imported here: scikit-learn only asks once it is loaded, and loading it would slow `xvision predict`.
        from sklearn.base import BaseEstimator, ClassifierMixin

        class _Probe(ClassifierMixin, BaseEstimator):
            pass

        return _Probe().__sklearn_tags__()

    def score(self, X: np.ndarray | FeatureArray, y: np.ndarray) -> float:
        """Accuracy on ``(X, y)``, scikit-learn's default score for a classifier."""
        return float(np.mean(self.predict(X) == np.asarray(y)))

    def _validate(self) -> None:
        if self.epochs < 1 or self.batch_size < 1:
            raise ValueError("epochs and batch_size must be at least 1")
        if not (math.isfinite(self.lr) and self.lr > 0):
            raise ValueError(f"lr must be a positive number, got {self.lr!r}")
        if not 0 <= self.momentum <= 1:  # false for nan too
            raise ValueError(f"momentum must lie in [0, 1], got {self.momentum!r}")
        if not (math.isfinite(self.weight_decay) and self.weight_decay >= 0):
            raise ValueError(f"weight_decay must be a non-negative number, got {self.weight_decay!r}")
        if isinstance(self.hidden, int) or not all(isinstance(h, (int, np.integer)) for h in self.hidden):
            raise TypeError(
                f"hidden must be a sequence of layer sizes, such as (512, 512), (8,) or () for a linear head; "
                f"got {self.hidden!r}"
            )
        if any(int(h) < 1 for h in self.hidden):
            raise ValueError("hidden layer sizes must be positive")
        if self.class_weight not in CLASS_WEIGHTS:
            raise ValueError(f"class_weight must be None or 'balanced', got {self.class_weight!r}")

    @keeps_torch_rng  # seeds its own weights; the caller's torch.rand sequence is left as it was
    def fit(
        self,
        X: np.ndarray | FeatureArray,
        y: Sequence[Any],
        *,
        X_val: np.ndarray | FeatureArray | None = None,
        y_val: Sequence[Any] | None = None,
        classes: Sequence[str] | None = None,
        on_epoch: EpochCallback | None = None,
    ) -> MLPClassifier:
        """Train; ``on_epoch(epoch, record, self)`` runs after each epoch (checkpoints, progress).

        ``X`` is a 2-D float array or a memory-mapped :class:`FeatureArray` (streamed, never loaded whole).
        """
        self._validate()
        lazy = isinstance(X, FeatureArray)
        if not lazy:
            X = np.asarray(X, dtype=np.float32)
        if X.ndim != 2 or X.shape[0] == 0:
            raise ValueError(f"X must be a non-empty 2-D array, got shape {X.shape}")
        if (X_val is None) != (y_val is None):
            raise ValueError("give X_val and y_val together (validation needs both), or neither")
        for name, values in (("X", X), ("X_val", X_val)):
            if values is not None and not isinstance(values, FeatureArray):
                _check_finite(name, np.asarray(values, dtype=np.float32))
        # The labels' own type, as scikit-learn keeps it: 0/1 labels predict 0/1, not "0"/"1" (score() was 0).
        self.classes_ = np.unique(np.asarray(list(y))) if classes is None else np.asarray(list(classes))
        if len(self.classes_) < 2:
            raise ValueError("training needs at least two classes")
        y_idx = self._encode(y)
        if len(y_idx) != X.shape[0]:
            raise ValueError(f"X has {X.shape[0]} rows but y has {len(y_idx)} labels")
        has_val = X_val is not None and y_val is not None and len(y_val) > 0
        if has_val:
            y_val_idx = self._encode(y_val)

        self.loss_weight_ = _loss_weight(y_idx, len(self.classes_), self.class_weight)
        torch.manual_seed(self.seed)
        generator = torch.Generator().manual_seed(self.seed)
        self.n_features_in_ = X.shape[1]
        _check_size(X.shape[1], [int(h) for h in self.hidden], len(self.classes_))
        net = MLPNet(X.shape[1], [int(h) for h in self.hidden], len(self.classes_))
        if self.standardize:
            mean, std = _column_stats(X)
            # Floor the scale: many CNN-code dimensions are almost always zero after ReLU.
            floor = max(float(np.median(std)) * 1e-2, 1e-6)
            net.mean.copy_(torch.from_numpy(mean.astype(np.float32)))
            net.scale.copy_(torch.from_numpy(np.maximum(std, floor).astype(np.float32)))
        rows = _row_gatherer(X)
        yt = torch.from_numpy(y_idx)
        self.net_ = net
        self.history_: list[dict[str, float]] = []
        best_loss = math.inf
        best_state = None
        self.best_epoch_ = self.epochs
        # The deferred step needs layers after the first one to train; a linear head (no hidden layer) has
        # none, and is small enough that the standard optimiser costs nothing.
        deferred = self.momentum == 0 and len(net.layers) > 1
        step = _DeferredFirstLayerStep(net, self) if deferred else _PlainStep(net, self)
        with _flush_denormals(), torch_threads(auto_threads()):
            for epoch in range(1, self.epochs + 1):
                net.train()
                order = torch.randperm(X.shape[0], generator=generator)
                batches = list(torch.split(order, self.batch_size))
                total_loss, correct = 0.0, 0
                for first in range(0, len(batches), step.block):
                    group = batches[first : first + step.block]
                    results = step([rows(idx) for idx in group], [yt[idx] for idx in group])
                    for idx, (loss, logits) in zip(group, results, strict=True):
                        total_loss += loss * len(idx)
                        correct += int((logits.argmax(1) == yt[idx]).sum())
                record = {
                    "epoch": epoch,
                    "train_loss": total_loss / X.shape[0],
                    "train_accuracy": correct / X.shape[0],
                    "val_loss": math.nan,
                    "val_accuracy": math.nan,
                }
                if has_val:
                    val_loss, val_acc = self._score(X_val, y_val_idx)
                    record["val_loss"], record["val_accuracy"] = val_loss, val_acc
                    if val_loss < best_loss:
                        best_loss, best_state = val_loss, copy.deepcopy(net.state_dict())
                        self.best_epoch_ = epoch
                self.history_.append(record)
                if on_epoch is not None:
                    on_epoch(epoch, record, self)
            step.finish()
        if best_state is not None:
            net.load_state_dict(best_state)
        net.eval()
        return self

    def _encode(self, y: Sequence[Any]) -> np.ndarray:
        lookup = {c: i for i, c in enumerate(self.classes_.tolist())}
        try:
            return np.array([lookup[v.item() if isinstance(v, np.generic) else v] for v in y], dtype=np.int64)
        except KeyError as error:
            raise ValueError(f"label {error.args[0]!r} is not one of the classes {self.classes_.tolist()}") from None
        except TypeError:  # an unhashable label
            raise ValueError(f"labels must be class names or numbers, got {type(next(iter(y))).__name__}") from None

    @torch.no_grad()
    def _score(self, X: np.ndarray, y_idx: np.ndarray) -> tuple[float, float]:
        self.net_.eval()
        logits = self._logits(X)
        loss = nn.functional.cross_entropy(logits, torch.from_numpy(y_idx), weight=self.loss_weight_).item()
        return loss, float((logits.argmax(1).numpy() == y_idx).mean())

    @torch.no_grad()
    def _logits(self, X: np.ndarray | FeatureArray, chunk: int = 1024) -> torch.Tensor:
        if not isinstance(X, FeatureArray):
            X = np.asarray(X, dtype=np.float32)
        if X.ndim != 2 or X.shape[1] != self.n_features_in_:
            raise ValueError(f"expected features of shape (n, {self.n_features_in_}), got {X.shape}")
        if not isinstance(X, FeatureArray):
            _check_finite("X", X)  # NaN in, NaN out: refused by name, as in fit
        self.net_.eval()
        parts = [
            self.net_(torch.from_numpy(np.asarray(X[i : i + chunk], dtype=np.float32))) for i in range(0, len(X), chunk)
        ]
        return torch.cat(parts) if parts else torch.empty(0, len(self.classes_))

    def _check_fitted(self) -> None:
        if not hasattr(self, "net_"):
            raise NotFittedError("this MLPClassifier is not fitted yet; call fit() first")

    def predict_proba(self, X: np.ndarray) -> np.ndarray:
        """Class probabilities, columns in ``classes_`` order."""
        self._check_fitted()
        return torch.softmax(self._logits(X), dim=1).numpy()

    def predict(self, X: np.ndarray) -> np.ndarray:
        """Predicted class names."""
        proba = self.predict_proba(X)
        return self.classes_[proba.argmax(axis=1)]

    # ----- persistence (safetensors + JSON metadata, never pickle) -----------------------------------
    def save(self, path: str | Path) -> Path:
        self._check_fitted()
        return save_net(path, self.net_, self._metadata())

    def _metadata(self) -> dict[str, str]:
        return {
            "params": json.dumps(self.get_params()),
            "classes": json.dumps([str(c) for c in self.classes_]),
            "n_features_in": str(self.n_features_in_),
        }

    @classmethod
    def load(cls, path: str | Path) -> MLPClassifier:
        from safetensors import safe_open
        from safetensors.torch import load_file

        path = Path(path)
        try:
            with safe_open(str(path), framework="pt") as handle:
                meta = handle.metadata() or {}
            state = load_file(str(path))
            params = json.loads(meta["params"])
            classes = json.loads(meta["classes"])
            n_features = int(meta["n_features_in"])
            hidden = params["hidden"]
            _check_shapes(state, n_features, hidden, len(classes))
            model = cls(**{**params, "hidden": tuple(hidden)})
            model.classes_ = np.array(classes)
            model.n_features_in_ = n_features
            model.net_ = MLPNet(n_features, hidden, len(classes))
            model.net_.load_state_dict(state)
        except Exception as error:  # noqa: BLE001 - any failure means an unusable file
            raise RunError(f"{path}: not a readable Xvision head ({type(error).__name__}: {error})") from None
        model.net_.eval()
        return model


def _check_shapes(state: dict[str, torch.Tensor], n_features: Any, hidden: Any, n_classes: int) -> None:
    """The sizes in a head file's metadata must be those of its tensors, checked before a network of those sizes is
    built: a 400-byte file claiming hidden=[30000] and 30,000 features made every command allocate gigabytes."""
    sizes = [n_features, *hidden] if isinstance(hidden, list) else None
    if not sizes or not all(isinstance(n, int) and not isinstance(n, bool) and n > 0 for n in sizes) or n_classes < 2:
        raise ValueError(f"sizes n_features_in={n_features!r}, hidden={hidden!r} for {n_classes} classes")
    expected = {"mean": (n_features,), "scale": (n_features,)}
    for index, (width, size) in enumerate(zip(sizes, [*sizes[1:], n_classes], strict=True)):
        expected[f"layers.{2 * index}.weight"] = (size, width)
        expected[f"layers.{2 * index}.bias"] = (size,)
    found = {name: tuple(tensor.shape) for name, tensor in state.items()}
    if found != expected:
        raise ValueError("its metadata's layer sizes do not match its tensors")


@contextmanager
def _flush_denormals() -> Iterator[None]:
    """Flush denormal floats to zero for the duration (x86 handles them ~100x slower); then restore."""
    enabled = torch.set_flush_denormal(True)
    try:
        yield
    finally:
        if enabled:
            torch.set_flush_denormal(False)


def _column_stats(X: np.ndarray | FeatureArray, chunk: int = 512) -> tuple[np.ndarray, np.ndarray]:
    """Per-column mean and (population) standard deviation in float64, one chunk of rows at a time.

    Chunks are merged with Chan et al.'s pairwise update, so memory stays at one chunk whatever ``len(X)``.
    """
    n = 0
    mean = np.zeros(X.shape[1])
    m2 = np.zeros(X.shape[1])
    for start in range(0, X.shape[0], chunk):
        block = np.asarray(X[start : start + chunk], dtype=np.float64)
        k = block.shape[0]
        block_mean = block.mean(axis=0)
        block_m2 = ((block - block_mean) ** 2).sum(axis=0)
        delta = block_mean - mean
        total = n + k
        mean = mean + delta * (k / total)
        m2 = m2 + block_m2 + delta**2 * (n * k / total)
        n = total
    return mean, np.sqrt(m2 / n)


def _row_gatherer(X: np.ndarray | FeatureArray) -> Callable[[torch.Tensor], torch.Tensor]:
    """A function from row indices to a float32 batch, from memory or from memory-mapped shards."""
    if isinstance(X, FeatureArray):
        return lambda idx: torch.from_numpy(X.take(idx.numpy()))
    Xt = torch.from_numpy(X)
    return lambda idx: Xt[idx]


DEFERRED_STEPS = 8
"""Batches whose first-layer updates are deferred and applied together (see the module docstring).

Measured on a 2-core AVX-512 EPYC with the seed's head (25,088-512-512-2, batch 20): 9.9 ms a step applying
each update at once, 8.0 with blocks of 2, 7.8 with 4, 6.5 with 8 and 7.0 with 16 (the corrections' small
products grow with the block)."""


class _PlainStep:
    """SGD steps through autograd and ``torch.optim.SGD`` (multi-tensor update), one batch at a time; used
    with momentum."""

    block = 1

    def __init__(self, net: MLPNet, head: MLPClassifier) -> None:
        self.net = net
        self.loss_fn = nn.CrossEntropyLoss(weight=head.loss_weight_)
        self.optimizer = torch.optim.SGD(
            net.parameters(), lr=head.lr, momentum=head.momentum, weight_decay=head.weight_decay, foreach=True
        )

    def __call__(self, xbs: list[torch.Tensor], ybs: list[torch.Tensor]) -> list[tuple[float, torch.Tensor]]:
        results = []
        for xb, yb in zip(xbs, ybs, strict=True):
            logits = self.net(xb)
            loss = self.loss_fn(logits, yb)
            self.optimizer.zero_grad(set_to_none=True)
            loss.backward()
            self.optimizer.step()
            results.append((float(loss.detach()), logits.detach()))
        return results

    def finish(self) -> None:
        pass


class _DeferredFirstLayerStep:
    """Plain SGD (no momentum) with the wide first layer's updates deferred over blocks of batches.

    For ``h = x W^T + b`` the gradient of ``W`` is ``g^T x`` with ``g = dL/dh``. Within a block, batch ``j``
    sees ``W_j = W_0 - lr sum_{i<j} g_i^T x_i``, so ``x_j W_j^T = x_j W_0^T - lr sum_{i<j} (x_j x_i^T) g_i``:
    the first term for the whole block is one matrix product, the correction needs only ``x_j x_i^T`` (batch
    by batch) and the block's earlier ``g_i``. After the block, ``W <- W - lr G^T X`` in one ``addmm_``.
    With weight decay the block is one batch: ``W <- W (1 - lr wd) - lr g^T x``, still without a gradient
    of W's size.
    """

    def __init__(self, net: MLPNet, head: MLPClassifier) -> None:
        self.net = net
        self.first: nn.Linear = net.layers[0]
        self.rest = net.layers[1:]
        self.lr = float(head.lr)
        self.decay = 1.0 - float(head.lr) * float(head.weight_decay)
        self.block = DEFERRED_STEPS if self.decay == 1.0 else 1
        self.loss_fn = nn.CrossEntropyLoss(weight=head.loss_weight_)
        for param in self.first.parameters():
            param.requires_grad_(False)
        self.optimizer = torch.optim.SGD(
            self.rest.parameters(), lr=head.lr, weight_decay=head.weight_decay, foreach=True
        )

    def __call__(self, xbs: list[torch.Tensor], ybs: list[torch.Tensor]) -> list[tuple[float, torch.Tensor]]:
        xs = (torch.cat(xbs) - self.net.mean) / self.net.scale
        with torch.no_grad():
            base = nn.functional.linear(xs, self.first.weight, self.first.bias)
        grads: list[torch.Tensor] = []
        results = []
        lo = 0
        for yb in ybs:
            hi = lo + len(yb)
            hidden = base[lo:hi]
            if grads:
                done = torch.cat(grads)
                hidden = hidden - self.lr * (xs[lo:hi] @ xs[:lo].t() @ done + done.sum(0))
            hidden = hidden.detach().requires_grad_()
            logits = self.rest(hidden)
            loss = self.loss_fn(logits, yb)
            self.optimizer.zero_grad(set_to_none=True)
            loss.backward()
            self.optimizer.step()
            grads.append(hidden.grad)
            results.append((float(loss.detach()), logits.detach()))
            lo = hi
        done = torch.cat(grads)
        with torch.no_grad():
            if self.decay != 1.0:
                self.first.weight.mul_(self.decay)
                self.first.bias.mul_(self.decay)
            self.first.weight.addmm_(done.t(), xs, alpha=-self.lr)
            self.first.bias.add_(done.sum(0), alpha=-self.lr)
        return results

    def finish(self) -> None:
        for param in self.first.parameters():
            param.requires_grad_(True)


def save_net(path: str | Path, net: nn.Module, metadata: dict[str, str]) -> Path:
    """Save a module's state dict to safetensors atomically."""
    from safetensors.torch import save

    state = {k: v.detach().contiguous() for k, v in net.state_dict().items()}
    payload = stable_safetensors(save(state, metadata=metadata))  # same weights, same bytes, same SHA-256
    return atomic_write(path, lambda tmp: tmp.write_bytes(payload))


#: The most weights a head may have: 2**30 float32s are 4 GB, 16 GB with their gradients and the SGD
#: updates in flight. The seed's head on VGG16 pool5 has 13 million.
MAX_WEIGHTS = 2**30


def _check_size(n_features: int, hidden: list[int], n_classes: int) -> None:
    """Refuse a head too large to train (a typo such as --hidden 100000000 asked torch for 512 GB)."""
    sizes = [n_features, *hidden, n_classes]
    weights = sum(a * b for a, b in itertools.pairwise(sizes))
    if weights > MAX_WEIGHTS:
        raise ValueError(
            f"hidden {tuple(hidden)} on {n_features} features makes a head of {weights:,} weights, more than "
            f"{MAX_WEIGHTS:,} ({MAX_WEIGHTS * 4 // 2**30} GB as float32); choose smaller layers"
        )


def _loss_weight(y_idx: np.ndarray, n_classes: int, rule: str | None) -> torch.Tensor | None:
    """Per-class loss weights: ``None`` for equal weights, or scikit-learn's "balanced" rule on ``y_idx``."""
    if rule is None:
        return None
    counts = np.bincount(y_idx, minlength=n_classes).astype(np.float64)
    # A class given in ``classes`` but absent from y has no rows to weight; 1 keeps the tensor finite.
    weight = np.where(counts > 0, len(y_idx) / (n_classes * np.maximum(counts, 1)), 1.0)
    return torch.tensor(weight, dtype=torch.float32)


def _check_finite(name: str, X: np.ndarray) -> None:
    """Training on NaN or infinity gives a head that predicts NaN: refuse it, naming the first bad row."""
    bad = ~np.isfinite(X).reshape(len(X), -1).all(axis=1)  # per row; a malformed X_val fails its shape check later
    if bad.any():
        raise ValueError(f"{name} has NaN or infinite values in {int(bad.sum())} rows (first: row {int(bad.argmax())})")
