"""`xvision manifest` and `xvision split` end to end on tiny synthetic PNGs."""

from __future__ import annotations

import shutil
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from xvision.cli.main import main
from xvision.data import read_manifest


def _png(path: Path, seed: int) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    Image.fromarray(np.random.default_rng(seed).integers(0, 256, (4, 4), dtype=np.uint8)).save(path)


@pytest.fixture
def dataset(tmp_path: Path) -> Path:
    """Two classes, 6 patients each, 2 images per patient."""
    root = tmp_path / "ds"
    seed = 0
    for label in ("normal", "abnormal"):
        for patient in range(6):
            for image in range(2):
                seed += 1
                _png(root / label / f"{label[0]}{patient}" / f"{image}.png", seed)
    return root


def test_manifest_then_split_in_place(dataset: Path, capsys: pytest.CaptureFixture[str]) -> None:
    out = dataset / "manifest.csv"
    assert main(["manifest", str(dataset), "-o", str(out), "--group-from", "parent"]) == 0
    summary = capsys.readouterr().out.strip()
    assert "24 images, 2 classes (abnormal 12, normal 12), 12 groups" in summary
    assert out.read_text().splitlines()[:2] == ["path,label,group", "abnormal/a0/0.png,abnormal,a0"]

    assert main(["split", str(out), "--seed", "1"]) == 0
    table = capsys.readouterr().out
    assert "split  class     images  groups" in table
    assert "no group or identical image is in two splits" in table
    manifest = read_manifest(out)
    assert manifest.columns == ("path", "label", "group", "split")
    assert {(row.split, row.label) for row in manifest} == {
        (s, c) for s in ("train", "val", "test") for c in ("normal", "abnormal")
    }
    splits_per_group: dict[str, set[str | None]] = {}
    for row in manifest:
        splits_per_group.setdefault(row.group or "", set()).add(row.split)
    assert all(len(splits) == 1 for splits in splits_per_group.values())


def test_split_to_another_file_keeps_identical_copies_together(
    dataset: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    # The same image filed under two other patients, one in the other class: all copies share one split.
    original = dataset / "normal" / "n0" / "0.png"
    copies = [dataset / "abnormal" / "a5" / "dup.png", dataset / "normal" / "n3" / "dup.png"]
    for copy in copies:
        shutil.copy(original, copy)
    assert main(["manifest", str(dataset), "--group-from", "parent"]) == 0
    for seed in range(8):
        out = tmp_path / "out" / f"split{seed}.csv"
        assert main(["split", str(dataset / "manifest.csv"), "--seed", str(seed), "-o", str(out)]) == 0
        manifest = read_manifest(out)
        split_of = {path: row.split for path, row in zip(manifest.paths(), manifest, strict=True)}
        assert all(path.is_file() for path in split_of)
        assert split_of[copies[0]] == split_of[copies[1]] == split_of[original]
    assert "split" not in read_manifest(dataset / "manifest.csv").columns  # -o leaves the input alone
    capsys.readouterr()


def test_split_by_an_extra_column_keeps_other_columns(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    lines = ["path,label,study_id,lesion_x"]
    for i in range(12):
        _png(tmp_path / f"{i}.png", i)
        lines.append(f"{i}.png,{'ab'[i % 2]},s{i // 4}{'ab'[i % 2]},{i * 10}")
    manifest_path = tmp_path / "m.csv"
    manifest_path.write_text("\n".join(lines) + "\n")
    assert main(["split", str(manifest_path), "--group-by", "study_id", "--val", "0", "--test", "0.3"]) == 0
    capsys.readouterr()
    manifest = read_manifest(manifest_path)
    assert manifest.columns == ("path", "label", "study_id", "lesion_x", "split")
    assert [row.extra["lesion_x"] for row in manifest] == [str(i * 10) for i in range(12)]
    study_splits: dict[str, set[str | None]] = {}
    for row in manifest:
        study_splits.setdefault(row.extra["study_id"], set()).add(row.split)
    assert all(len(splits) == 1 for splits in study_splits.values())


def _assert_one_line_error(capsys: pytest.CaptureFixture[str], expected: str) -> None:
    err = capsys.readouterr().err.strip()
    assert err.startswith("Error: ")
    assert expected in err
    assert "\n" not in err and "Traceback" not in err


def test_errors_are_one_line_with_exit_code_2(
    dataset: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    assert main(["manifest", str(tmp_path / "missing")]) == 2
    _assert_one_line_error(capsys, "folder not found")

    assert main(["manifest", str(dataset)]) == 0
    capsys.readouterr()
    assert main(["manifest", str(dataset)]) == 2
    _assert_one_line_error(capsys, "already exists; pass --force")
    assert main(["manifest", str(dataset), "--force"]) == 0
    capsys.readouterr()

    manifest = str(dataset / "manifest.csv")
    assert main(["split", manifest, "--group-by", "patient"]) == 2
    _assert_one_line_error(capsys, "available columns: path, label, group")
    assert main(["split", manifest, "--test", "0.7", "--val", "0.3"]) == 2
    _assert_one_line_error(capsys, "sum >= 1")
    assert main(["split", str(tmp_path / "nope.csv")]) == 2
    _assert_one_line_error(capsys, "manifest not found")
    assert main(["split", str(dataset)]) == 2  # the image folder itself: it exists, so not "not found"
    _assert_one_line_error(capsys, f"{dataset} is a folder, not a manifest (a CSV); make one with `xvision manifest")


def test_a_full_disk_is_one_line_not_a_traceback(dataset: Path, tmp_path: Path, monkeypatch, capsys) -> None:
    import errno

    import xvision.data.manifest

    def full(path, text):
        raise OSError(errno.ENOSPC, "No space left on device", str(path))

    monkeypatch.setattr(xvision.data.manifest, "atomic_write_text", full)
    out = tmp_path / "m.csv"
    assert main(["manifest", str(dataset), "-o", str(out)]) == 1
    err = capsys.readouterr().err
    assert err.strip() == f"Error: No space left on device: {out}"
    assert not out.exists()


def test_a_labels_table_becomes_a_manifest_with_its_columns_renamed(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    """A data set's own table (JSRT's labels.csv layout): paths relative to the table, other names."""
    data = tmp_path / "jsrt"
    _png(data / "images" / "n1.png", 1)
    _png(data / "images" / "c1.png", 2)
    (data / "labels.csv").write_text(
        "file,label,study_id,nodule_x,nodule_y,nodule_diam_px,age\n"
        "images/c1.png,nodule,S1,2.0,3.0,1.5,61\n"
        "images/n1.png,normal,S2,,,,47\n"
    )
    out = tmp_path / "work" / "manifest.csv"
    out.parent.mkdir()
    renames = ["path=file", "group=study_id", "lesion_x=nodule_x", "lesion_y=nodule_y", "lesion_diam=nodule_diam_px"]
    args = ["manifest", str(data / "labels.csv"), "-o", str(out)]
    assert main([*args, *(f"--column={pair}" for pair in renames)]) == 0
    assert "2 images, 2 classes (nodule 1, normal 1), 2 groups" in capsys.readouterr().out
    manifest = read_manifest(out)
    assert manifest.columns == ("path", "label", "group", "lesion_x", "lesion_y", "lesion_diam", "age")
    assert [p.resolve() for p in manifest.paths()] == [(data / "images" / n).resolve() for n in ("c1.png", "n1.png")]
    first = manifest.rows[0]
    assert (first.group, first.get("lesion_x"), first.get("lesion_diam")) == ("S1", "2.0", "1.5")
    assert first.get("age") == "61"
    assert manifest.rows[1].get("lesion_x") is None

    assert main([*args, "--force"]) == 2  # no mapping: the error says how to map
    _assert_one_line_error(capsys, "--column path=YOUR_COLUMN")
    assert main(["split", str(data / "labels.csv")]) == 2  # the table used as a manifest: the hint runs as printed
    _assert_one_line_error(capsys, f"`xvision manifest {data / 'labels.csv'} --column path=YOUR_COLUMN")
    assert main([*args, "--force", "--column", "path=filename"]) == 2
    _assert_one_line_error(capsys, "no column 'filename' to rename")
    assert main([*args, "--force", "--column", "path=file", "--column", "label=study_id"]) == 2
    _assert_one_line_error(capsys, "already has a column 'label'")
    assert main([*args, "--force", "--column", "path=file", "--column", "group=file"]) == 2
    _assert_one_line_error(capsys, "column 'file' is given more than one manifest name")
    for bad, says in (["path"], "write MANIFEST_NAME=YOUR_NAME"), (["path=file", "path=study_id"], "given twice"):
        assert main([*args, "--force", *(f"--column={pair}" for pair in bad)]) == 2
        assert says in capsys.readouterr().err
    assert main(["manifest", str(data / "labels.csv"), "-o", str(data / "labels.csv"), "--column", "path=file"]) == 2
    _assert_one_line_error(capsys, "is the table being read")
    assert main(["manifest", str(tmp_path / "missing.csv")]) == 2
    _assert_one_line_error(capsys, "table not found")
    (tmp_path / "excel.csv").write_text("file;label\nimages/c1.png;nodule\n")  # a spreadsheet's ';' export
    assert main(["manifest", str(tmp_path / "excel.csv"), "--column", "path=file"]) == 2
    _assert_one_line_error(capsys, "separated by ';', not commas")


def test_a_table_naming_missing_files_is_written_with_a_warning(tmp_path: Path, caplog) -> None:
    (tmp_path / "t.csv").write_text("file,label\nx.png,normal\ny.png,nodule\n")
    assert main(["manifest", str(tmp_path / "t.csv"), "--column", "path=file"]) == 0
    assert "2 of 2 files not found (first: x.png" in caplog.text
    assert [row.path for row in read_manifest(tmp_path / "manifest.csv")] == ["x.png", "y.png"]


def test_a_one_class_table_is_written_with_a_warning(tmp_path: Path, caplog) -> None:
    (tmp_path / "t.csv").write_text("file,label\nx.png,normal\ny.png,normal\n")
    assert main(["manifest", str(tmp_path / "t.csv"), "--column", "path=file", "-o", str(tmp_path / "m.csv")]) == 0
    assert "only class normal; training needs two" in caplog.text
    caplog.clear()
    assert len(read_manifest(tmp_path / "m.csv")) == 2
    (tmp_path / "u.csv").write_text("file,label\nx.png,normal\ny.png,nodule\n")
    assert main(["manifest", str(tmp_path / "u.csv"), "--column", "path=file", "-o", str(tmp_path / "n.csv")]) == 0
    assert "only class" not in caplog.text


def test_labels_written_two_ways_get_a_hint_from_manifest_and_split(tmp_path: Path, caplog) -> None:
    rows = [("a.png", "nodule"), ("b.png", "NODULE"), ("c.png", "normal"), ("d.png", "abnormal"), ("e.png", "nodlue")]
    for i, (name, _) in enumerate(rows):
        _png(tmp_path / name, i)
    (tmp_path / "t.csv").write_text("path,label\n" + "".join(f"{p},{label}\n" for p, label in rows))
    assert main(["manifest", str(tmp_path / "t.csv"), "-o", str(tmp_path / "m.csv")]) == 0
    assert "labels 'NODULE' and 'nodule' differ only by case" in caplog.text
    assert "labels 'nodlue' and 'nodule' look alike (a typo?); they are separate classes" in caplog.text
    assert "'abnormal' and 'normal'" not in caplog.text  # two classes named alike on purpose: no hint
    assert read_manifest(tmp_path / "m.csv").labels == ["NODULE", "abnormal", "nodlue", "nodule", "normal"]
    caplog.clear()
    main(["split", str(tmp_path / "m.csv"), "--test", "0", "--val", "0"])
    assert "labels 'NODULE' and 'nodule' differ only by case" in caplog.text


def test_stem_groups_that_span_class_folders_get_a_warning(tmp_path: Path, caplog) -> None:
    for k, label in enumerate(("normal", "nodule")):  # per-class numbering: normal/1.png, nodule/1.png
        for i in range(3):
            _png(tmp_path / "ds" / label / f"{i}.png", 10 * k + i)
    assert main(["manifest", str(tmp_path / "ds"), "--group-from", "stem"]) == 0
    assert "3 group(s) from --group-from stem hold images of two classes (first '0': nodule, normal)" in caplog.text
    caplog.clear()
    assert main(["manifest", str(tmp_path / "ds"), "--group-from", "none", "--force"]) == 0
    assert "hold images of two classes" not in caplog.text


def test_a_small_validation_split_is_said_to_be_noisy(caplog) -> None:
    from xvision.data.hints import MIN_VAL_PER_CLASS, warn_small_validation

    warn_small_validation(["nodule"] * 2 + ["normal"] * 9, "feats")
    assert "feats: the validation split holds few images of a class (nodule 2; under 5)" in caplog.text
    caplog.clear()
    warn_small_validation(["nodule"] * MIN_VAL_PER_CLASS + ["normal"] * 9, "feats")
    warn_small_validation([], "feats")  # no validation split: nothing to say here
    assert caplog.text == ""


def test_a_misspelt_column_name_is_warned_about(tmp_path: Path, caplog) -> None:
    data = tmp_path / "jsrt"
    _png(data / "images" / "n1.png", 1)
    _png(data / "images" / "c1.png", 2)
    (data / "labels.csv").write_text("file,label,nodule_x\nimages/c1.png,nodule,2.0\nimages/n1.png,normal,\n")
    args = ["manifest", str(data / "labels.csv"), "-o", str(tmp_path / "m.csv"), "--column", "path=file"]
    assert main([*args, "--column", "lesionx=nodule_x"]) == 0
    assert "'lesionx' is not a column Xvision reads (it stays an extra column); did you mean 'lesion_x'?" in caplog.text
    caplog.clear()
    assert main([*args, "--column", "lesion_x=nodule_x", "--force"]) == 0
    assert "did you mean" not in caplog.text


def test_splitting_a_one_class_manifest_warns(tmp_path: Path, caplog) -> None:
    for i in range(6):
        _png(tmp_path / "normal" / f"n{i}.png", i)
    (tmp_path / "m.csv").write_text("path,label\n" + "".join(f"normal/n{i}.png,normal\n" for i in range(6)))
    assert main(["split", str(tmp_path / "m.csv"), "--val", "0", "--test", "0.3"]) == 0
    assert "every image is 'normal': a classifier needs two classes" in caplog.text


def test_split_in_place_through_a_link_splits_the_file_it_leads_to(tmp_path: Path) -> None:
    """`split link.csv` replaced the link by a split copy, and the manifest it led to stayed unsplit."""
    from xvision.data.phantoms import make_phantom_dataset

    manifest = make_phantom_dataset(tmp_path / "data", n_per_class=10, size=32, seed=1)
    link = manifest.parent / "current.csv"  # e.g. current.csv -> manifest.csv
    link.symlink_to(manifest.name)
    assert main(["split", str(link), "--test", "0.3", "--val", "0"]) == 0
    assert link.is_symlink() and link.resolve() == manifest.resolve()
    rows = read_manifest(manifest).rows
    assert {row.split for row in rows} == {"train", "test"} and all((manifest.parent / r.path).is_file() for r in rows)
    # a link into another folder (a shared data set, absolute paths as benchmarks/jsrt_manifest.py writes them):
    # the shared file is left as it is, and the link becomes the split copy
    import csv

    absolute = manifest.parent / "absolute.csv"
    with open(manifest, newline="") as handle:
        rows_in = list(csv.DictReader(handle))
    with open(absolute, "w", newline="") as handle:
        writer = csv.DictWriter(handle, fieldnames=["path", "label", "group"], extrasaction="ignore")
        writer.writeheader()
        writer.writerows({**r, "path": str(manifest.parent / r["path"])} for r in rows_in)
    (tmp_path / "project").mkdir()
    shared = tmp_path / "project" / "shared.csv"
    shared.symlink_to(absolute)
    before = absolute.read_text()
    assert main(["split", str(shared), "--test", "0.5", "--val", "0", "--seed", "3"]) == 0
    assert absolute.read_text() == before and not shared.is_symlink()
    assert all((shared.parent / r.path).is_file() for r in read_manifest(shared).rows)  # paths rewritten for it
