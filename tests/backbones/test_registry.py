"""Backbone registry: names, preprocessing, weight resolution and proof of real weights."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from xvision.backbones import build_classifier, create_backbone, get_spec, list_backbones, preprocess_image
from xvision.backbones.weights import UrlWeights
from xvision.errors import BackboneError, WeightsNotFoundError

TINY = "timm:mobilenetv3_small_050"


def test_registry_lists_the_documented_backbones() -> None:
    names = {spec.name for spec in list_backbones()}
    assert {"vgg16", "efficientnet_lite0", "resnet50", "densenet121"} <= names


def test_unknown_backbone_names_the_choices() -> None:
    with pytest.raises(BackboneError, match="vgg16"):
        get_spec("alexnet9000")
    with pytest.raises(BackboneError, match="unknown timm model"):
        get_spec("timm:not_a_model_xyz")


@pytest.mark.slow
def test_vgg16_gives_pool5_codes_of_25088() -> None:
    backbone = create_backbone("vgg16", weights="random")
    assert backbone.feature_dim == 512 * 7 * 7
    assert backbone.preprocess_config.input_size == 224


def test_random_weights_are_recorded_and_reproducible() -> None:
    a = create_backbone(TINY, weights="random")
    b = create_backbone(TINY, weights="random")
    assert a.weights.pretrained is False and a.describe()["weights"]["source"] == "random"
    x = torch.randn(2, 3, 224, 224)
    assert np.array_equal(a.extract(x), b.extract(x))


def test_weights_file_is_loaded_and_hashed(tmp_path) -> None:
    from safetensors.torch import save_file

    spec = get_spec(TINY)
    model = spec.build()
    with torch.no_grad():
        for p in model.parameters():
            p.fill_(0.01)
    path = tmp_path / "w.safetensors"
    save_file({k: v.contiguous() for k, v in model.state_dict().items()}, str(path))
    backbone = create_backbone(TINY, weights=str(path))
    assert backbone.weights.source == "file" and len(backbone.weights.sha256) == 64
    assert backbone.weights.pretrained is True
    # torch state dict (weights_only load) works too and gives the same features
    pt = tmp_path / "w.pth"
    torch.save(model.state_dict(), pt)
    other = create_backbone(TINY, weights=str(pt))
    x = torch.randn(1, 3, 224, 224)
    assert np.allclose(backbone.extract(x), other.extract(x))


def test_bad_weights_file_is_a_clear_error(tmp_path) -> None:
    junk = tmp_path / "junk.pth"
    junk.write_bytes(b"not a checkpoint")
    with pytest.raises(WeightsNotFoundError, match="junk.pth"):
        create_backbone(TINY, weights=str(junk))
    with pytest.raises(WeightsNotFoundError, match="not found"):
        create_backbone(TINY, weights=str(tmp_path / "missing.safetensors"))


def test_missing_torchvision_weights_say_what_to_fetch(tmp_path, monkeypatch) -> None:
    monkeypatch.setenv("TORCH_HOME", str(tmp_path))
    monkeypatch.setattr("xvision.backbones.weights._download", _refuse)
    with pytest.raises(WeightsNotFoundError) as info:
        UrlWeights("https://download.pytorch.org/models/vgg16-397923af.pth").resolve("vgg16")
    message = str(info.value)
    assert "vgg16-397923af.pth" in message and "--weights" in message and "\n" not in message


def _refuse(*_args, **_kwargs):
    raise OSError("no network")


def test_cached_weights_with_wrong_hash_are_refused(tmp_path, monkeypatch) -> None:
    monkeypatch.setenv("TORCH_HOME", str(tmp_path))
    source = UrlWeights("https://example.invalid/models/tiny-deadbeef.pth")
    source.cache_path().parent.mkdir(parents=True)
    torch.save({"w": torch.zeros(1)}, source.cache_path())
    with pytest.raises(WeightsNotFoundError, match="does not match"):
        source.resolve("tiny")


def test_efficientnet_lite0_weights_are_the_real_imagenet_ones() -> None:
    """skimage's chelsea (a tabby cat) must land in ImageNet's cat classes 281-285."""
    data = pytest.importorskip("skimage.data")
    model, identity = build_classifier("efficientnet_lite0")
    assert identity.pretrained and identity.source.startswith("package:")
    spec = get_spec("efficientnet_lite0")
    image = torch.from_numpy(data.chelsea().astype(np.float32) / 255.0).permute(2, 0, 1)[None]
    image = torch.nn.functional.interpolate(image, size=(224, 224), mode="bicubic", antialias=True)
    mean = torch.tensor(spec.preprocess.mean).view(1, 3, 1, 1)
    std = torch.tensor(spec.preprocess.std).view(1, 3, 1, 1)
    with torch.no_grad():
        top = model((image - mean) / std).softmax(1)[0].topk(3).indices.tolist()
    assert 281 <= top[0] <= 285
    assert all(281 <= i <= 287 for i in top[:2])


def test_preprocess_squashes_grayscale_to_normalised_three_channels() -> None:
    spec = get_spec("efficientnet_lite0")
    image = np.zeros((300, 500), dtype=np.float32)
    image[:, 250:] = 1.0
    tensor = preprocess_image(image, spec.preprocess)
    assert tensor.shape == (3, 224, 224)
    assert torch.allclose(tensor[0], tensor[2])
    assert tensor[0, 100, 5].item() == pytest.approx(-1.0)  # black -> (0-0.5)/0.5
    assert tensor[0, 100, 218].item() == pytest.approx(1.0)  # white -> (1-0.5)/0.5


def test_inside_pooling_ignores_the_film_border() -> None:
    import torch

    from xvision.backbones.registry import MaxPooledInside

    pool = MaxPooledInside(torch.nn.Identity(), margin=0.05)
    x = torch.zeros(1, 2, 48, 48)
    x[0, 0, 47, 10] = 9.0  # a bright mark on the bottom edge (3 cells of 48 are the border)
    x[0, 0, 30, 30] = 1.0
    x[0, 1, 3, 3] = 2.0  # just inside
    assert pool(x).tolist() == [[1.0, 2.0]]
    tiny = torch.zeros(1, 1, 2, 2)
    tiny[0, 0, 0, 0] = 4.0
    assert pool(tiny).item() == 4.0  # too small to trim: the whole map


def _offline(monkeypatch: pytest.MonkeyPatch, hub_cache) -> list[str]:
    """No name resolves (as on a machine without a network), and the Hugging Face cache is ``hub_cache``."""
    import socket

    import huggingface_hub.constants

    asked: list[str] = []

    def no_dns(host, *args, **kwargs):
        asked.append(host)
        raise socket.gaierror(socket.EAI_NONAME, "Name or service not known")

    monkeypatch.setattr(socket, "getaddrinfo", no_dns)
    monkeypatch.setattr(huggingface_hub.constants, "HF_HUB_CACHE", str(hub_cache))
    for name in ("HTTPS_PROXY", "https_proxy", "ALL_PROXY", "all_proxy"):  # a proxy would resolve the host
        monkeypatch.delenv(name, raising=False)
    return asked


def test_an_offline_timm_backbone_without_cached_weights_fails_at_once_naming_the_cure(tmp_path, monkeypatch) -> None:
    asked = _offline(monkeypatch, tmp_path / "hub")
    with pytest.raises(WeightsNotFoundError, match=r"cannot resolve huggingface\.co .*--weights FILE"):
        create_backbone(TINY)
    # One lookup, not huggingface_hub's five retries with back-off (about 50 s).
    assert asked == ["huggingface.co"]


def test_behind_a_proxy_an_unresolvable_hub_host_is_not_taken_for_offline(monkeypatch, tmp_path) -> None:
    from xvision.backbones.weights import hub_unreachable

    _offline(monkeypatch, tmp_path / "hub")
    monkeypatch.delenv("NO_PROXY", raising=False)
    monkeypatch.delenv("no_proxy", raising=False)
    assert hub_unreachable() == "cannot resolve huggingface.co (offline?)"
    monkeypatch.setenv("HTTPS_PROXY", "http://proxy.example:3128")  # the proxy resolves the host, not this machine
    assert hub_unreachable() is None


def test_timm_weights_in_the_hugging_face_cache_load_offline(tmp_path, monkeypatch) -> None:
    from safetensors.torch import save_file

    _offline(monkeypatch, tmp_path / "hub")
    model = get_spec(TINY).build()
    with torch.no_grad():
        for p in model.parameters():
            p.fill_(0.02)
    # The cache's layout: models--ORG--NAME/refs/main names the snapshot holding the file.
    repo = tmp_path / "hub" / "models--timm--mobilenetv3_small_050.lamb_in1k"
    (repo / "refs").mkdir(parents=True)
    (repo / "refs" / "main").write_text("0" * 40)
    snapshot = repo / "snapshots" / ("0" * 40)
    snapshot.mkdir(parents=True)
    save_file({k: v.contiguous() for k, v in model.state_dict().items()}, str(snapshot / "model.safetensors"))

    backbone = create_backbone(TINY)
    assert backbone.weights.source == "timm" and backbone.weights.pretrained is True
    assert backbone.weights.name == "timm/mobilenetv3_small_050.lamb_in1k" and backbone.weights.sha256 is None
    conv = next(p for name, p in backbone.model.named_parameters() if name.endswith("weight"))
    assert torch.all(conv == 0.02)


class _Payload:
    """An object torch's weights_only loader refuses."""


def test_a_file_that_is_not_weights_is_one_line_that_never_advises_unpickling(tmp_path) -> None:
    """torch's message ran to seven lines and suggested weights_only=False, which runs the file's code."""
    (tmp_path / "manifest.csv").write_text("path,label\na.png,normal\n")
    torch.save({"w": torch.zeros(1), "obj": _Payload()}, tmp_path / "pickled.pth")
    (tmp_path / "cut.safetensors").write_bytes(b"12345")
    expected = {
        "manifest.csv": "not a safetensors file or a PyTorch state dict$",
        "pickled.pth": "holds pickled objects besides tensors, which Xvision does not unpickle",
        "cut.safetensors": r"not a safetensors file or a PyTorch state dict \(.*header",
    }
    for name, message in expected.items():
        with pytest.raises(WeightsNotFoundError, match=message) as caught:
            create_backbone(TINY, weights=str(tmp_path / name))
        text = str(caught.value)
        assert "\n" not in text and "weights_only" not in text and text.startswith(str(tmp_path / name))
