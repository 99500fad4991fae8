"""Does channels-last memory layout pay for fp32 PyTorch on this CPU? Model-only images/s, NCHW vs
channels-last, for the backbones the recipes use, measured interleaved in one process (medians of
``--repeats`` timed rounds after a warm-up; random weights: the speed is the same).

    python benchmarks/layout.py
    python benchmarks/layout.py --threads 2 --repeats 7

Ends with one line per case: ``case=... nchw_ips=... channels_last_ips=... ratio=... max_abs_diff=...``.
"""

from __future__ import annotations

import argparse
import sys
import time

import numpy as np
import torch

from xvision.backbones.registry import create_backbone

CASES = (("vgg16", 224, 4), ("efficientnet_lite0", 224, 4), ("efficientnet_lite0_1024", 1024, 1))


def _images_per_second(model: torch.nn.Module, x: torch.Tensor, rounds: int) -> float:
    start = time.perf_counter()
    for _ in range(rounds):
        model(x)
    return rounds * len(x) / (time.perf_counter() - start)


@torch.inference_mode()
def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--threads", type=int, help="torch threads (default: torch's own choice)")
    parser.add_argument("--repeats", type=int, default=5)
    parser.add_argument("--rounds", type=int, default=3, help="batches per timed round")
    args = parser.parse_args(argv)
    if args.threads:
        torch.set_num_threads(args.threads)
    print(f"torch {torch.__version__}, {torch.get_num_threads()} threads, {torch.backends.cpu.get_cpu_capability()}")
    for name, size, batch in CASES:
        # the _1024 case is the body of the detector (`best`): EfficientNet-Lite0 on a whole 1024 px film
        model = create_backbone(name.removesuffix("_1024"), weights="random").model.eval()
        x = torch.rand(batch, 3, size, size)
        last = model.to(memory_format=torch.channels_last)
        x_last = x.contiguous(memory_format=torch.channels_last)
        reference = model.to(memory_format=torch.contiguous_format)(x)
        diff = float((reference - last.to(memory_format=torch.channels_last)(x_last)).abs().max())
        speeds: dict[str, list[float]] = {"nchw": [], "last": []}
        for layout in ("nchw", "last"):  # warm-up
            model.to(memory_format=torch.channels_last if layout == "last" else torch.contiguous_format)
            model(x_last if layout == "last" else x)
        for _ in range(args.repeats):
            for layout in ("nchw", "last"):
                model.to(memory_format=torch.channels_last if layout == "last" else torch.contiguous_format)
                speeds[layout].append(_images_per_second(model, x_last if layout == "last" else x, args.rounds))
        nchw, last_ips = float(np.median(speeds["nchw"])), float(np.median(speeds["last"]))
        print(
            f"case={name}@{size} batch={batch} nchw_ips={nchw:.2f} channels_last_ips={last_ips:.2f} "
            f"ratio={last_ips / nchw:.2f} max_abs_diff={diff:.2e}",
            flush=True,
        )
    return 0


if __name__ == "__main__":
    sys.exit(main())
