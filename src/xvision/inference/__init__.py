"""Model bundles and prediction, shared by the CLI, the Python API and the server."""

from xvision.inference.bundle import RunBundle, load_bundle

__all__ = ["RunBundle", "load_bundle"]
