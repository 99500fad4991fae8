"""Benchmark: peak memory of the extraction pipeline itself, flat in the number of images.

Runs ``extract_features`` (hashing, decode workers, batching, shard writes, index) on N small synthetic PNGs
through a trivial backbone, so that what is measured is the pipeline's own memory, not the network's. Run it
at two sizes: the peak should barely move. A real backbone adds a constant (its weights and activations).

    python benchmarks/store_memory.py --n 10000
    python benchmarks/store_memory.py --n 100000

Ends with one line: ``n=... peak_rss_mb=... worker_peak_rss_mb=... seconds=... store_mb=...``.
"""

from __future__ import annotations

import argparse
import resource
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
from PIL import Image
from torch import nn

from xvision.backbones import Backbone, BackboneSpec, PreprocessConfig
from xvision.backbones.weights import RANDOM
from xvision.features.extract import extract_features


def trivial_backbone(dim: int) -> Backbone:
    """A network that costs nothing: 4x4 average pooling of a 32 px input, padded to ``dim`` features."""
    side = int(np.ceil(np.sqrt(dim / 3)))
    spec = BackboneSpec(
        name="trivial",
        description="benchmark only",
        build=lambda: nn.Sequential(nn.AdaptiveAvgPool2d(side), nn.Flatten()),
        features=lambda m: m,
        preprocess=PreprocessConfig(input_size=32),
        weights="none",
        license="n/a",
    )
    return Backbone(spec, spec.build(), RANDOM)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--n", type=int, default=10000)
    parser.add_argument("--dim", type=int, default=1024, help="feature length stored per image")
    args = parser.parse_args(argv)
    with tempfile.TemporaryDirectory(prefix="xvision-mem-") as tmp:
        root = Path(tmp)
        (root / "img").mkdir()
        rng = np.random.default_rng(0)
        rows = []
        for i in range(args.n):
            path = root / "img" / f"{i:07d}.png"
            Image.fromarray(rng.integers(0, 256, (32, 32), dtype=np.uint8)).save(path, compress_level=0)
            rows.append({"abspath": path, "path": path.name, "label": "x", "group": "", "split": "", "extra": {}})
        start = time.perf_counter()
        report = extract_features(rows, trivial_backbone(args.dim), root / "store", progress=False, guard_sample=0)
        seconds = time.perf_counter() - start
        store_mb = sum(p.stat().st_size for p in (root / "store").rglob("*") if p.is_file()) / 2**20
    own = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
    child = resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss / 1024
    print(f"{report.extracted} images extracted in {seconds:.0f} s, store {store_mb:.0f} MB")
    print(
        f"n={args.n} peak_rss_mb={own:.0f} worker_peak_rss_mb={child:.0f} seconds={seconds:.1f} store_mb={store_mb:.0f}"
    )
    return 0


if __name__ == "__main__":
    sys.exit(main())
