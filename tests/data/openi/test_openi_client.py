"""The HTTP client against the stand-in server: retries, Retry-After, timeouts, size bounds, host checks."""

from __future__ import annotations

import hashlib
import io
import logging
import time
from collections.abc import Callable

import pytest
from fake_openi import FakeOpenI, synthetic_png

from xvision.data.openi.client import ClientOptions, HttpClient, StreamError
from xvision.errors import FetchError

FAST = ClientOptions(timeout=0.3, total_timeout=5.0, retries=3, backoff=0.01, backoff_max=0.05, rate=0)
ITEMS = [{"uid": "CXR1", "imgLarge": "/imgs/512/CXR1_IM-1.png", "image": {"id": "CXR1_IM-1"}}]


@pytest.fixture
def server(serve: Callable[..., FakeOpenI]) -> FakeOpenI:
    return serve(ITEMS, stall_seconds=2.0)


def _search(server: FakeOpenI, options: ClientOptions = FAST) -> dict:
    return HttpClient(server.base_url, options).get_json("/api/search", {"m": 1, "n": 10, "coll": "cxr"})


def test_a_plain_search_names_xvision_in_the_user_agent(server: FakeOpenI) -> None:
    page = _search(server)
    assert page["total"] == 1 and page["list"][0]["uid"] == "CXR1"
    assert "xvision" in server.requests()[0].user_agent


def test_429_waits_for_retry_after(server: FakeOpenI) -> None:
    server.inject("429")
    assert _search(server)["total"] == 1
    first, second = server.requests("/api/search")
    assert first.fault == "429" and second.fault is None
    assert second.time - first.time >= 0.9  # Retry-After: 1, although the backoff alone is < 0.05 s


@pytest.mark.parametrize("fault", ["500", "503", "stall", "stall_body", "truncate", "malformed", "drop"])
def test_transient_faults_are_retried(server: FakeOpenI, fault: str) -> None:
    server.inject(fault, times=2)
    assert _search(server)["total"] == 1
    assert [entry.fault for entry in server.requests()] == [fault, fault, None]


def test_gives_up_after_the_retries_with_the_reason(server: FakeOpenI) -> None:
    server.inject("503", times=10)
    with pytest.raises(FetchError, match=r"HTTP 503 \(gave up after 4 attempts\)"):
        _search(server)
    assert len(server.requests()) == 4


def test_a_stalled_response_fails_after_the_timeout_not_the_stall(server: FakeOpenI, caplog) -> None:
    server.inject("stall", times=10)
    options = ClientOptions(timeout=0.2, retries=1, backoff=0.01, rate=0)
    start = time.monotonic()
    with caplog.at_level(logging.WARNING, logger="xvision.data.openi.client"):
        with pytest.raises(FetchError, match=r"no answer within 0.2 s \(gave up after 2 attempts\)"):
            _search(server, options)
    assert time.monotonic() - start < 1.5  # two attempts of 0.2 s, not two stalls of 2 s
    # The wait is visible while it lasts: a silent service printed nothing for minutes.
    assert "no answer within 0.2 s; trying again in 0 s (attempt 2 of 2)" in caplog.text


def test_an_unknown_host_says_so_instead_of_connection_failed() -> None:
    options = ClientOptions(timeout=5.0, retries=0, rate=0)
    with pytest.raises(
        FetchError,
        match=r"cannot resolve the host no-such-host.invalid \(offline, or a wrong "
        r"--base-url\?\) \(gave up after 1 attempt\)$",
    ):
        HttpClient("http://no-such-host.invalid", options).get_json("/api/search")


def test_a_trickling_body_is_cut_by_the_total_timeout(server: FakeOpenI) -> None:
    server.inject("trickle", times=10)
    options = ClientOptions(timeout=5.0, total_timeout=0.3, retries=0, rate=0)
    start = time.monotonic()
    with pytest.raises(FetchError, match="too slow"):
        _search(server, options)
    assert time.monotonic() - start < 1.0


def test_client_errors_are_not_retried(server: FakeOpenI) -> None:
    client = HttpClient(server.base_url, FAST)
    with pytest.raises(FetchError, match="HTTP 404"):
        client.download("/imgs/512/nothing-here.png", io.BytesIO())
    assert len(server.requests()) == 1


def test_download_hashes_and_verifies(server: FakeOpenI) -> None:
    handle = io.BytesIO()
    calls = []
    digest = HttpClient(server.base_url, FAST).download(
        "/imgs/512/CXR1_IM-1.png", handle, verify=lambda: calls.append(handle.getvalue())
    )
    assert handle.getvalue() == synthetic_png("CXR1_IM-1") == calls[0]
    assert digest == hashlib.sha256(synthetic_png("CXR1_IM-1")).hexdigest()


def test_a_download_that_fails_verification_is_fetched_again(server: FakeOpenI) -> None:
    server.inject("malformed", match="/imgs/")
    handle = io.BytesIO()

    def verify() -> None:
        if not handle.getvalue().startswith(b"\x89PNG"):
            raise ValueError("not a PNG")

    HttpClient(server.base_url, FAST).download("/imgs/512/CXR1_IM-1.png", handle, verify=verify)
    assert handle.getvalue() == synthetic_png("CXR1_IM-1")
    assert [entry.fault for entry in server.requests()] == ["malformed", None]


@pytest.mark.parametrize(
    "url",
    ["http://elsewhere.invalid/x.png", "//elsewhere.invalid/x.png", "https://127.0.0.1/x.png", "ftp://127.0.0.1/x"],
)
def test_urls_off_the_base_host_are_refused_without_a_request(server: FakeOpenI, url: str) -> None:
    with pytest.raises(FetchError, match="not on the base URL's host"):
        HttpClient(server.base_url, FAST).download(url, io.BytesIO())
    assert server.requests() == []


def test_a_redirect_to_another_host_is_refused(server: FakeOpenI) -> None:
    server.inject("redirect", match="/imgs/")
    with pytest.raises(FetchError, match="refused redirect"):
        HttpClient(server.base_url, FAST).download("/imgs/512/CXR1_IM-1.png", io.BytesIO())


def test_responses_over_the_size_bound_are_refused(server: FakeOpenI) -> None:
    options = ClientOptions(max_json_bytes=50, max_image_bytes=100, rate=0, retries=3, backoff=0.01)
    with pytest.raises(FetchError, match="over the 50-byte limit"):
        _search(server, options)
    with pytest.raises(FetchError, match="over the 100-byte limit"):
        HttpClient(server.base_url, options).download("/imgs/512/CXR1_IM-1.png", io.BytesIO())
    assert len(server.requests()) == 2  # a size refusal is not retried


def test_the_rate_limit_spaces_requests(server: FakeOpenI) -> None:
    client = HttpClient(server.base_url, ClientOptions(rate=20, retries=0))
    for _ in range(5):
        client.get_json("/api/search", {"m": 1, "n": 1})
    times = [entry.time for entry in server.requests()]
    assert times[-1] - times[0] >= 4 * 0.05 * 0.9


def test_a_stream_reports_a_cut_off_body(server: FakeOpenI) -> None:
    server.files["/imgs/collections/big.bin"] = b"x" * 100_000
    server.inject("truncate", match="big.bin")
    stream = HttpClient(server.base_url, FAST).open_stream("/imgs/collections/big.bin", max_bytes=1 << 20)
    with pytest.raises(StreamError, match="truncated"):
        while stream.read(8192):
            pass
    stream.close()


def test_base_url_must_be_http() -> None:
    with pytest.raises(FetchError, match="not an http"):
        HttpClient("file:///etc")
