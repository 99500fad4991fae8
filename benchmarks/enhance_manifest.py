"""Write an enhanced copy of a manifest's images and a manifest that points at it.

Ablations for docs/recipes.md: does enhancing nodules before the network, as classic JSRT CAD systems do,
help the lesion detector? ``--method``:

- ``clahe``: local contrast enhancement (scikit-image's ``equalize_adapthist``, tiles of 1/8 of the film);
- ``difference``: the "difference image" of nodule CAD (Giger et al.): the film plus a band-pass of it, a
  Gaussian blur of sigma 4 px minus one of sigma 16 px (at 1024 px: blobs of roughly 10-60 px, the nodules'
  sizes, brighten; smooth background and fine texture do not).

The copies go to OUT/images (8-bit PNG, same names), the manifest to OUT/manifest.csv with every other column
kept (lesion locations and masks are unchanged: no pixel moves). Then, for example::

    python benchmarks/jsrt_manifest.py -o jsrt.csv
    python benchmarks/enhance_manifest.py jsrt.csv -o jsrt_clahe --method clahe
    python benchmarks/crop_detector.py jsrt_clahe/manifest.csv -o cv_clahe --folds 5 --set members=2

Needs scikit-image (in the test extra).
"""

from __future__ import annotations

import argparse
import csv
from pathlib import Path

import numpy as np
from PIL import Image
from skimage import exposure, filters

from xvision.data.manifest import read_manifest
from xvision.io import load_image


def enhance(image: np.ndarray, method: str, clip_limit: float) -> np.ndarray:
    """``image`` (2-D, [0, 1]) enhanced by ``method``, in [0, 1]."""
    if method == "clahe":
        return exposure.equalize_adapthist(image, clip_limit=clip_limit)
    band = filters.gaussian(image, sigma=4) - filters.gaussian(image, sigma=16)
    return np.clip(image + band, 0.0, 1.0)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("manifest")
    parser.add_argument("-o", "--out", required=True, type=Path)
    parser.add_argument("--method", choices=("clahe", "difference"), required=True)
    parser.add_argument("--clip-limit", type=float, default=0.01, help="clahe: skimage's clip_limit (0.01)")
    args = parser.parse_args()
    manifest = read_manifest(args.manifest)
    (args.out / "images").mkdir(parents=True, exist_ok=True)
    with open(args.manifest, newline="", encoding="utf-8") as handle:
        records = list(csv.DictReader(handle))
    for record, row in zip(records, manifest.rows, strict=True):
        source = manifest.resolve(row)
        target = args.out / "images" / source.name
        enhanced = enhance(load_image(source), args.method, args.clip_limit)
        Image.fromarray(np.clip(enhanced * 255 + 0.5, 0, 255).astype(np.uint8)).save(target)
        record["path"] = str(target.resolve())
        for column in ("mask",):
            if record.get(column):
                record[column] = str(manifest.resolve_column(row, column))
    with open(args.out / "manifest.csv", "w", newline="", encoding="utf-8") as handle:
        writer = csv.DictWriter(handle, fieldnames=list(records[0]))
        writer.writeheader()
        writer.writerows(records)
    print(f"{len(records)} images -> {args.out / 'images'}; manifest {args.out / 'manifest.csv'}")


if __name__ == "__main__":
    main()
