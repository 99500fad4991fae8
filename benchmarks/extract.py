"""Benchmark: feature extraction end to end, the naive path against Xvision's default path, in one process.

- naive: full-resolution Pillow decode, preprocessing, then the backbone in eager PyTorch fp32 NCHW, one image
  at a time, no worker processes (what a first version does);
- default: ``extract_manifest`` exactly as ``xvision extract`` runs it (automatic plan: decode workers, reduced
  decoding, the engine and precision chosen for this machine, the accuracy guard, shards written to a store).

Both use the same network and weights on the same files (the naive path on the first ``--naive-limit`` of
them). Prints images/s for each, their ratio, the cosine agreement of the two paths' features (min over the
images both ran), the peak resident memory, and finally one line::

    default_ips=... naive_ips=... ratio=... cosine=... peak_rss_mb=...

Usage::

    python benchmarks/extract.py --images ../shared/data/jsrt/images
    python benchmarks/synthetic.py 20000 /tmp/synth && python benchmarks/extract.py --images /tmp/synth --limit 20000
    python benchmarks/extract.py --images DIR --backbone efficientnet_lite0

Offline, pretrained VGG16 weights are usually absent: the benchmark then uses ``--weights random`` and says
so (the speed is the same; the features are not meaningful). Pass ``--weights FILE`` for the real ones.
"""

from __future__ import annotations

import argparse
import csv
import platform
import resource
import statistics
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
import torch

from xvision.backbones import create_backbone, preprocess_image
from xvision.backbones.runtime import detect_hardware
from xvision.errors import WeightsNotFoundError
from xvision.features.extract import extract_manifest
from xvision.features.guard import cosine_rows
from xvision.features.store import FeatureStore
from xvision.io import SUPPORTED_SUFFIXES, load_image


def find_images(folder: Path, limit: int | None) -> list[Path]:
    paths = sorted(p for p in folder.rglob("*") if p.is_file() and p.suffix.lower() in SUPPORTED_SUFFIXES)
    return paths[:limit] if limit else paths


def cpu_name() -> str:
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or platform.machine()


def peak_rss_mb() -> tuple[float, float]:
    """Peak resident memory of this process and of its largest child (decode workers), in MB."""
    own = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
    children = resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss / 1024
    return own, children


def naive(backbone, paths: list[Path]) -> tuple[np.ndarray, float]:
    """One image at a time: full decode, preprocess, eager fp32 forward. Returns features and images/s."""
    model = backbone.model
    config = backbone.preprocess_config
    with torch.inference_mode():
        model(preprocess_image(load_image(paths[0]), config)[None])  # warm-up: oneDNN primitive creation
        features = []
        start = time.perf_counter()
        for path in paths:
            x = preprocess_image(load_image(path), config)[None]
            features.append(model(x).float().numpy()[0])
        seconds = time.perf_counter() - start
    return np.stack(features), len(paths) / seconds


def default(backbone, paths: list[Path], out: Path, **options) -> tuple[dict[str, np.ndarray], float, dict]:
    """``extract_manifest`` on a manifest of ``paths``; returns features by path, images/s and the report."""
    manifest = out.parent / "bench-manifest.csv"
    with open(manifest, "w", newline="") as handle:
        writer = csv.writer(handle)
        writer.writerow(["path", "label"])
        writer.writerows([str(p.resolve()), "unlabelled"] for p in paths)
    start = time.perf_counter()
    report = extract_manifest(manifest, out, backbone=backbone, progress=False, **options)
    seconds = time.perf_counter() - start
    store = FeatureStore(out)
    rows = [r for r in store.read_index() if r.status == "ok"]
    return {"keys": [r.sha256 for r in rows], "paths": [r.path for r in rows]}, len(paths) / seconds, report


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--images", type=Path, required=True, help="any folder of images (searched recursively)")
    parser.add_argument("--limit", type=int, default=None, help="use the first N images (sorted by path)")
    parser.add_argument("--naive-limit", type=int, default=256, help="images for the naive path (default 256)")
    parser.add_argument("--backbone", default="vgg16")
    parser.add_argument("--weights", default=None, help="weights FILE, or 'random' (default: pretrained if present)")
    parser.add_argument("--precision", default="auto", help="passed to extract (auto, fp32, bf16, fp16)")
    parser.add_argument("--engine", default="auto", help="passed to extract (auto, eager, compile, openvino)")
    parser.add_argument("--device", default="auto", help="passed to extract (auto, cpu, cuda)")
    parser.add_argument("--dtype", default=None, help="store dtype for the default path (float32, float16)")
    parser.add_argument("--out", type=Path, default=None, help="feature store folder (default: a temp folder)")
    args = parser.parse_args(argv)

    paths = find_images(args.images, args.limit)
    if not paths:
        parser.error(f"no images under {args.images}")
    try:
        backbone = create_backbone(args.backbone, weights=args.weights)
    except WeightsNotFoundError as error:
        print(f"NOTE: {error}", file=sys.stderr)
        print(
            "NOTE: pretrained weights are not available here: using --weights random. "
            "Speed is identical; the features are not meaningful.",
            file=sys.stderr,
        )
        backbone = create_backbone(args.backbone, weights="random")
    hw = detect_hardware()
    print(
        f"machine: {cpu_name()}, {hw.cpu_count} cores, torch CPU capability {hw.cpu_capability}, "
        f"native bf16 {hw.cpu_bf16}, CUDA {hw.cuda_name or 'none'}, OpenVINO {'yes' if hw.openvino else 'no'}"
    )
    if not hw.cuda and not hw.openvino:
        print(
            "NOTE: OpenVINO is not installed; on CPUs it is the fastest engine for long jobs (bf16 on AMX, fp32 "
            "on AVX2): pip install -e '.[fast]'",
            file=sys.stderr,
        )
    print(
        f"torch {torch.__version__}, {torch.get_num_threads()} threads; backbone {backbone.name} "
        f"({backbone.feature_dim}-d, weights {backbone.weights.name}); {len(paths)} images from {args.images}"
    )

    naive_paths = paths[: args.naive_limit]
    naive_features, naive_ips = naive(backbone, naive_paths)
    print(
        f"naive:   {naive_ips:7.2f} images/s  ({len(naive_paths)} images, one at a time, eager fp32, full decode)",
        flush=True,
    )

    with tempfile.TemporaryDirectory(prefix="xvision-bench-") as tmp:
        out = args.out or Path(tmp) / "features"
        options = {"precision": args.precision, "engine": args.engine, "device": args.device}
        if args.dtype:
            options["storage_dtype"] = args.dtype
        index, default_ips, report = default(backbone, paths, out, **options)
        plan = report.plan or {}
        print(
            f"default: {default_ips:7.2f} images/s  ({len(paths)} images end to end: "
            f"{plan.get('engine')} {plan.get('precision')} channels_last={plan.get('channels_last')}, "
            f"batch {plan.get('batch_size')}, {plan.get('workers')} workers, {plan.get('threads')} threads, "
            f"reduced decode {plan.get('reduced_decode')})"
        )
        if report.guard:
            print(f"accuracy guard: cosine min {report.guard['cosine_min']:.6f} on {report.guard['n']} images")
        by_path = dict(zip(index["paths"], index["keys"], strict=True))
        keys = [by_path[str(p.resolve())] for p in naive_paths]
        cosine = cosine_rows(FeatureStore(out).get(keys), naive_features)
    ratio = default_ips / naive_ips
    own, children = peak_rss_mb()
    print(
        f"ratio:   {ratio:.2f}x; cosine default vs naive: min {cosine.min():.6f}, "
        f"median {statistics.median(cosine.tolist()):.6f}"
    )
    print(f"peak RSS: {own:.0f} MB (this process), {children:.0f} MB (largest decode worker)")
    print(
        f"default_ips={default_ips:.2f} naive_ips={naive_ips:.2f} ratio={ratio:.2f} "
        f"cosine={cosine.min():.6f} peak_rss_mb={own:.0f}"
    )
    return 0


if __name__ == "__main__":
    sys.exit(main())
