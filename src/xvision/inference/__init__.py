"""Model bundles and prediction, shared by the CLI, the Python API and the server."""

from xvision.inference.bundle import RunBundle, load_bundle
from xvision.inference.predictor import Prediction, Predictor

__all__ = ["Prediction", "Predictor", "RunBundle", "load_bundle"]
