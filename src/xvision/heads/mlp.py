"""The seed's classifier head as a scikit-learn-style estimator: features -> 512 -> 512 -> classes.

Differences from the original tool, each a fix: mini-batches are reshuffled every epoch from a seeded
generator; there is no batch normalisation (the original used batch statistics at test time, so a one-image
batch gave input-independent output) -- inputs are instead standardised with fixed statistics learned on the
training set, which behave identically whatever the batch; and the model kept is the epoch with the lowest
validation loss when a validation set is given.
"""

from __future__ import annotations

import copy
import json
import math
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch import nn

from xvision._fileio import atomic_write
from xvision.errors import NotFittedError, RunError


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


class MLPClassifier:
    """Multi-layer perceptron on CNN codes, trained with plain mini-batch SGD (the seed recipe).

    Parameters are keyword-only and stored as given; ``fit`` learns ``classes_``, ``net_``, ``history_``,
    ``best_epoch_`` and ``n_features_in_``.
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
    ) -> None:
        self.hidden = hidden
        self.lr = lr
        self.momentum = momentum
        self.weight_decay = weight_decay
        self.batch_size = batch_size
        self.epochs = epochs
        self.standardize = standardize
        self.seed = seed

    def get_params(self) -> dict[str, Any]:
        return {
            "hidden": list(self.hidden),
            "lr": self.lr,
            "momentum": self.momentum,
            "weight_decay": self.weight_decay,
            "batch_size": self.batch_size,
            "epochs": self.epochs,
            "standardize": self.standardize,
            "seed": self.seed,
        }

    def _validate(self) -> None:
        if self.epochs < 1 or self.batch_size < 1:
            raise ValueError("epochs and batch_size must be at least 1")
        if not self.lr > 0:
            raise ValueError("lr must be positive")
        if any(int(h) < 1 for h in self.hidden):
            raise ValueError("hidden layer sizes must be positive")

    def fit(
        self,
        X: np.ndarray,
        y: Sequence[Any],
        *,
        X_val: np.ndarray | None = None,
        y_val: Sequence[Any] | None = None,
        classes: Sequence[str] | None = None,
        on_epoch: EpochCallback | None = None,
    ) -> MLPClassifier:
        """Train; ``on_epoch(epoch, record, self)`` runs after each epoch (checkpoints, progress)."""
        self._validate()
        X = np.asarray(X, dtype=np.float32)
        if X.ndim != 2 or X.shape[0] == 0:
            raise ValueError(f"X must be a non-empty 2-D array, got shape {X.shape}")
        self.classes_ = np.array(sorted(set(map(str, y))) if classes is None else [str(c) for c in classes])
        if len(self.classes_) < 2:
            raise ValueError("training needs at least two classes")
        y_idx = self._encode(y)
        has_val = X_val is not None and y_val is not None and len(y_val) > 0
        if has_val:
            X_val = np.asarray(X_val, dtype=np.float32)
            y_val_idx = self._encode(y_val)

        torch.manual_seed(self.seed)
        generator = torch.Generator().manual_seed(self.seed)
        self.n_features_in_ = X.shape[1]
        net = MLPNet(X.shape[1], [int(h) for h in self.hidden], len(self.classes_))
        if self.standardize:
            mean = X.mean(axis=0, dtype=np.float64)
            std = X.std(axis=0, dtype=np.float64)
            # Floor the scale: many CNN-code dimensions are almost always zero after ReLU.
            floor = max(float(np.median(std)) * 1e-2, 1e-6)
            net.mean.copy_(torch.from_numpy(mean.astype(np.float32)))
            net.scale.copy_(torch.from_numpy(np.maximum(std, floor).astype(np.float32)))
        optimizer = torch.optim.SGD(
            net.parameters(), lr=self.lr, momentum=self.momentum, weight_decay=self.weight_decay
        )
        loss_fn = nn.CrossEntropyLoss()
        Xt = torch.from_numpy(X)
        yt = torch.from_numpy(y_idx)
        self.net_ = net
        self.history_: list[dict[str, float]] = []
        best_loss = math.inf
        best_state = None
        self.best_epoch_ = self.epochs
        for epoch in range(1, self.epochs + 1):
            net.train()
            order = torch.randperm(len(Xt), generator=generator)
            total_loss, correct = 0.0, 0
            for start in range(0, len(order), self.batch_size):
                idx = order[start : start + self.batch_size]
                logits = net(Xt[idx])
                loss = loss_fn(logits, yt[idx])
                optimizer.zero_grad(set_to_none=True)
                loss.backward()
                optimizer.step()
                total_loss += float(loss.detach()) * len(idx)
                correct += int((logits.argmax(1) == yt[idx]).sum())
            record = {
                "epoch": epoch,
                "train_loss": total_loss / len(Xt),
                "train_accuracy": correct / len(Xt),
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
        if best_state is not None:
            net.load_state_dict(best_state)
        net.eval()
        return self

    def _encode(self, y: Sequence[Any]) -> np.ndarray:
        lookup = {c: i for i, c in enumerate(self.classes_)}
        try:
            return np.array([lookup[str(v)] for v in y], dtype=np.int64)
        except KeyError as error:
            raise ValueError(f"label {error.args[0]!r} is not one of the classes {list(self.classes_)}") from None

    @torch.no_grad()
    def _score(self, X: np.ndarray, y_idx: np.ndarray) -> tuple[float, float]:
        self.net_.eval()
        logits = self._logits(X)
        loss = nn.functional.cross_entropy(logits, torch.from_numpy(y_idx)).item()
        return loss, float((logits.argmax(1).numpy() == y_idx).mean())

    @torch.no_grad()
    def _logits(self, X: np.ndarray, chunk: int = 1024) -> torch.Tensor:
        X = np.asarray(X, dtype=np.float32)
        if X.ndim != 2 or X.shape[1] != self.n_features_in_:
            raise ValueError(f"expected features of shape (n, {self.n_features_in_}), got {X.shape}")
        self.net_.eval()
        parts = [self.net_(torch.from_numpy(X[i : i + chunk])) for i in range(0, len(X), chunk)]
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
        except Exception as error:  # noqa: BLE001 - any failure means an unusable file
            raise RunError(f"{path}: not a readable Xvision head ({type(error).__name__}: {error})") from None
        model = cls(**{**params, "hidden": tuple(params["hidden"])})
        model.classes_ = np.array(classes)
        model.n_features_in_ = n_features
        model.net_ = MLPNet(n_features, params["hidden"], len(classes))
        model.net_.load_state_dict(state)
        model.net_.eval()
        return model


def save_net(path: str | Path, net: nn.Module, metadata: dict[str, str]) -> Path:
    """Save a module's state dict to safetensors atomically."""
    from safetensors.torch import save

    state = {k: v.detach().contiguous() for k, v in net.state_dict().items()}
    payload = save(state, metadata=metadata)
    return atomic_write(path, lambda tmp: tmp.write_bytes(payload))
