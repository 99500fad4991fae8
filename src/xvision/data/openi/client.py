"""A polite, resilient HTTP client for one service (standard library only).

Polite: one User-Agent naming Xvision, a request-rate limit shared by all threads, per-request timeouts.
Resilient: timeouts, connection errors, truncated or malformed bodies, 429 (honouring ``Retry-After``) and 5xx
are retried with exponential backoff and full jitter. Safe: every URL, redirects included, must stay on the
base URL's origin (scheme, host, port), and bodies larger than a bound are refused.

urllib3's ``Retry`` would cover only the status line; truncated and stalled bodies are found while reading, so
one retry loop here covers both.
"""

from __future__ import annotations

import email.utils
import hashlib
import http.client
import json
import logging
import random
import socket
import threading
import time
import urllib.error
import urllib.request
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from typing import IO, Any, TypeVar
from urllib.parse import urlencode, urljoin, urlsplit

from xvision._version import __version__
from xvision.errors import FetchError

T = TypeVar("T")
log = logging.getLogger(__name__)
#: At most one "retrying" line per this many seconds: a silent or unreachable service shows it is being
#: waited for, and thousands of images failing at once do not flood the terminal.
RETRY_NOTE_INTERVAL = 10.0

USER_AGENT = f"xvision/{__version__} (chest X-ray transfer-learning toolkit; python-urllib)"
_RETRY_STATUS = frozenset({408, 425, 429, 500, 502, 503, 504})
_CHUNK = 1 << 16


@dataclass(frozen=True)
class ClientOptions:
    """How politely and how stubbornly to talk to the service.

    Attributes:
        timeout: Seconds allowed for connecting and for each read (a stalled response fails after this).
        total_timeout: Seconds allowed for a whole request, body included (a trickling body fails after this).
        retries: Further attempts after the first one fails for a transient reason.
        backoff: Base of the exponential backoff: attempt ``k`` waits a random time in
            ``[0, min(backoff_max, backoff * 2**k)]``.
        backoff_max: Longest backoff wait, seconds.
        retry_after_max: Longest wait granted to a ``Retry-After`` header, seconds.
        rate: Most requests started per second, all threads together (0: no limit).
        max_json_bytes: Largest search-API response accepted.
        max_image_bytes: Largest image accepted.
        user_agent: The User-Agent header.
    """

    timeout: float = 20.0
    total_timeout: float = 300.0
    retries: int = 5
    backoff: float = 1.0
    backoff_max: float = 60.0
    retry_after_max: float = 300.0
    rate: float = 4.0
    max_json_bytes: int = 32 << 20
    max_image_bytes: int = 64 << 20
    user_agent: str = USER_AGENT


class Cancelled(FetchError):
    """The client was stopped (Ctrl-C) while waiting or reading."""


class Refused(FetchError):
    """A request that trying again will not fix: another host, a client error (4xx), a body over the limit."""


class StreamError(FetchError):
    """A response body could not be read whole; ``transient`` says whether trying again may help."""

    def __init__(self, reason: str, *, transient: bool) -> None:
        super().__init__(reason)
        self.transient = transient


class GaveUp(FetchError):
    """A request failed every attempt for a transient reason; ``url`` is what was asked for."""

    def __init__(self, message: str, url: str) -> None:
        super().__init__(message)
        self.url = url


class _Transient(Exception):
    """One attempt failed in a way that may succeed when tried again."""

    def __init__(self, reason: str, retry_after: float | None = None) -> None:
        super().__init__(reason)
        self.reason = reason
        self.retry_after = retry_after


class RateLimiter:
    """Spaces request starts at least ``1 / rate`` seconds apart, across threads."""

    def __init__(self, rate: float) -> None:
        self._interval = 1.0 / rate if rate > 0 else 0.0
        self._next = 0.0
        self._lock = threading.Lock()

    def wait(self, stop: threading.Event) -> None:
        with self._lock:
            now = time.monotonic()
            start = max(now, self._next)
            self._next = start + self._interval
        if start > now and stop.wait(start - now):
            raise Cancelled("stopped")


class HttpClient:
    """GET requests to one origin with the politeness, retry and safety rules of :class:`ClientOptions`.

    Args:
        base_url: The service root, e.g. ``https://openi.nlm.nih.gov``; only URLs on its origin are fetched.
        options: Timeouts, retries, rate and size limits.
        stop: Set it to make every waiting or reading call raise :class:`Cancelled` promptly.
    """

    def __init__(self, base_url: str, options: ClientOptions | None = None, stop: threading.Event | None = None):
        parts = urlsplit(base_url)
        if parts.scheme not in ("http", "https") or not parts.hostname:
            raise FetchError(f"base URL {base_url!r} is not an http(s) URL; give e.g. https://openi.nlm.nih.gov")
        self.base_url = base_url.rstrip("/")
        self.origin = _origin(base_url)
        self.options = options or ClientOptions()
        self.stop = stop or threading.Event()
        self._limiter = RateLimiter(self.options.rate)
        self._last_note = -RETRY_NOTE_INTERVAL
        self._note_lock = threading.Lock()
        self._opener = urllib.request.build_opener(_SameOriginRedirects(self.origin))

    def resolve(self, url: str) -> str:
        """The absolute URL of a service path (``/imgs/...`` is taken relative to the base URL).

        Raises:
            FetchError: The URL points to another scheme, host or port than the base URL.
        """
        if urlsplit(url).scheme or url.startswith("//"):
            absolute = urljoin(self.base_url + "/", url)
        else:
            absolute = f"{self.base_url}/{url.lstrip('/')}"
        if _origin(absolute) != self.origin:
            raise Refused(f"refused {url[:200]!r}: not on the base URL's host {self.origin[1]}")
        return absolute

    def get_json(self, path: str, params: Mapping[str, Any] | None = None) -> Any:
        """GET a JSON document, retrying transient failures (malformed JSON counts as one: a cut-off body).

        Raises:
            FetchError: Still failing after the retries, a permanent HTTP error, or a refused URL.
        """
        url = self.resolve(path)
        if params:
            url += ("&" if "?" in url else "?") + urlencode({k: v for k, v in params.items() if v is not None})

        def attempt() -> Any:
            chunks: list[bytes] = []
            self._get(url, chunks.append, self.options.max_json_bytes)
            try:
                return json.loads(b"".join(chunks))
            except ValueError as error:
                raise _Transient(f"malformed JSON ({str(error)[:80]})") from None

        return self._retrying(url, attempt)

    def download(self, url: str, handle: IO[bytes], *, verify: Callable[[], None] | None = None) -> str:
        """Stream ``url`` into the open file ``handle`` and return the SHA-256 of the bytes.

        ``verify`` (e.g. "the file decodes as an image") runs after each complete transfer; a failure of it
        (any exception) is treated as a transient error, so a corrupt transfer is downloaded again.
        """
        absolute = self.resolve(url)

        def attempt() -> str:
            handle.seek(0)
            handle.truncate()
            digest = hashlib.sha256()

            def sink(chunk: bytes) -> None:
                digest.update(chunk)
                handle.write(chunk)

            self._get(absolute, sink, self.options.max_image_bytes)
            handle.flush()
            if verify is not None:
                try:
                    verify()
                except Exception as error:  # an ImageLoadError names the hidden .part file: its reason only
                    reason = getattr(error, "reason", None) or error
                    raise _Transient(f"downloaded file is not a readable image ({reason})") from None
            return digest.hexdigest()

        return self._retrying(absolute, attempt)

    def open_stream(self, url: str, *, max_bytes: int) -> IO[bytes]:
        """Open ``url`` for streaming (e.g. a tarball), retrying until the response starts.

        Reads from the returned object raise :class:`StreamError` on a stall, a cut-off body (shorter than its
        Content-Length) or more than ``max_bytes``; the caller decides whether to start over.
        """
        absolute = self.resolve(url)
        response = self._retrying(absolute, lambda: self._open(absolute, max_bytes))
        return _BoundedStream(response, max_bytes, self.options, self.stop)

    def _retrying(self, url: str, attempt: Callable[[], T]) -> T:
        options = self.options
        for number in range(options.retries + 1):
            try:
                return attempt()
            except _Transient as failure:
                attempts = f"{number + 1} attempt{'s' if number else ''}"
                if number == options.retries:
                    raise GaveUp(f"{_short(url)}: {failure.reason} (gave up after {attempts})", url) from None
                delay = random.uniform(0.0, min(options.backoff_max, options.backoff * 2**number))
                if failure.retry_after is not None:
                    delay = max(delay, min(failure.retry_after, options.retry_after_max))
                self._note_retry(url, failure.reason, delay, number + 2)
                if self.stop.wait(delay):
                    raise Cancelled("stopped") from None
        raise AssertionError("unreachable")

    def _note_retry(self, url: str, reason: str, delay: float, attempt: int) -> None:
        now = time.monotonic()
        with self._note_lock:
            if now - self._last_note < RETRY_NOTE_INTERVAL:
                return
            self._last_note = now
        log.warning(
            "%s: %s; trying again in %.0f s (attempt %d of %d)",
            _short(url),
            reason,
            delay,
            attempt,
            self.options.retries + 1,
        )

    def _open(self, url: str, max_bytes: int) -> http.client.HTTPResponse:
        if self.stop.is_set():
            raise Cancelled("stopped")
        self._limiter.wait(self.stop)
        request = urllib.request.Request(url, headers={"User-Agent": self.options.user_agent, "Accept": "*/*"})
        try:
            response = self._opener.open(request, timeout=self.options.timeout)
        except urllib.error.HTTPError as error:
            error.close()
            if error.code in _RETRY_STATUS:
                raise _Transient(f"HTTP {error.code}", _retry_after(error.headers.get("Retry-After"))) from None
            raise Refused(f"{_short(url)}: HTTP {error.code} {error.reason}") from None
        except urllib.error.URLError as error:
            if isinstance(error.reason, Refused):
                raise error.reason from None
            raise _Transient(self._connection_failure(error.reason)) from None
        except (OSError, http.client.HTTPException) as error:
            raise _Transient(self._connection_failure(error)) from None
        length = _content_length(response)
        if length is not None and length > max_bytes:
            response.close()
            raise Refused(f"{_short(url)}: response of {length} bytes is over the {max_bytes}-byte limit")
        return response

    def _connection_failure(self, cause: object) -> str:
        """Why a request got no answer, in a user's words: an unknown host (offline?) and a silent server
        are told apart from other connection failures."""
        if isinstance(cause, socket.gaierror):
            return f"cannot resolve the host {self.origin[1]} (offline, or a wrong --base-url?)"
        if isinstance(cause, TimeoutError):
            return f"no answer within {self.options.timeout:g} s"
        if isinstance(cause, BaseException):
            return f"connection failed ({type(cause).__name__}: {cause})"
        return f"connection failed ({cause})"

    def _get(self, url: str, sink: Callable[[bytes], None], max_bytes: int) -> None:
        response = self._open(url, max_bytes)
        stream = _BoundedStream(response, max_bytes, self.options, self.stop)
        try:
            while chunk := stream.read(_CHUNK):
                sink(chunk)
        except StreamError as error:
            if error.transient:
                raise _Transient(str(error)) from None
            raise Refused(f"{_short(url)}: {error}") from None
        finally:
            stream.close()


class _BoundedStream:
    """A response body read with a size bound, a total deadline and a Content-Length check."""

    def __init__(self, response: Any, max_bytes: int, options: ClientOptions, stop: threading.Event) -> None:
        self._response = response
        self._max = max_bytes
        self._expected = _content_length(response)
        self._deadline = time.monotonic() + options.total_timeout
        self._stop = stop
        self._seen = 0

    def read(self, size: int = -1) -> bytes:
        if self._stop.is_set():
            raise Cancelled("stopped")
        if time.monotonic() > self._deadline:
            raise StreamError("response too slow (total timeout)", transient=True)
        try:
            chunk = self._response.read1(_CHUNK if size is None or size < 0 else size)
        except (OSError, http.client.HTTPException) as error:
            raise StreamError(f"response broke off ({type(error).__name__}: {error})", transient=True) from None
        self._seen += len(chunk)
        if self._seen > self._max:
            raise StreamError(f"response is over the {self._max}-byte limit", transient=False)
        if not chunk and size != 0 and self._expected is not None and self._seen < self._expected:
            raise StreamError(f"truncated body ({self._seen} of {self._expected} bytes)", transient=True)
        return chunk

    def close(self) -> None:
        self._response.close()


class _SameOriginRedirects(urllib.request.HTTPRedirectHandler):
    def __init__(self, origin: tuple[str, str, int]) -> None:
        self._allowed = origin

    def redirect_request(self, req, fp, code, msg, headers, newurl):  # type: ignore[no-untyped-def]
        if _origin(newurl) != self._allowed:
            raise urllib.error.URLError(Refused(f"refused redirect to {newurl[:200]!r}: another host"))
        return super().redirect_request(req, fp, code, msg, headers, newurl)


def _origin(url: str) -> tuple[str, str, int]:
    parts = urlsplit(url)
    try:
        port = parts.port
    except ValueError:
        port = -1
    scheme = parts.scheme.lower()
    return scheme, (parts.hostname or "").lower(), port or (443 if scheme == "https" else 80)


def _content_length(response: Any) -> int | None:
    value = response.headers.get("Content-Length")
    try:
        return int(value) if value is not None else None
    except ValueError:
        return None


def _retry_after(value: str | None) -> float | None:
    """Seconds to wait from a ``Retry-After`` header (seconds or an HTTP date); None when absent or unusable."""
    if not value:
        return None
    try:
        return max(0.0, float(value))
    except ValueError:
        pass
    try:
        when = email.utils.parsedate_to_datetime(value)
    except (TypeError, ValueError):
        return None
    return max(0.0, when.timestamp() - time.time())


def _short(url: str) -> str:
    return url if len(url) <= 160 else url[:157] + "..."
