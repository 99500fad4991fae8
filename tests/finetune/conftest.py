"""Shared fixtures for the fine-tuning and detector tests."""

from __future__ import annotations

import csv
import json
from pathlib import Path

import pytest

from xvision.data.phantoms import make_phantom_dataset


@pytest.fixture(scope="module")
def lesion_manifest(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """12 phantoms (6 with a nodule) with lesion columns from the generator's ground truth."""
    folder = tmp_path_factory.mktemp("phantoms")
    make_phantom_dataset(folder, n_per_class=6, size=96, seed=5)
    info = json.loads((folder / "phantoms.json").read_text())
    path = folder / "lesions.csv"
    with open(path, "w", newline="") as handle:
        writer = csv.writer(handle)
        writer.writerow(["path", "label", "group", "lesion_x", "lesion_y", "lesion_diam"])
        for image in info["images"]:
            nodule = image["nodules"][0] if image["nodules"] else None
            where = [nodule["x"], nodule["y"], nodule["diameter"]] if nodule else ["", "", ""]
            writer.writerow([image["path"], image["label"], image["group"], *where])
    return path
