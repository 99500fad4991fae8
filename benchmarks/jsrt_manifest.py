"""Write an Xvision manifest for the JSRT development set in ../shared/data/jsrt (absolute paths).

Columns: path, label, group (= study_id), lesion_x, lesion_y, lesion_diam (= nodule_x, nodule_y,
nodule_diam_px, in pixels of the 1024 px images; empty for normals), mask (the lung-field mask). Used by
docs/recipes.md:

    python benchmarks/jsrt_manifest.py -o jsrt.csv
"""

from __future__ import annotations

import argparse
import csv
import io
import sys
from pathlib import Path

from xvision._fileio import atomic_write_text

DEFAULT = Path(__file__).resolve().parents[1].parent / "shared" / "data" / "jsrt"


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--jsrt", type=Path, default=DEFAULT, help="folder with labels.csv and images/")
    parser.add_argument("-o", "--out", type=Path, required=True)
    args = parser.parse_args(argv)
    labels = args.jsrt / "labels.csv"
    if not labels.is_file():
        print(f"error: {labels} not found (the JSRT development set lives in ../shared/data/jsrt)", file=sys.stderr)
        return 2
    out = io.StringIO()
    writer = csv.writer(out, lineterminator="\n")
    writer.writerow(["path", "label", "group", "lesion_x", "lesion_y", "lesion_diam", "mask"])
    with open(labels, newline="", encoding="utf-8") as handle:
        for row in csv.DictReader(handle):
            image = (args.jsrt / row["file"]).resolve()
            mask = args.jsrt / "lung_masks" / image.name
            writer.writerow(
                [
                    image,
                    row["label"],
                    row["study_id"],
                    row.get("nodule_x", ""),
                    row.get("nodule_y", ""),
                    row.get("nodule_diam_px", ""),
                    mask.resolve() if mask.is_file() else "",
                ]
            )
    atomic_write_text(args.out, out.getvalue())
    print(f"wrote {args.out}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
