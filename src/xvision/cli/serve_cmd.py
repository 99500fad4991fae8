"""``xvision serve``: predictions of a run folder over HTTP (see xvision.inference.server)."""

from __future__ import annotations

import logging
from pathlib import Path

import click

from xvision.cli.options import run_weights_option
from xvision.errors import XvisionError
from xvision.inference.server import (
    DEFAULT_MAX_REQUEST_MB,
    DEFAULT_MAX_UPLOAD_MB,
    create_app,
    require_server_packages,
)


@click.command("serve")
@click.argument("run_dir", type=click.Path(file_okay=False, path_type=Path))
@click.option("--host", default="127.0.0.1", show_default=True, help="Address to bind; 0.0.0.0 exposes it.")
@click.option("--port", default=8000, show_default=True, type=click.IntRange(1, 65535))
@run_weights_option
@click.option(
    "--max-upload-mb", default=DEFAULT_MAX_UPLOAD_MB, show_default=True, type=click.IntRange(1), help="Largest file."
)
@click.option(
    "--max-request-mb",
    default=DEFAULT_MAX_REQUEST_MB,
    show_default=True,
    type=click.IntRange(1),
    help="Largest request, all files together (refused as it arrives, before it fills the disk).",
)
def serve(run_dir: Path, host: str, port: int, weights: str | None, max_upload_mb: int, max_request_mb: int) -> None:
    """Serve RUN_DIR's predictions over HTTP: POST /predict and /heatmap, GET /model and /health.

    POST /predict takes images in the multipart field `files` and answers the records of
    `xvision predict --json`; POST /heatmap takes one in `file` and answers its Grad-CAM overlay (PNG).
    There is no authentication: the default address is reachable from this machine only. Interactive API
    docs at http://HOST:PORT/docs.
    """
    if max_upload_mb > max_request_mb:  # every upload over the request limit would be refused as a request
        raise click.UsageError(
            f"--max-upload-mb {max_upload_mb} is more than --max-request-mb {max_request_mb}, which holds all files"
        )
    require_server_packages()
    import uvicorn

    _check_address(host, port)  # before seconds of loading the run
    # A bad run fails here, before binding.
    app = create_app(run_dir, weights=weights, max_upload_mb=max_upload_mb, max_request_mb=max_request_mb)
    if host not in ("127.0.0.1", "localhost", "::1"):
        logging.getLogger(__name__).warning(
            "listening on %s: anyone who can reach this address can send images and read predictions "
            "(there is no authentication); put an authenticating proxy in front for other users",
            host,
        )
    click.echo(f"serving {run_dir} on http://{host}:{port} (API docs: /docs); Ctrl-C stops", err=True)
    uvicorn.run(app, host=host, port=port, log_level="info")


def _check_address(host: str, port: int) -> None:
    """Refuse, in one line, an address this machine cannot listen on (taken port, unknown host)."""
    import socket

    try:
        infos = socket.getaddrinfo(host, port, type=socket.SOCK_STREAM, flags=socket.AI_PASSIVE)
        family, kind, proto, _, address = infos[0]
        with socket.socket(family, kind, proto) as probe:
            probe.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)  # as uvicorn binds
            probe.bind(address)
    except OSError as error:
        reason = error.strerror or str(error)
        raise XvisionError(f"cannot listen on {host}:{port}: {reason}; choose another --port or --host") from None
