"""A local stand-in for Open-i (search API, images, bulk tarballs) that injects faults on demand.

Search items are built from the real NLMCXR report XML, one per image, in the documented schema; image pixels
are synthetic (a small PNG, deterministic per image id). Only 127.0.0.1 is ever bound.

Faults (``inject(kind, match, times)`` or ``chaos(rate, kinds, seed)``):
``429`` (with Retry-After), ``500``, ``503``, ``stall`` (nothing sent for ``stall_seconds``), ``stall_body``
(half the body, then nothing), ``truncate`` (half the body, then the connection closes), ``malformed``
(valid status, broken JSON or non-image bytes), ``drop`` (the connection closes with no answer), ``redirect``
(302 to another host), ``trickle`` (the body one byte every 50 ms).
"""

from __future__ import annotations

import hashlib
import io
import json
import random
import re
import tarfile
import threading
import time
import xml.etree.ElementTree as ET
from collections.abc import Iterable
from dataclasses import dataclass
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any
from urllib.parse import parse_qs, urlsplit

import numpy as np
from PIL import Image

TRANSIENT_FAULTS = ("429", "500", "503", "stall", "stall_body", "truncate", "malformed", "drop")
SLOW_FAULTS = ("trickle",)
FAULTS = (*TRANSIENT_FAULTS, *SLOW_FAULTS, "redirect")
IMAGE_TYPES = {"x", "xg", "xm", "c", "g", "m", "mc", "p", "ph", "u"}
COLLECTIONS = {"cxr", "pmc", "usc", "hmd", "mpx"}


def items_from_reports(tgz: Path, *, max_reports: int | None = None, figure_ids: bool = False) -> list[dict]:
    """Search items (one per image) from the NLMCXR report tarball, ordered by report number.

    Only the first ``max_reports`` reports (by the number in their file name, N.xml = CXRN) are parsed.
    """
    documents = []
    with tarfile.open(tgz, "r|gz") as archive:
        for member in archive:
            if member.isfile() and member.name.endswith(".xml"):
                number = int(re.sub(r"\D", "", member.name.rsplit("/", 1)[-1]) or 0)
                documents.append((number, archive.extractfile(member).read()))
    documents.sort(key=lambda pair: pair[0])
    items = []
    for _, data in documents[:max_reports]:
        items.extend(_items_of_report(ET.fromstring(data), figure_ids))
    return items


def _items_of_report(root: ET.Element, figure_ids: bool) -> list[dict]:
    uid = root.find("uId").get("id")
    sections = {n.get("Label", "").title(): "".join(n.itertext()) for n in root.iter("AbstractText")}
    abstract = "".join(f"<p><b>{label}: </b>{text}</p>" for label, text in sections.items())
    major = [(n.text or "").strip() for n in root.findall("MeSH/major")]
    minor = [(n.text or "").strip() for n in root.findall("MeSH/automatic")]
    problems = ";".join(dict.fromkeys(term.split("/")[0] for term in major))
    items = []
    for image in root.findall("parentImage"):
        image_id = image.get("id")
        items.append(
            {
                "uid": uid,
                "imgLarge": f"/imgs/512/{image_id}.png",
                "imgThumb": f"/imgs/150/{image_id}.png",
                "image": {
                    "id": image.findtext("figureId") if figure_ids else image_id,
                    "caption": (image.findtext("caption") or "").strip(),
                    "modalityMajor": "x",
                },
                "MeSH": {"major": major, "minor": minor},
                "Problems": problems,
                "impression": sections.get("Impression", ""),
                "abstract": abstract,
                "ccLicense": root.findtext("ccLicense"),
                "licenseURL": root.findtext("licenseURL"),
            }
        )
    return items


def synthetic_png(image_id: str, size: int = 64) -> bytes:
    """A small grey PNG, the same bytes every time for one id, different for different ids."""
    seed = int.from_bytes(hashlib.sha256(image_id.encode()).digest()[:8], "little")
    pixels = np.random.default_rng(seed).integers(0, 256, (size, size), dtype=np.uint8)
    buffer = io.BytesIO()
    Image.fromarray(pixels).save(buffer, format="PNG")
    return buffer.getvalue()


def image_id_of(item: dict) -> str:
    """The image id the stand-in serves an item's image under (the imgLarge file stem)."""
    return item["imgLarge"].rsplit("/", 1)[-1].rsplit(".", 1)[0]


def png_tarball(image_ids: Iterable[str], *, folder: str = "") -> bytes:
    """A gzipped tar of synthetic PNGs named ``<id>.png`` (as NLMCXR_png.tgz)."""
    buffer = io.BytesIO()
    with tarfile.open(fileobj=buffer, mode="w:gz") as archive:
        for image_id in image_ids:
            data = synthetic_png(image_id, size=16)
            info = tarfile.TarInfo(f"{folder}{image_id}.png")
            info.size = len(data)
            archive.addfile(info, io.BytesIO(data))
    return buffer.getvalue()


@dataclass
class Logged:
    path: str
    target: str
    time: float
    fault: str | None
    user_agent: str | None


class FakeOpenI:
    """The stand-in server. Use as a context manager; ``base_url`` is ``http://127.0.0.1:<port>``.

    Args:
        items: The search items served, in result order.
        page_cap: Most results one search page returns, whatever ``n`` asks.
        image_delay: Seconds each image response waits (to make a fetch last long enough to be killed).
        retry_after: The Retry-After value sent with 429.
        stall_seconds: How long a stalled response stays silent.
        files: Extra paths served as they are (e.g. the bulk tarballs).
    """

    def __init__(
        self,
        items: list[dict],
        *,
        page_cap: int = 100,
        image_delay: float = 0.0,
        retry_after: str = "1",
        stall_seconds: float = 3.0,
        files: dict[str, bytes | Path] | None = None,
    ) -> None:
        self.items = items
        self.page_cap = page_cap
        self.image_delay = image_delay
        self.retry_after = retry_after
        self.stall_seconds = stall_seconds
        self.files = dict(files or {})
        self._served = {image_id_of(i) for i in items if isinstance(i, dict) and isinstance(i.get("imgLarge"), str)}
        self.log: list[Logged] = []
        self._faults: list[list[Any]] = []  # [kind, match, remaining]
        self._chaos: tuple[float, tuple[str, ...], random.Random, int] | None = None
        self._chaos_counts: dict[str, int] = {}
        self._lock = threading.Lock()
        self._closing = threading.Event()
        self._server = ThreadingHTTPServer(("127.0.0.1", 0), _Handler)
        self._server.daemon_threads = True
        self._server.fake = self  # type: ignore[attr-defined]
        self._thread = threading.Thread(target=self._server.serve_forever, args=(0.05,), daemon=True)

    @property
    def base_url(self) -> str:
        return f"http://127.0.0.1:{self._server.server_address[1]}"

    def __enter__(self) -> FakeOpenI:
        self._thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._closing.set()
        self._server.shutdown()
        self._server.server_close()

    def inject(self, kind: str, match: str = "/api/search", times: int = 1) -> None:
        """Make the next ``times`` requests whose target (path and query) contains ``match`` fail with ``kind``."""
        assert kind in FAULTS, kind
        with self._lock:
            self._faults.append([kind, match, times])

    def chaos(self, rate: float, kinds: tuple[str, ...] = TRANSIENT_FAULTS, *, seed: int = 0, per_url: int = 2) -> None:
        """Fail a random ``rate`` of all requests with one of ``kinds``, at most ``per_url`` times per URL."""
        self._chaos = (rate, kinds, random.Random(seed), per_url)

    def image_ids(self) -> list[str]:
        return [image_id_of(item) for item in self.items if isinstance(item, dict)]

    def requests(self, prefix: str = "") -> list[Logged]:
        with self._lock:
            return [entry for entry in self.log if entry.path.startswith(prefix)]

    def _take_fault(self, target: str) -> str | None:
        with self._lock:
            for fault in self._faults:
                if fault[2] > 0 and fault[1] in target:
                    fault[2] -= 1
                    return fault[0]
            if self._chaos is not None:
                rate, kinds, rng, per_url = self._chaos
                if self._chaos_counts.get(target, 0) < per_url and rng.random() < rate:
                    self._chaos_counts[target] = self._chaos_counts.get(target, 0) + 1
                    return rng.choice(kinds)
        return None

    def search(self, query: dict[str, list[str]]) -> dict:
        def param(name: str) -> str | None:
            return query.get(name, [None])[0]

        if param("it") is not None and param("it") not in IMAGE_TYPES:
            return {"Query-Error": f"Invalid image type: {param('it')}"}
        if param("coll") is not None and param("coll") not in COLLECTIONS:
            return {"Query-Error": f"Invalid collection: {param('coll')}"}
        items = self.items if param("coll") in (None, "cxr") else []
        text = (param("query") or "").lower()
        if text:
            items = [item for item in items if text in json.dumps(item).lower()]
        try:
            first = max(1, int(param("m") or 1))
            last = max(first, int(param("n") or first + 9))
        except ValueError:
            return {"Query-Error": "m and n must be integers"}
        last = min(last, first + self.page_cap - 1)
        page = items[first - 1 : last]
        return {"min": first, "max": first + len(page) - 1, "count": len(page), "total": len(items), "list": page}

    def body_for(self, path: str, query: dict[str, list[str]]) -> tuple[int, str, bytes | Path]:
        if path == "/api/search":
            return 200, "application/json", json.dumps(self.search(query)).encode()
        if path in self.files:
            return 200, "application/octet-stream", self.files[path]
        match = re.fullmatch(r"/imgs/(?:512|150)/(.+)\.png", path)
        if match and match.group(1) in self._served:
            if self.image_delay and self._closing.wait(self.image_delay):
                return 503, "text/plain", b"closing"
            return 200, "image/png", synthetic_png(match.group(1))
        return 404, "text/plain", b"not found"


class _Handler(BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.0"

    def log_message(self, format: str, *args: Any) -> None:  # quiet
        pass

    def do_GET(self) -> None:
        fake: FakeOpenI = self.server.fake  # type: ignore[attr-defined]
        parts = urlsplit(self.path)
        fault = fake._take_fault(self.path)
        with fake._lock:
            fake.log.append(Logged(parts.path, self.path, time.monotonic(), fault, self.headers.get("User-Agent")))
        try:
            self._answer(fake, parts.path, parse_qs(parts.query, keep_blank_values=True), fault)
        except (BrokenPipeError, ConnectionResetError):
            pass

    def _answer(self, fake: FakeOpenI, path: str, query: dict[str, list[str]], fault: str | None) -> None:
        if fault == "drop":
            self.close_connection = True
            return
        if fault == "stall":
            fake._closing.wait(fake.stall_seconds)
            return
        if fault == "redirect":
            self.send_response(302)
            self.send_header("Location", "http://elsewhere.invalid/stolen.png")
            self.send_header("Content-Length", "0")
            self.end_headers()
            return
        if fault in ("429", "500", "503"):
            self.send_response(int(fault))
            if fault == "429":
                self.send_header("Retry-After", fake.retry_after)
            self.send_header("Content-Length", "0")
            self.end_headers()
            return
        status, kind, body = fake.body_for(path, query)
        if isinstance(body, Path):
            body = body.read_bytes()
        if fault == "malformed" and status == 200:
            body = b'{"total": 3, "list": [{"uid": ' if kind == "application/json" else b"<html>oops</html>" * 10
        self.send_response(status)
        self.send_header("Content-Type", kind)
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        if fault == "trickle":
            for index in range(len(body)):
                if fake._closing.wait(0.05):
                    return
                self.wfile.write(body[index : index + 1])
                self.wfile.flush()
            return
        if fault in ("truncate", "stall_body"):
            self.wfile.write(body[: len(body) // 2])
            self.wfile.flush()
            if fault == "stall_body":
                fake._closing.wait(fake.stall_seconds)
            return
        self.wfile.write(body)
