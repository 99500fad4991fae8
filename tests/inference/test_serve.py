"""`xvision serve`: the HTTP service gives `predict`'s answers, reports bad uploads, and refuses oversize ones."""

from __future__ import annotations

import hashlib
import json
from pathlib import Path

import pytest

pytest.importorskip("fastapi", reason="the server needs the serve extra (pip install 'xvision[serve]')")
pytest.importorskip("httpx", reason="FastAPI's TestClient needs httpx")

import pydicom  # noqa: E402
from fastapi.testclient import TestClient  # noqa: E402
from pydicom.data import get_testdata_file  # noqa: E402

from xvision.cli.main import main  # noqa: E402
from xvision.data.phantoms import make_phantom_dataset  # noqa: E402
from xvision.inference import Predictor  # noqa: E402
from xvision.inference.server import create_app  # noqa: E402

TINY = "timm:mobilenetv3_small_050"


@pytest.fixture(scope="module")
def run(tmp_path_factory):
    root = tmp_path_factory.mktemp("serve")
    manifest = make_phantom_dataset(root / "data", n_per_class=6, size=64, seed=4)
    assert main(["extract", str(manifest), "--backbone", TINY, "--weights", "random", "-o", str(root / "f")]) == 0
    assert main(["train", str(root / "f"), "-o", str(root / "run"), "--epochs", "3", "--no-audit"]) == 0
    return root


def _images(root):
    return sorted((root / "data").rglob("*.png"))[:3]


def test_the_server_answers_as_predict_does(run, tmp_path) -> None:
    images = _images(run)
    dicom = get_testdata_file("CT_small.dcm", download=False)
    uploads = [("files", (p.name, p.read_bytes(), "image/png")) for p in images]
    if dicom is not None:  # a DICOM upload too: pydicom's CT slice, relabelled as the radiograph it is not
        ds = pydicom.dcmread(dicom)
        ds.Modality = "DX"
        dicom = tmp_path / "dx.dcm"
        ds.save_as(dicom)
        uploads.append(("files", ("dx.dcm", dicom.read_bytes(), "application/dicom")))
    client = TestClient(create_app(run / "run"))
    assert client.get("/health").json() == {"status": "ok"}
    info = client.get("/model").json()
    bundle = json.loads((run / "run" / "bundle.json").read_text())
    assert info["classes"] == bundle["classes"] and info["backbone"] == TINY
    assert info["model_sha256"] == hashlib.sha256((run / "run" / "model.safetensors").read_bytes()).hexdigest()
    assert info["untrained_backbone"] is True and info["weights"]["source"] == "random"
    assert info["recipe"] is None  # trained by `train`, not by a `fit` recipe
    answer = client.post("/predict", files=uploads)
    assert answer.status_code == 200
    records = answer.json()["predictions"]
    assert [r["path"] for r in records] == [name for _, (name, _, _) in uploads]
    expected = Predictor(run / "run").predict_paths([*images, *([dicom] if dicom else [])])
    for record, result in zip(records, expected, strict=True):
        assert record["error"] is None and record["predicted"] == result.label
        for name, value in result.probabilities.items():
            assert record["probabilities"][name] == pytest.approx(value, abs=1e-6)
        assert "warning" in record  # random weights: every answer says so


def test_a_bad_upload_is_reported_and_the_others_predicted(run, tmp_path) -> None:
    good = _images(run)[0]
    client = TestClient(create_app(run / "run"))
    answer = client.post(
        "/predict",
        files=[
            ("files", ("../../evil.png", b"not an image", "image/png")),
            ("files", (good.name, good.read_bytes(), "image/png")),
            (
                "files",
                ("ct.dcm", Path(get_testdata_file("CT_small.dcm", download=False)).read_bytes(), "application/dicom"),
            ),
            ("files", ("film.webp", b"RIFF\x00\x00\x00\x00WEBPVP8 ", "image/webp")),
        ],
    )
    assert answer.status_code == 200
    bad, ok, ct, webp = answer.json()["predictions"]
    assert "a .webp picture: Xvision reads PNG, JPEG, TIFF, BMP and DICOM; convert it to PNG" in webp["error"]
    assert bad["path"] == "evil.png" and "not a supported image" in bad["error"] and bad["probabilities"] == {}
    assert ok["error"] is None and ok["predicted"] in ("nodule", "normal")
    assert "DICOM modality CT (computed tomography) is not a chest radiograph" in ct["error"]
    alone = client.post("/predict", files=[("files", ("x.png", b"", "image/png")), ("files", ("y.png", b"?"))])
    assert alone.status_code == 422
    assert [d["path"] for d in alone.json()["detail"]] == ["x.png", "y.png"]  # one reason per file
    assert all(d["error"] for d in alone.json()["detail"])
    assert client.post("/predict").status_code == 422  # no files at all


def test_an_upload_over_the_limit_is_refused_before_predicting(run, monkeypatch) -> None:
    client = TestClient(create_app(run / "run", max_upload_mb=1))

    def no_prediction(*args, **kwargs):
        raise AssertionError("predicted although an upload was refused")

    monkeypatch.setattr(Predictor, "predict_paths", no_prediction)
    good = _images(run)[0]
    answer = client.post(
        "/predict",
        files=[
            ("files", (good.name, good.read_bytes(), "image/png")),
            ("files", ("big.png", b"\0" * (1024 * 1024 + 1), "image/png")),
        ],
    )
    assert answer.status_code == 413 and answer.json()["detail"].startswith("big.png: larger than 1 MB")


def test_serve_fails_in_one_line_before_binding_and_warns_when_exposed(
    run, tmp_path, capsys, caplog, monkeypatch
) -> None:
    import importlib.util
    import socket

    import uvicorn

    def no_binding(*args, **kwargs):
        raise AssertionError("the server started")

    monkeypatch.setattr(uvicorn, "run", no_binding)  # a missing run fails before binding
    assert main(["serve", str(tmp_path / "nothing")]) == 2
    assert "nothing: no such run folder" in capsys.readouterr().err
    assert main(["serve", str(tmp_path)]) == 2
    assert "not a run folder" in capsys.readouterr().err
    with socket.socket() as taken:  # a port in use is refused before the run is loaded
        taken.bind(("127.0.0.1", 0))
        taken.listen()
        port = taken.getsockname()[1]
        assert main(["serve", str(run / "run"), "--port", str(port)]) == 2
        assert f"cannot listen on 127.0.0.1:{port}: " in capsys.readouterr().err
    started = []
    monkeypatch.setattr(uvicorn, "run", lambda app, host, port, **kw: started.append((host, port)))
    assert main(["serve", str(run / "run"), "--host", "0.0.0.0", "--port", str(port)]) == 0
    assert started == [("0.0.0.0", port)] and "no authentication" in caplog.text
    caplog.clear()
    assert main(["serve", str(run / "run"), "--port", str(port)]) == 0
    assert started[-1] == ("127.0.0.1", port) and "no authentication" not in caplog.text
    real = importlib.util.find_spec
    monkeypatch.setattr(importlib.util, "find_spec", lambda name, *a: None if name == "fastapi" else real(name, *a))
    assert main(["serve", str(run / "run")]) == 2
    assert 'needs fastapi (not installed): pip install "xvision[serve]"' in capsys.readouterr().err


def test_the_heatmap_is_a_png_of_the_image_with_its_decision(run) -> None:
    import io

    from PIL import Image

    image = _images(run)[1]
    client = TestClient(create_app(run / "run"))
    upload = {"file": (image.name, image.read_bytes(), "image/png")}
    answer = client.post("/heatmap", files=upload)
    assert answer.status_code == 200 and answer.headers["content-type"] == "image/png"
    drawn = Image.open(io.BytesIO(answer.content))
    assert drawn.format == "PNG" and min(drawn.size) >= 200
    predicted = client.post("/predict", files={"files": upload["file"]}).json()["predictions"][0]["predicted"]
    assert answer.headers["x-xvision-predicted"] == predicted
    bad = client.post("/heatmap", files={"file": ("x.png", b"junk", "image/png")})
    assert bad.status_code == 422 and bad.json()["detail"].startswith("x.png: not a supported image")
    good = _images(run)[0].read_bytes()
    two = client.post("/heatmap", files=[("file", ("a.png", good, "image/png")), ("file", ("b.png", good))])
    assert two.status_code == 422 and "send one image in the field 'file' (got 2)" in two.json()["detail"]


def test_a_request_over_the_total_limit_is_refused_as_it_arrives(run, monkeypatch) -> None:
    client = TestClient(create_app(run / "run", max_request_mb=1))
    monkeypatch.setattr(Predictor, "predict_paths", lambda *a, **k: pytest.fail("predicted an oversize request"))
    half = b"\0" * (600 * 1024)  # each file under the per-file limit, together over the request limit
    answer = client.post("/predict", files=[("files", ("a.png", half, "image/png")), ("files", ("b.png", half))])
    assert answer.status_code == 413 and "request body over 1 MB" in answer.json()["detail"]

    def chunks():  # no Content-Length: counted as it streams, and refused once past the limit
        for _ in range(64):
            yield b"--x\r\n" + b"\0" * (64 * 1024)

    streamed = client.post("/predict", content=chunks(), headers={"content-type": "multipart/form-data; boundary=x"})
    assert streamed.status_code == 413 and "request body over 1 MB" in streamed.json()["detail"]

    # A declared size over the limit is refused from the header alone, without waiting for the body.
    claimed = client.post("/predict", content=b"x", headers={"content-length": "99999999999"})
    assert claimed.status_code == 413 and "request body over 1 MB" in claimed.json()["detail"]
