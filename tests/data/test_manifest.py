"""Reading, writing and building manifests."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from xvision.data import Manifest, ManifestRow, build_manifest, read_manifest, write_manifest
from xvision.data.hints import groups_spanning_classes
from xvision.errors import ManifestError


def _png(path: Path, seed: int) -> Path:
    """A tiny grayscale PNG whose pixels (and so hash) depend on ``seed``."""
    path.parent.mkdir(parents=True, exist_ok=True)
    pixels = np.random.default_rng(seed).integers(0, 256, size=(4, 4), dtype=np.uint8)
    Image.fromarray(pixels).save(path)
    return path


def _write(path: Path, text: str, encoding: str = "utf-8") -> Path:
    path.write_text(text, encoding=encoding)
    return path


# --- reading and writing -----------------------------------------------------------------------------


def test_round_trip_keeps_columns_values_and_relative_paths(tmp_path: Path) -> None:
    text = (
        "path,label,lesion_x,group,split,note\n"
        'imgs/a.png,normal,12,p1,train,"has, comma"\n'
        "imgs/b.png,abnormal,,p2,test,\n"
        "imgs/c.png,abnormal,7,,,\n"
    )
    source = _write(tmp_path / "manifest.csv", text)
    manifest = read_manifest(source)

    assert manifest.columns == ("path", "label", "lesion_x", "group", "split", "note")
    assert manifest.rows[0] == ManifestRow(
        "imgs/a.png", "normal", "p1", "train", {"lesion_x": "12", "note": "has, comma"}
    )
    assert manifest.rows[2].group is None and manifest.rows[2].split is None
    assert manifest.resolve(manifest.rows[1]) == tmp_path / "imgs" / "b.png"

    copy = write_manifest(manifest, tmp_path / "copy.csv")
    assert copy.read_text(encoding="utf-8") == text
    assert read_manifest(copy).rows == manifest.rows


def test_writing_elsewhere_rewrites_paths_to_the_same_files(tmp_path: Path) -> None:
    (tmp_path / "data" / "sub").mkdir(parents=True)
    source = _write(tmp_path / "data" / "sub" / "m.csv", "path,label\n../imgs/a.png,x\nb.png,y\n")
    manifest = read_manifest(source)

    moved = write_manifest(manifest, tmp_path / "data" / "m.csv")
    assert moved.read_text().splitlines()[1:] == ["imgs/a.png,x", "sub/b.png,y"]
    outside = write_manifest(manifest, tmp_path / "elsewhere" / "m.csv")
    assert read_manifest(outside).paths() == manifest.paths()
    assert read_manifest(moved).paths() == manifest.paths()


def test_writing_elsewhere_keeps_mask_columns_on_their_files(tmp_path: Path) -> None:
    (tmp_path / "data").mkdir()
    source = _write(tmp_path / "data" / "m.csv", "path,label,mask\na.png,x,masks/a.png\nb.png,y,\n")
    manifest = read_manifest(source)

    for target in (tmp_path / "m.csv", tmp_path / "elsewhere" / "deep" / "m.csv"):
        moved = read_manifest(write_manifest(manifest, target))
        assert moved.resolve_column(moved.rows[0], "mask") == tmp_path / "data" / "masks" / "a.png"
        assert moved.resolve_column(moved.rows[1], "mask") is None
    assert read_manifest(tmp_path / "m.csv").rows[0].get("mask") == "data/masks/a.png"


def test_absolute_paths_and_bom_are_accepted(tmp_path: Path) -> None:
    image = (tmp_path / "x.png").as_posix()
    manifest = read_manifest(_write(tmp_path / "m.csv", f"path,label\n{image},a\n", encoding="utf-8-sig"))
    assert manifest.columns == ("path", "label")
    assert manifest.resolve(manifest.rows[0]) == tmp_path / "x.png"


def test_split_values_are_case_insensitive(tmp_path: Path) -> None:
    manifest = read_manifest(_write(tmp_path / "m.csv", "path,label,split\na.png,x,Train\nb.png,y,TEST\n"))
    assert [row.split for row in manifest] == ["train", "test"]


def test_write_is_atomic_and_leaves_no_temp_files(tmp_path: Path) -> None:
    manifest = Manifest(rows=[ManifestRow("a.png", "x")], root=tmp_path)
    write_manifest(manifest, tmp_path / "m.csv")
    assert sorted(p.name for p in tmp_path.iterdir()) == ["m.csv"]


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("", "no header"),
        ("path,diagnosis\na.png,x\n", "missing required column(s) label"),
        ("path,label\n", "lists no images"),
        ("path,label\na.png,x\nb.png,\n", "line 3: empty label"),
        ("path,label\n,x\n", "line 2: empty path"),
        ("path,label,split\na.png,x,validation\n", "line 2: unknown split 'validation'"),
        ("path,label\na.png,x\nb.png,y\n./a.png,y\n", "line 4: './a.png' is already listed on line 2"),
        ("path,label\na.png,x,extra\n", "line 2: 3 fields but the header has 2"),
        ("path,label,label\na.png,x,y\n", "duplicate column"),
        ("path;label;group\na.png;x;1\n", "separated by ';', not commas"),
        ("path\tlabel\na.png\tx\n", "separated by '\\t', not commas"),
    ],
)
def test_bad_manifests_name_the_file_line_and_fix(tmp_path: Path, text: str, expected: str) -> None:
    path = _write(tmp_path / "m.csv", text)
    with pytest.raises(ManifestError, match="m.csv") as error:
        read_manifest(path)
    assert expected in str(error.value)


def test_tables_as_spreadsheets_save_them(tmp_path: Path, capsys) -> None:
    """Excel's empty trailing columns were refused ("column 3 has no name"); a workbook or UTF-16 file was "not
    UTF-8 text"; a duplicated column, once renamed, was blamed on a `path` column the file does not have."""
    from xvision.cli.main import main

    trailing = read_manifest(_write(tmp_path / "excel.csv", "path,label,,\r\na.png,x,,\r\nb.png,y,,\r\n"))
    assert trailing.columns == ("path", "label") and [row.label for row in trailing] == ["x", "y"]
    with pytest.raises(ManifestError, match="line 2: a value in column 3, which has no name"):
        read_manifest(_write(tmp_path / "filled.csv", "path,label,,\na.png,x,oops,\n"))
    (tmp_path / "book.csv").write_bytes(b"PK\x03\x04" + b"\0" * 64)
    with pytest.raises(ManifestError, match=r"book\.csv: an Excel workbook .* save it as CSV UTF-8"):
        read_manifest(tmp_path / "book.csv")
    (tmp_path / "wide.csv").write_bytes("path,label\na.png,x\n".encode("utf-16"))
    with pytest.raises(ManifestError, match=r"wide\.csv: UTF-16 text; save the manifest as UTF-8 CSV"):
        read_manifest(tmp_path / "wide.csv")
    doubled = _write(tmp_path / "d.csv", "file,label,file\nimages/a.png,nodule,x\n")
    with pytest.raises(ManifestError, match=r"d\.csv line 1: duplicate column\(s\) file; rename them"):
        read_manifest(doubled, columns={"path": "file"})
    assert main(["manifest", str(tmp_path / "labels.txt"), "--column", "path=file"]) == 2
    assert "labels.txt: table not found" in capsys.readouterr().err


def test_missing_manifest_says_how_to_make_one(tmp_path: Path) -> None:
    with pytest.raises(ManifestError, match="not found.*xvision manifest"):
        read_manifest(tmp_path / "nope.csv")


# --- the Manifest object -----------------------------------------------------------------------------


def test_manifest_properties_subset_and_with_splits(tmp_path: Path) -> None:
    rows = [ManifestRow("a.png", "b"), ManifestRow("b.png", "a", group="g"), ManifestRow("c.png", "b")]
    manifest = Manifest(rows=rows, root=tmp_path)
    assert manifest.labels == manifest.classes == ["a", "b"]
    assert manifest.has_groups and not manifest.has_splits
    assert manifest.counts() == {"a": 1, "b": 2}

    split = manifest.with_splits({"a.png": "train", "b.png": "test"})
    assert split.has_splits and split.columns[-1] == "split"
    assert [row.path for row in split.subset("train")] == ["a.png"]
    assert [row.split for row in split] == ["train", "test", None]
    assert manifest.rows[0].split is None  # the original is unchanged
    with pytest.raises(ManifestError, match="unknown split 'dev'"):
        split.subset("dev")


# --- building from class folders -----------------------------------------------------------------------


def _dataset(root: Path) -> Path:
    _png(root / "normal" / "n2.png", 1)
    _png(root / "normal" / "n1.PNG", 2)
    _png(root / "abnormal" / "p7" / "a.png", 3)
    _png(root / "abnormal" / "p7" / "b.jpg", 4)
    _png(root / "abnormal" / "p9" / "a.png", 5)
    _png(root / "abnormal" / ".cache" / "hidden.png", 6)
    _png(root / "abnormal" / ".hidden.png", 7)
    (root / "abnormal" / "notes.txt").write_text("not an image")
    (root / "abnormal" / "README").write_text("no suffix, not DICOM")
    (root / "normal" / "scan0001").write_bytes(b"\0" * 128 + b"DICM" + b"\0" * 16)
    (root / ".git").mkdir()
    return root


def test_build_manifest_lists_images_per_class_sorted(tmp_path: Path) -> None:
    manifest = build_manifest(_dataset(tmp_path / "ds"))
    assert [(row.path, row.label) for row in manifest] == [
        ("abnormal/p7/a.png", "abnormal"),
        ("abnormal/p7/b.jpg", "abnormal"),
        ("abnormal/p9/a.png", "abnormal"),
        ("normal/n1.PNG", "normal"),
        ("normal/n2.png", "normal"),
        ("normal/scan0001", "normal"),
    ]
    assert not manifest.has_groups
    assert manifest.root == tmp_path / "ds"
    assert manifest.columns == ("path", "label", "group")


def test_build_manifest_groups_from_parent_or_stem(tmp_path: Path) -> None:
    folder = _dataset(tmp_path / "ds")
    parent = build_manifest(folder, group_from="parent")
    assert [row.group for row in parent] == ["p7", "p7", "p9", None, None, None]
    stem = build_manifest(folder, group_from="stem")
    assert [row.group for row in stem] == ["a", "b", "a", "n1", "n2", "scan0001"]


def test_group_from_parent_on_a_flat_layout_says_no_group_was_set(tmp_path: Path, caplog) -> None:
    for label in ("normal", "nodule"):
        (tmp_path / "ds" / label).mkdir(parents=True)
        for i in range(2):
            Image.new("L", (40, 40), 60 * i + 30).save(tmp_path / "ds" / label / f"{label}{i}.png")
    manifest = build_manifest(tmp_path / "ds", group_from="parent")
    assert not manifest.has_groups
    assert "--group-from parent found no image in a folder below its class folder" in caplog.text
    caplog.clear()
    build_manifest(_dataset(tmp_path / "nested"), group_from="parent")  # some groups: nothing to say
    assert "found no image" not in caplog.text


def test_build_manifest_with_custom_suffixes(tmp_path: Path) -> None:
    manifest = build_manifest(_dataset(tmp_path / "ds"), suffixes=["png"])
    assert [row.path for row in manifest] == [
        "abnormal/p7/a.png",
        "abnormal/p9/a.png",
        "normal/n1.PNG",
        "normal/n2.png",
    ]
    # One suffix given as a string is that suffix, not its characters.
    assert [row.path for row in build_manifest(_dataset(tmp_path / "ds2"), suffixes=".png")] == [
        row.path for row in manifest
    ]


def test_a_split_no_row_has_is_refused_by_name(tmp_path: Path) -> None:
    """extract_manifest(split="training") selected nothing and said nothing."""
    from xvision.features.extract import extract_manifest

    manifest = build_manifest(_dataset(tmp_path / "ds")).with_splits({})
    path = write_manifest(manifest.with_splits({row.path: "train" for row in manifest}), tmp_path / "m.csv")
    with pytest.raises(ManifestError, match=r"no images in split 'test' \(splits present: train\)"):
        extract_manifest(path, tmp_path / "f", backbone="timm:mobilenetv3_small_050", split="test")
    assert not (tmp_path / "f").exists()


def test_built_manifest_round_trips_through_csv(tmp_path: Path) -> None:
    manifest = build_manifest(_dataset(tmp_path / "ds"), group_from="parent")
    written = write_manifest(manifest, tmp_path / "ds" / "manifest.csv")
    again = read_manifest(written)
    assert again.rows == manifest.rows
    assert all(path.is_file() for path in again.paths())


def test_build_manifest_errors(tmp_path: Path) -> None:
    with pytest.raises(ManifestError, match="folder not found"):
        build_manifest(tmp_path / "missing")
    (tmp_path / "flat").mkdir()
    _png(tmp_path / "flat" / "a.png", 0)
    with pytest.raises(ManifestError, match="no class subfolders"):
        build_manifest(tmp_path / "flat")
    _png(tmp_path / "one" / "normal" / "a.png", 0)
    (tmp_path / "one" / "abnormal").mkdir()
    with pytest.raises(ManifestError, match="found only class normal; a classifier needs at least two"):
        build_manifest(tmp_path / "one")
    (tmp_path / "none" / "a").mkdir(parents=True)
    (tmp_path / "none" / "b").mkdir()
    with pytest.raises(ManifestError, match="no images found"):
        build_manifest(tmp_path / "none")
    with pytest.raises(ManifestError, match="group_from"):
        build_manifest(_dataset(tmp_path / "ds"), group_from="study")  # type: ignore[arg-type]


def test_find_images_follows_linked_folders_once_and_finds_unnamed_dicoms(tmp_path: Path) -> None:
    from xvision.data.manifest import find_images

    root = tmp_path / "inputs"
    _png(root / "a.png", 1)
    _png(tmp_path / "elsewhere" / "b.png", 2)
    (root / "linked").symlink_to(tmp_path / "elsewhere", target_is_directory=True)  # a data folder on another disk
    (root / "loop").symlink_to(root, target_is_directory=True)  # must not be walked forever
    _png(root / ".cache" / "c.png", 3)
    (root / "1.2.840.5").write_bytes(b"\0" * 128 + b"DICM" + b"\0" * 16)  # a DICOM named by its UID
    (root / "notes.txt").write_text("not an image")
    found = [p.relative_to(root).as_posix() for p in find_images(root)]
    assert found == ["1.2.840.5", "a.png", "linked/b.png"]


def test_links_to_nothing_are_left_out_of_a_folder_manifest(tmp_path: Path, caplog) -> None:
    for label, seed in (("normal", 1), ("nodule", 2)):
        _png(tmp_path / label / "a.png", seed)
    (tmp_path / "nodule" / "dangling.png").symlink_to(tmp_path / "gone.png")
    (tmp_path / "normal" / "loop.png").symlink_to(tmp_path / "normal" / "loop.png")
    manifest = build_manifest(tmp_path)
    assert sorted(row.path for row in manifest) == ["nodule/a.png", "normal/a.png"]
    assert "skipping 1 name(s) that are not readable files (a link to nothing, a pipe, a device; " in caplog.text
    assert "first: dangling.png)" in caplog.text
    assert "first: loop.png)" in caplog.text


def test_a_folder_linked_into_another_class_or_the_dataset_is_not_listed_twice(tmp_path: Path, caplog) -> None:
    root = tmp_path / "ds"
    for label, seed in (("normal", 1), ("nodule", 2)):
        _png(root / label / "a.png", seed)
    _png(tmp_path / "archive" / "b.png", 3)
    (root / "normal" / "more").symlink_to(root / "nodule", target_is_directory=True)  # the nodules again
    (root / "normal" / "loop").symlink_to(root, target_is_directory=True)  # every class again
    (root / "nodule" / "archive").symlink_to(tmp_path / "archive", target_is_directory=True)  # outside: followed
    manifest = build_manifest(root)
    assert sorted((row.path, row.label) for row in manifest) == [
        ("nodule/a.png", "nodule"),
        ("nodule/archive/b.png", "nodule"),
        ("normal/a.png", "normal"),
    ]
    assert "not following the linked folder more: it leads to" in caplog.text
    assert "not following the linked folder loop: it leads to" in caplog.text


def test_identical_files_under_two_labels_are_warned_about(tmp_path: Path, caplog) -> None:
    from xvision.cli.main import main

    root = tmp_path / "ds"
    for i in range(4):
        _png(root / "normal" / f"n{i}.png", i)
        _png(root / "nodule" / f"d{i}.png", 10 + i)
    (root / "normal" / "copy.png").write_bytes((root / "nodule" / "d2.png").read_bytes())
    assert main(["manifest", str(root), "-o", str(tmp_path / "m.csv")]) == 0
    caplog.clear()
    assert main(["split", str(tmp_path / "m.csv"), "--val", "0", "--test", "0.25"]) == 0
    assert "1 image(s) are listed under more than one label (identical files)" in caplog.text
    assert "'ds/nodule/d2.png' (nodule) = 'ds/normal/copy.png' (normal)" in caplog.text
    caplog.clear()  # extract and fit read the files through check_readable_splits: they warn too
    from xvision.data.split import check_readable_splits

    check_readable_splits(read_manifest(tmp_path / "m.csv"))
    assert "1 image(s) are listed under more than one label (identical files)" in caplog.text


def test_pictures_in_formats_not_read_are_named_when_skipped(tmp_path: Path, caplog) -> None:
    for label, seed in (("normal", 1), ("nodule", 2)):
        _png(tmp_path / label / "a.png", seed)
    Image.fromarray(np.full((40, 40), 90, dtype=np.uint8)).save(tmp_path / "normal" / "film.webp")
    Image.fromarray(np.full((40, 40), 90, dtype=np.uint8)).save(tmp_path / "normal" / "film2.gif")
    (tmp_path / "normal" / "notes.txt").write_text("read me")
    manifest = build_manifest(tmp_path)
    assert sorted(row.path for row in manifest) == ["nodule/a.png", "normal/a.png"]
    assert "skipping 1 .gif file(s), 1 .webp file(s): not a format Xvision reads" in caplog.text
    assert "notes.txt" not in caplog.text and ".txt" not in caplog.text


def test_group_from_top_takes_the_patient_folder_of_a_pacs_export(tmp_path: Path, caplog) -> None:
    """class/patient/study/series/image: `parent` took the series folder (SE1), one "patient" across classes."""
    for label, patients in (("normal", ("P1", "P2")), ("nodule", ("P3", "P4"))):
        for patient in patients:
            for study in ("ST0", "ST1"):
                series = tmp_path / "export" / label / patient / study / "SE1"
                series.mkdir(parents=True)
                Image.new("L", (40, 40), 10 + int(patient[1]) * 20 + int(study[2])).save(series / "IM0000.png")
    top = build_manifest(tmp_path / "export", group_from="top")
    assert {row.path.split("/")[1]: row.group for row in top} == {p: p for p in ("P1", "P2", "P3", "P4")}
    assert len(top) == 8 and not groups_spanning_classes(top)
    assert groups_spanning_classes(build_manifest(tmp_path / "export", group_from="parent"))  # every group SE1


def test_a_dicom_with_a_vendors_suffix_is_found_by_its_header_and_dicomdir_is_not(tmp_path: Path) -> None:
    """IM0099.img, a valid DICOM, was left out of the manifest without a word."""
    import shutil

    from pydicom.data import get_testdata_file

    for label in ("normal", "nodule"):
        (tmp_path / "ds" / label).mkdir(parents=True)
        Image.new("L", (40, 40), 90).save(tmp_path / "ds" / label / "film.png")
    shutil.copy(get_testdata_file("MR_small.dcm", download=False), tmp_path / "ds" / "nodule" / "IM0099.img")
    (tmp_path / "ds" / "nodule" / "DICOMDIR").write_bytes(b"\0" * 128 + b"DICM" + b"\0" * 64)
    (tmp_path / "ds" / "nodule" / "notes.txt").write_text("read me")
    paths = [row.path for row in build_manifest(tmp_path / "ds")]
    assert paths == ["nodule/IM0099.img", "nodule/film.png", "normal/film.png"]


# --- patients from DICOM headers ---------------------------------------------------------------------


def _dicom(path: Path, patient: str | None, value: int = 100) -> Path:
    """A small DX DICOM named by a UID (as exports name them) with the given Patient ID (None: no tag)."""
    from pydicom.dataset import FileDataset, FileMetaDataset
    from pydicom.uid import ExplicitVRLittleEndian, generate_uid

    path.parent.mkdir(parents=True, exist_ok=True)
    meta = FileMetaDataset()
    meta.MediaStorageSOPClassUID = "1.2.840.10008.5.1.4.1.1.1.1"
    meta.MediaStorageSOPInstanceUID = generate_uid()
    meta.TransferSyntaxUID = ExplicitVRLittleEndian
    ds = FileDataset(str(path), {}, file_meta=meta, preamble=b"\0" * 128)
    ds.SOPClassUID, ds.SOPInstanceUID, ds.Modality = meta.MediaStorageSOPClassUID, meta.MediaStorageSOPInstanceUID, "DX"
    if patient is not None:
        ds.PatientID = patient
    ds.Rows = ds.Columns = 8
    ds.SamplesPerPixel, ds.PhotometricInterpretation = 1, "MONOCHROME2"
    ds.BitsAllocated, ds.BitsStored, ds.HighBit, ds.PixelRepresentation = 8, 8, 7, 0
    ds.PixelData = (np.arange(64, dtype=np.uint8) + value).tobytes()
    ds.save_as(path, enforce_file_format=True)
    return path


def _uid_export(root: Path, patients: dict[str, list[str]]) -> Path:
    """class/<series UID>/<instance UID> for each patient's films: folders name nothing a person would know."""
    for index, (patient, labels) in enumerate(patients.items()):
        for film, label in enumerate(labels):
            _dicom(root / label / f"1.2.840.{index}.{film}" / f"1.2.840.{index}.{film}.1", patient, index * 7 + film)
    return root


def test_group_from_patient_reads_the_patient_id_in_each_dicom_header(tmp_path: Path, caplog) -> None:
    export = _uid_export(tmp_path / "export", {"PAT-A": ["normal", "normal"], "PAT-B": ["nodule", "normal"]})
    _dicom(export / "nodule" / "9.9" / "9.9.1", "PAT-C")
    _png(export / "nodule" / "scan.png", 5)
    _dicom(export / "nodule" / "blank" / "1.1", "   ")  # a blanked tag is no patient
    result = build_manifest(export, group_from="patient")
    assert {row.path: row.group for row in result} == {
        "normal/1.2.840.0.0/1.2.840.0.0.1": "PAT-A",
        "normal/1.2.840.0.1/1.2.840.0.1.1": "PAT-A",
        "nodule/1.2.840.1.0/1.2.840.1.0.1": "PAT-B",
        "normal/1.2.840.1.1/1.2.840.1.1.1": "PAT-B",
        "nodule/9.9/9.9.1": "PAT-C",
        "nodule/scan.png": None,
        "nodule/blank/1.1": None,
    }
    assert "2 of 7 images have no DICOM Patient ID" in caplog.text


def test_group_from_patient_refuses_one_placeholder_id_for_every_image(tmp_path: Path, caplog) -> None:
    export = _uid_export(tmp_path / "export", {"ANONYMOUS": ["normal", "nodule", "normal", "nodule"]})
    with pytest.raises(ManifestError, match=r"all 4 DICOM images have Patient ID 'ANONYMOUS'.*--group-from top"):
        build_manifest(export, group_from="patient")
    _png(export / "normal" / "scan.png", 9)  # a picture beside them: the placeholder is still no patient
    with pytest.raises(ManifestError, match=r"all 4 DICOM images have Patient ID 'ANONYMOUS'"):
        build_manifest(export, group_from="patient")
    (export / "normal" / "scan.png").unlink()
    caplog.clear()
    assert len(build_manifest(export)) == 4  # a placeholder is no patient: no warning about spread patients
    assert "patient" not in caplog.text
    no_ids = _uid_export(tmp_path / "no_ids", {"x": ["normal", "nodule"]})
    for file in [f for f in no_ids.rglob("*") if f.is_file()]:
        _dicom(file, None)
    assert {row.group for row in build_manifest(no_ids, group_from="patient")} == {None}
    assert "found no DICOM Patient ID" in caplog.text


@pytest.mark.parametrize("group_from", ["none", "parent"])
def test_a_patient_spread_over_groups_is_warned_about(tmp_path: Path, caplog, group_from: str) -> None:
    """Folders named by series UID: `parent` (or no grouping) put one patient's two films in two groups."""
    export = _uid_export(tmp_path / "export", {"PAT-A": ["normal", "normal"], "PAT-B": ["nodule"], "PAT-C": ["nodule"]})
    build_manifest(export, group_from=group_from)  # type: ignore[arg-type]
    assert (
        f"1 DICOM patient(s) have images in more than one group with --group-from {group_from} "
        "(first: Patient ID PAT-A, 2 groups)" in caplog.text
    )
    caplog.clear()
    build_manifest(export, group_from="patient")
    assert "more than one group" not in caplog.text and "Patient ID" not in caplog.text


def test_manifest_command_groups_by_patient_and_split_keeps_each_patient_together(tmp_path: Path, caplog) -> None:
    """A patient with a normal film and, later, a nodule film is one patient, not a labelling slip."""
    import csv

    from xvision.cli.main import main

    patients = {f"P{i}": ["normal", "normal"] if i % 2 else ["nodule", "normal"] for i in range(12)}
    export = _uid_export(tmp_path / "export", patients)
    assert main(["manifest", str(export), "--group-from", "patient"]) == 0
    assert "two classes" not in caplog.text
    assert main(["split", str(export / "manifest.csv"), "--seed", "3"]) == 0
    rows = list(csv.DictReader(open(export / "manifest.csv", encoding="utf-8")))
    assert {row["group"] for row in rows} == set(patients) and len(rows) == 24
    for patient in patients:
        assert len({row["split"] for row in rows if row["group"] == patient}) == 1


def test_a_label_written_composed_and_decomposed_is_one_class(tmp_path: Path) -> None:
    """'nódulo' typed in one place and decomposed (o + U+0301) by a Mac in another was two classes that looked
    the same in every message, and `train` built a three-class model."""
    import unicodedata

    composed, decomposed = "nódulo", unicodedata.normalize("NFD", "nódulo")
    assert composed != decomposed
    lines = ["path,label,group"] + [
        f"{i}.png,{composed if i % 2 else decomposed},{'José' if i % 2 else unicodedata.normalize('NFD', 'José')}"
        for i in range(4)
    ]
    table = _write(tmp_path / "m.csv", "\n".join([*lines, "4.png,normal,x", "5.png,normal,y"]) + "\n")
    manifest = read_manifest(table)
    assert manifest.labels == sorted([composed, "normal"]) and manifest.counts()[composed] == 4
    assert {row.group for row in manifest if row.label == composed} == {"José"}
    _png(tmp_path / "ds" / composed / "a.png", 1)
    _png(tmp_path / "ds" / decomposed / "b.png", 2)  # a folder copied from a Mac
    _png(tmp_path / "ds" / "normal" / "c.png", 3)
    assert build_manifest(tmp_path / "ds").counts() == {composed: 2, "normal": 1}


def test_pipes_and_devices_in_a_received_folder_are_skipped_not_read_forever(tmp_path: Path, caplog) -> None:
    """A named pipe called IM0001 (a suffix-less DICOM name) or a link to /dev/zero blocked `manifest`, `predict`,
    `split` and `extract` with no output until killed: opening a pipe waits for a writer, a device never ends."""
    import os
    import threading

    from xvision._fileio import sha256_file
    from xvision.errors import ImageLoadError
    from xvision.io import load_image

    for label in ("normal", "nodule"):
        (tmp_path / "data" / label).mkdir(parents=True)
        Image.new("L", (16, 16), 50).save(tmp_path / "data" / label / "a.png")
    os.mkfifo(tmp_path / "data" / "normal" / "IM0001")
    os.mkfifo(tmp_path / "data" / "normal" / "b.png")
    (tmp_path / "data" / "nodule" / "zero.png").symlink_to("/dev/zero")
    done: dict[str, object] = {}

    def scan_and_read() -> None:
        done["manifest"] = sorted(row.path for row in build_manifest(tmp_path / "data"))
        for name in ("normal/b.png", "nodule/zero.png"):
            with pytest.raises(ImageLoadError, match="not an image file"):
                load_image(tmp_path / "data" / name)
            with pytest.raises(OSError, match="not a regular file"):
                sha256_file(tmp_path / "data" / name)
        done["ok"] = True

    worker = threading.Thread(target=scan_and_read, daemon=True)
    worker.start()
    worker.join(timeout=60)
    assert not worker.is_alive(), "blocked on a pipe or a device"
    assert done.get("ok") and done["manifest"] == ["nodule/a.png", "normal/a.png"]
    assert "skipping 1 name(s) that are not readable files" in caplog.text


def test_a_manifest_with_a_huge_field_or_a_nul_byte_is_named_by_line(tmp_path: Path) -> None:
    """csv's "field larger than field limit" and open()'s "embedded null byte" were tracebacks."""
    huge = tmp_path / "huge.csv"
    huge.write_text("path,label\na.png,normal\n" + '"' + "x" * 200_000 + '",nodule\n')
    with pytest.raises(ManifestError, match=r"huge.csv line 3: not readable as CSV \(field larger than field limit"):
        read_manifest(huge)
    nul = tmp_path / "nul.csv"
    nul.write_text("path,label\na.png,normal\nb\x00.png,nodule\n")
    with pytest.raises(ManifestError, match=r"nul.csv line 3: a NUL byte"):
        read_manifest(nul)
