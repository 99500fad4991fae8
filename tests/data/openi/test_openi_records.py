"""Records from untrusted search items and report XML; safe file names."""

from __future__ import annotations

import tarfile
from pathlib import Path

import pytest

from xvision.data.openi.records import (
    ImageRecord,
    parse_abstract,
    record_from_item,
    records_from_report_xml,
    safe_name,
)
from xvision.data.openi.views import metadata_key, view_from_caption
from xvision.errors import FetchError

ITEM = {
    "uid": "CXR7",
    "imgLarge": "/imgs/512/7/7/CXR7_IM-0009-1001.png?keywords=x",
    "imgThumb": "/imgs/150/7/7/CXR7_IM-0009-1001.png",
    "image": {"id": "CXR7_IM-0009-1001", "caption": "Xray Chest PA"},
    "MeSH": {"major": ["Nodule/lung/upper lobe/left ", "Cardiomegaly"], "minor": ["Lung"]},
    "Problems": "Nodule;Cardiomegaly",
    "abstract": "<p><b>Comparison: </b>None.</p><p><b>Indication: </b>Cough</p>"
    "<p><b>Findings: </b>A 1 cm nodule &amp; a big heart.</p><p><b>Impression: </b>Nodule.</p>",
    "ccLicense": "byncnd",
    "licenseURL": "http://creativecommons.org/licenses/by-nc-nd/4.0/",
}


def test_record_from_a_complete_item() -> None:
    record = record_from_item(ITEM)
    assert record.uid == "CXR7"
    assert record.image_id == "CXR7_IM-0009-1001"
    assert record.url == ITEM["imgLarge"]
    assert record.mesh_major == ["Nodule/lung/upper lobe/left", "Cardiomegaly"]
    assert record.mesh_minor == ["Lung"]
    assert record.problems == ["Nodule", "Cardiomegaly"]
    assert record.findings == "A 1 cm nodule & a big heart."
    assert record.impression == "Nodule."
    assert (record.indication, record.comparison) == ("Cough", "None.")
    assert (record.caption, record.license) == ("Xray Chest PA", "byncnd")
    assert record.file_name == "CXR7_IM-0009-1001.png"
    assert ImageRecord.from_json(record.to_json()) == record


@pytest.mark.parametrize(
    "change",
    [
        {"MeSH": "normal"},
        {"MeSH": {"major": "normal", "minor": None}},
        {"MeSH": {"major": ["normal", 3, None, {"x": 1}, ""], "minor": 7}},
        {"Problems": None, "abstract": 12, "impression": ["x"], "ccLicense": {"a": 1}},
        {"image": "not an object"},
        {"image": {"id": None, "caption": 5}},
    ],
)
def test_malformed_fields_are_coerced_not_fatal(change: dict) -> None:
    record = record_from_item({**ITEM, **change})
    assert record.uid == "CXR7" and record.image_id
    assert all(isinstance(term, str) and term for term in record.mesh_major + record.mesh_minor + record.problems)
    assert isinstance(record.impression, str) and isinstance(record.caption, str)


@pytest.mark.parametrize(
    ("item", "message"),
    [
        (["a", "list"], "not an object"),
        ({**ITEM, "uid": None}, "no uid"),
        ({**ITEM, "uid": ""}, "no uid"),
        ({**ITEM, "imgLarge": None}, "no imgLarge"),
    ],
)
def test_unusable_items_raise_fetch_error(item: object, message: str) -> None:
    with pytest.raises(FetchError, match=message):
        record_from_item(item)


def test_figure_labels_take_the_image_id_from_the_image_path() -> None:
    # The real service's image.id can be a figure label (F1) that repeats in every report.
    record = record_from_item({**ITEM, "image": {"id": "F1", "caption": "c"}})
    assert record.image_id == "CXR7_IM-0009-1001"


def test_an_item_without_any_image_is_a_report_without_images() -> None:
    record = record_from_item({k: v for k, v in ITEM.items() if k not in ("imgLarge", "image")})
    assert record.image_id == "" and record.url is None and record.mesh_major


@pytest.mark.parametrize("hostile", ["../../x", "/etc/passwd", "..", ".hidden", "a/b", "a\\b", "x\x00y", "é" * 300])
def test_safe_name_cannot_escape_or_hide(hostile: str, tmp_path: Path) -> None:
    name = safe_name(hostile)
    assert name and len(name) <= 100
    assert "/" not in name and "\\" not in name and "\x00" not in name and not name.startswith(".")
    assert (tmp_path / name).resolve().parent == tmp_path.resolve()


def test_safe_name_keeps_safe_ids_and_never_merges_two_ids() -> None:
    assert safe_name("CXR1_1_IM-0001-3001") == "CXR1_1_IM-0001-3001"
    hostile = ["../../x", "..//..//x", "x", "_x", "x/", "a b", "a_b"]
    assert len({safe_name(raw) for raw in hostile}) == len(hostile)


def test_hostile_image_id_gives_a_safe_file_name() -> None:
    record = record_from_item({**ITEM, "image": {"id": "../../x", "caption": ""}})
    assert record.image_id == "../../x"
    assert record.file_name.startswith("x-") and record.file_name.endswith(".png")


def test_abstract_sections_from_plain_text_and_html() -> None:
    assert parse_abstract("FINDINGS: clear lungs. IMPRESSION: normal") == {
        "findings": "clear lungs.",
        "impression": "normal",
    }
    assert parse_abstract("<p>nothing labelled</p>") == {}


def test_report_xml_gives_the_report_and_one_record_per_image(reports_tgz: Path) -> None:
    with tarfile.open(reports_tgz, "r|gz") as archive:
        for member in archive:
            if member.name.endswith("/1.xml"):
                data = archive.extractfile(member).read()
                break
    report, images = records_from_report_xml(data)
    assert report.uid == "CXR1" and report.image_id == "" and report.mesh_major == ["normal"]
    assert [r.image_id for r in images] == ["CXR1_1_IM-0001-3001", "CXR1_1_IM-0001-4001"]
    assert images[0].findings.startswith("The cardiac silhouette")
    assert images[0].impression == "Normal chest x-XXXX."
    assert images[0].license == "byncnd" and images[0].caption == "Xray Chest PA and Lateral"


def test_broken_report_xml_raises_fetch_error() -> None:
    with pytest.raises(FetchError, match="does not parse"):
        records_from_report_xml(b"<eCitation><uId id='CXR1'>")
    with pytest.raises(FetchError, match="no uId"):
        records_from_report_xml(b"<eCitation/>")


@pytest.mark.parametrize(
    ("caption", "view"),
    [
        ("CHEST SINGLE VIEW FRONTAL", "frontal"),
        ("Xray Chest PA/AP Portable", "frontal"),
        ("Xray Chest Lateral", "lateral"),
        ("Xray Chest PA and Lateral", None),
        ("2 views Chest: XXXX", None),
        ("Chest XXXX and lateral", None),  # "PA" blanked by the anonymisation
        ("Chest, 2 views, supine and crosstable lateral", None),
        ("A lateral chest x-XXXX XXXX, XXXX XXXX hours", "lateral"),
        ("", None),
    ],
)
def test_view_from_caption_only_when_unambiguous(caption: str, view: str | None) -> None:
    assert view_from_caption(caption) == view


def test_metadata_key_drops_the_series_part() -> None:
    assert metadata_key("CXR1_1_IM-0001-3001") == "CXR1_IM-0001-3001"
    assert metadata_key("CXR10_IM-0002-1001") == "CXR10_IM-0002-1001"
