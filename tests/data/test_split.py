"""Grouped stratified splits and leakage checks."""

from __future__ import annotations

import shutil
from collections import Counter, defaultdict
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from xvision.data import (
    Manifest,
    ManifestRow,
    assign_splits,
    check_no_leakage,
    file_hashes,
    split_counts,
    write_manifest,
)
from xvision.errors import LeakageError, ManifestError


def _manifest(root: Path, groups_per_class: dict[str, int], *, seed: int = 0, max_images: int = 4) -> Manifest:
    """Rows only (no files): each group has 1..max_images images of one class."""
    rng = np.random.default_rng(seed)
    rows = []
    for label, n_groups in groups_per_class.items():
        for g in range(n_groups):
            for i in range(int(rng.integers(1, max_images + 1))):
                rows.append(ManifestRow(f"{label}/p{g}/{i}.png", label, group=f"{label}-p{g}"))
    return Manifest(rows=rows, root=root)


def _splits_of_groups(manifest: Manifest) -> dict[str, set[str | None]]:
    found: dict[str, set[str | None]] = defaultdict(set)
    for row in manifest:
        found[row.group or row.path].add(row.split)
    return found


def test_proportions_are_roughly_the_requested_fractions(tmp_path: Path) -> None:
    rows = [ManifestRow(f"{label}{i}.png", label) for label in ("a", "b") for i in range(100)]
    result = assign_splits(Manifest(rows=rows, root=tmp_path), test=0.2, val=0.1, seed=3)
    counts = Counter((row.split, row.label) for row in result)
    for label in ("a", "b"):
        assert counts[("train", label)] == 70
        assert counts[("val", label)] == 10
        assert counts[("test", label)] == 20


@pytest.mark.parametrize("seed", range(40))
def test_groups_never_span_splits_and_every_split_has_every_class(tmp_path: Path, seed: int) -> None:
    manifest = _manifest(tmp_path, {"normal": 12, "abnormal": 5}, seed=seed)
    result = assign_splits(manifest, seed=seed)
    assert all(row.split in ("train", "val", "test") for row in result)
    assert all(len(splits) == 1 for splits in _splits_of_groups(result).values())
    present = {(row.split, row.label) for row in result}
    assert present == {(s, c) for s in ("train", "val", "test") for c in ("normal", "abnormal")}
    check_no_leakage(result, check_hashes=False)


def test_image_fractions_hold_with_groups_of_different_sizes(tmp_path: Path) -> None:
    manifest = _manifest(tmp_path, {"a": 60, "b": 60}, max_images=5)
    result = assign_splits(manifest, test=0.25, val=0.15, seed=1)
    share = Counter(row.split for row in result)
    assert share["test"] / len(result) == pytest.approx(0.25, abs=0.04)
    assert share["val"] / len(result) == pytest.approx(0.15, abs=0.04)


def test_same_seed_same_split_other_seed_other_split(tmp_path: Path) -> None:
    manifest = _manifest(tmp_path, {"a": 20, "b": 20})
    first = [row.split for row in assign_splits(manifest, seed=7)]
    assert first == [row.split for row in assign_splits(manifest, seed=7)]
    assert first != [row.split for row in assign_splits(manifest, seed=8)]


def test_requested_splits_only(tmp_path: Path) -> None:
    manifest = _manifest(tmp_path, {"a": 4, "b": 4})
    assert {row.split for row in assign_splits(manifest, val=0, test=0.3)} == {"train", "test"}
    assert {row.split for row in assign_splits(manifest, val=0, test=0)} == {"train"}


def test_mixed_label_group_stays_together(tmp_path: Path) -> None:
    rows = [ManifestRow(f"x{i}.png", "a" if i < 2 else "b", group="mixed") for i in range(3)]
    rows += [ManifestRow(f"{c}{i}.png", c) for c in "ab" for i in range(6)]
    for seed in range(10):
        result = assign_splits(Manifest(rows=rows, root=tmp_path), seed=seed)
        assert len({row.split for row in result if row.group == "mixed"}) == 1


def test_too_few_groups_says_how_many_are_needed(tmp_path: Path) -> None:
    manifest = _manifest(tmp_path, {"a": 5, "b": 2})
    assert {row.split for row in assign_splits(manifest, val=0)} == {"train", "test"}
    with pytest.raises(ManifestError, match=r"'b' has 2.*at least 3.*fewer splits \(--val 0 or --test 0\)$"):
        assign_splits(manifest)
    rare = _manifest(tmp_path, {"a": 5, "b": 5, "rare": 1})
    with pytest.raises(ManifestError, match="'rare' has 1.*remove the class with one group from the manifest"):
        assign_splits(rare, val=0)  # no choice of splits can place a one-group class in two


@pytest.mark.parametrize(
    ("test", "val", "expected"),
    [
        (-0.1, 0.1, "test fraction must be a number >= 0"),
        (0.2, float("nan"), "val fraction"),
        (0.6, 0.4, "sum >= 1"),
    ],
)
def test_bad_fractions_are_rejected(tmp_path: Path, test: float, val: float, expected: str) -> None:
    with pytest.raises(ManifestError, match=expected):
        assign_splits(_manifest(tmp_path, {"a": 5, "b": 5}), test=test, val=val)


def test_group_by_any_column_and_unknown_column(tmp_path: Path) -> None:
    rows = [ManifestRow(f"{c}{i}.png", c, extra={"study_id": f"s{i // 2}"}) for c in "ab" for i in range(12)]
    manifest = Manifest(rows=rows, root=tmp_path)
    result = assign_splits(manifest, group_by="study_id", seed=2)
    by_study = defaultdict(set)
    for row in result:
        by_study[(row.label, row.extra["study_id"])].add(row.split)
    assert all(len(splits) == 1 for splits in by_study.values())
    with pytest.raises(ManifestError, match="no column 'patient'.*available columns: path, label, study_id"):
        assign_splits(manifest, group_by="patient")


def test_no_group_column_or_group_by_none_splits_images(tmp_path: Path) -> None:
    manifest = _manifest(tmp_path, {"a": 3, "b": 3}, max_images=1)
    plain = Manifest(rows=[ManifestRow(r.path, r.label) for r in manifest], root=tmp_path)
    assert plain.columns == ("path", "label")
    assert {row.split for row in assign_splits(plain)} == {"train", "val", "test"}
    assert {row.split for row in assign_splits(manifest, group_by=None)} == {"train", "val", "test"}


def test_identical_hashes_are_kept_in_one_split(tmp_path: Path) -> None:
    rows = [ManifestRow(f"{c}{i}.png", c) for c in "ab" for i in range(10)]
    manifest = Manifest(rows=rows, root=tmp_path)
    hashes = {str(manifest.resolve(row)): f"h{i}" for i, row in enumerate(rows)}
    hashes[str(tmp_path / "a9.png")] = hashes[str(tmp_path / "a0.png")]
    hashes[str(tmp_path / "b5.png")] = hashes[str(tmp_path / "a0.png")]
    for seed in range(20):
        result = assign_splits(manifest, seed=seed, hashes=hashes)
        split = {row.path: row.split for row in result}
        assert split["a0.png"] == split["a9.png"] == split["b5.png"]
        check_no_leakage(result, hashes=hashes)


def test_split_counts_report_images_and_groups(tmp_path: Path) -> None:
    rows = [
        ManifestRow("1.png", "a", group="p", split="train"),
        ManifestRow("2.png", "a", group="p", split="train"),
        ManifestRow("3.png", "b", split="test"),
        ManifestRow("4.png", "a"),
    ]
    assert split_counts(Manifest(rows=rows, root=tmp_path)) == [
        ("train", "a", 2, 1),
        ("test", "b", 1, 1),
        ("-", "a", 1, 1),
    ]


def test_split_counts_count_identical_files_as_one_group(tmp_path: Path) -> None:
    rows = [ManifestRow(f"{i}.png", "a", split="train") for i in range(3)]
    for i, seed in enumerate((1, 1, 2)):  # 0.png and 1.png are the same bytes: one unit, as the split treats it
        _png(tmp_path / f"{i}.png", seed)
    manifest = Manifest(rows=rows, root=tmp_path)
    assert split_counts(manifest) == [("train", "a", 3, 3)]
    assert split_counts(manifest, hashes=file_hashes(manifest)) == [("train", "a", 3, 2)]


# --- leakage -------------------------------------------------------------------------------------------


def test_group_in_two_splits_is_leakage(tmp_path: Path) -> None:
    rows = [
        ManifestRow("a.png", "x", group="p1", split="train"),
        ManifestRow("b.png", "x", group="p1", split="test"),
        ManifestRow("c.png", "y", group="p2", split="train"),
        ManifestRow("d.png", "y", group="p1"),  # unassigned rows are ignored
    ]
    manifest = Manifest(rows=rows, root=tmp_path)
    with pytest.raises(LeakageError, match=r"group 'p1'.*'a.png' in train, 'b.png' in test.*--group-by group"):
        check_no_leakage(manifest, check_hashes=False)
    check_no_leakage(manifest, group_by=None, check_hashes=False)
    # A manifest file's path does as well as a Manifest; anything else is named.
    path = write_manifest(manifest, tmp_path / "m.csv")
    with pytest.raises(LeakageError, match=r"group 'p1'"):
        check_no_leakage(path, check_hashes=False)
    assert {row.split for row in assign_splits(str(path), test=0.5, val=0, group_by=None)} <= {"train", "test"}
    with pytest.raises(TypeError, match="manifest: expected a Manifest or a manifest file's path, got dict"):
        assign_splits({"path": "a.png"})


def _png(path: Path, seed: int) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    Image.fromarray(np.random.default_rng(seed).integers(0, 256, (4, 4), dtype=np.uint8)).save(path)
    return path


def test_identical_files_in_two_splits_are_leakage(tmp_path: Path) -> None:
    _png(tmp_path / "a.png", 1)
    _png(tmp_path / "b.png", 2)
    shutil.copy(tmp_path / "a.png", tmp_path / "copy_of_a.png")
    rows = [
        ManifestRow("a.png", "x", split="train"),
        ManifestRow("b.png", "x", split="train"),
        ManifestRow("copy_of_a.png", "y", split="val"),
    ]
    manifest = Manifest(rows=rows, root=tmp_path)
    with pytest.raises(LeakageError, match=r"identical files.*'a.png' in train and 'copy_of_a.png' in val"):
        check_no_leakage(manifest)
    check_no_leakage(manifest, check_hashes=False)

    hashes = file_hashes(manifest)
    assert set(hashes) == {str(tmp_path / name) for name in ("a.png", "b.png", "copy_of_a.png")}
    assert hashes[str(tmp_path / "a.png")] == hashes[str(tmp_path / "copy_of_a.png")]
    with pytest.raises(LeakageError):
        check_no_leakage(manifest, hashes=hashes)
    same = {key: "one" if key.endswith("b.png") else key for key in hashes}
    check_no_leakage(manifest, hashes=same)  # precomputed hashes win over the files' bytes


def test_hashing_a_missing_file_names_it(tmp_path: Path) -> None:
    manifest = Manifest(rows=[ManifestRow("gone.png", "x", split="train")], root=tmp_path)
    with pytest.raises(ManifestError, match="'gone.png' not found"):
        file_hashes(manifest)
    with pytest.raises(ManifestError, match="'gone.png' not found"):
        check_no_leakage(manifest)


def test_many_missing_files_are_counted_in_one_error(tmp_path: Path) -> None:
    """A moved folder, or a manifest of images never fetched, stopped at the first missing file, as if one line
    were to fix."""
    (tmp_path / "here.png").write_bytes(b"x")
    rows = [ManifestRow("here.png", "a"), *(ManifestRow(f"gone{i}.png", "b") for i in range(3))]
    with pytest.raises(ManifestError, match=r"3 of the 4 listed files not found, e.g. 'gone0.png' .*never fetched"):
        file_hashes(Manifest(rows=rows, root=tmp_path))
