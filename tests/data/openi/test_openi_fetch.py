"""`xvision fetch openi` against the stand-in: faults, hostile data, resume, and a kill part-way."""

from __future__ import annotations

import functools
import hashlib
import json
import multiprocessing
import os
import signal
import time
from collections.abc import Callable
from pathlib import Path

import pytest
from fake_openi import TRANSIENT_FAULTS, FakeOpenI, image_id_of, synthetic_png

from xvision.cli.main import main
from xvision.data.openi import ClientOptions, SearchOptions, fetch_openi, read_records
from xvision.io import load_image

FAST = ClientOptions(timeout=0.3, total_timeout=5.0, retries=4, backoff=0.01, backoff_max=0.05, rate=0)
FAST_ARGS = ["--timeout", "0.3", "--retries", "4", "--rate", "0", "--no-progress"]


@pytest.fixture(autouse=True)
def _quick_cli_backoff(monkeypatch: pytest.MonkeyPatch) -> None:
    """The CLI's backoff base is 1 s; keep retries in these tests to milliseconds."""
    monkeypatch.setattr("xvision.cli.fetch_cmd.ClientOptions", functools.partial(ClientOptions, backoff=0.01))


def _fetch(server: FakeOpenI, out: Path, **search: object) -> object:
    options = SearchOptions(page_size=search.pop("page_size", 20), **search)  # type: ignore[arg-type]
    return fetch_openi(out, base_url=server.base_url, search=options, client_options=FAST, progress=False)


def assert_matches_server(out: Path, server: FakeOpenI, expected_ids: list[str] | None = None) -> None:
    """Nothing missing, duplicated, corrupt, or outside ``out``."""
    lines = [json.loads(line) for line in (out / "records.jsonl").read_text().splitlines()]
    ids = [line["image_id"] for line in lines]
    assert len(ids) == len(set(ids)), "duplicate records"
    assert sorted(ids) == sorted(expected_ids if expected_ids is not None else server.image_ids())
    for line in lines:
        path = (out / line["file"]).resolve()
        assert path.parent == (out / "images").resolve()
        data = path.read_bytes()
        assert hashlib.sha256(data).hexdigest() == line["sha256"]
        assert data == synthetic_png(Path(line["url"]).stem), "not the bytes the server holds"
        load_image(path)
    stored = sorted(p.name for p in (out / "images").iterdir())
    assert stored == sorted(Path(line["file"]).name for line in lines), "stray or partial files"


@pytest.fixture
def items(first_items: list[dict]) -> list[dict]:
    """The images of the first 40 reports (about 80 images), normal and abnormal."""
    uids = set(list(dict.fromkeys(item["uid"] for item in first_items))[:40])
    return [item for item in first_items if item["uid"] in uids]


def test_fetch_with_every_kind_of_fault(serve: Callable[..., FakeOpenI], items: list[dict], tmp_path: Path) -> None:
    server = serve(items, stall_seconds=1.0, retry_after="0")
    for number, kind in enumerate(TRANSIENT_FAULTS):
        server.inject(kind, match=f"m={1 + 20 * (number % 4)}&")  # every page meets two faults
        server.inject(kind, match=server.image_ids()[number * 3])
    server.chaos(0.1, seed=3)
    summary = _fetch(server, tmp_path / "out")
    assert summary.failures == []
    assert summary.downloaded == len(items) and summary.total == len(items)
    assert_matches_server(tmp_path / "out", server)
    faults = {entry.fault for entry in server.requests()}
    assert set(TRANSIENT_FAULTS) <= faults
    assert not (tmp_path / "out" / "failures.jsonl").exists()
    record = next(r for r in read_records(tmp_path / "out") if r.image_id == "CXR1_1_IM-0001-3001")
    assert record.uid == "CXR1" and record.mesh_major == ["normal"] and record.license == "byncnd"
    assert record.findings and record.impression and record.caption and record.source == "api"


def test_rerun_downloads_nothing_and_adds_no_record(
    serve: Callable[..., FakeOpenI], items: list[dict], tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    server = serve(items)
    args = ["fetch", "openi", "-o", str(tmp_path / "out"), "--base-url", server.base_url, *FAST_ARGS]
    assert main(args) == 0
    assert f"{len(items)} of {len(items)} results stored ({len(items)} new" in capsys.readouterr().out
    before = len(server.requests("/imgs/"))
    assert main(args) == 0
    assert f"(0 new, {len(items)} already there); {tmp_path / 'out' / 'records.jsonl'} holds {len(items)} records" in (
        capsys.readouterr().out
    )
    assert len(server.requests("/imgs/")) == before
    assert_matches_server(tmp_path / "out", server)


def test_limit_and_pages(serve: Callable[..., FakeOpenI], items: list[dict], tmp_path: Path) -> None:
    server = serve(items, page_cap=7)  # the service returns fewer results than asked
    summary = _fetch(server, tmp_path / "out", limit=25)
    assert summary.downloaded == 25
    assert_matches_server(tmp_path / "out", server, server.image_ids()[:25])


def test_failures_are_recorded_and_retried_on_the_next_run(
    serve: Callable[..., FakeOpenI], items: list[dict], tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    server = serve(items)
    victim, other = server.image_ids()[5:7]
    for image_id in (victim, other):
        server.inject("503", match=image_id, times=5)  # more than one run's 1 + 4 attempts
    server.inject("500", match="m=21&", times=5)  # the second page, every attempt
    args = ["fetch", "openi", "-o", str(tmp_path / "out"), "--base-url", server.base_url, "--page-size", "20"]
    assert main([*args, *FAST_ARGS]) == 1
    err = capsys.readouterr().err
    assert "run the same command again to retry them" in err
    # One cause over two URLs counts as one: the summary names the cause, not the first URL's message.
    assert "3 failed; run the same command again to retry them (2 images, 1 page); most often (2): HTTP 503" in err
    failures = [json.loads(line) for line in (tmp_path / "out" / "failures.jsonl").read_text().splitlines()]
    assert {(f["kind"], f["key"], f["retry"]) for f in failures} == {
        ("image", victim, True),
        ("image", other, True),
        ("page", "21-40", True),
    }
    assert "m=21" in next(f["url"] for f in failures if f["kind"] == "page")  # where the lost page was asked
    assert not {victim, other} & {r.image_id for r in read_records(tmp_path / "out")}

    assert main([*args, *FAST_ARGS]) == 0
    assert not (tmp_path / "out" / "failures.jsonl").exists()
    assert_matches_server(tmp_path / "out", server)


def test_an_image_that_never_decodes_is_failed_with_its_reason_not_a_temporary_name(
    serve: Callable[..., FakeOpenI], items: list[dict], tmp_path: Path
) -> None:
    server = serve(items[:6])
    victim = server.image_ids()[2]
    server.inject("malformed", match=victim, times=10)  # an HTML page where the image should be, every time
    summary = _fetch(server, tmp_path / "out")
    [failure] = summary.failures
    assert failure.key == victim and "downloaded file is not a readable image (not a supported image" in failure.reason
    assert ".part" not in failure.reason and str(tmp_path) not in failure.reason


def test_hostile_items_never_write_outside_the_folder(
    serve: Callable[..., FakeOpenI], items: list[dict], tmp_path: Path
) -> None:
    good = items[:4]
    hostile = [
        {**good[0], "uid": "CXR9001", "image": {"id": "../../x", "caption": ""}, "imgLarge": "/imgs/512/evil1.png"},
        {**good[0], "uid": "CXR9002", "image": {"id": "/tmp/abs", "caption": ""}, "imgLarge": "/imgs/512/evil2.png"},
        {**good[0], "uid": "CXR9003", "image": {"id": "F1"}, "imgLarge": "http://elsewhere.invalid/x.png"},
        {**good[0], "uid": "CXR9004", "image": {"id": "F1"}, "imgLarge": "//elsewhere.invalid/y.png"},
        {**good[0], "uid": None},
        "not an item",
        {**good[0], "uid": "CXR9005", "image": {"id": "CXR9005_IM"}, "imgLarge": None},
        {**good[1], "image": {"id": image_id_of(good[0])}},  # another image claiming good[0]'s id
        good[2],  # the same result twice
    ]
    server = serve([*good, *hostile])
    out = tmp_path / "deep" / "out"
    summary = _fetch(server, out)
    assert summary.downloaded == 6
    records = {r.image_id: r for r in read_records(out)}
    assert records["../../x"].file.startswith("images/x-")
    assert records["/tmp/abs"].file.startswith("images/tmp_abs-")
    reasons = {f.key: f.reason for f in summary.failures}
    assert set(reasons) == {"x", "y", "result 9", "result 10", "result 11", "result 12"}
    assert "also names another result's image" in reasons["result 12"]
    assert summary.retryable == []  # none of these would succeed on another run
    assert sum("not on the base URL's host" in reason for reason in reasons.values()) == 2
    # Nothing anywhere under tmp_path but the output folder's own files.
    written = {p.relative_to(tmp_path).as_posix() for p in tmp_path.rglob("*") if p.is_file()}
    assert all(name.startswith("deep/out/") for name in written)
    assert not (tmp_path / "x").exists() and not Path("/tmp/abs").exists()
    assert all(entry.path.startswith(("/api/search", "/imgs/512/")) for entry in server.requests())


def test_query_error_is_a_one_line_error(
    serve: Callable[..., FakeOpenI], items: list[dict], tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    server = serve(items)
    args = ["fetch", "openi", "-o", str(tmp_path), "--base-url", server.base_url, "--image-type", "bogus"]
    assert main([*args, *FAST_ARGS]) == 2
    err = capsys.readouterr().err.strip()
    assert err.startswith("Error: Open-i rejected the query: Invalid image type: bogus") and "\n" not in err


def test_a_wrong_base_url_is_a_one_line_error_not_a_retry(
    serve: Callable[..., FakeOpenI], items: list[dict], tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    server = serve(items)  # the stand-in answers 404 under /api/api/...: a base URL given with its path
    args = ["fetch", "openi", "-o", str(tmp_path / "f"), "--base-url", server.base_url + "/api"]
    assert main([*args, *FAST_ARGS]) == 2
    err = capsys.readouterr().err.strip()
    assert "HTTP 404" in err and "--base-url" in err and "\n" not in err
    assert not (tmp_path / "f" / "failures.jsonl").exists()  # nothing a rerun could retry


def test_query_and_collection_are_sent(serve: Callable[..., FakeOpenI], items: list[dict], tmp_path: Path) -> None:
    server = serve(items)
    summary = _fetch(server, tmp_path / "out", query="cardiomegaly", image_type="x")
    expected = [image_id_of(item) for item in items if "cardiomegaly" in json.dumps(item).lower()]
    assert 0 < summary.downloaded == len(expected) < len(items)
    assert_matches_server(tmp_path / "out", server, expected)
    target = server.requests("/api/search")[0].target
    assert "query=cardiomegaly" in target and "coll=cxr" in target and "it=x" in target and "m=1&n=20" in target


def test_a_crashed_run_is_repaired(serve: Callable[..., FakeOpenI], items: list[dict], tmp_path: Path) -> None:
    """What a kill can leave: a half line, a .part file, an image without record, a record without image."""
    server = serve(items)
    out = tmp_path / "out"
    _fetch(server, out, limit=10)
    lines = (out / "records.jsonl").read_text().splitlines()
    records = [json.loads(line) for line in lines]
    (out / records[0]["file"]).unlink()  # record whose image is gone
    (out / records[1]["file"]).write_bytes(b"\x89PNG garbage")  # record whose image changed
    kept = lines[:8]  # records[8] and [9]: images renamed in place, records never written
    (out / "records.jsonl").write_text("\n".join(kept) + '\n{"uid": "CXR3", "image_id": "CX')
    (out / "images" / ".CXR99.png.abcd.part").write_bytes(b"half")
    summary = _fetch(server, out)
    assert summary.already == 6 and summary.downloaded == len(items) - 6
    assert_matches_server(out, server)


def _run_cli(args: list[str]) -> None:
    os._exit(main(args))


def test_kill_part_way_then_resume(serve: Callable[..., FakeOpenI], first_items: list[dict], tmp_path: Path) -> None:
    """A separate `xvision fetch openi` process killed with SIGKILL mid-run, then run again to completion.

    The process is forked from this one (the CLI is already imported, so it starts in milliseconds).
    """
    server = serve(first_items, image_delay=0.03, retry_after="0")
    server.chaos(0.1, seed=5, kinds=("429", "500", "503", "truncate", "malformed", "drop"))
    out = tmp_path / "out"
    args = ["fetch", "openi", "-o", str(out), "--base-url", server.base_url, "--workers", "3", *FAST_ARGS]
    process = multiprocessing.get_context("fork").Process(target=_run_cli, args=(args,))
    process.start()
    try:
        deadline = time.monotonic() + 60
        records = out / "records.jsonl"
        while time.monotonic() < deadline and process.is_alive():
            if records.exists() and records.read_bytes().count(b"\n") >= 40:
                break
            time.sleep(0.02)
        assert process.is_alive(), "the fetch ended before it could be killed"
        os.kill(process.pid, signal.SIGKILL)
        process.join(timeout=30)
    finally:
        if process.is_alive():
            process.kill()
    assert process.exitcode == -signal.SIGKILL
    assert 40 <= records.read_bytes().count(b"\n") < len(first_items)

    assert main(args) == 0
    assert_matches_server(out, server)


def test_unusable_results_are_listed_but_do_not_fail_the_command(
    serve: Callable[..., FakeOpenI], items: list[dict], tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    offsite = {**items[0], "uid": "CXR9003", "image": {"id": "F1"}, "imgLarge": "http://elsewhere.invalid/x.png"}
    server = serve([*items[:3], offsite])
    args = ["fetch", "openi", "-o", str(tmp_path / "out"), "--base-url", server.base_url, *FAST_ARGS]
    assert main(args) == 0
    err = capsys.readouterr().err
    unusable = "1 skipped as unusable (another run from the same source will not change that) (1 image)"
    assert f"{unusable}; most often (1): refused" in err
    assert json.loads((tmp_path / "out" / "failures.jsonl").read_text())["retry"] is False
