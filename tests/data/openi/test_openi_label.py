"""`xvision label`: rules, the label report, exact counts on the real reports, views, and whole reports per split."""

from __future__ import annotations

import csv
import io
import json
import logging
import re
import tarfile
from collections import Counter, defaultdict
from collections.abc import Callable
from pathlib import Path

import pytest
from fake_openi import FakeOpenI, png_tarball

from xvision.cli.main import main
from xvision.data.labels import label_records, load_rules, parse_rules
from xvision.data.openi import (
    ClientOptions,
    SearchOptions,
    fetch_openi,
    fetch_openi_bulk,
    read_dicom_views,
    read_records,
    read_reports_without_images,
)
from xvision.data.openi.records import ImageRecord
from xvision.errors import LabelRulesError


@pytest.fixture(scope="module")
def reports_only(reports_tgz: Path, tmp_path_factory: pytest.TempPathFactory) -> Path:
    """All 3,955 real reports through the bulk path, without images."""
    out = tmp_path_factory.mktemp("reports-only")
    fetch_openi_bulk(out, reports=reports_tgz, progress=False)
    return out


def _label(folder: Path, rules: str = "default", **options: object) -> object:
    records = read_records(folder)
    imageless = read_reports_without_images(folder)
    return label_records(records, load_rules(rules), reports_without_images=imageless, **options)[1]


@pytest.mark.realdata
def test_default_rules_give_the_documented_counts_on_the_full_report_set(reports_only: Path) -> None:
    assert len(read_records(reports_only)) == 7470
    report = _label(reports_only)
    assert (report.reports("normal"), report.images("normal")) == (1391, 2696)
    assert (report.reports("nodule"), report.images("nodule")) == (111, 211)
    assert report.conflicts == {}
    assert sum(len(records) for records in report.excluded.values()) == 7470 - 2696 - 211 + 104 - 17


@pytest.mark.realdata
def test_nodule_only_rules_keep_reports_whose_findings_are_nodules_alone(reports_only: Path) -> None:
    report = _label(reports_only, "nodule-only")
    assert (report.reports("nodule"), report.images("nodule")) == (17, 33)
    assert (report.reports("normal"), report.images("normal")) == (1391, 2696)


@pytest.mark.realdata
def test_the_label_command_prints_the_report(reports_only: Path, capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["label", str(reports_only)]) == 2  # reports only: no image files, so no manifest
    out, err = capsys.readouterr()
    assert "Labelled by the rules: 2,907 images of 1,502 reports" in out
    for row in ("nodule 111 211", "normal 1,391 2,696", "no rule matched 2,453 4,563", "no image file 1,485 2,907"):
        assert re.search(r"\n  " + row.replace(" ", r"\s+") + r"\n", out), row
    assert "(reports without any image, counted above: normal 12, nodule 5)" in out
    assert "Excluded by the rules: 4,563 images of 2,453 reports" in out
    assert "Conflicts: none" in out
    assert err.startswith("Error:") and "no labelled image is in the manifest" in err


@pytest.mark.realdata
@pytest.mark.slow
def test_full_report_set_labels_and_splits_with_every_report_whole(
    reports_tgz: Path, reports_only: Path, dicom_metadata: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    """All 3,955 reports in bulk, with (synthetic, 16 px) images for the labelled ones, labelled, split by report."""
    kept, _ = label_records(read_records(reports_only), load_rules())
    images = tmp_path / "NLMCXR_png.tgz"
    images.write_bytes(png_tarball(record.image_id for record, _, _ in kept))
    out = tmp_path / "openi"
    fetch_args = ["fetch", "openi", "--bulk", "--reports", str(reports_tgz), "--images", str(images), "-o", str(out)]
    assert main([*fetch_args, "--no-progress"]) == 0  # unlabelled reports' images: not in the archive, skipped
    manifest = tmp_path / "manifest.csv"
    assert main(["label", str(out), "-o", str(manifest), "--dicom-metadata", str(dicom_metadata)]) == 0
    assert "Manifest: 2,907 images of 1,485 reports" in capsys.readouterr().out
    rows = list(csv.DictReader(manifest.open()))
    assert len(rows) == 2907
    assert sum(row["label"] == "normal" for row in rows) == 2696
    assert list(rows[0])[:4] == ["path", "label", "group", "view"]
    assert sum(row["view"] == "frontal" for row in rows) > 300

    assert main(["split", str(manifest), "--group-by", "group", "--seed", "0"]) == 0
    _assert_reports_whole(manifest, expected_groups=1485)


def _assert_reports_whole(manifest: Path, expected_groups: int) -> None:
    splits: dict[str, set[str]] = defaultdict(set)
    for row in csv.DictReader(manifest.open()):
        assert row["split"] in ("train", "val", "test")
        splits[row["group"]].add(row["split"])
    assert len(splits) == expected_groups
    assert all(len(found) == 1 for found in splits.values()), "a report is split across train/val/test"


def test_fetched_then_labelled_then_split_by_report(
    serve: Callable[..., FakeOpenI], first_items: list[dict], tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    server = serve(first_items)
    out = tmp_path / "openi"
    options = ClientOptions(timeout=1.0, rate=0, backoff=0.01)
    fetch_openi(
        out, base_url=server.base_url, search=SearchOptions(page_size=50), client_options=options, progress=False
    )
    manifest = out / "manifest.csv"
    assert main(["label", str(out)]) == 0
    printed = capsys.readouterr().out
    assert f"Wrote {manifest}" in printed
    sidecar = json.loads((out / "manifest.labels.json").read_text())
    assert sidecar["rules"] == "default" and 'mesh_major_all = ["normal"]' in sidecar["rules_text"]
    assert sidecar["manifest"]["normal"]["reports"] == sidecar["labelled"]["normal"]["reports"] > 0
    rows = list(csv.DictReader(manifest.open()))
    uids = {item["uid"] for item in first_items if item["MeSH"]["major"] == ["normal"]}
    assert {row["group"] for row in rows if row["label"] == "normal"} == uids
    assert all((out / row["path"]).is_file() for row in rows)
    assert main(["split", str(manifest), "--group-by", "group", "--test", "0.5", "--val", "0"]) == 0
    _assert_reports_whole(manifest, expected_groups=len({row["group"] for row in rows}))
    assert main(["label", str(out)]) == 2  # no silent overwrite
    assert "--force" in capsys.readouterr().err
    records = (out / "records.jsonl").read_bytes()  # what fetch wrote is never the manifest, --force or not
    assert main(["label", str(out), "-o", str(out / "records.jsonl"), "--force"]) == 2
    assert "-o names the manifest (a CSV), not a .jsonl file" in capsys.readouterr().err
    assert (out / "records.jsonl").read_bytes() == records


def test_label_names_the_images_the_fetch_did_not_get(
    serve: Callable[..., FakeOpenI], first_items: list[dict], tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    """Failed images have no record, so the label report cannot count them: label says they are missing."""
    server = serve(first_items[:20])
    lost = server.image_ids()[:3]
    for image_id in lost:
        server.inject("503", match=image_id, times=5)
    out = tmp_path / "openi"
    options = ClientOptions(timeout=1.0, rate=0, backoff=0.01, retries=1)
    fetch_openi(
        out, base_url=server.base_url, search=SearchOptions(page_size=50), client_options=options, progress=False
    )
    assert not set(lost) & {record.image_id for record in read_records(out)}
    with caplog.at_level(logging.WARNING, logger="xvision.cli.label_cmd"):
        assert main(["label", str(out)]) == 0
    assert re.search(r"failures.jsonl lists 3 image\(s\) of [123] report\(s\) that the fetch did not get", caplog.text)
    assert "run the same `xvision fetch openi` again to retry them" in caplog.text


def test_views_from_dicom_metadata_and_the_frontal_filter(reports_only: Path, dicom_metadata: Path) -> None:
    views = read_dicom_views(dicom_metadata)
    assert views["CXR19_IM-0583-1001"] == "frontal" and views["CXR19_IM-0583-3003"] == "lateral"
    # Both images of CXR1 claim to be PA (the second is a lateral): neither claim is trusted.
    assert "CXR1_IM-0001-3001" not in views and "CXR1_IM-0001-4001" not in views
    frontal_per_report = Counter(key.split("_")[0] for key, view in views.items() if view == "frontal")
    assert max(frontal_per_report.values()) == 1
    records = read_records(reports_only)
    kept, report = label_records(records, load_rules(), views="frontal", dicom_views=views)
    assert kept and all(view == "frontal" for _, _, view in kept)
    assert set(report.left_out) == {"view lateral, not frontal", "view unknown, not frontal"}
    assert len(kept) + sum(len(r) for r in report.left_out.values()) == 2696 + 211


def _record(major: list[str], **fields: object) -> ImageRecord:
    return ImageRecord(uid=f"CXR{len(major)}{major[0][:3]}", image_id=f"id-{major}", mesh_major=major, **fields)


def test_rules_match_whole_values_case_insensitively() -> None:
    rules = parse_rules(
        """
        [[rule]]
        label = "effusion"
        mesh_major_any = ["pleural effusion*"]
        impression_none = ["*no *effusion*"]
        """
    )
    assert rules.labels_of(_record(["Pleural Effusion/left/small"])) == ["effusion"]
    assert rules.labels_of(_record(["Effusion"])) == []
    assert rules.labels_of(_record(["Pleural Effusion"], impression="No pleural effusion.")) == []


def test_conflicts_are_excluded_and_reported() -> None:
    rules = parse_rules(
        """
        [[rule]]
        label = "nodule"
        mesh_major_any = ["Nodule*"]

        [[rule]]
        label = "granuloma"
        mesh_major_any = ["*granuloma*"]
        """,
        source="mine.toml",
    )
    both = _record(["Nodule/lung", "Calcified Granuloma/lung"])
    kept, report = label_records([both, _record(["Nodule"]), _record(["normal"])], rules)
    assert [label for _, label, _ in kept] == ["nodule"]
    assert report.conflicts == {both.uid: ["nodule", "granuloma"]}
    text = report.format()
    assert "Rules: mine.toml" in text and f"Conflicts: 1 report(s) matched rules of two labels: {both.uid}" in text
    assert "  conflict" in text and "  no rule matched" in text


@pytest.mark.parametrize(
    ("text", "message"),
    [
        ("[[rule]\n", "not valid TOML"),
        ("", "no rules"),
        ('[[rule]]\nmesh_major_any = ["x"]', "missing label"),
        ('[[rule]]\nlabel = "a"', "no condition"),
        ('[[rule]]\nlabel = "a"\nmesh_major_some = ["x"]', "unknown condition 'mesh_major_some'"),
        ('[[rule]]\nlabel = "a"\nsubject_any = ["x"]', "unknown condition 'subject_any'"),
        ('[[rule]]\nlabel = "a"\nmesh_major_any = []', "non-empty list of strings"),
        ('[[rule]]\nlabel = "a"\nmesh_major_any = [1]', "non-empty list of strings"),
        ('labels = 1\n[[rule]]\nlabel = "a"\nmesh_major_any = ["x"]', "unknown top-level key"),
    ],
)
def test_bad_rules_files_say_what_is_wrong(text: str, message: str) -> None:
    with pytest.raises(LabelRulesError, match=message):
        parse_rules(text)


def test_a_bad_rules_file_is_a_one_line_cli_error(
    reports_only: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    rules = tmp_path / "rules.toml"
    rules.write_text('[[rule]]\nlabel = "a"\nmesh_major_sometimes = ["x"]\n')
    assert main(["label", str(reports_only), "--rules", str(rules), "-o", str(tmp_path / "m.csv")]) == 2
    err = capsys.readouterr().err.strip()
    assert err.startswith(f"Error: {rules} rule 1: unknown condition") and "\n" not in err
    assert main(["label", str(reports_only), "--rules", "no-such-rules"]) == 2
    assert "one of: default, nodule-only" in capsys.readouterr().err


def test_the_built_in_rules_are_package_data() -> None:
    assert load_rules().source == "default" and load_rules("nodule-only").labels == ["normal", "nodule"]


def test_dicom_metadata_must_be_the_right_table(tmp_path: Path) -> None:
    bad = tmp_path / "meta.csv"
    bad.write_text("a,b\n1,2\n")
    with pytest.raises(Exception, match="needs columns imageid and View Position"):
        read_dicom_views(bad)


def test_reports_only_fixture_is_streamed_not_extracted(reports_only: Path) -> None:
    assert sorted(p.name for p in reports_only.iterdir()) == [
        ".fetch.lock",
        "images",
        "records.jsonl",
        "reports-without-images.jsonl",
    ]
    assert not any((reports_only / "images").iterdir())


def test_archive_member_names_are_never_used_as_paths(tmp_path: Path) -> None:
    buffer = io.BytesIO()
    with tarfile.open(fileobj=buffer, mode="w:gz") as archive:
        data = b'<eCitation><uId id="CXR5"/><parentImage id="CXR5_IM"><caption/></parentImage></eCitation>'
        info = tarfile.TarInfo("../../../escape.xml")
        info.size = len(data)
        archive.addfile(info, io.BytesIO(data))
    reports = tmp_path / "r.tgz"
    reports.write_bytes(buffer.getvalue())
    fetch_openi_bulk(tmp_path / "out", reports=reports, progress=False)
    assert [r.image_id for r in read_records(tmp_path / "out")] == ["CXR5_IM"]
    assert not (tmp_path.parent / "escape.xml").exists()


def test_the_rules_examples_in_the_docs_parse() -> None:
    docs = Path(__file__).resolve().parents[3] / "docs" / "openi.md"
    if not docs.is_file():
        pytest.skip(f"{docs} not found")
    blocks = re.findall(r"```toml\n(.*?)```", docs.read_text(), re.S)
    assert len(blocks) >= 4
    for block in blocks:
        assert parse_rules(block).labels


@pytest.mark.realdata
def test_nodule_noncalcified_leaves_out_granulomas_scars_and_nipples(reports_only: Path) -> None:
    """MeSH "Nodule" here also names calcified granulomas, scarring and nipple shadows (about half of the default
    set's nodule reports, read against their text); the built-in set that leaves them out keeps real nodules."""
    report = _label(reports_only, "nodule-noncalcified")
    assert (report.reports("nodule"), report.images("nodule")) == (39, 76)
    assert (report.reports("normal"), report.images("normal")) == (1391, 2696)
    nodules = {record.uid for record in report.labelled["nodule"]}
    default = {record.uid for record in _label(reports_only).labelled["nodule"]}
    assert nodules < default
    # granulomas (CXR1715, CXR48), a nipple shadow (CXR412), scarring (CXR2042), "No nodules or masses" (CXR923)
    assert not nodules & {"CXR1715", "CXR48", "CXR412", "CXR2042", "CXR923"}
    assert {"CXR1329", "CXR1630", "CXR3855"} <= nodules  # 13-16 mm nodules, a 7 mm nodule, metastases
    assert {"CXR2092", "CXR3393"} <= nodules  # "2 cm noncalcified nodule", "7mm non calcified nodule"


@pytest.mark.realdata
def test_the_docs_pneumothorax_text_rule_adds_only_reports_that_have_one(reports_only: Path) -> None:
    """The docs' example text rule with "no"/"without" alone let in 7 reports that said there was no
    pneumothorax ("Negative for pneumothorax", "resolution of ... pneumothorax")."""
    docs = Path(__file__).resolve().parents[3] / "docs" / "openi.md"
    if not docs.is_file():
        pytest.skip(f"{docs} not found")
    block = next(b for b in re.findall(r"```toml\n(.*?)```", docs.read_text(), re.S) if "pneumothorax.toml" in b)
    rules = parse_rules(block)
    mesh = parse_rules('[[rule]]\nlabel = "pneumothorax"\nmesh_major_any = ["Pneumothorax*"]\n')
    records = read_records(reports_only)
    by_text = {r.uid for r in records if rules.labels_of(r) == ["pneumothorax"] and not mesh.labels_of(r)}
    assert by_text == {"CXR1230", "CXR1525"}  # both a hydropneumothorax


def test_a_rules_file_that_is_not_utf8_is_a_one_line_error_and_a_bom_is_fine(tmp_path: Path) -> None:
    text = '[[rule]]\nlabel = "normal"\nmesh_major_all = ["normal"]\n'
    utf16 = tmp_path / "utf16.toml"
    utf16.write_text(text, encoding="utf-16")  # Windows "Unicode": it was a UnicodeDecodeError traceback
    with pytest.raises(LabelRulesError, match=r"utf16.toml: not UTF-8 text"):
        load_rules(utf16)
    bom = tmp_path / "bom.toml"
    bom.write_text(text, encoding="utf-8-sig")
    assert load_rules(bom).labels == ["normal"]


def test_dicom_metadata_is_read_by_content_and_a_damaged_file_is_named(tmp_path: Path) -> None:
    import gzip

    table = "imageid,View Position,Patient Orientation\nCXR9_IM-0001-1001,PA,\nCXR9_IM-0001-2001,LL,\n" * 50
    plain_named_gz, gz_named_csv, cut = tmp_path / "plain.csv.gz", tmp_path / "zipped.csv", tmp_path / "cut.csv.gz"
    plain_named_gz.write_text(table)
    gz_named_csv.write_bytes(gzip.compress(table.encode()))
    for path in (plain_named_gz, gz_named_csv):  # were "Not a gzipped file" and "not the Open-i ... table"
        assert read_dicom_views(path) == {"CXR9_IM-0001-1001": "frontal", "CXR9_IM-0001-2001": "lateral"}
    cut.write_bytes(gzip.compress(table.encode())[:60])  # a download cut short: it was "Interrupted."
    with pytest.raises(Exception, match=r"cut.csv.gz: damaged or cut short .*download the metadata file again"):
        read_dicom_views(cut)


def _fetched_by_hand(folder: Path, n: int = 4) -> list[ImageRecord]:
    """A fetch folder as `fetch` writes it: images/<id>.png and one records.jsonl line per image."""
    (folder / "images").mkdir(parents=True)
    records = []
    for i in range(n):
        image_id = f"CXR{i}_IM-000{i}-1001"
        (folder / "images" / f"{image_id}.png").write_bytes(b"png")
        major = ["normal"] if i % 2 else ["Nodule/lung/left"]
        records.append(ImageRecord(uid=f"CXR{i}", image_id=image_id, file=f"images/{image_id}.png", mesh_major=major))
    lines = [json.dumps(record.to_json()) for record in records]
    (folder / "records.jsonl").write_text("\n".join(lines) + "\n")
    return records


def test_damaged_records_lines_are_named_and_a_folder_of_nothing_readable_refused(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    records = _fetched_by_hand(tmp_path / "o")
    path = tmp_path / "o" / "records.jsonl"
    lines = path.read_text().splitlines()
    path.write_text("\n".join([lines[0], "{not json", *lines[1:-1], lines[-1][:30]]) + "\n")
    with caplog.at_level(logging.WARNING):
        kept = read_records(tmp_path / "o")
    assert [r.image_id for r in kept] == [r.image_id for r in records[:-1]]  # the last line was cut short
    assert "2 damaged line(s) left out (line 2, 5)" in caplog.text and "to repair the file" in caplog.text
    path.write_text("garbage\n\x00\x01\n")
    with pytest.raises(Exception, match=r"records.jsonl: none of its 2 line\(s\) is a readable record"):
        read_records(tmp_path / "o")


def test_label_keeps_to_its_folder_and_never_overwrites_without_force(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    folder = tmp_path / "o"
    records = _fetched_by_hand(folder)
    elsewhere = tmp_path / "secret.png"
    elsewhere.write_bytes(b"x")
    hostile = ImageRecord(uid="CXR9", image_id="CXR9_IM-0009-1001", file=str(elsewhere), mesh_major=["normal"])
    with (folder / "records.jsonl").open("a") as handle:
        handle.write(json.dumps(hostile.to_json()) + "\n")
    assert main(["label", str(folder)]) == 0
    printed = capsys.readouterr().out
    assert "image file outside the folder" in printed
    rows = list(csv.DictReader((folder / "manifest.csv").open()))
    assert sorted(row["image_id"] for row in rows) == sorted(r.image_id for r in records)
    # the sidecar is protected as the manifest is (it was overwritten without --force)
    (folder / "manifest.csv").unlink()
    sidecar = folder / "manifest.labels.json"
    sidecar.write_text("mine")
    assert main(["label", str(folder)]) == 2
    assert f"{sidecar} already exists; pass --force" in capsys.readouterr().err and sidecar.read_text() == "mine"
    # an image is never the manifest, --force or not
    image = folder / records[0].file
    for target in (image, folder / "images" / "new.csv", tmp_path / "m.png"):
        assert main(["label", str(folder), "-o", str(target), "--force"]) == 2
        assert "not an image or a file among the images" in capsys.readouterr().err
    assert image.read_bytes() == b"png"


def test_label_warns_of_a_rule_that_matches_nothing_and_of_views_without_metadata(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    _fetched_by_hand(tmp_path / "o")
    rules = tmp_path / "typo.toml"
    rules.write_text(
        '[[rule]]\nlabel = "normal"\nmesh_major_all = ["normal"]\n\n'
        '[[rule]]\nlabel = "nodule"\nmesh_major_any = ["nodul[e*"]\n'  # an unclosed [ that matches nothing
    )
    with caplog.at_level(logging.WARNING):
        assert main(["label", str(tmp_path / "o"), "--rules", str(rules)]) == 0
    assert "typo.toml rule 2 (label 'nodule') matches no record; check its patterns" in caplog.text
    assert "rule 1 " not in caplog.text and "--dicom-metadata" not in caplog.text
    caplog.clear()
    with caplog.at_level(logging.WARNING):
        assert main(["label", str(tmp_path / "o"), "--views", "frontal", "-o", str(tmp_path / "f.csv")]) == 2
    assert "--views frontal without --dicom-metadata" in caplog.text and "matches no record" not in caplog.text


def test_a_linked_images_folder_is_the_users_own_and_is_kept(tmp_path: Path) -> None:
    """With images/ a link to a bigger disk, every record was left out as "image file outside the folder"."""
    import shutil

    folder = tmp_path / "o"
    records = _fetched_by_hand(folder)
    shutil.move(folder / "images", tmp_path / "bigdisk")
    (folder / "images").symlink_to(tmp_path / "bigdisk")
    assert main(["label", str(folder)]) == 0
    rows = list(csv.DictReader((folder / "manifest.csv").open()))
    assert sorted(row["image_id"] for row in rows) == sorted(r.image_id for r in records)
