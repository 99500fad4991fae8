"""Write a contrast-enhanced (CLAHE) copy of a manifest's images and a manifest that points at it.

An ablation for docs/recipes.md: does local contrast enhancement before the network, as classic JSRT CAD
systems use, help the lesion detector? The copies go to OUT/images (8-bit PNG, same names), the manifest to
OUT/manifest.csv with every other column kept (lesion locations and masks are unchanged: CLAHE moves no
pixel). Then, for example::

    python benchmarks/jsrt_manifest.py -o jsrt.csv
    python benchmarks/clahe_manifest.py jsrt.csv -o jsrt_clahe
    python benchmarks/crop_detector.py jsrt_clahe/manifest.csv -o cv_clahe --folds 5 --set members=2

Needs scikit-image (in the test extra).
"""

from __future__ import annotations

import argparse
import csv
from pathlib import Path

import numpy as np
from PIL import Image
from skimage import exposure

from xvision.data.manifest import read_manifest
from xvision.io import load_image


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("manifest")
    parser.add_argument("-o", "--out", required=True, type=Path)
    parser.add_argument("--clip-limit", type=float, default=0.01, help="skimage's clip_limit (default 0.01)")
    args = parser.parse_args()
    manifest = read_manifest(args.manifest)
    (args.out / "images").mkdir(parents=True, exist_ok=True)
    with open(args.manifest, newline="", encoding="utf-8") as handle:
        records = list(csv.DictReader(handle))
    for record, row in zip(records, manifest.rows, strict=True):
        source = manifest.resolve(row)
        target = args.out / "images" / source.name
        # Tiles of 1/8 of the film (skimage's default kernel): local contrast for faint blobs.
        enhanced = exposure.equalize_adapthist(load_image(source), clip_limit=args.clip_limit)
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
