"""Xvision: deep transfer learning on chest X-rays."""

from xvision.errors import XvisionError

__version__ = "0.1.0"

__all__ = ["XvisionError", "__version__"]
