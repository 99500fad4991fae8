"""Shared fixtures for the fine-tuning and detector tests."""

from __future__ import annotations

import csv
import json
from pathlib import Path

import pytest

from xvision.data.phantoms import make_phantom_dataset


def write_lesion_manifest(folder: Path, n_per_class: int, seed: int, *, broken: bool = False) -> Path:
    """Phantoms with lesion columns from the generator's ground truth; ``broken`` adds an unreadable image."""
    make_phantom_dataset(folder, n_per_class=n_per_class, size=96, seed=seed)
    info = json.loads((folder / "phantoms.json").read_text())
    path = folder / "lesions.csv"
    with open(path, "w", newline="") as handle:
        writer = csv.writer(handle)
        writer.writerow(["path", "label", "group", "lesion_x", "lesion_y", "lesion_diam"])
        for image in info["images"]:
            nodule = image["nodules"][0] if image["nodules"] else None
            where = [nodule["x"], nodule["y"], nodule["diameter"]] if nodule else ["", "", ""]
            writer.writerow([image["path"], image["label"], image["group"], *where])
        if broken:
            (folder / "broken.png").write_bytes(b"not a png")
            writer.writerow(["broken.png", "normal", "Pbroken", "", "", ""])
    return path


@pytest.fixture(scope="session")
def make_lesion_manifest():
    """:func:`write_lesion_manifest`, for test modules that need their own phantom set."""
    return write_lesion_manifest


@pytest.fixture(scope="module")
def lesion_manifest(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """12 phantoms (6 with a nodule) with lesion columns."""
    return write_lesion_manifest(tmp_path_factory.mktemp("phantoms"), 6, 5)
