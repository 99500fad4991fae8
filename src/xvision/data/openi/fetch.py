"""Page through the Open-i search API and download every image into an output folder, resumably.

The search API (``GET /api/search``) takes ``m`` and ``n``, the 1-based first and last result of a page, plus
``query``, ``coll`` (collection) and ``it`` (image type); it answers ``{"total": ..., "list": [item, ...]}``
or ``{"Query-Error": ...}``. Each item is one image of one report (see :mod:`xvision.data.openi.records`).

Pages are fetched one after another; images are downloaded by a small thread pool. Every run pages through the
whole result range again (pages are small JSON documents), skips images already stored and verified, and so
retries whatever failed last time.
"""

from __future__ import annotations

import logging
import math
import threading
from collections.abc import Iterator
from concurrent.futures import FIRST_COMPLETED, Future, ThreadPoolExecutor, wait
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any

from xvision._progress import progress_bar
from xvision.data.openi.client import Cancelled, ClientOptions, HttpClient, Refused
from xvision.data.openi.records import ImageRecord, record_from_item
from xvision.data.openi.store import Failure, RecordStore
from xvision.errors import FetchError
from xvision.io import load_image

logger = logging.getLogger(__name__)

DEFAULT_BASE_URL = "https://openi.nlm.nih.gov"
SEARCH_PATH = "/api/search"


class QueryError(FetchError):
    """The service rejected the search parameters (``{"Query-Error": ...}``); retrying will not help."""


@dataclass(frozen=True)
class SearchOptions:
    """What to ask the search API for.

    Attributes:
        query: Free-text query (``query=``); None sends none.
        collection: ``coll=`` (``cxr``: the Indiana University chest X-ray collection).
        image_type: ``it=`` (``x``: X-ray; ``xg``/``xm`` exclude graphics/multipanel); None sends none.
        limit: Consider only the first ``limit`` results.
        page_size: Results per search request.
        workers: Images downloaded at the same time.
    """

    query: str | None = None
    collection: str | None = "cxr"
    image_type: str | None = None
    limit: int | None = None
    page_size: int = 30
    workers: int = 4

    def params(self, first: int, last: int) -> dict[str, Any]:
        return {"query": self.query, "coll": self.collection, "it": self.image_type, "m": first, "n": last}


@dataclass
class FetchSummary:
    """What a fetch run did. ``failures`` are retried by running the same command again."""

    total: int | None = None
    downloaded: int = 0
    already: int = 0
    failures: list[Failure] = field(default_factory=list)

    @property
    def stored(self) -> int:
        return self.downloaded + self.already

    @property
    def retryable(self) -> list[Failure]:
        """The failures another run may fix."""
        return [failure for failure in self.failures if failure.retry]


def fetch_openi(
    out_dir: str | Path,
    *,
    base_url: str = DEFAULT_BASE_URL,
    search: SearchOptions | None = None,
    client_options: ClientOptions | None = None,
    progress: bool = True,
) -> FetchSummary:
    """Download the images of an Open-i search into ``out_dir`` and append their records to ``records.jsonl``.

    Re-running with the same arguments skips images already stored and verified and fetches what is missing.

    Raises:
        FetchError: The service rejected the query (``Query-Error``), or the folder is in use by another fetch.
        KeyboardInterrupt: After stopping the downloads and saving every finished record.
    """
    search = search or SearchOptions()
    if search.page_size < 1 or search.workers < 1 or (search.limit is not None and search.limit < 1):
        raise FetchError("page size, workers and limit must be positive")
    stop = threading.Event()
    client = HttpClient(base_url, client_options, stop)
    summary = FetchSummary()
    with RecordStore(out_dir) as store:
        previous = store.previous_failures()
        if previous:
            logger.info("retrying %d failure(s) recorded by the previous run", len(previous))
        run = _Run(client, store, search, summary, progress)
        try:
            run.go()
        finally:
            stop.set()
            run.finish()
            store.write_failures(summary.failures)
    return summary


class _Run:
    """One pass over the result range: pages in this thread, images in a pool, records written here only."""

    def __init__(
        self, client: HttpClient, store: RecordStore, search: SearchOptions, summary: FetchSummary, progress: bool
    ) -> None:
        self.client, self.store, self.search, self.summary = client, store, search, summary
        self.pool = ThreadPoolExecutor(max_workers=search.workers, thread_name_prefix="openi")
        self.pending: dict[Future[ImageRecord], ImageRecord] = {}
        self.seen_items: set[str] = set()
        self.seen_ids: dict[str, str | None] = {}  # image id -> its imgLarge
        self.page_bar = progress_bar(desc="pages", unit="page", disable=not progress, position=0)
        self.image_bar = progress_bar(desc="images", unit="img", disable=not progress, position=1)

    def go(self) -> None:
        for first, items in self._pages():
            for offset, item in enumerate(items):
                self._consider(item, first + offset)
                while len(self.pending) >= 4 * self.search.workers:
                    self._collect(wait(self.pending, return_when=FIRST_COMPLETED).done)
        while self.pending:
            self._collect(wait(self.pending, return_when=FIRST_COMPLETED).done)

    def finish(self) -> None:
        """Stop the pool, keep every image that finished, close the bars."""
        self.pool.shutdown(wait=True, cancel_futures=True)
        self._collect([future for future in self.pending if future.done() and not future.cancelled()])
        self.page_bar.close()
        self.image_bar.close()

    def _pages(self) -> Iterator[tuple[int, list[Any]]]:
        first, total = 1, None
        limit, size = self.search.limit, self.search.page_size
        while True:
            last = first + size - 1
            for bound in (limit, total):
                if bound is not None:
                    last = min(last, bound)
            if first > last:
                return
            try:
                page = self.client.get_json(SEARCH_PATH, self.search.params(first, last))
                items, reported = _parse_page(page)
            except (Cancelled, QueryError):
                raise
            except FetchError as error:  # a lost page always fails the command: its results are unknown
                if total is None and isinstance(error, Refused):  # the first page refused outright (404, 403):
                    raise FetchError(  # retrying cannot help
                        f"the search was refused ({error}); is --base-url the service's root "
                        "(e.g. https://openi.nlm.nih.gov)?"
                    ) from None
                self.summary.failures.append(
                    Failure("page", f"{first}-{last}", str(error), getattr(error, "url", None))
                )
                self.page_bar.update()
                if total is None:  # without the first page the range is unknown
                    logger.warning("could not read the first search page: %s", error)
                    return
                first = last + 1
                continue
            if total is None:
                total = reported
                self.summary.total = reported
                wanted = min(x for x in (reported, limit, math.inf) if x is not None)
                if wanted != math.inf:
                    self.image_bar.total = int(wanted)
                    self.page_bar.total = math.ceil(wanted / size)
            self.page_bar.update()
            items = items[: last - first + 1]
            new = [item for item in items if isinstance(item, dict) and _key(item) not in self.seen_items]
            if not new:  # an empty page, a page of junk, or the service repeating itself: the end
                return
            yield first, items
            first += len(items)

    def _consider(self, item: Any, index: int) -> None:
        if isinstance(item, dict):
            self.seen_items.add(_key(item))
        try:
            record = record_from_item(item)
        except FetchError as error:
            self._fail(Failure("item", f"result {index}", str(error), retry=False))
            return
        if not record.image_id:  # a report without images
            self.store.add_report(record)
            self.image_bar.update()
            return
        if record.image_id in self.seen_ids:
            if self.seen_ids[record.image_id] != record.url:  # one id, two images: keep the first, say so
                reason = f"image id also names another result's image ({self.seen_ids[record.image_id]}); skipped"
                self._fail(Failure("item", f"result {index}", reason, record.url, record.uid, retry=False))
            return  # else the same image listed twice
        self.seen_ids[record.image_id] = record.url
        try:
            record = replace(record, url=self.client.resolve(record.url or ""))
        except FetchError as error:
            self._fail(Failure("image", record.image_id, str(error), record.url, record.uid, retry=False))
            return
        if self.store.is_complete(record.image_id):
            self.summary.already += 1
            self.image_bar.update()
            return
        adopted = self.store.adopt(record, _decodes)
        if adopted is not None:
            self.store.add(adopted)
            self.summary.downloaded += 1
            self.image_bar.update()
            return
        self.pending[self.pool.submit(self._download, record)] = record

    def _download(self, record: ImageRecord) -> ImageRecord:
        def fill(handle: Any, tmp: Path) -> str:
            return self.client.download(record.url or "", handle, verify=lambda: _decodes(tmp))

        return self.store.save_image(record, fill)

    def _collect(self, done: Any) -> None:
        for future in done:
            record = self.pending.pop(future)
            try:
                stored = future.result()
            except Cancelled:
                continue
            except FetchError as error:
                retry = not isinstance(error, Refused)
                self._fail(Failure("image", record.image_id, str(error), record.url, record.uid, retry=retry))
                continue
            except OSError as error:  # the output folder, not the service: stop the run
                raise FetchError(f"cannot write into {self.store.images_dir}: {error}") from error
            self.store.add(stored)
            self.summary.downloaded += 1
            self.image_bar.update()

    def _fail(self, failure: Failure) -> None:
        logger.debug("failed: %s %s: %s", failure.kind, failure.key, failure.reason)
        self.summary.failures.append(failure)
        self.image_bar.update()


def _parse_page(page: Any) -> tuple[list[Any], int | None]:
    if not isinstance(page, dict):
        raise FetchError(f"search response is a {type(page).__name__}, not an object")
    if "Query-Error" in page:
        raise QueryError(
            f"Open-i rejected the query: {str(page['Query-Error'])[:200]}; check --query, --collection "
            "(cxr, pmc, usc, hmd, mpx) and --image-type (x, xg, xm, ...)"
        )
    items = page.get("list")
    if items is None:
        items = []
    if not isinstance(items, list):
        raise FetchError("search response has no list of results")
    total = page.get("total")
    return items, total if isinstance(total, int) and not isinstance(total, bool) and total >= 0 else None


def _key(item: dict[str, Any]) -> str:
    image = item.get("image") if isinstance(item.get("image"), dict) else {}
    return f"{item.get('uid')!r}|{image.get('id')!r}|{item.get('imgLarge')!r}"


def _decodes(path: Path) -> None:
    load_image(path)
