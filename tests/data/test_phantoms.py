"""Synthetic chest phantoms: image contract, determinism, nodule placement, dataset layout, no class shortcut."""

from __future__ import annotations

import csv
import json
from collections import defaultdict
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from xvision.data.phantoms import lung_mask, make_phantom_dataset, render_phantom
from xvision.errors import XvisionError

SIZE = 128


def _render(seed: int, nodule: bool, size: int = SIZE) -> tuple[np.ndarray, dict]:
    return render_phantom(np.random.default_rng(seed), size=size, nodule=nodule)


def _read_manifest(path: Path) -> list[dict[str, str]]:
    with open(path, newline="", encoding="utf-8") as handle:
        return list(csv.DictReader(handle))


@pytest.mark.parametrize("nodule", [False, True])
def test_image_is_float32_2d_in_unit_range(nodule: bool) -> None:
    image, info = _render(0, nodule)
    assert image.shape == (SIZE, SIZE)
    assert image.dtype == np.float32
    assert 0.0 <= image.min() and image.max() <= 1.0
    assert image.std() > 0.05
    assert info["size"] == SIZE
    assert info["label"] == ("nodule" if nodule else "normal")
    assert (len(info["nodules"]) > 0) == nodule
    json.dumps(info)  # the description is JSON-able


def test_display_polarity_lungs_darker_than_mediastinum() -> None:
    image, info = _render(1, False)
    lungs = lung_mask(info)
    assert lungs.shape == image.shape and lungs.dtype == bool
    assert 0.15 < lungs.mean() < 0.6
    centre = image[SIZE // 3 : 2 * SIZE // 3, SIZE // 2 - 3 : SIZE // 2 + 3]
    assert image[lungs].mean() < centre.mean() - 0.15


def test_same_seed_same_image_other_seed_other_image() -> None:
    first, info_first = _render(7, True)
    again, info_again = _render(7, True)
    other, _ = _render(8, True)
    np.testing.assert_array_equal(first, again)
    assert info_first == info_again
    assert np.abs(first - other).mean() > 0.01


@pytest.mark.parametrize("seed", range(6))
def test_nodule_changes_the_image_only_around_the_nodule(seed: int) -> None:
    normal, info_normal = _render(seed, False)
    with_nodule, info_nodule = _render(seed, True)
    # every nuisance parameter is shared: the descriptions differ only by the nodules
    assert info_normal["anatomy"] == info_nodule["anatomy"]
    assert info_normal["view"] == info_nodule["view"]

    changed = np.abs(with_nodule - normal) > 1e-6
    assert changed.any()
    rows, cols = np.mgrid[0:SIZE, 0:SIZE]
    near = np.zeros_like(changed)
    for nod in info_nodule["nodules"]:
        reach = 0.6 * nod["diameter"] + 2.0
        near |= np.hypot(cols - nod["x"], rows - nod["y"]) <= reach
        # the centre itself got brighter
        r, c = int(round(nod["y"])), int(round(nod["x"]))
        assert with_nodule[r, c] > normal[r, c]
    assert not (changed & ~near).any()


def test_nodules_lie_inside_the_lung_fields_with_the_documented_sizes() -> None:
    diameters = []
    counts = []
    for seed in range(30):
        _, info = _render(seed, True)
        lungs = lung_mask(info)
        counts.append(len(info["nodules"]))
        for nod in info["nodules"]:
            assert lungs[int(round(nod["y"])), int(round(nod["x"]))], (seed, nod)
            diameters.append(nod["diameter"] / SIZE)
            assert 0.6 <= nod["contrast"] <= 1.1
    assert set(counts) <= {1, 2}
    assert 0.035 <= min(diameters) and max(diameters) <= 0.105
    assert max(diameters) - min(diameters) > 0.03  # varied, not one size


def test_no_class_shortcut_in_global_intensity() -> None:
    def stats(seeds: range, nodule: bool) -> np.ndarray:
        images = [_render(seed, nodule)[0] for seed in seeds]
        return np.array([[image.mean(), image.std()] for image in images])

    normal = stats(range(0, 40), False)
    nodule = stats(range(100, 140), True)
    spread = np.concatenate([normal, nodule]).std(axis=0)
    gap = np.abs(normal.mean(axis=0) - nodule.mean(axis=0))
    assert (gap < 0.5 * spread).all(), (gap, spread)

    # paired: same nuisance draws, so the only global effect is the nodule's few bright pixels
    paired = stats(range(0, 40), True)
    assert np.abs(paired[:, 0] - normal[:, 0]).max() < 0.01


def test_dataset_layout_manifest_and_groups(tmp_path: Path) -> None:
    out = tmp_path / "phantoms"
    manifest = make_phantom_dataset(out, n_per_class=3, size=64, seed=3, views_per_patient=2)
    assert manifest == out / "manifest.csv"
    rows = _read_manifest(manifest)
    with open(manifest, encoding="utf-8") as handle:
        assert handle.readline().strip() == "path,label,group"
    assert len(rows) == 12
    assert sorted(p.relative_to(out).as_posix() for p in out.rglob("*.png")) == sorted(r["path"] for r in rows)
    assert {r["label"] for r in rows} == {"normal", "nodule"}
    assert sum(r["label"] == "nodule" for r in rows) == 6

    by_group: dict[str, list[dict[str, str]]] = defaultdict(list)
    for row in rows:
        assert row["path"] == f"{row['label']}/{row['group']}_v{row['path'][-5]}.png"
        by_group[row["group"]].append(row)
    assert len(by_group) == 6
    for members in by_group.values():
        assert len(members) == 2
        assert len({m["label"] for m in members}) == 1

    index = json.loads((out / "phantoms.json").read_text(encoding="utf-8"))
    assert index["params"]["views_per_patient"] == 2
    images = {entry["path"]: entry for entry in index["images"]}
    assert set(images) == {r["path"] for r in rows}
    for row in rows:
        entry = images[row["path"]]
        assert entry["group"] == row["group"]
        assert (len(entry["nodules"]) > 0) == (row["label"] == "nodule")
    for group, members in by_group.items():
        first, second = (images[m["path"]] for m in members)
        assert first["anatomy"] == second["anatomy"]
        assert [n["anatomy_frame"] for n in first["nodules"]] == [n["anatomy_frame"] for n in second["nodules"]]
        assert first["view"] != second["view"]
        a = np.asarray(Image.open(out / first["path"]), dtype=np.float32)
        b = np.asarray(Image.open(out / second["path"]), dtype=np.float32)
        assert not np.array_equal(a, b)
        assert np.abs(a - b).mean() < 0.15 * 255, group  # other exposure and noise, same patient


def test_dataset_is_deterministic_and_rewrites_its_own_set(tmp_path: Path) -> None:
    first = make_phantom_dataset(tmp_path / "a", n_per_class=2, size=48, seed=5)
    second = make_phantom_dataset(tmp_path / "b", n_per_class=2, size=48, seed=5)
    for row in _read_manifest(first):
        assert (tmp_path / "a" / row["path"]).read_bytes() == (tmp_path / "b" / row["path"]).read_bytes()
    assert first.read_text() == second.read_text()

    again = make_phantom_dataset(tmp_path / "a", n_per_class=2, size=48, seed=5)  # same parameters: fine
    assert again.read_text() == second.read_text()
    with pytest.raises(XvisionError, match="other parameters"):
        make_phantom_dataset(tmp_path / "a", n_per_class=2, size=48, seed=6)


def test_dataset_refuses_a_foreign_non_empty_folder(tmp_path: Path) -> None:
    (tmp_path / "notes.txt").write_text("mine", encoding="utf-8")
    with pytest.raises(XvisionError, match="not empty"):
        make_phantom_dataset(tmp_path, n_per_class=1, size=48)
    assert [p.name for p in tmp_path.iterdir()] == ["notes.txt"]


def test_sixteen_bit_pngs(tmp_path: Path) -> None:
    manifest = make_phantom_dataset(tmp_path / "p16", n_per_class=1, size=64, bit_depth=16)
    for row in _read_manifest(manifest):
        with Image.open(tmp_path / "p16" / row["path"]) as image:
            assert image.mode in ("I;16", "I")
            pixels = np.asarray(image)
        assert pixels.max() > 255


def test_invalid_arguments(tmp_path: Path) -> None:
    with pytest.raises(ValueError, match="bit_depth"):
        make_phantom_dataset(tmp_path / "x", n_per_class=1, bit_depth=12)
    with pytest.raises(ValueError, match="size"):
        render_phantom(np.random.default_rng(0), size=8, nodule=False)
