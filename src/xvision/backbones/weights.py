"""Where a backbone's pretrained weights come from, and proof of which ones were used.

Resolution order (first that works wins):

1. ``weights="random"``: random initialisation, recorded as ``pretrained: false`` so every output can say
   UNTRAINED BACKBONE;
2. ``weights=FILE``: a safetensors file or a PyTorch state dict (loaded with ``weights_only=True``);
3. weights bundled in an installed Python package (EfficientNet-Lite0);
4. the local torch hub cache (``$TORCH_HOME/hub/checkpoints``) or timm/Hugging Face cache;
5. a download where a network exists (to ``.part``, hash-checked, then renamed);
6. otherwise :class:`WeightsNotFoundError`, naming the file to obtain and the flag to pass.
"""

from __future__ import annotations

import logging
import os
import urllib.request
from collections.abc import Callable
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

import torch

from xvision._fileio import sha256_file
from xvision.errors import WeightsNotFoundError

log = logging.getLogger(__name__)

DOWNLOAD_TIMEOUT_S = 30

StateDict = dict[str, torch.Tensor]


@dataclass(frozen=True)
class WeightsIdentity:
    """What a run records about the weights it used."""

    source: str  # "random" | "file" | "package:<name>" | "torch-hub-cache" | "download" | "timm"
    name: str
    sha256: str | None
    pretrained: bool

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


RANDOM_INIT_SEED = 0
RANDOM = WeightsIdentity(source="random", name=f"random-init-seed{RANDOM_INIT_SEED}", sha256=None, pretrained=False)


def load_state_dict_file(path: str | Path) -> StateDict:
    """Load a state dict from safetensors or a torch file, never executing pickled code."""
    path = Path(path)
    if not path.is_file():
        raise WeightsNotFoundError(f"{path}: weights file not found")
    try:
        if path.suffix == ".safetensors":
            from safetensors.torch import load_file

            state = load_file(str(path))
        else:
            state = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as error:  # noqa: BLE001 - any decoder failure is a bad file for the user
        raise WeightsNotFoundError(f"{path}: {_unreadable_weights(path, error)}") from None
    if isinstance(state, dict) and "state_dict" in state and isinstance(state["state_dict"], dict):
        state = state["state_dict"]
    if not isinstance(state, dict) or not all(isinstance(v, torch.Tensor) for v in state.values()):
        raise WeightsNotFoundError(f"{path}: not a state dict of tensors")
    return state


def _unreadable_weights(path: Path, error: Exception) -> str:
    """One line for a weights file that did not load. torch's own message runs to several lines and suggests
    ``weights_only=False``, which would run whatever code the file carries."""
    import zipfile

    text = str(error)
    with open(path, "rb") as handle:
        pickled = handle.read(1) == b"\x80"  # a pickle's protocol mark: torch's legacy format
    if path.suffix != ".safetensors" and not (pickled or zipfile.is_zipfile(path)):
        return "not a safetensors file or a PyTorch state dict"
    if "Weights only load failed" in text:
        return (
            "holds pickled objects besides tensors, which Xvision does not unpickle (they can run code); "
            "save its state dict with torch.save(model.state_dict(), ...) or as safetensors where you trust it"
        )
    first = text.strip().splitlines()[0][:160] if text.strip() else type(error).__name__
    return f"not a safetensors file or a PyTorch state dict ({first})"


def from_file(path: str | Path) -> tuple[StateDict, WeightsIdentity]:
    state = load_state_dict_file(path)
    return state, WeightsIdentity(source="file", name=Path(path).name, sha256=sha256_file(path), pretrained=True)


@dataclass(frozen=True)
class UrlWeights:
    """Weights published at a URL (torchvision style: the file name carries a SHA-256 prefix)."""

    url: str

    @property
    def filename(self) -> str:
        return self.url.rsplit("/", 1)[-1]

    @property
    def sha256_prefix(self) -> str | None:
        stem = self.filename.rsplit(".", 1)[0]
        prefix = stem.rsplit("-", 1)[-1]
        return prefix if len(prefix) >= 8 and all(c in "0123456789abcdef" for c in prefix) else None

    def cache_path(self) -> Path:
        return Path(torch.hub.get_dir()) / "checkpoints" / self.filename

    def resolve(self, backbone: str) -> tuple[StateDict, WeightsIdentity]:
        cached = self.cache_path()
        if cached.is_file():
            return self._load(cached, "torch-hub-cache")
        try:
            _download(self.url, cached, self.sha256_prefix)
        except OSError as error:
            raise WeightsNotFoundError(
                f"ImageNet weights for backbone '{backbone}' are not available offline and could not be "
                f"downloaded ({error}). Obtain {self.filename} from {self.url} and pass "
                f"--weights /path/to/{self.filename} (or place it in {cached.parent}); "
                f"or use --backbone efficientnet_lite0, whose weights ship with Xvision's dependencies."
            ) from None
        return self._load(cached, "download")

    def _load(self, path: Path, source: str) -> tuple[StateDict, WeightsIdentity]:
        state = load_state_dict_file(path)
        digest = sha256_file(path)
        prefix = self.sha256_prefix
        if prefix and not digest.startswith(prefix):
            raise WeightsNotFoundError(
                f"{path}: SHA-256 {digest[:12]}... does not match the expected prefix {prefix}; "
                "delete the file and download it again"
            )
        return state, WeightsIdentity(source=source, name=self.filename, sha256=digest, pretrained=True)


def _download(url: str, dest: Path, sha256_prefix: str | None) -> None:
    import hashlib

    dest.parent.mkdir(parents=True, exist_ok=True)
    part = dest.with_name(dest.name + ".part")
    request = urllib.request.Request(url, headers={"User-Agent": "xvision"})
    log.info("downloading %s", url)
    digest = hashlib.sha256()
    with urllib.request.urlopen(request, timeout=DOWNLOAD_TIMEOUT_S) as response, open(part, "wb") as out:
        for chunk in iter(lambda: response.read(1 << 20), b""):
            digest.update(chunk)
            out.write(chunk)
    if sha256_prefix and not digest.hexdigest().startswith(sha256_prefix):
        part.unlink(missing_ok=True)
        raise OSError(f"checksum mismatch for {url}")
    os.replace(part, dest)


@dataclass(frozen=True)
class PackageWeights:
    """Weights shipped inside an installed Python package, remapped onto our architecture by order."""

    package: str
    locate: Callable[[], Path]
    install_hint: str

    def resolve(self, backbone: str, target_keys: list[str]) -> tuple[StateDict, WeightsIdentity]:
        try:
            path = Path(self.locate())
        except ImportError:
            raise WeightsNotFoundError(
                f"backbone '{backbone}' needs the package {self.package}: {self.install_hint}"
            ) from None
        source = load_state_dict_file(path)
        if len(source) != len(target_keys):
            raise WeightsNotFoundError(
                f"{path}: {len(source)} tensors, expected {len(target_keys)} for '{backbone}'; reinstall {self.package}"
            )
        # The package's state dict lists the same tensors in the same order as timm's model, under
        # other names (`_conv_stem.weight` -> `conv_stem.weight`), so we map by position.
        state = dict(zip(target_keys, source.values(), strict=True))
        identity = WeightsIdentity(
            source=f"package:{self.package}", name=path.name, sha256=sha256_file(path), pretrained=True
        )
        return state, identity


# The files timm asks the Hugging Face Hub for, in its order: safetensors first, then the PyTorch file.
HUB_WEIGHTS_NAMES = ("model.safetensors", "pytorch_model.bin")


def hub_cached_file(hub_id: str | None, filename: str | None = None) -> Path | None:
    """The weights file of Hub repo ``hub_id`` (``repo`` or ``repo@revision``) already in the local
    Hugging Face cache, or None. No network."""
    if not hub_id:
        return None
    from huggingface_hub import try_to_load_from_cache

    repo, _, revision = hub_id.partition("@")
    for name in [filename] if filename else HUB_WEIGHTS_NAMES:
        found = try_to_load_from_cache(repo, name, revision=revision or None)
        if isinstance(found, str):
            return Path(found)
    return None


def hub_unreachable() -> str | None:
    """Why the Hugging Face Hub cannot be reached, or None when it may be.

    Only a host name that does not resolve counts: offline, huggingface_hub retries such a request five times
    with back-off (about 50 s) before giving up, and this check takes milliseconds.
    """
    import socket
    from urllib.parse import urlparse

    from huggingface_hub import constants

    host = urlparse(constants.ENDPOINT).hostname
    if not host:
        return None
    proxies = urllib.request.getproxies()
    if (proxies.get("https") or proxies.get("all")) and not urllib.request.proxy_bypass(host):
        return None  # behind a proxy the host need not resolve here: the proxy resolves it
    try:
        socket.getaddrinfo(host, 443)
    except OSError:
        return f"cannot resolve {host} (offline?)"
    return None


@dataclass(frozen=True)
class FineTunedOnly:
    """No published weights exist: the network is made by fine-tuning (``xvision fit``, ``made_by`` says
    how), and its weights file lives in that run (``RUN/finetune/backbone.safetensors``)."""

    made_by: str

    def resolve(self, backbone: str) -> tuple[StateDict, WeightsIdentity]:
        raise WeightsNotFoundError(
            f"backbone '{backbone}' has no published weights: it is made by fine-tuning ({self.made_by}); "
            "pass the run's finetune/backbone.safetensors with --weights"
        )
