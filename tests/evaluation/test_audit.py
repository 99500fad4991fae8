"""The shortcut audit: flags a planted burned-in mark or a scanner tag, stays quiet on clean phantoms."""

from __future__ import annotations

import csv
import json
import shutil
from pathlib import Path

import numpy as np
import pytest
from PIL import Image, ImageDraw
from pydicom.dataset import FileDataset, FileMetaDataset
from pydicom.uid import ExplicitVRLittleEndian, generate_uid

from xvision.cli.main import main
from xvision.data.phantoms import make_phantom_dataset
from xvision.errors import ManifestError
from xvision.evaluation.audit import AuditConfig, audit_for_run, audit_manifest
from xvision.evaluation.audit_features import image_features, largest_rectangle
from xvision.features.store import FeatureStore, IndexRow

N_PER_CLASS = 40  # with 5-fold CV, enough that a clean set stays well below 0.60 and a marked one well above
SIZE = 128


@pytest.fixture(scope="module")
def clean_set(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """80 phantoms (40 normal, 40 nodule) whose nuisance parameters are drawn blind to the class."""
    return make_phantom_dataset(tmp_path_factory.mktemp("clean"), n_per_class=N_PER_CLASS, size=SIZE, seed=0)


def marked_copy(clean_manifest: Path, target: Path, *, fill: int, corner: str) -> Path:
    """Copy a phantom set and burn a solid square into one corner of every nodule image."""
    shutil.copytree(clean_manifest.parent, target)
    for path in (target / "nodule").glob("*.png"):
        with Image.open(path) as image:
            marked = image.copy()
        side, inset = SIZE // 10, SIZE // 20
        left = inset if corner.endswith("left") else SIZE - inset - side
        top = inset if corner.startswith("top") else SIZE - inset - side
        ImageDraw.Draw(marked).rectangle([left, top, left + side, top + side], fill=fill)
        marked.save(path)
    return target / "manifest.csv"


@pytest.mark.parametrize(("fill", "corner"), [(255, "top_left"), (0, "bottom_right")], ids=["white", "black"])
def test_audit_flags_a_burned_in_corner_mark(clean_set: Path, tmp_path: Path, fill: int, corner: str) -> None:
    manifest = marked_copy(clean_set, tmp_path / "marked", fill=fill, corner=corner)
    result = audit_manifest(manifest)
    assert result.warn and result.verdict == "warn"
    assert result.auc is not None and result.auc > 0.9
    assert result.ci_low is not None and result.ci_low > 0.6
    assert any(corner in item["feature"] or "any_corner" in item["feature"] for item in result.strongest[:2])
    assert all(item["direction"].startswith("higher in") for item in result.strongest)


def test_audit_stays_quiet_on_the_clean_set(clean_set: Path) -> None:
    result = audit_manifest(clean_set)
    assert result.verdict == "pass" and not result.warn
    assert result.auc is not None and result.auc < 0.6
    assert result.ci_low is not None and result.ci_low < result.auc < result.ci_high
    assert result.n_images == 2 * N_PER_CLASS and result.counts == {"nodule": N_PER_CLASS, "normal": N_PER_CLASS}


def test_cli_exit_status_3_when_it_warns_0_when_not(clean_set: Path, tmp_path: Path, capsys) -> None:
    marked = marked_copy(clean_set, tmp_path / "marked", fill=255, corner="top_right")
    out = tmp_path / "audit.json"
    assert main(["audit", str(marked), "--no-progress", "-o", str(out)]) == 3
    assert "WARNING: possible shortcut" in capsys.readouterr().out
    written = json.loads(out.read_text())
    assert written["verdict"] == "warn" and written["config"]["threshold"] == 0.6
    assert written["versions"]["scikit-learn"]  # what made the verdict, for whoever receives the file
    assert main(["audit", str(clean_set), "--no-progress", "--threshold", "0.6", "--folds", "4"]) == 0
    assert "no shortcut found" in capsys.readouterr().out
    # -o naming a folder (existing, or new with a final /) writes audit.json inside it, not a file named so
    for folder in (f"{tmp_path / 'new'}/", str(tmp_path / "marked")):
        assert main(["audit", str(marked), "--no-progress", "-o", folder]) == 3
        assert json.loads((Path(folder) / "audit.json").read_text())["verdict"] == "warn"
    assert not (tmp_path / "new").is_file()


def test_unreadable_images_are_reported_and_skipped(clean_set: Path, tmp_path: Path, capsys, caplog) -> None:
    folder = tmp_path / "set"
    shutil.copytree(clean_set.parent, folder)
    (folder / "normal" / "broken.png").write_bytes(b"\x89PNG\r\n\x1a\n truncated")
    Image.new("L", (SIZE, SIZE), 0).save(folder / "normal" / "blank.png")  # extraction skips it: so does the audit
    with open(folder / "manifest.csv", "a", encoding="utf-8") as handle:
        handle.write("normal/broken.png,normal,PX\nnormal/missing.png,normal,PY\nnormal/blank.png,normal,PZ\n")
    result = audit_manifest(folder / "manifest.csv", AuditConfig(repeats=1))
    skipped = sorted(item["path"] for item in result.skipped)
    assert skipped == ["normal/blank.png", "normal/broken.png", "normal/missing.png"]
    assert result.n_images == 2 * N_PER_CLASS and result.auc is not None
    caplog.clear()
    capsys.readouterr()
    assert main(["audit", str(folder / "manifest.csv"), "--no-progress", "--repeats", "1"]) == 0
    named = [r for r in caplog.records if "broken.png" in r.getMessage()] + [
        line for line in capsys.readouterr().err.splitlines() if "broken.png" in line
    ]
    assert len(named) == 1 and "skipped" in str(named[0].getMessage())  # as it was read, not again at the end


def write_dicom(path: Path, pixels: np.ndarray, **elements: str) -> Path:
    meta = FileMetaDataset()
    meta.MediaStorageSOPClassUID = "1.2.840.10008.5.1.4.1.1.1.1"  # Digital X-Ray, for presentation
    meta.MediaStorageSOPInstanceUID = generate_uid()
    meta.TransferSyntaxUID = ExplicitVRLittleEndian
    ds = FileDataset(str(path), {}, file_meta=meta, preamble=b"\0" * 128)
    ds.SOPClassUID, ds.SOPInstanceUID = meta.MediaStorageSOPClassUID, meta.MediaStorageSOPInstanceUID
    ds.Modality = "DX"
    ds.Rows, ds.Columns = pixels.shape
    ds.SamplesPerPixel, ds.PhotometricInterpretation = 1, "MONOCHROME2"
    ds.BitsAllocated, ds.BitsStored, ds.HighBit, ds.PixelRepresentation = 16, 12, 11, 0
    ds.PixelData = pixels.astype(np.uint16).tobytes()
    for keyword, value in elements.items():
        setattr(ds, keyword, value)
    ds.save_as(path, enforce_file_format=True)
    return path


def test_dicom_header_fields_are_features_and_a_scanner_shortcut_is_named(clean_set: Path, tmp_path: Path) -> None:
    rows = list(csv.DictReader(open(clean_set, encoding="utf-8")))[::2]  # 40 images, both classes
    with open(tmp_path / "manifest.csv", "w", newline="", encoding="utf-8") as handle:
        writer = csv.writer(handle)
        writer.writerow(["path", "label", "group"])
        for index, row in enumerate(rows):
            pixels = np.asarray(Image.open(clean_set.parent / row["path"]), dtype=np.float64) / 255 * 4095
            # nodule images mostly from one vendor, normal ones mostly from another
            vendor = "Acme" if (row["label"] == "nodule") != (index % 7 == 0) else "Globex"
            name = f"{index:03d}.dcm"
            write_dicom(tmp_path / name, pixels, Manufacturer=vendor, ViewPosition="PA")
            writer.writerow([name, row["label"], row["group"]])
    features = image_features(tmp_path / "000.dcm")
    assert features.categorical["format"] == "dicom"
    assert features.categorical["dicom.ViewPosition"] == "PA"
    assert features.categorical["dicom.BodyPartExamined"] == "(absent)"
    assert features.numeric["bit_depth"] == 12
    result = audit_manifest(tmp_path / "manifest.csv", AuditConfig(repeats=2))
    assert result.warn
    assert result.strongest[0]["feature"].startswith("dicom.Manufacturer=")


def test_multiclass_audit_uses_macro_one_vs_rest_auc(clean_set: Path, tmp_path: Path) -> None:
    marked = marked_copy(clean_set, tmp_path / "marked", fill=255, corner="top_left")
    rows = list(csv.DictReader(open(marked, encoding="utf-8")))
    with open(marked, "w", newline="", encoding="utf-8") as handle:  # normal splits into two unmarked classes
        writer = csv.DictWriter(handle, fieldnames=["path", "label", "group"])
        writer.writeheader()
        for index, row in enumerate(rows):
            if row["label"] == "normal" and index % 2:
                row["label"] = "other"
            writer.writerow(row)
    result = audit_manifest(marked, AuditConfig(repeats=2))
    assert result.classes == ["nodule", "normal", "other"]
    # the mark separates nodule from both others perfectly; normal vs other only by chance
    assert result.warn and 0.6 < result.auc < 0.95
    assert "nodule" in result.strongest[0]["direction"]


def test_groups_never_straddle_folds_and_missing_group_column_is_an_error(clean_set: Path) -> None:
    with pytest.raises(ManifestError, match="no column 'patient'"):
        audit_manifest(clean_set, AuditConfig(group_by="patient"))
    result = audit_manifest(clean_set, AuditConfig(group_by=None, repeats=1, folds=3))
    assert result.folds == 3 and result.n_groups == 2 * N_PER_CLASS


def test_too_few_images_is_undetermined_not_an_error(clean_set: Path, tmp_path: Path) -> None:
    lines = clean_set.read_text().splitlines()
    nodule = [line for line in lines[1:] if ",nodule," in line][:1]
    normal = [line for line in lines[1:] if ",normal," in line][:3]
    small = clean_set.parent / "small.csv"
    small.write_text("\n".join([lines[0], *nodule, *normal]) + "\n")
    result = audit_manifest(small)
    assert result.verdict == "undetermined" and not result.warn and result.auc is None
    assert "undetermined" in result.summary()
    from xvision.cli.main import main

    assert main(["audit", str(small), "--no-progress"]) == 4  # not 0: a gate must not read "could not judge" as a pass


def test_audit_before_training_finds_the_images_through_the_feature_store(clean_set: Path, tmp_path: Path) -> None:
    store = FeatureStore(tmp_path / "feats")
    store.write_meta({"manifest": {"path": str(clean_set), "sha256": "0" * 64}})
    rows = list(csv.DictReader(open(clean_set, encoding="utf-8")))
    store.write_index([IndexRow(r["path"], r["label"], r["group"], "", "x", "ok", "", {}) for r in rows])
    record = audit_for_run(store.root)
    assert record["status"] == "done" and record["verdict"] == "pass" and record["n_images"] == 2 * N_PER_CLASS
    json.dumps(record)  # goes into bundle.json
    assert audit_for_run(store.root, enabled=False)["status"] == "off"
    store.write_meta({"manifest": {"path": str(tmp_path / "elsewhere" / "manifest.csv"), "sha256": "0" * 64}})
    skipped = audit_for_run(store.root)
    assert skipped["status"] == "skipped" and "reachable" in skipped["reason"]
    store.write_meta({})
    assert audit_for_run(store.root)["status"] == "skipped"


def test_largest_rectangle_matches_brute_force() -> None:
    def brute(mask: np.ndarray) -> int:
        rows, cols = mask.shape
        return max(
            [
                (r1 - r0) * (c1 - c0)
                for r0 in range(rows)
                for r1 in range(r0 + 1, rows + 1)
                for c0 in range(cols)
                for c1 in range(c0 + 1, cols + 1)
                if mask[r0:r1, c0:c1].all()
            ],
            default=0,
        )

    rng = np.random.default_rng(0)
    for _ in range(30):
        mask = rng.random((rng.integers(1, 8), rng.integers(1, 8))) < rng.uniform(0.3, 0.95)
        assert largest_rectangle(mask) == brute(mask)
    assert largest_rectangle(np.zeros((4, 4), bool)) == 0


def test_train_records_the_audit_and_no_audit_switches_it_off(tmp_path: Path) -> None:
    from synthetic_store import make_store

    store = make_store(tmp_path / "store", n_groups=12)
    assert main(["train", str(store), "-o", str(tmp_path / "on"), "--epochs", "1", "--hidden", "8"]) == 0
    record = json.loads((tmp_path / "on" / "bundle.json").read_text())["audit"]
    assert record["status"] == "skipped" and "manifest" in record["reason"]  # synthetic: no images to audit
    assert main(["train", str(store), "-o", str(tmp_path / "off"), "--epochs", "1", "--hidden", "8", "--no-audit"]) == 0
    assert json.loads((tmp_path / "off" / "bundle.json").read_text())["audit"]["status"] == "off"


@pytest.mark.slow
@pytest.mark.realdata
def test_a_mark_burned_into_real_radiographs_is_found(jsrt_dir: Path, tmp_path: Path) -> None:
    """Real JSRT films, 30 per class; every nodule film gets a small white square near its top-right corner."""
    rows = list(csv.DictReader(open(jsrt_dir / "labels.csv", encoding="utf-8")))
    chosen = [r for r in rows if r["label"] == "nodule"][:30] + [r for r in rows if r["label"] == "normal"][:30]
    with open(tmp_path / "manifest.csv", "w", newline="", encoding="utf-8") as handle:
        writer = csv.writer(handle)
        writer.writerow(["path", "label", "group"])
        for row in chosen:
            name = Path(row["file"]).name
            with Image.open(jsrt_dir / row["file"]) as image:
                film = image.convert("L")
            if row["label"] == "nodule":
                ImageDraw.Draw(film).rectangle([940, 40, 980, 80], fill=255)
            film.save(tmp_path / name)
            writer.writerow([name, row["label"], row["study_id"]])
    result = audit_manifest(tmp_path / "manifest.csv", AuditConfig(repeats=2))
    assert result.warn and result.auc is not None and result.auc > 0.9
    assert "top_right" in result.strongest[0]["feature"] or "any_corner" in result.strongest[0]["feature"]


def test_the_tree_model_judges_a_small_set_too(clean_set: Path, tmp_path: Path) -> None:
    # 32 images: a 5-fold training part of about 26 cannot make scikit-learn's default 20-image leaves, and
    # a model that predicts one constant for every image must never read as "pass".
    marked = marked_copy(clean_set, tmp_path / "marked", fill=255, corner="top_left")
    with open(marked, newline="") as handle:
        rows = list(csv.DictReader(handle))
    small = [r for r in rows if r["label"] == "nodule"][:16] + [r for r in rows if r["label"] == "normal"][:16]
    subset = marked.parent / "small.csv"
    with open(subset, "w", newline="") as handle:
        writer = csv.DictWriter(handle, fieldnames=list(rows[0]))
        writer.writeheader()
        writer.writerows(small)
    result = audit_manifest(subset, AuditConfig(model="tree"), progress=False)
    assert result.verdict == "warn" and result.auc is not None and result.auc > 0.8


def test_a_model_that_scores_every_image_alike_is_undetermined_not_pass(clean_set: Path, monkeypatch) -> None:
    from sklearn.dummy import DummyClassifier

    from xvision.evaluation import audit

    monkeypatch.setattr(audit, "_make_model", lambda kind, seed, n_train: DummyClassifier(strategy="prior"))
    result = audit_manifest(clean_set, progress=False)
    assert result.verdict == "undetermined" and result.auc is None and "same for every image" in (result.note or "")


def test_the_largest_seed_leaves_room_for_the_repeats(clean_set: Path) -> None:
    """--seed 4294967295 passed the option's range and then overflowed numpy's as seed + repeat."""
    from xvision.cli.main import main

    assert main(["audit", str(clean_set), "--seed", "2147483647", "--repeats", "3", "--no-progress"]) in (0, 3)


def test_a_warning_audit_before_training_is_one_warning_line_and_its_explanation(
    clean_set: Path, tmp_path: Path, caplog
) -> None:
    """Every line of the summary, the image counts included, was logged as a WARNING."""
    import logging

    marked = marked_copy(clean_set, tmp_path / "marked", fill=255, corner="top_left")
    store = FeatureStore(tmp_path / "feats")
    store.write_meta({"manifest": {"path": str(marked), "sha256": "0" * 64}})
    rows = list(csv.DictReader(open(marked, encoding="utf-8")))
    store.write_index([IndexRow(r["path"], r["label"], r["group"], "", "x", "ok", "", {}) for r in rows])
    with caplog.at_level(logging.INFO, logger="xvision.evaluation.audit"):
        assert audit_for_run(store.root)["verdict"] == "warn"
    said = [r for r in caplog.records if r.name == "xvision.evaluation.audit" and r.getMessage().startswith("audit: ")]
    warnings = [r.getMessage() for r in said if r.levelno == logging.WARNING]
    assert len(warnings) == 1 and "possible shortcut" in warnings[0]
    assert any(r.levelno == logging.INFO and "images" in r.getMessage() for r in said)
