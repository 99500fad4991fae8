"""Shared fixtures for the fine-tuning and detector tests."""

from __future__ import annotations

import contextlib
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


@pytest.fixture
def interrupted_after_round_1(monkeypatch: pytest.MonkeyPatch):
    """A context manager: training run inside it saves its round-1 checkpoint and is then interrupted
    (Ctrl-C, ``KeyboardInterrupt``, which the context expects); outside it, checkpoints are saved as usual."""
    from xvision.finetune import trainer

    real_save = trainer._Checkpoints.save

    def save_then_die(self, epoch, net, optimizer, state):
        real_save(self, epoch, net, optimizer, state)
        if epoch == 1:
            raise KeyboardInterrupt

    @contextlib.contextmanager
    def interrupted():
        with monkeypatch.context() as patch, pytest.raises(KeyboardInterrupt):
            patch.setattr(trainer._Checkpoints, "save", save_then_die)
            yield

    return interrupted
