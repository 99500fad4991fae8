"""The image record: one line of ``records.jsonl`` per image, built from Open-i's search JSON or report XML.

Every field coming from the service is treated as untrusted: it may be missing, of the wrong type, huge, or
hostile (an id such as ``../../x``). Builders coerce what they can and drop what they cannot; local file names
come only from :func:`safe_name`, never from remote text as it stands.
"""

from __future__ import annotations

import hashlib
import html
import re
import xml.etree.ElementTree as ET
from collections.abc import Mapping
from dataclasses import dataclass, field, fields
from posixpath import basename, splitext
from typing import Any
from urllib.parse import urlsplit

from xvision.errors import FetchError

IMAGES_DIR = "images"
"""Folder (inside the output folder) holding the downloaded images."""

IMAGE_SUFFIXES = (".png", ".jpg", ".jpeg")
_MAX_TEXT = 20_000
_MAX_TERMS = 200
_MAX_NAME = 100
_SAFE_CHARS = re.compile(r"[^A-Za-z0-9._-]+")
# Open-i's ``image.id`` may be a figure label ("F1") that is unique only within its report.
_FIGURE_LABEL = re.compile(r"[A-Za-z]{0,3}\d{1,4}")
_SECTION = re.compile(r"\b(comparison|indication|findings|impression)\s*:", re.IGNORECASE)


@dataclass(frozen=True)
class ImageRecord:
    """One image of one report, as stored in ``records.jsonl``.

    Attributes:
        uid: The report id (e.g. ``CXR1``); every image of a report shares it, and it becomes the manifest's
            ``group`` so both views of a study land in one split.
        image_id: The image id (e.g. ``CXR1_1_IM-0001-3001``), unique in the collection; the record's key.
            Empty for a report without images (listed in ``reports-without-images.jsonl``, not ``records.jsonl``).
        file: Path of the local image relative to the output folder, ``None`` until the image is stored.
        url: Where the image came from (a URL, or ``ARCHIVE#MEMBER`` for the bulk tarball).
        sha256: Hex SHA-256 of the stored file's bytes.
        mesh_major, mesh_minor: MeSH terms of the report (``minor`` is the XML's ``automatic`` list).
        problems: Open-i's ``Problems`` list.
        impression, findings, indication, comparison: Sections of the report text.
        caption: The image's caption.
        license, license_url: Open-i's ``ccLicense`` and ``licenseURL``.
        source: ``"api"`` or ``"bulk"``.
    """

    uid: str
    image_id: str
    file: str | None = None
    url: str | None = None
    sha256: str | None = None
    mesh_major: list[str] = field(default_factory=list)
    mesh_minor: list[str] = field(default_factory=list)
    problems: list[str] = field(default_factory=list)
    impression: str = ""
    findings: str = ""
    indication: str = ""
    comparison: str = ""
    caption: str = ""
    license: str = ""
    license_url: str = ""
    source: str = ""

    def to_json(self) -> dict[str, Any]:
        """The record as a JSON-ready dict (field order is the file's column order)."""
        return {name: _copy(getattr(self, name)) for name in _FIELD_NAMES}

    @classmethod
    def from_json(cls, obj: Mapping[str, Any], *, report: bool = False) -> ImageRecord:
        """Rebuild a record from one parsed line; unknown keys are ignored, wrong types coerced.

        Raises:
            ValueError: ``uid`` is missing, or ``image_id`` is missing although ``report`` is False.
        """
        uid, image_id = _text(obj.get("uid")), _text(obj.get("image_id"))
        if not uid or (not image_id and not report):
            raise ValueError("record without uid or image_id")
        values: dict[str, Any] = {"uid": uid, "image_id": image_id}
        for item in fields(cls):
            if item.name in values or item.name not in obj:
                continue
            raw = obj[item.name]
            if item.name in ("mesh_major", "mesh_minor", "problems"):
                values[item.name] = _terms(raw)
            elif item.name in ("file", "url", "sha256"):
                values[item.name] = _text(raw) or None
            else:
                values[item.name] = _text(raw)
        return cls(**values)

    @property
    def file_name(self) -> str:
        """The local file name for this image: its sanitised id plus an image suffix."""
        suffix = splitext(urlsplit(self.url or "").path)[1].lower()
        return safe_name(self.image_id) + (suffix if suffix in IMAGE_SUFFIXES else ".png")


_FIELD_NAMES = tuple(item.name for item in fields(ImageRecord))


def _copy(value: Any) -> Any:
    return list(value) if isinstance(value, list) else value


def safe_name(raw: str) -> str:
    """A file name made from ``raw`` that cannot escape a folder or hide itself.

    Safe ids (letters, digits, ``._-``, not starting with a dot, at most 100 characters) are kept as they are.
    Anything else is reduced to those characters and suffixed with a short hash of the original, so two
    different ids never share a name: ``"../../x"`` becomes ``"x-<8 hex>"``.
    """
    cleaned = _SAFE_CHARS.sub("_", raw).strip("._-")
    if cleaned == raw and len(raw) <= _MAX_NAME:
        return raw
    digest = hashlib.sha256(raw.encode("utf-8", "surrogatepass")).hexdigest()[:8]
    return f"{cleaned[: _MAX_NAME - 9] or 'image'}-{digest}"


def record_from_item(item: Any) -> ImageRecord:
    """Build the record (without ``file`` and ``sha256``) of one search-result item.

    ``url`` is the item's ``imgLarge`` exactly as served (usually a path relative to the service root);
    resolving and checking it is the fetcher's job. An item with a report uid but neither an image id nor an
    image path describes a report without images: its record has ``image_id == ""``.

    Raises:
        FetchError: The item is not an object, lacks a report uid, or names an image but no ``imgLarge`` path.
    """
    if not isinstance(item, Mapping):
        raise FetchError(f"search result item is a {type(item).__name__}, not an object")
    uid = _text(item.get("uid"))
    if not uid:
        raise FetchError("search result item has no uid (report id)")
    url = _text(item.get("imgLarge"))
    image = item.get("image") if isinstance(item.get("image"), Mapping) else {}
    raw_id = _text(image.get("id"))
    if not url and raw_id:
        raise FetchError(f"item of report {uid} has no imgLarge (image path)")
    mesh = item.get("MeSH") if isinstance(item.get("MeSH"), Mapping) else {}
    sections = parse_abstract(_text(item.get("abstract"), limit=4 * _MAX_TEXT))
    return ImageRecord(
        uid=uid,
        image_id=_image_id(raw_id, url, uid) if url else "",
        url=url or None,
        mesh_major=_terms(mesh.get("major")),
        mesh_minor=_terms(mesh.get("minor")),
        problems=_terms(item.get("Problems"), separator=";"),
        impression=_text(item.get("impression")) or sections.get("impression", ""),
        findings=sections.get("findings", ""),
        indication=sections.get("indication", ""),
        comparison=sections.get("comparison", ""),
        caption=_text(image.get("caption")),
        license=_text(item.get("ccLicense")),
        license_url=_text(item.get("licenseURL")),
        source="api",
    )


def _image_id(raw_id: str, url: str, uid: str) -> str:
    if raw_id and not _FIGURE_LABEL.fullmatch(raw_id):
        return raw_id
    stem = splitext(basename(urlsplit(url).path))[0]
    if stem:
        return stem
    if raw_id:
        return f"{uid}_{raw_id}"
    raise FetchError(f"item of report {uid} has neither an image id nor an image file name")


def records_from_report_xml(data: bytes) -> tuple[ImageRecord, list[ImageRecord]]:
    """The report (a record with ``image_id == ""``) and its image records (one per ``parentImage``) of one
    NLMCXR report XML, without ``file``/``url``/``sha256``.

    Raises:
        FetchError: The XML does not parse or has no ``uId``.
    """
    try:
        root = ET.fromstring(data)
    except ET.ParseError as error:
        raise FetchError(f"report XML does not parse ({error})") from error
    uid_node = root.find("uId")
    uid = _text(uid_node.get("id") if uid_node is not None else None)
    if not uid:
        raise FetchError("report XML has no uId")
    sections = {
        _text(node.get("Label")).lower(): _text("".join(node.itertext()))
        for node in root.iter("AbstractText")
        if node.get("Label")
    }
    major = _terms([node.text for node in root.findall("MeSH/major")])
    common = {
        "uid": uid,
        "mesh_major": major,
        "mesh_minor": _terms([node.text for node in root.findall("MeSH/automatic")]),
        "problems": problems_from_mesh(major),
        "impression": sections.get("impression", ""),
        "findings": sections.get("findings", ""),
        "indication": sections.get("indication", ""),
        "comparison": sections.get("comparison", ""),
        "license": _text(root.findtext("ccLicense")),
        "license_url": _text(root.findtext("licenseURL")),
        "source": "bulk",
    }
    records = []
    for node in root.findall("parentImage"):
        image_id = _text(node.get("id"))
        if image_id:
            records.append(ImageRecord(image_id=image_id, caption=_text(node.findtext("caption")), **common))
    return ImageRecord(image_id="", **common), records


def problems_from_mesh(major: list[str]) -> list[str]:
    """Open-i's ``Problems``: the distinct heads of the MeSH major terms (``"Nodule/lung/left"`` -> ``"Nodule"``)."""
    return list(dict.fromkeys(term.split("/")[0].strip() for term in major if term.split("/")[0].strip()))


def parse_abstract(text: str) -> dict[str, str]:
    """Split a report's text (HTML or plain) into its lower-cased sections: comparison, indication, findings,
    impression. Missing sections are absent from the result."""
    plain = html.unescape(re.sub(r"<[^>]*>", " ", text))
    sections: dict[str, str] = {}
    matches = list(_SECTION.finditer(plain))
    for index, match in enumerate(matches):
        end = matches[index + 1].start() if index + 1 < len(matches) else len(plain)
        body = " ".join(plain[match.end() : end].split())
        sections.setdefault(match.group(1).lower(), body[:_MAX_TEXT])
    return sections


def _text(value: Any, *, limit: int = _MAX_TEXT) -> str:
    """A bounded, whitespace-normalised string from a remote value; anything not a str/number gives ""."""
    if isinstance(value, bool) or not isinstance(value, str | int | float):
        return ""
    return " ".join(str(value).split())[:limit]


def _terms(value: Any, *, separator: str | None = None) -> list[str]:
    """A bounded list of non-empty strings from a remote list (or a single string, split on ``separator``)."""
    if isinstance(value, str):
        value = value.split(separator) if separator else [value]
    if not isinstance(value, list | tuple):
        return []
    terms = [_text(item, limit=1000) for item in value[:_MAX_TERMS]]
    return [term for term in terms if term]
