"""Build the same output folder from Open-i's bulk tarballs, streamed member by member.

Open-i serves the whole ``cxr`` collection as two archives under ``/imgs/collections/``:
``NLMCXR_reports.tgz`` (3,955 report XMLs) and ``NLMCXR_png.tgz`` (7,470 PNGs named ``<image id>.png``).
Both are read as streams (``tarfile`` mode ``r|gz``): never extracted by member name, never held in memory
whole. Without an image archive the records are written with ``file`` empty (reports only); a later run with
the images completes them.
"""

from __future__ import annotations

import hashlib
import logging
import tarfile
import threading
import zlib
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import replace
from pathlib import Path
from posixpath import basename, splitext
from typing import IO, Any
from urllib.parse import urlsplit

from xvision._progress import progress_bar
from xvision.data.openi.client import ClientOptions, HttpClient, StreamError
from xvision.data.openi.fetch import FetchSummary
from xvision.data.openi.records import IMAGE_SUFFIXES, ImageRecord, records_from_report_xml
from xvision.data.openi.store import Failure, RecordStore
from xvision.errors import FetchError, ImageLoadError
from xvision.io import load_image

logger = logging.getLogger(__name__)

MAX_REPORT_BYTES = 5 << 20
MAX_ARCHIVE_BYTES = 64 << 30
_CHUNK = 1 << 20
_BROKEN_STREAM = (StreamError, tarfile.ReadError, EOFError, zlib.error, OSError)


def fetch_openi_bulk(
    out_dir: str | Path,
    *,
    reports: str | Path,
    images: str | Path | None = None,
    client_options: ClientOptions | None = None,
    progress: bool = True,
) -> FetchSummary:
    """Write ``records.jsonl`` (and ``images/``) from the report tarball and, optionally, the PNG tarball.

    Args:
        out_dir: The output folder (the same layout as :func:`~xvision.data.openi.fetch.fetch_openi`).
        reports: ``NLMCXR_reports.tgz``: a local path or an http(s) URL.
        images: ``NLMCXR_png.tgz``: a local path or an http(s) URL; None writes records without images.
        client_options: Timeouts and retries for URLs (a broken download starts the archive over).

    Raises:
        FetchError: An archive is missing, unreadable, or still breaks off after the retries.
    """
    options = client_options or ClientOptions()
    summary = FetchSummary()
    with RecordStore(out_dir) as store:
        records, imageless = _read_reports(str(reports), options, summary, progress)
        for report in imageless:
            store.add_report(report)
        summary.total = len(records)
        if images is None:
            for record in records.values():
                if store.get(record.image_id) is None:
                    store.add(record)
                    summary.downloaded += 1
                else:
                    summary.already += 1
        else:
            store.drop_pending()
            todo = {key: record for key, record in records.items() if not store.is_complete(key)}
            summary.already = len(records) - len(todo)
            _store_images(str(images), todo, store, options, summary, progress)
            summary.failures.extend(
                Failure("image", key, "not in the image archive", str(images), record.uid, retry=False)
                for key, record in todo.items()
            )
            # Records whose image is not in this archive (or could not be stored) stay, without an image, as a
            # reports-only run leaves them: the report counts of `label` must not depend on the archive given.
            for record in records.values():
                if store.get(record.image_id) is None:
                    store.add(record)
        store.write_failures(summary.failures)
    return summary


def _read_reports(
    source: str, options: ClientOptions, summary: FetchSummary, progress: bool
) -> tuple[dict[str, ImageRecord], list[ImageRecord]]:
    records: dict[str, ImageRecord] = {}
    imageless: list[ImageRecord] = []
    with progress_bar(desc="reports", unit="report", disable=not progress) as bar:

        def take(member: tarfile.TarInfo, handle: IO[bytes]) -> None:
            if member.size > MAX_REPORT_BYTES:
                summary.failures.append(Failure("report", member.name, f"{member.size} bytes: too large", retry=False))
                return
            data = handle.read()  # a broken stream raises here, outside the per-report handling
            try:
                report, images = records_from_report_xml(data)
            except FetchError as error:
                summary.failures.append(Failure("report", member.name, str(error), source, retry=False))
            else:
                if not images:
                    imageless.append(report)
                for record in images:
                    records.setdefault(record.image_id, record)
            bar.update()

        _each_member(source, (".xml",), take, options)
    if not records:
        raise FetchError(f"{source}: no report XML with images found; give NLMCXR_reports.tgz")
    return records, imageless


def _store_images(
    source: str,
    todo: dict[str, ImageRecord],
    store: RecordStore,
    options: ClientOptions,
    summary: FetchSummary,
    progress: bool,
) -> None:
    with progress_bar(desc="images", unit="img", total=len(todo), disable=not progress) as bar:

        def take(member: tarfile.TarInfo, handle: IO[bytes]) -> None:
            record = todo.get(splitext(basename(member.name))[0])
            if record is None:
                return
            record = replace(record, url=f"{source}#{member.name}")
            try:
                if member.size > options.max_image_bytes:
                    raise FetchError(f"{member.size} bytes, over the {options.max_image_bytes}-byte limit")
                stored = store.adopt(record, load_image) or store.save_image(record, _copier(handle, member.size))
            except StreamError:
                raise  # the archive broke off: start it over, this member is not done
            except (FetchError, ImageLoadError) as error:
                # An ImageLoadError names the temporary .part file it was checked as: keep its reason only.
                reason = error.reason if isinstance(error, ImageLoadError) else str(error)
                failure = Failure("image", record.image_id, reason, record.url, record.uid, retry=False)
                summary.failures.append(failure)
            else:
                store.add(stored)
                summary.downloaded += 1
            del todo[record.image_id]
            bar.update()

        _each_member(source, IMAGE_SUFFIXES, take, options)


def _copier(source: IO[bytes], size: int) -> Callable[[IO[bytes], Path], str]:
    def fill(handle: IO[bytes], tmp: Path) -> str:
        digest = hashlib.sha256()
        copied = 0
        while chunk := source.read(_CHUNK):
            copied += len(chunk)
            digest.update(chunk)
            handle.write(chunk)
        if copied != size:
            raise FetchError(f"archive member is cut off ({copied} of {size} bytes)")
        handle.flush()
        load_image(tmp)
        return digest.hexdigest()

    return fill


def _each_member(
    source: str,
    suffixes: tuple[str, ...],
    take: Callable[[tarfile.TarInfo, IO[bytes]], None],
    options: ClientOptions,
) -> None:
    """Call ``take`` on every regular member whose name ends with one of ``suffixes``, streaming the archive.

    A URL whose download breaks off is opened again (members already taken are simply skipped by ``take``'s
    caller state), up to ``options.retries`` times.
    """
    attempts = options.retries + 1 if _is_url(source) else 1
    done: set[str] = set()
    for attempt in range(attempts):
        try:
            with _open(source, options) as raw, tarfile.open(fileobj=raw, mode="r|gz") as archive:
                for member in archive:
                    if member.isfile() and member.name.lower().endswith(suffixes) and member.name not in done:
                        handle = archive.extractfile(member)
                        if handle is not None:
                            take(member, handle)
                            done.add(member.name)
            return
        except _BROKEN_STREAM as error:
            if isinstance(error, FileNotFoundError):
                raise FetchError(f"{source}: file not found") from None
            if attempt + 1 == attempts:
                raise FetchError(f"{source}: cannot read the archive ({type(error).__name__}: {error})") from None
            logger.warning("%s broke off (%s); starting over (%d/%d)", source, error, attempt + 2, attempts)


@contextmanager
def _open(source: str, options: ClientOptions) -> Iterator[Any]:
    if _is_url(source):
        parts = urlsplit(source)
        client = HttpClient(f"{parts.scheme}://{parts.netloc}", options, threading.Event())
        stream = client.open_stream(source, max_bytes=MAX_ARCHIVE_BYTES)
        try:
            yield stream
        finally:
            stream.close()
    else:
        with open(source, "rb") as handle:
            yield handle


def _is_url(source: str) -> bool:
    return urlsplit(source).scheme in ("http", "https")
