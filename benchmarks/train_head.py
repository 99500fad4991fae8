"""Benchmark: training the seed's head on cached CNN codes, Xvision's MLPClassifier.fit vs a plain PyTorch loop.

Both train the same network (standardised input, 25,088-512-512-2, ReLU, cross-entropy, SGD lr 0.01, batch
20, reshuffled every epoch from the same seed) on the same vectors, in this process. The plain loop is what a
first version writes (``torch.optim.SGD`` defaults, ``zero_grad(set_to_none=True)``, denormals left on);
``MLPClassifier.fit`` flushes denormals to zero, defers the wide first layer's updates over blocks of 8
batches (exact SGD, reordered; see ``xvision.heads.mlp``) and updates the rest with the multi-tensor SGD.
Final training losses should agree within noise.

    python benchmarks/train_head.py                       # 5,000 synthetic pool5-like vectors, 20 epochs
    python benchmarks/train_head.py --features FEATURES_DIR --split train

Ends with one line: ``head_s=... plain_s=... ratio=... head_loss=... plain_loss=... peak_rss_mb=...``.
"""

from __future__ import annotations

import argparse
import math
import resource
import sys
import time

import numpy as np
import torch
from torch import nn

from xvision._threads import auto_threads
from xvision.heads import MLPClassifier
from xvision.heads.mlp import MLPNet


def pool5_like(n: int, dim: int, seed: int) -> tuple[np.ndarray, np.ndarray]:
    """Non-negative, mostly-zero vectors like VGG16 pool5 codes, with a weak class signal in 2% of them."""
    rng = np.random.default_rng(seed)
    y = rng.integers(0, 2, n)
    X = np.empty((n, dim), dtype=np.float32)
    signal = rng.choice(dim, size=max(1, dim // 50), replace=False)
    for start in range(0, n, 500):
        block = rng.standard_normal((min(500, n - start), dim), dtype=np.float32) * 1.5 - 1.0
        block[:, signal] += 0.12 * y[start : start + len(block), None]
        X[start : start + len(block)] = np.maximum(block, 0.0)
    return X, np.array(["normal", "nodule"])[y]


def plain_loop(X: np.ndarray, y: np.ndarray, *, hidden: tuple[int, ...], epochs: int, lr: float, batch: int) -> float:
    """The straightforward PyTorch training loop; returns the last epoch's mean training loss."""
    torch.set_flush_denormal(False)
    classes = sorted(set(y))
    yt = torch.from_numpy(np.array([classes.index(v) for v in y], dtype=np.int64))
    torch.manual_seed(0)
    generator = torch.Generator().manual_seed(0)
    net = MLPNet(X.shape[1], list(hidden), len(classes))
    std = X.std(axis=0, dtype=np.float64)
    net.mean.copy_(torch.from_numpy(X.mean(axis=0, dtype=np.float64).astype(np.float32)))
    net.scale.copy_(torch.from_numpy(np.maximum(std, max(float(np.median(std)) * 1e-2, 1e-6)).astype(np.float32)))
    optimizer = torch.optim.SGD(net.parameters(), lr=lr)
    loss_fn = nn.CrossEntropyLoss()
    Xt = torch.from_numpy(X)
    last = math.nan
    for _ in range(epochs):
        order = torch.randperm(len(Xt), generator=generator)
        total = 0.0
        for start in range(0, len(order), batch):
            idx = order[start : start + batch]
            loss = loss_fn(net(Xt[idx]), yt[idx])
            optimizer.zero_grad(set_to_none=True)
            loss.backward()
            optimizer.step()
            total += float(loss.detach()) * len(idx)
        last = total / len(Xt)
    return last


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--n", type=int, default=5000, help="cached vectors (default 5000)")
    parser.add_argument("--dim", type=int, default=25088, help="vector length (default 25088, VGG16 pool5)")
    parser.add_argument("--epochs", type=int, default=20)
    parser.add_argument("--batch-size", type=int, default=20)
    parser.add_argument("--lr", type=float, default=0.01)
    parser.add_argument("--hidden", default="512,512")
    parser.add_argument("--features", default=None, help="use a feature store's vectors instead of synthetic ones")
    parser.add_argument("--split", default=None)
    parser.add_argument("--threads", type=int, default=None, help="torch intra-op threads (default: torch's)")
    args = parser.parse_args(argv)
    if args.threads:
        torch.set_num_threads(args.threads)
    hidden = tuple(int(h) for h in args.hidden.split(","))
    if args.features:
        from xvision.features.dataset import load_split

        data = load_split(args.features, args.split, mmap=False)
        X, y = np.asarray(data.X)[: args.n], np.array(data.labels)[: args.n]
    else:
        X, y = pool5_like(args.n, args.dim, seed=0)
    print(
        f"head training: {X.shape[0]} x {X.shape[1]} vectors, hidden {hidden}, {args.epochs} epochs, "
        f"batch {args.batch_size}, lr {args.lr}, torch {torch.__version__}, {torch.get_num_threads()} threads"
    )
    t0 = time.perf_counter()
    plain_loss = plain_loop(X, y, hidden=hidden, epochs=args.epochs, lr=args.lr, batch=args.batch_size)
    plain_s = time.perf_counter() - t0
    print(f"plain PyTorch loop: {plain_s:.1f} s, final train loss {plain_loss:.4f}", flush=True)
    head = MLPClassifier(hidden=hidden, lr=args.lr, batch_size=args.batch_size, epochs=args.epochs, seed=0)
    from xvision._threads import other_processes_load

    others = other_processes_load()
    print(
        f"other processes keep {others:.1f} cores busy: fit uses {auto_threads()} thread(s)"
        if others is not None
        else f"fit uses {auto_threads()} thread(s)"
    )
    t0 = time.perf_counter()
    head.fit(X, y)
    head_s = time.perf_counter() - t0
    head_loss = head.history_[-1]["train_loss"]
    print(f"MLPClassifier.fit:  {head_s:.1f} s, final train loss {head_loss:.4f}")
    peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
    print(
        f"head_s={head_s:.2f} plain_s={plain_s:.2f} ratio={plain_s / head_s:.2f} "
        f"head_loss={head_loss:.4f} plain_loss={plain_loss:.4f} peak_rss_mb={peak:.0f}"
    )
    return 0


if __name__ == "__main__":
    sys.exit(main())
