"""Feature extraction: batched, resumable, bad images skipped, stores checked for consistency."""

from __future__ import annotations

import csv
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from xvision.backbones import create_backbone
from xvision.errors import FeatureStoreError, ImageLoadError, LeakageError, ManifestError
from xvision.features.extract import extract_manifest
from xvision.features.store import FeatureStore

TINY = "timm:mobilenetv3_small_050"


@pytest.fixture(scope="module")
def backbone():
    return create_backbone(TINY, weights="random")


def _write_set(root: Path, n_per_class: int = 5, *, split: bool = False) -> Path:
    rng = np.random.default_rng(0)
    rows = []
    for label in ("normal", "nodule"):
        (root / label).mkdir(parents=True, exist_ok=True)
        for i in range(n_per_class):
            path = root / label / f"{label}{i}.png"
            Image.fromarray(rng.integers(0, 256, (40, 48), dtype=np.uint8)).save(path)
            rows.append(
                {
                    "path": f"{label}/{path.name}",
                    "label": label,
                    "group": f"{label}{i}",
                    "split": ("train" if i < n_per_class - 1 else "test") if split else "",
                }
            )
    manifest = root / "manifest.csv"
    with open(manifest, "w", newline="") as handle:
        writer = csv.DictWriter(handle, fieldnames=["path", "label", "group", "split"])
        writer.writeheader()
        writer.writerows(rows)
    return manifest


def _add_rows(manifest: Path, rows: list[tuple[str, str]]) -> None:
    with open(manifest, "a", newline="") as handle:
        for path, label in rows:
            handle.write(f"{path},{label},{Path(path).stem},\n")


def test_extracts_every_image_with_metadata(tmp_path, backbone) -> None:
    manifest = _write_set(tmp_path / "data")
    report = extract_manifest(manifest, tmp_path / "feats", backbone=backbone, progress=False, batch_size=3)
    assert report.total == 10 and report.extracted == 10 and not report.failed
    store = FeatureStore(tmp_path / "feats")
    X, rows = store.load()
    assert X.shape == (10, backbone.feature_dim) and np.isfinite(X).all()
    assert {r.label for r in rows} == {"normal", "nodule"} and all(len(r.sha256) == 64 for r in rows)
    meta = store.read_meta()
    assert meta["backbone"]["name"] == TINY and meta["backbone"]["weights"]["pretrained"] is False
    assert meta["manifest"]["sha256"] and meta["xvision_version"]
    assert not list((tmp_path / "feats").rglob("*.part"))


def test_bad_images_are_reported_and_skipped(tmp_path, backbone, caplog) -> None:
    manifest = _write_set(tmp_path / "data", 3)
    data = tmp_path / "data"
    (data / "normal" / "text.png").write_text("this is not an image")
    (data / "normal" / "empty.png").write_bytes(b"")
    good = (data / "normal" / "normal0.png").read_bytes()
    (data / "nodule" / "cut.png").write_bytes(good[: len(good) // 2])
    Image.fromarray(np.full((32, 32), 255, dtype=np.uint8)).save(data / "normal" / "white.png")
    _add_rows(
        manifest,
        [
            ("normal/text.png", "normal"),
            ("normal/empty.png", "normal"),
            ("nodule/cut.png", "nodule"),
            ("nodule/missing.png", "nodule"),
            ("normal/white.png", "normal"),
        ],
    )
    report = extract_manifest(manifest, tmp_path / "feats", backbone=backbone, progress=False)
    failed = {Path(p).name: reason for p, reason in report.failed}
    assert set(failed) == {"text.png", "empty.png", "cut.png", "missing.png", "white.png"}
    assert "empty" in failed["empty.png"] and "not found" in failed["missing.png"]
    assert failed["white.png"].startswith("every pixel has the same value (1): a blank image")
    X, rows = FeatureStore(tmp_path / "feats").load()
    assert len(rows) == 6 and X.shape[0] == 6
    statuses = {Path(r.path).name: r.status for r in FeatureStore(tmp_path / "feats").read_index()}
    assert statuses["cut.png"] == "failed" and statuses["normal1.png"] == "ok"
    # Each is named once as it is skipped, the unreadable (missing) file included
    for name in failed:
        assert sum(f"{name}: " in r.getMessage() for r in caplog.records if "skipped" in r.getMessage()) == 1, name


def test_a_manifest_whose_images_all_fail_is_an_error_that_names_the_first(tmp_path, backbone) -> None:
    """Nothing to train on is a mistake in the manifest (often its paths), not a job with a few bad images."""
    data = tmp_path / "data"
    data.mkdir()
    (data / "text.png").write_text("nope")
    (data / "m.csv").write_text("path,label\ntext.png,normal\nimages\\b.png,nodule\n")
    with pytest.raises(ManifestError, match=r"m.csv: none of its 2 images could be read \(the first: .*text.png"):
        extract_manifest(data / "m.csv", tmp_path / "feats", backbone=backbone, progress=False)
    (data / "w.csv").write_text("path,label\nimages\\a.png,normal\nimages\\b.png,nodule\n")
    with pytest.raises(ManifestError, match="write the paths with '/'"):
        extract_manifest(data / "w.csv", tmp_path / "feats2", backbone=backbone, progress=False)


def test_strict_makes_a_bad_image_fatal(tmp_path, backbone, capsys) -> None:
    manifest = _write_set(tmp_path / "data", 2)
    (tmp_path / "data" / "normal" / "text.png").write_text("nope")
    _add_rows(manifest, [("normal/text.png", "normal")])
    with pytest.raises(ImageLoadError, match="text.png") as raised:
        extract_manifest(manifest, tmp_path / "feats", backbone=backbone, progress=True, strict=True)
    # The progress bar was closed before the error left: the CLI's "Error: ..." starts a line of its own.
    bar = capsys.readouterr().err
    assert "extract" in bar and bar.endswith("\n"), repr(bar[-80:])
    del raised


def test_interrupted_extraction_resumes_without_redoing_work(tmp_path, backbone, monkeypatch) -> None:
    manifest = _write_set(tmp_path / "data", 6)
    # fp32 throughout, so that the resumed store must equal the reference whatever this CPU's default
    # precision is (bf16 where it is native; tests/features/test_fast_path.py covers that path).
    reference = extract_manifest(
        manifest, tmp_path / "ref", backbone=backbone, progress=False, batch_size=2, precision="fp32"
    )
    assert reference.extracted == 12

    calls = {"n": 0}
    original = backbone.extract

    def flaky(batch):
        calls["n"] += 1
        if calls["n"] == 4:
            raise KeyboardInterrupt
        return original(batch)

    monkeypatch.setattr(backbone, "extract", flaky)
    with pytest.raises(KeyboardInterrupt):  # the reference path calls backbone.extract once per batch
        extract_manifest(
            manifest,
            tmp_path / "feats",
            backbone=backbone,
            progress=False,
            batch_size=2,
            shard_size=2,
            precision="fp32",
        )
    assert len(FeatureStore(tmp_path / "feats").keys()) == 6  # three finished batches survived
    leftover = tmp_path / "feats" / "shards" / ".shard-000009.safetensors.x1y2z3.part"  # a kill mid-write
    leftover.write_bytes(b"\0" * 1000)
    monkeypatch.setattr(backbone, "extract", original)
    resumed = extract_manifest(
        manifest, tmp_path / "feats", backbone=backbone, progress=False, batch_size=2, precision="fp32"
    )
    assert resumed.reused == 6 and resumed.extracted == 6
    assert not leftover.exists()  # a half-written shard is removed, not kept for ever
    X, rows = FeatureStore(tmp_path / "feats").load()
    X_ref, rows_ref = FeatureStore(tmp_path / "ref").load()
    assert [r.path for r in rows] == [r.path for r in rows_ref]
    assert np.allclose(X, X_ref, atol=1e-5)


def test_identical_images_are_extracted_once(tmp_path, backbone) -> None:
    manifest = _write_set(tmp_path / "data", 2)
    data = tmp_path / "data"
    (data / "normal" / "copy.png").write_bytes((data / "normal" / "normal0.png").read_bytes())
    _add_rows(manifest, [("normal/copy.png", "normal")])
    report = extract_manifest(manifest, tmp_path / "feats", backbone=backbone, progress=False)
    assert report.total == 5 and report.extracted == 4
    X, rows = FeatureStore(tmp_path / "feats").load()
    assert X.shape[0] == 5


def test_store_refuses_another_backbone(tmp_path, backbone) -> None:
    manifest = _write_set(tmp_path / "data", 2)
    extract_manifest(manifest, tmp_path / "feats", backbone=backbone, progress=False)
    other = create_backbone("timm:resnet10t", weights="random")
    with pytest.raises(FeatureStoreError, match="choose another -o"):
        extract_manifest(manifest, tmp_path / "feats", backbone=other, progress=False)


def test_store_names_the_weights_it_holds_when_the_file_name_is_the_same(tmp_path, backbone) -> None:
    from safetensors.torch import save_file

    manifest = _write_set(tmp_path / "data", 2)
    files = []
    for k in (1, 2):
        (tmp_path / f"w{k}").mkdir()
        state = {
            key: value * (1 + 0.01 * k) if value.is_floating_point() else value
            for key, value in backbone.model.model.state_dict().items()  # timm's own names, as a file holds them
        }
        save_file({key: value.contiguous() for key, value in state.items()}, tmp_path / f"w{k}" / "weights.safetensors")
        files.append(tmp_path / f"w{k}" / "weights.safetensors")
    first = create_backbone(TINY, weights=str(files[0]))
    extract_manifest(manifest, tmp_path / "feats", backbone=first, progress=False)
    second = create_backbone(TINY, weights=str(files[1]))
    with pytest.raises(FeatureStoreError, match=r"weights\.safetensors, sha256 [0-9a-f]{12}\)") as error:
        extract_manifest(manifest, tmp_path / "feats", backbone=second, progress=False)
    digests = [first.weights.to_dict()["sha256"][:12], second.weights.to_dict()["sha256"][:12]]
    assert digests[0] != digests[1] and all(d in str(error.value) for d in digests)


def test_leaky_manifest_is_refused(tmp_path, backbone) -> None:
    manifest = _write_set(tmp_path / "data", 3, split=True)
    text = manifest.read_text().replace("nodule/nodule0.png,nodule,nodule0", "nodule/nodule0.png,nodule,nodule2")
    manifest.write_text(text)  # nodule0 now shares group nodule2, which sits in test
    with pytest.raises(LeakageError, match="nodule2"):
        extract_manifest(manifest, tmp_path / "feats", backbone=backbone, progress=False)


def test_a_second_extraction_into_the_same_store_waits_then_reuses(tmp_path, backbone, caplog) -> None:
    """Two writers would race for shard names and index.csv: the second waits for the lock, then extracts
    nothing the first stored."""
    import threading

    from xvision._fileio import exclusive_lock

    manifest = _write_set(tmp_path / "data", 3)
    store = FeatureStore(tmp_path / "feats")
    extract_manifest(manifest, store.root, backbone=backbone, progress=False)
    Image.fromarray(np.arange(40 * 48, dtype=np.uint16).reshape(40, 48).astype(np.uint8)).save(
        tmp_path / "data" / "normal" / "late.png"
    )
    _add_rows(manifest, [("normal/late.png", "normal")])
    reports = []
    with exclusive_lock(store.lock_path, "held by the test"):  # as another process's extraction would
        second = threading.Thread(
            target=lambda: reports.append(extract_manifest(manifest, store.root, backbone=backbone, progress=False))
        )
        second.start()
        second.join(timeout=2.0)
        assert second.is_alive() and not reports  # waiting, not writing
        assert "another extraction is writing to it; waiting" in caplog.text
    second.join(timeout=60)
    assert reports and reports[0].extracted == 1 and reports[0].reused == 6
    assert len(FeatureStore(store.root).read_index()) == 7


def test_a_folder_that_is_not_a_store_is_refused_untouched(tmp_path, backbone) -> None:
    manifest = _write_set(tmp_path / "data", 2)
    other = tmp_path / "mine"
    other.mkdir()
    (other / "notes.txt").write_text("mine")
    with pytest.raises(FeatureStoreError, match="folder exists and is not a feature store"):
        extract_manifest(manifest, other, backbone=backbone, progress=False)
    assert [p.name for p in other.iterdir()] == ["notes.txt"]  # no lock file left in it
    killed = tmp_path / "killed"  # a run killed after taking the lock, before meta.json: its folder is reused
    killed.mkdir()
    (killed / ".lock").touch()
    assert extract_manifest(manifest, killed, backbone=backbone, progress=False).extracted == 4


def test_replacing_the_index_with_another_manifests_rows_is_said(tmp_path, backbone, caplog) -> None:
    manifest = _write_set(tmp_path / "data", 2)
    extract_manifest(manifest, tmp_path / "feats", backbone=backbone, progress=False)
    extract_manifest(manifest, tmp_path / "feats", backbone=backbone, progress=False)  # the same rows: quiet
    assert "index.csv now lists" not in caplog.text
    data = tmp_path / "data"
    lines = manifest.read_text().splitlines()
    (data / "fewer.csv").write_text("\n".join(lines[:-1]) + "\n")  # one image less
    extract_manifest(data / "fewer.csv", tmp_path / "feats", backbone=backbone, progress=False)
    assert "index.csv now lists this manifest's images and splits (3 of the 4 earlier entries kept)" in caplog.text
    assert FeatureStore(tmp_path / "feats").read_meta()["manifest"]["path"].endswith("fewer.csv")


def test_an_interrupted_extraction_of_another_manifest_leaves_meta_naming_the_index_it_kept(
    tmp_path, backbone, monkeypatch
) -> None:
    manifest = _write_set(tmp_path / "data", 2)
    extract_manifest(manifest, tmp_path / "feats", backbone=backbone, progress=False)
    before = FeatureStore(tmp_path / "feats").read_meta()["manifest"]
    more = _write_set(tmp_path / "more", 3)  # other images: extraction has work to do, and is interrupted

    def interrupted(batch):
        raise KeyboardInterrupt

    monkeypatch.setattr(backbone, "extract", interrupted)
    with pytest.raises(KeyboardInterrupt):
        extract_manifest(more, tmp_path / "feats", backbone=backbone, progress=False, precision="fp32")
    store = FeatureStore(tmp_path / "feats")
    # index.csv still lists the first manifest's images: so must meta.json (train records it as the data)
    assert store.read_meta()["manifest"] == before
    assert {Path(r.path).name for r in store.read_index()} == {p.name for p in manifest.parent.rglob("*.png")}


def _write_monochrome1_films(root: Path, n_per_class: int) -> None:
    """Small MONOCHROME1 DX DICOMs (low values display white), each with its own pixels, in class folders."""
    from pydicom.dataset import FileDataset, FileMetaDataset
    from pydicom.uid import ExplicitVRLittleEndian, generate_uid

    rng = np.random.default_rng(0)
    for label in ("normal", "nodule"):
        (root / label).mkdir(parents=True)
        for i in range(n_per_class):
            meta = FileMetaDataset()
            meta.MediaStorageSOPClassUID = "1.2.840.10008.5.1.4.1.1.1.1"
            meta.MediaStorageSOPInstanceUID = generate_uid()
            meta.TransferSyntaxUID = ExplicitVRLittleEndian
            ds = FileDataset(str(root / label / f"film{i}.dcm"), {}, file_meta=meta, preamble=b"\0" * 128)
            ds.SOPClassUID, ds.SOPInstanceUID = meta.MediaStorageSOPClassUID, meta.MediaStorageSOPInstanceUID
            ds.Modality, ds.PhotometricInterpretation = "DX", "MONOCHROME1"
            ds.Rows = ds.Columns = 64
            ds.SamplesPerPixel, ds.BitsAllocated, ds.BitsStored, ds.HighBit, ds.PixelRepresentation = 1, 16, 12, 11, 0
            ds.PixelData = rng.integers(0, 4096, (64, 64), dtype=np.uint16).tobytes()
            ds.save_as(root / label / f"film{i}.dcm", enforce_file_format=True)


@pytest.mark.slow
def test_a_folder_of_monochrome1_films_is_said_three_times_then_counted(tmp_path) -> None:
    """Each film's warning used to print a line of its own, from whichever worker process read it."""
    import subprocess
    import sys

    _write_monochrome1_films(tmp_path / "films", n_per_class=4)
    manifest = tmp_path / "manifest.csv"
    xvision = [sys.executable, "-m", "xvision"]
    subprocess.run([*xvision, "manifest", str(tmp_path / "films"), "-o", str(manifest)], check=True)
    extract = ["extract", str(manifest), "--backbone", TINY, "--weights", "random", "--workers", "1"]
    run = subprocess.run([*xvision, *extract, "-o", str(tmp_path / "f")], capture_output=True, text=True, check=True)
    said = [line for line in run.stderr.splitlines() if "MONOCHROME1" in line]
    assert len(said) == 4, run.stderr
    assert all(line.startswith("WARNING: ") and ".dcm: DICOM is MONOCHROME1" in line for line in said[:3])
    assert said[3] == (
        "WARNING: 5 more files: DICOM is MONOCHROME1 (low values display white); inverted to display polarity "
        "(-v lists them)"
    )
    assert len(FeatureStore(tmp_path / "f").keys()) == 8
    # -v names every film (a second store: the first would be reused without reading a film).
    verbose = [*xvision, "-v", *extract, "-o", str(tmp_path / "g")]
    run = subprocess.run(verbose, capture_output=True, text=True, check=True)
    films = {line.split(": ")[1] for line in run.stderr.splitlines() if "DICOM is MONOCHROME1" in line}
    assert len(films) == 8, run.stderr


def test_extract_again_with_only_a_bad_image_left_reports_no_speed(tmp_path, capsys) -> None:
    """The failed image is tried again and nothing is extracted: the summary said "0.0 images/s"."""
    from xvision.cli.main import main

    manifest = _write_set(tmp_path / "data", 2)
    (tmp_path / "data" / "normal" / "text.png").write_text("nope")
    _add_rows(manifest, [("normal/text.png", "normal")])
    command = ["extract", str(manifest), "--backbone", TINY, "--weights", "random", "-o", str(tmp_path / "f")]
    assert main(command) == 0 and "images/s" in capsys.readouterr().out
    assert main(command) == 0
    out = capsys.readouterr().out
    assert "(0 extracted now, 4 already stored, 1 failed)" in out
    assert "images/s" not in out and "path:" not in out


def test_in_the_main_process_warnings_pass_straight_through(backbone, monkeypatch) -> None:
    """Recorded and re-issued, they lost Python's de-duplication: one numpy warning came once per image."""
    import warnings

    import xvision.features.extract as extract

    def warn_then_load(*args):
        warnings.warn("same text", RuntimeWarning, stacklevel=1)
        return np.zeros((3, 8, 8), dtype=np.float32), ""

    monkeypatch.setattr(extract, "_load_one", warn_then_load)
    dataset = extract._ImageDataset([("key", Path("film.png"))], backbone.preprocess_config, False)
    with pytest.warns(RuntimeWarning, match="same text"):
        key, image, error, held = dataset[0]
    assert key == "key" and error == "" and held == []


def test_a_warning_that_cannot_be_pickled_crosses_to_the_main_process_as_its_text() -> None:
    import pickle

    from xvision.errors import ImageWarning
    from xvision.features.extract import _portable

    class Odd(UserWarning):
        def __init__(self, a: int, b: int) -> None:  # pickling re-calls this with one argument and fails
            super().__init__(f"odd {a} {b}")

    sent = _portable(Odd(1, 2))
    assert type(sent) is UserWarning and str(sent) == "odd 1 2"
    image = ImageWarning("film.dcm", "DICOM is MONOCHROME1")
    assert _portable(image) is image and pickle.loads(pickle.dumps(image)).kind == "DICOM is MONOCHROME1"


def test_a_file_replaced_during_extraction_is_refused_not_stored_under_its_old_hash(
    tmp_path, backbone, monkeypatch
) -> None:
    """A file replaced between hashing and decoding had the new image's features stored under the old content's
    SHA-256, reused for any later manifest holding the original image."""
    from xvision.features import extract as extract_module

    manifest = _write_set(tmp_path / "data", 3)
    victim = tmp_path / "data" / "normal" / "normal1.png"
    other = (tmp_path / "data" / "nodule" / "nodule2.png").read_bytes()
    real = extract_module.load_radiograph

    def load_then_replace(path, **kwargs):
        image = real(path, **kwargs)
        if Path(path).name == victim.name:
            victim.write_bytes(other)  # as another job would, between the listing and this read
        return image

    monkeypatch.setattr(extract_module, "load_radiograph", load_then_replace)
    report = extract_manifest(manifest, tmp_path / "feats", backbone=backbone, progress=False, workers=0)
    failed = {Path(p).name: reason for p, reason in report.failed}
    assert failed == {"normal1.png": "the file changed while it was being extracted; run extract again"}
