"""A fresh synthetic set of chest-radiograph-like PNGs for benchmarks: many images, every one distinct.

Rendering a 1024 px phantom takes a while, so a few base phantoms are rendered and every image is a base with
its own noise, exposure and shift: each file has its own content (its own SHA-256, so the feature store's
deduplication cannot skip it) and costs about as much to decode as a real 1024 px 8-bit radiograph.

    python benchmarks/synthetic.py 20000 /tmp/synthetic-20k [--size 1024] [--jobs 2]
"""

from __future__ import annotations

import argparse
import os
import sys
from concurrent.futures import ProcessPoolExecutor
from pathlib import Path

import numpy as np
from PIL import Image

BASES = 8


def _bases(size: int, seed: int) -> list[np.ndarray]:
    from xvision.data.phantoms import render_phantom

    rng = np.random.default_rng(seed)
    return [render_phantom(rng, size=size, nodule=bool(i % 2))[0] for i in range(BASES)]


_WORKER_BASES: list[np.ndarray] = []
_WORKER_NOISE: list[np.ndarray] = []


def _init_worker(size: int, seed: int) -> None:
    _WORKER_BASES[:] = _bases(size, seed)
    rng = np.random.default_rng([seed, 1])
    _WORKER_NOISE[:] = [rng.normal(scale=0.006, size=(size, size)).astype(np.float32) for _ in range(4)]


def _write_range(args: tuple[Path, list[int], int]) -> int:
    out_dir, indices, seed = args
    bases = _WORKER_BASES
    for index in indices:
        rng = np.random.default_rng([seed, index])
        base = bases[index % BASES]
        dy, dx = rng.integers(-12, 13, size=2)
        image = np.roll(base, (int(dy), int(dx)), axis=(0, 1)) * rng.uniform(0.85, 1.0) + rng.uniform(0, 0.08)
        noise = _WORKER_NOISE[index % len(_WORKER_NOISE)]
        image += np.roll(noise, tuple(int(v) for v in rng.integers(0, noise.shape[0], size=2)), axis=(0, 1))
        pixels = np.clip(np.round(image * 255), 0, 255).astype(np.uint8)
        # Fast zlib level: writing 20,000 files should not take longer than extracting them.
        Image.fromarray(pixels).save(out_dir / f"synth-{index:06d}.png", compress_level=1)
    return len(indices)


def make_synthetic(out_dir: str | Path, n: int, *, size: int = 1024, seed: int = 0, jobs: int | None = None) -> Path:
    """Write ``n`` distinct ``size`` px 8-bit PNGs into ``out_dir`` (skipping files that already exist)."""
    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    missing = [i for i in range(n) if not (out_dir / f"synth-{i:06d}.png").exists()]
    if not missing:
        return out_dir
    jobs = jobs or os.cpu_count() or 1
    chunks = [(out_dir, missing[i : i + 50], seed) for i in range(0, len(missing), 50)]
    with ProcessPoolExecutor(jobs, initializer=_init_worker, initargs=(size, seed)) as pool:
        done = 0
        for count in pool.map(_write_range, chunks):
            done += count
            print(f"\rsynthetic: {done}/{len(missing)} images written", end="", file=sys.stderr, flush=True)
    print(file=sys.stderr)
    return out_dir


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("n", type=int)
    parser.add_argument("out_dir", type=Path)
    parser.add_argument("--size", type=int, default=1024)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--jobs", type=int, default=None)
    args = parser.parse_args(argv)
    make_synthetic(args.out_dir, args.n, size=args.size, seed=args.seed, jobs=args.jobs)
    return 0


if __name__ == "__main__":
    sys.exit(main())
