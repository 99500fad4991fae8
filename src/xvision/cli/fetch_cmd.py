"""``xvision fetch openi``: download the Open-i chest X-ray collection (search API or bulk tarballs)."""

from __future__ import annotations

import re
from collections import Counter
from pathlib import Path

import click

from xvision.data.openi import (
    DEFAULT_BASE_URL,
    FAILURES_FILE,
    RECORDS_FILE,
    ClientOptions,
    FetchSummary,
    SearchOptions,
    fetch_openi,
    fetch_openi_bulk,
    read_records,
)

_COLLECTIONS = "/imgs/collections"


@click.group("fetch")
def fetch() -> None:
    """Download a public chest X-ray collection into a folder (next step: `xvision label`)."""


@fetch.command("openi")
@click.option("-o", "--output", required=True, type=click.Path(file_okay=False, path_type=Path), help="Output folder.")
@click.option("--query", help="Free-text search query (default: everything in the collection).")
@click.option(
    "--collection",
    default="cxr",
    show_default=True,
    type=click.Choice(["cxr", "pmc", "usc", "hmd", "mpx"], case_sensitive=False),
    help="Open-i collection (cxr: Indiana University chest X-rays).",
)
@click.option("--image-type", help="Open-i image type, e.g. x (X-ray); xg, xm exclude graphics / multipanel.")
@click.option("--limit", type=click.IntRange(min=1), help="Fetch only the first N search results.")
@click.option("--base-url", default=DEFAULT_BASE_URL, show_default=True, help="Service root; images must be on it.")
@click.option("--bulk", is_flag=True, help="Read the bulk tarballs instead of the search API (see --reports).")
@click.option(
    "--reports",
    help="With --bulk: NLMCXR_reports.tgz, a path or URL  [default: BASE_URL/imgs/collections/NLMCXR_reports.tgz].",
)
@click.option(
    "--images",
    help="With --bulk: NLMCXR_png.tgz, a path or URL  [default: the archive under --base-url, unless only "
    "--reports is given: then records are written without images].",
)
@click.option(
    "--workers",
    type=click.IntRange(1, 16),
    default=SearchOptions.workers,
    show_default=True,
    help="Parallel image downloads.",
)
@click.option(
    "--rate",
    type=click.FloatRange(min=0),
    default=ClientOptions.rate,
    show_default=True,
    help="Most requests/second (0: no limit).",
)
@click.option(
    "--timeout",
    type=click.FloatRange(min=0.01),
    default=ClientOptions.timeout,
    show_default=True,
    help="Seconds per read.",
)
@click.option(
    "--retries",
    type=click.IntRange(min=0),
    default=ClientOptions.retries,
    show_default=True,
    help="Retries per request.",
)
@click.option(
    "--page-size",
    type=click.IntRange(1, 500),
    default=SearchOptions.page_size,
    show_default=True,
    help="Results per page.",
)
@click.option("--progress/--no-progress", default=True, show_default=True, help="Show progress bars (stderr).")
def openi(
    output: Path,
    query: str | None,
    collection: str,
    image_type: str | None,
    limit: int | None,
    base_url: str,
    bulk: bool,
    reports: str | None,
    images: str | None,
    workers: int,
    rate: float,
    timeout: float,
    retries: int,
    page_size: int,
    progress: bool,
) -> None:
    """Download Open-i chest X-rays into OUTPUT: images/ plus records.jsonl (one line per image).

    Re-run the same command to resume: stored images are verified and skipped, failures are retried.
    """
    options = ClientOptions(timeout=timeout, retries=retries, rate=rate)
    if bulk:
        if query or limit:
            raise click.UsageError("--query and --limit apply to the search API, not to --bulk")
        if images and not reports:
            raise click.UsageError("--images needs --reports (the reports carry the labels)")
        if not reports:
            reports = f"{base_url.rstrip('/')}{_COLLECTIONS}/NLMCXR_reports.tgz"
            images = f"{base_url.rstrip('/')}{_COLLECTIONS}/NLMCXR_png.tgz"
        elif not images:
            click.echo("No --images given: writing records without images (reports only).", err=True)
        summary = fetch_openi_bulk(output, reports=reports, images=images, client_options=options, progress=progress)
    else:
        if reports or images:
            raise click.UsageError("--reports and --images need --bulk")
        search = SearchOptions(
            query=query, collection=collection, image_type=image_type, limit=limit, page_size=page_size, workers=workers
        )
        summary = fetch_openi(output, base_url=base_url, search=search, client_options=options, progress=progress)
    _report(summary, output)
    if summary.retryable:
        raise click.exceptions.Exit(1)


def _report(summary: FetchSummary, output: Path) -> None:
    total = f" of {summary.total}" if summary.total is not None else ""
    records = output / RECORDS_FILE
    held = read_records(output) if records.is_file() else []
    with_image = sum(1 for record in held if record.file)
    without = f", {len(held) - with_image} of them reports whose image is not stored" if with_image < len(held) else ""
    # The folder may also hold records of an earlier fetch with another query: say what the file holds in all.
    click.echo(
        f"{summary.stored}{total} results stored ({summary.downloaded} new, {summary.already} already there); "
        f"{records} holds {len(held)} records{without}"
    )
    for retry, failures in ((True, summary.retryable), (False, [f for f in summary.failures if not f.retry])):
        if not failures:
            continue
        kinds = Counter(failure.kind for failure in failures)
        listed = ", ".join(f"{n} {kind}{'s' if n > 1 else ''}" for kind, n in sorted(kinds.items()))
        reason, count = Counter(_cause(failure.reason) for failure in failures).most_common(1)[0]
        example = next(failure for failure in failures if _cause(failure.reason) == reason)
        what = (
            "failed; run the same command again to retry them"
            if retry
            else "skipped as unusable (another run from the same source will not change that)"
        )
        click.echo(
            f"{len(failures)} {what} ({listed}); most often ({count}): {reason}, e.g. {example.key}. "
            f"Listed in {output / FAILURES_FILE}.",
            err=True,
        )


def _cause(reason: str) -> str:
    """A failure's reason without the URL it starts with, so that one cause over many URLs counts as one."""
    return re.sub(r"^[a-z][a-z0-9+.-]*://\S+: ", "", reason)
