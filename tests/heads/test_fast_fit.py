"""MLPClassifier.fit's fast SGD computes what a plain PyTorch SGD loop computes."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from torch import nn

from xvision.heads import MLPClassifier
from xvision.heads.mlp import MLPNet, _column_stats


def _codes(n: int = 200, d: int = 300, seed: int = 0) -> tuple[np.ndarray, np.ndarray]:
    rng = np.random.default_rng(seed)
    y = rng.integers(0, 2, n)
    X = np.maximum(rng.normal(size=(n, d)) - 0.5 + 0.8 * y[:, None] * (np.arange(d) < 10), 0).astype(np.float32)
    return X, np.array(["a", "b"])[y]


def _plain_sgd(
    head: MLPClassifier, X: np.ndarray, y: np.ndarray, weight: torch.Tensor | None = None
) -> tuple[list[float], MLPNet]:
    """The textbook loop, with the estimator's seed, shuffling and standardisation."""
    torch.manual_seed(head.seed)
    generator = torch.Generator().manual_seed(head.seed)
    yt = torch.from_numpy((y == "b").astype(np.int64))
    net = MLPNet(X.shape[1], list(head.hidden), 2)
    mean, std = _column_stats(X)
    net.mean.copy_(torch.from_numpy(mean.astype(np.float32)))
    net.scale.copy_(torch.from_numpy(np.maximum(std, max(float(np.median(std)) * 1e-2, 1e-6)).astype(np.float32)))
    optimizer = torch.optim.SGD(net.parameters(), lr=head.lr, weight_decay=head.weight_decay)
    Xt, losses = torch.from_numpy(X), []
    for _ in range(head.epochs):
        order = torch.randperm(len(Xt), generator=generator)
        total = 0.0
        for start in range(0, len(order), head.batch_size):
            idx = order[start : start + head.batch_size]
            loss = nn.functional.cross_entropy(net(Xt[idx]), yt[idx], weight=weight)
            optimizer.zero_grad()
            loss.backward()
            optimizer.step()
            total += float(loss.detach()) * len(idx)
        losses.append(total / len(Xt))
    return losses, net


@pytest.mark.parametrize(
    ("weight_decay", "n"),
    [
        (0.0, 200),  # ten batches an epoch: a block of DEFERRED_STEPS (8) batches, then a block of 2
        (0.0, 347),  # a short last batch (7 rows) inside a short last block
        (1e-3, 200),  # weight decay: one batch at a time, updated in place
    ],
)
def test_deferred_first_layer_update_matches_plain_sgd(weight_decay: float, n: int) -> None:
    X, y = _codes(n)
    head = MLPClassifier(hidden=(32, 16), epochs=4, lr=0.05, weight_decay=weight_decay).fit(X, y)
    losses, net = _plain_sgd(head, X, y)
    assert [r["train_loss"] for r in head.history_] == pytest.approx(losses, rel=1e-4)
    for name, value in net.state_dict().items():
        assert torch.allclose(head.net_.state_dict()[name], value, atol=1e-5), name
    assert all(p.requires_grad for p in head.net_.parameters())  # the deferred step gives them back


def test_balanced_class_weight_is_weighted_cross_entropy_in_the_fast_step() -> None:
    X, y = _codes(200)
    keep = (y == "a") | (np.arange(len(y)) % 4 == 0)  # about 100 "a" against 25 "b"
    X, y = X[keep], y[keep]
    head = MLPClassifier(hidden=(32, 16), epochs=3, lr=0.05, class_weight="balanced").fit(X, y)
    counts = np.array([(y == "a").sum(), (y == "b").sum()])
    weight = torch.tensor(len(y) / (2 * counts), dtype=torch.float32)  # scikit-learn's "balanced"
    losses, net = _plain_sgd(head, X, y, weight)
    assert [r["train_loss"] for r in head.history_] == pytest.approx(losses, rel=1e-4)
    for name, value in net.state_dict().items():
        assert torch.allclose(head.net_.state_dict()[name], value, atol=1e-5), name
    unweighted = MLPClassifier(hidden=(32, 16), epochs=3, lr=0.05).fit(X, y)
    assert not np.allclose(unweighted.predict_proba(X), head.predict_proba(X))


def test_momentum_uses_the_standard_optimizer_and_still_learns() -> None:
    X, y = _codes(300)
    head = MLPClassifier(hidden=(32,), epochs=8, lr=0.02, momentum=0.9).fit(X, y)
    assert head.history_[-1]["train_loss"] < head.history_[0]["train_loss"]
    assert (head.predict(X) == y).mean() > 0.8


@pytest.mark.parametrize("weight_decay", [0.0, 0.01])
def test_linear_head_with_plain_sgd_learns(weight_decay: float) -> None:
    # `--hidden none` at the default momentum 0: there is no layer after the first for the deferred step.
    X, y = _codes(300)
    head = MLPClassifier(hidden=(), epochs=8, lr=0.02, weight_decay=weight_decay).fit(X, y)
    assert head.history_[-1]["train_loss"] < head.history_[0]["train_loss"]
    assert (head.predict(X) == y).mean() > 0.8


def test_fit_leaves_threads_as_it_found_them() -> None:
    X, y = _codes(60)
    before = torch.get_num_threads()
    MLPClassifier(hidden=(8,), epochs=1).fit(X, y)
    assert torch.get_num_threads() == before
