"""Load any chest X-ray (PNG 8/16-bit, JPEG, TIFF, BMP, DICOM) into one documented array form.

:func:`load_image` returns ``float32`` ``(H, W)`` in ``[0, 1]``, 0 = black (air), 1 = white (bone); see
:mod:`xvision.io.loader` for how each format is scaled and :mod:`xvision.io.dicom` for DICOM.
"""

from xvision.io.loader import DEFAULT_MAX_PIXELS, SUPPORTED_SUFFIXES, is_dicom, load_image, load_radiograph

__all__ = ["DEFAULT_MAX_PIXELS", "SUPPORTED_SUFFIXES", "is_dicom", "load_image", "load_radiograph"]
