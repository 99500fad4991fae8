"""`xvision serve`: a small HTTP service around one run folder (optional: ``pip install "xvision[serve]"``).

- ``GET /health``: ``{"status": "ok"}`` once the run is loaded.
- ``GET /model``: what the run is: classes, positive class, threshold and the rule that chose it, backbone
  and its weights' identity, the shortcut audit's verdict, and the untrained-backbone warning where it applies.
- ``POST /predict``: multipart form, one or more files in the field ``files`` (PNG, JPEG, DICOM, TIFF, BMP).
  Answers ``{"predictions": [...]}``, one record per file in upload order, the same records as
  `xvision predict --json` (``path`` is the uploaded file's name). A file that cannot be read gets ``error``
  and the others are still predicted; when no file can be read the answer is 422 whose ``detail`` lists
  ``{"path": ..., "error": ...}`` for each file. A file
  over ``max_upload_mb`` is refused with 413 before anything is predicted, and so is a request body over
  ``max_request_mb`` (all files together) as soon as it passes that size.
- ``POST /heatmap``: one image in the field ``file``; answers a PNG: the image with the Grad-CAM of the
  positive class over it and the decision in its title (what `predict --heatmaps` draws), the decision also
  in the header ``X-Xvision-Predicted`` (URL-encoded).

Predictions go through :class:`~xvision.inference.predictor.Predictor`, as `predict` and the Python API do, so
the three give the same probabilities. One request is predicted at a time: a batch already uses every core.

There is no authentication and the default binds to 127.0.0.1 only; to expose it, put it behind a proxy
that authenticates. Uploads are written to a private temporary folder (the loader reads files) and deleted
when the request ends; their names are never used as paths.
"""

# No `from __future__ import annotations`: FastAPI reads the endpoints' annotations at definition time, and
# they name classes imported inside create_app (FastAPI is optional).
import tempfile
import threading
from pathlib import Path
from typing import Annotated, Any
from urllib.parse import quote

from xvision._version import __version__
from xvision.errors import XvisionError
from xvision.inference.predictor import Prediction, Predictor, prediction_record
from xvision.io import SUPPORTED_SUFFIXES
from xvision.io.loader import UNREAD_PICTURES

DEFAULT_MAX_UPLOAD_MB = 64  # a 4-megapixel 16-bit DICOM is about 8 MB
#: Largest request body, all files together. The multipart parser spools the whole body to disk before an
#: endpoint sees a file, so the per-file limit alone would let one request fill the disk first.
DEFAULT_MAX_REQUEST_MB = 256
_CHUNK = 1 << 20


def require_server_packages() -> None:
    """Raise a one-line error naming the extra to install when FastAPI, uvicorn or python-multipart is missing."""
    import importlib.util

    modules = {"fastapi": "fastapi", "uvicorn": "uvicorn", "multipart": "python-multipart"}  # module: package
    missing = [package for module, package in modules.items() if importlib.util.find_spec(module) is None]
    if missing:
        raise XvisionError(
            f'`xvision serve` needs {", ".join(missing)} (not installed): pip install "xvision[serve]" '
            '(in a source checkout: pip install -e ".[serve]")'
        )


def model_info(predictor: Predictor) -> dict[str, Any]:
    """``GET /model``: the run as a client needs to know it (no server paths)."""
    from xvision.evaluation.operating import describe_threshold
    from xvision.inference.bundle import model_sha256

    bundle = predictor.bundle
    audit = bundle.info.get("audit") or {}
    return {
        "classes": predictor.classes,
        "positive": predictor.positive,
        "threshold": {
            "value": predictor.threshold,
            "rule": describe_threshold(bundle.threshold_info, predictor.positive),
        },
        "recipe": bundle.info.get("recipe"),
        "backbone": bundle.backbone["name"],
        "weights": {k: bundle.backbone["weights"].get(k) for k in ("source", "name", "sha256", "pretrained")},
        "untrained_backbone": predictor.untrained_backbone,
        "warning": bundle.info.get("warning"),
        "audit": {k: audit.get(k) for k in ("status", "verdict", "auc")},
        "created": bundle.info.get("created"),
        "model_sha256": model_sha256(bundle.root),  # as evaluate's metrics.json names the model it scored
        "xvision": __version__,
    }


def create_app(
    run_dir: str | Path,
    *,
    weights: str | None = None,
    max_upload_mb: int = DEFAULT_MAX_UPLOAD_MB,
    max_request_mb: int = DEFAULT_MAX_REQUEST_MB,
):
    """A FastAPI application serving ``run_dir``. The run is loaded here, so a bad run folder fails at once
    (as an :class:`~xvision.errors.XvisionError`), not at the first request. A request body over
    ``max_request_mb`` is refused with 413 as it arrives: at once when its Content-Length says so, else as
    soon as that many bytes have come."""
    require_server_packages()
    from fastapi import FastAPI, File, HTTPException, Response, UploadFile

    predictor = Predictor(run_dir, weights=weights)
    info = model_info(predictor)
    lock = threading.Lock()
    app = FastAPI(title="Xvision", version=__version__, summary=f"Predictions of the run {Path(run_dir).name}")
    app.add_middleware(_BodyLimit, limit=max_request_mb * _CHUNK)

    @app.get("/health")
    def health() -> dict[str, str]:
        return {"status": "ok"}

    @app.get("/model")
    def model() -> dict[str, Any]:
        return info

    @app.post("/predict")
    def predict(files: Annotated[list[UploadFile], File(description="one or more images")]) -> dict[str, Any]:
        with tempfile.TemporaryDirectory(prefix="xvision-serve-") as folder:
            received = _receive(files, Path(folder), max_upload_mb)
            with lock:
                results = predictor.predict_paths([path for path, _ in received])
        by_path = {r.path: r for r in results}
        named = [_renamed(by_path[str(path)], name) for path, name in received]
        if all(r.error for r in named):
            # a list, one record per file, as FastAPI lists its own validation errors under "detail"
            raise HTTPException(422, [{"path": r.path, "error": r.error} for r in named])
        return {"predictions": [prediction_record(predictor, r) for r in named]}

    @app.post("/heatmap", response_class=Response, responses={200: {"content": {"image/png": {}}}})
    def heatmap(file: Annotated[list[UploadFile], File(description="one image")]) -> Response:
        from xvision.inference.heatmap import draw_evidence
        from xvision.io import load_image

        if len(file) != 1:  # a list, so that a second part is refused instead of silently dropped
            raise HTTPException(422, f"send one image in the field 'file' (got {len(file)}); /predict takes several")
        with tempfile.TemporaryDirectory(prefix="xvision-serve-") as folder:
            [(path, name)] = _receive(file, Path(folder), max_upload_mb)
            with lock:
                [result] = predictor.predict_paths([path])
                if result.error:
                    raise HTTPException(422, f"{name}: {result.error}")
                drawn = draw_evidence(predictor, load_image(path), result, Path(folder) / "heatmap.png", name=name)
            headers = {"X-Xvision-Predicted": quote(str(result.label))}  # headers are Latin-1: URL-encoded
            return Response(drawn.read_bytes(), media_type="image/png", headers=headers)

    return app


def _receive(files: list[Any], folder: Path, max_upload_mb: int) -> list[tuple[Path, str]]:
    """Copy uploads into ``folder`` as (path, the upload's own file name); 413 for one over the limit.

    Files are named by their position, keeping a known image suffix (a DICOM may be recognised by it alone, a
    WebP or GIF is named as such when refused);
    the uploaded name is only reported back, never used as a path."""
    from fastapi import HTTPException

    received = []
    for i, upload in enumerate(files):
        name = Path(upload.filename or "").name or f"file-{i + 1}"
        suffix = Path(name).suffix.lower()
        known = suffix in SUPPORTED_SUFFIXES or suffix in UNREAD_PICTURES  # the latter to be named when refused
        path = folder / f"{i:04d}{suffix if known else ''}"
        if not _save(upload, path, max_upload_mb * _CHUNK):
            raise HTTPException(413, f"{name}: larger than {max_upload_mb} MB; the limit is --max-upload-mb")
        received.append((path, name))
    return received


def _save(upload: Any, path: Path, limit: int) -> bool:
    """Copy an upload to ``path`` in chunks; False (and nothing kept) when it is larger than ``limit`` bytes."""
    written = 0
    with path.open("wb") as out:
        while chunk := upload.file.read(_CHUNK):
            written += len(chunk)
            if written > limit:
                break
            out.write(chunk)
    if written > limit:
        path.unlink()
        return False
    return True


class _BodyLimit:
    """ASGI middleware: 413 for a request body over ``limit`` bytes, before the multipart parser stores it."""

    def __init__(self, app: Any, limit: int) -> None:
        self.app, self.limit = app, limit

    async def __call__(self, scope: dict, receive: Any, send: Any) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        from fastapi import HTTPException
        from fastapi.responses import JSONResponse

        too_large = f"request body over {self.limit // _CHUNK} MB; the limit is --max-request-mb"
        declared = dict(scope.get("headers") or []).get(b"content-length")
        if declared is not None and (not declared.isdigit() or int(declared) > self.limit):
            # Refused without reading the body: neither a claimed 100 GB nor a slow sender is waited on.
            await JSONResponse({"detail": too_large}, status_code=413)(scope, receive, send)
            return
        seen = 0

        async def counted() -> dict:
            nonlocal seen
            message = await receive()
            seen += len(message.get("body", b""))
            if seen > self.limit:  # a chunked body with no Content-Length: stop as soon as it passes the limit
                raise HTTPException(413, too_large)  # FastAPI passes HTTPException through body parsing
            return message

        await self.app(scope, counted, send)


def _renamed(result: Prediction, name: str) -> Prediction:
    return Prediction(path=name, label=result.label, probabilities=result.probabilities, error=result.error)


__all__ = ["DEFAULT_MAX_REQUEST_MB", "DEFAULT_MAX_UPLOAD_MB", "create_app", "model_info", "require_server_packages"]
