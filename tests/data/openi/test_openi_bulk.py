"""`xvision fetch openi --bulk`: the same folder from the report and PNG tarballs, streamed."""

from __future__ import annotations

import io
import json
import tarfile
from collections.abc import Callable
from pathlib import Path

import pytest
from fake_openi import FakeOpenI, png_tarball, synthetic_png

from xvision.cli.main import main
from xvision.data.openi import ClientOptions, fetch_openi_bulk, read_records, read_reports_without_images
from xvision.errors import FetchError

FAST = ClientOptions(timeout=0.5, retries=3, backoff=0.01, rate=0)
IMAGELESS = b'<eCitation><uId id="CXR99999"/><MeSH><major>normal</major></MeSH></eCitation>'


def _add(archive: tarfile.TarFile, name: str, data: bytes) -> None:
    info = tarfile.TarInfo(name)
    info.size = len(data)
    archive.addfile(info, io.BytesIO(data))


@pytest.fixture(scope="module")
def archives(reports_tgz: Path, tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, Path, list[str]]:
    """A reports tarball (30 real reports, one without images, one broken) and a PNG tarball for its images,
    less one image, with one corrupt image and some members that match no report."""
    folder = tmp_path_factory.mktemp("bulk")
    wanted = {f"ecgen-radiology/{n}.xml" for n in range(1, 31)}
    reports = folder / "NLMCXR_reports.tgz"
    with tarfile.open(reports_tgz, "r|gz") as source, tarfile.open(reports, "w:gz") as target:
        for member in source:
            if member.name in wanted:
                _add(target, member.name, source.extractfile(member).read())
        _add(target, "ecgen-radiology/99999.xml", IMAGELESS)
        _add(target, "ecgen-radiology/broken.xml", b"<eCitation><uId")
    image_ids = [r.image_id for r in _records_of(reports)]
    images = folder / "NLMCXR_png.tgz"
    with tarfile.open(images, "w:gz") as target:
        _add(target, "../../evil.png", synthetic_png("evil"))
        for image_id in image_ids[1:]:
            data = b"\x89PNG\r\n\x1a\n broken" if image_id == image_ids[2] else synthetic_png(image_id, size=16)
            _add(target, f"{image_id}.png", data)
    return reports, images, image_ids


def _records_of(reports: Path) -> list:
    from xvision.data.openi.records import records_from_report_xml

    records = []
    with tarfile.open(reports, "r|gz") as archive:
        for member in archive:
            try:
                records.extend(records_from_report_xml(archive.extractfile(member).read())[1])
            except FetchError:
                pass
    return records


def test_bulk_from_local_tarballs(archives: tuple[Path, Path, list[str]], tmp_path: Path) -> None:
    reports, images, ids = archives
    summary = fetch_openi_bulk(tmp_path / "out", reports=reports, images=images, progress=False)
    failures = {(f.kind, f.key): f.reason for f in summary.failures}
    assert failures.keys() == {("report", "ecgen-radiology/broken.xml"), ("image", ids[0]), ("image", ids[2])}
    assert failures[("image", ids[0])] == "not in the image archive"
    assert summary.retryable == []
    every = read_records(tmp_path / "out")
    records = [r for r in every if r.file]
    assert sorted(r.image_id for r in records) == sorted(ids[1:2] + ids[3:])
    # The two without a stored image keep their report, as a reports-only run leaves them (file null).
    assert sorted(r.image_id for r in every if r.file is None) == sorted([ids[0], ids[2]])
    assert failures[("image", ids[2])].startswith("corrupt image header")  # no temporary .part path
    for record in records:
        assert (tmp_path / "out" / record.file).read_bytes() == synthetic_png(record.image_id, size=16)
        assert record.source == "bulk" and record.url.endswith(f"#{record.image_id}.png")
    assert [r.uid for r in read_reports_without_images(tmp_path / "out")] == ["CXR99999"]
    assert sorted(p.name for p in tmp_path.rglob("*") if p.is_file() and "out" not in p.parts) == []

    again = fetch_openi_bulk(tmp_path / "out", reports=reports, images=images, progress=False)
    assert again.downloaded == 0 and again.already == len(records)
    assert len((tmp_path / "out" / "records.jsonl").read_text().splitlines()) == len(every) == len(ids)


def test_reports_only_then_images_gives_no_duplicates(
    archives: tuple[Path, Path, list[str]], tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    reports, images, ids = archives
    out = tmp_path / "out"
    assert main(["fetch", "openi", "--bulk", "--reports", str(reports), "-o", str(out), "--no-progress"]) == 0
    lines = [json.loads(line) for line in (out / "records.jsonl").read_text().splitlines()]
    assert len(lines) == len(ids) and all(line["file"] is None for line in lines)
    capsys.readouterr()
    args = ["fetch", "openi", "--bulk", "--reports", str(reports), "--images", str(images), "-o", str(out)]
    assert main([*args, "--no-progress"]) == 0
    printed = capsys.readouterr().out
    assert f"holds {len(ids)} records, 2 of them reports whose image is not stored" in printed
    lines = [json.loads(line) for line in (out / "records.jsonl").read_text().splitlines()]
    assert len(lines) == len({line["image_id"] for line in lines}) == len(ids)  # no record lost, none twice
    assert sum(line["file"] is None for line in lines) == 2  # the image missing from the archive, the corrupt one


def test_bulk_over_http_starts_a_broken_download_over(
    archives: tuple[Path, Path, list[str]], serve: Callable[..., FakeOpenI], tmp_path: Path
) -> None:
    reports, _, ids = archives
    files = {"/imgs/collections/NLMCXR_reports.tgz": reports, "/imgs/collections/NLMCXR_png.tgz": png_tarball(ids)}
    server = serve([], files=files)
    server.inject("truncate", match="NLMCXR_png.tgz")
    server.inject("503", match="NLMCXR_reports.tgz")
    out = tmp_path / "out"
    summary = fetch_openi_bulk(
        out,
        reports=f"{server.base_url}/imgs/collections/NLMCXR_reports.tgz",
        images=f"{server.base_url}/imgs/collections/NLMCXR_png.tgz",
        client_options=FAST,
        progress=False,
    )
    assert [f.kind for f in summary.failures] == ["report"]  # only the broken XML
    assert sorted(r.image_id for r in read_records(out)) == sorted(ids)
    assert [e.fault for e in server.requests("/imgs/collections/NLMCXR_png")] == ["truncate", None]


def test_bulk_defaults_to_the_open_i_urls(
    archives: tuple[Path, Path, list[str]], serve: Callable[..., FakeOpenI], tmp_path: Path
) -> None:
    reports, _, ids = archives
    files = {"/imgs/collections/NLMCXR_reports.tgz": reports, "/imgs/collections/NLMCXR_png.tgz": png_tarball(ids)}
    server = serve([], files=files)
    args = ["fetch", "openi", "--bulk", "-o", str(tmp_path / "out"), "--base-url", server.base_url, "--no-progress"]
    assert main(args) == 0  # the broken report XML is listed, but another run would not fix it
    assert len(read_records(tmp_path / "out")) == len(ids)


def test_a_missing_archive_is_a_one_line_error(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    args = ["fetch", "openi", "--bulk", "--reports", str(tmp_path / "nope.tgz"), "-o", str(tmp_path / "out")]
    assert main(args) == 2
    assert "nope.tgz: file not found" in capsys.readouterr().err
