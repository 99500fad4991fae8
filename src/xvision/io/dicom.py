"""DICOM radiographs into the array form documented in :mod:`xvision.io.loader`.

The grayscale pipeline of the DICOM standard (PS3.4 N.2), in order:

1. stored values -> Modality LUT (``RescaleSlope``/``RescaleIntercept`` or a Modality LUT Sequence);
2. -> the first VOI LUT, or else the first ``WindowCenter``/``WindowWidth`` pair, whose output range becomes
   [0, 1] (values outside the window clip to 0 or 1); with neither, the range that ``BitsStored`` and
   ``PixelRepresentation`` imply (through the Modality LUT) becomes [0, 1], so 12-bit data maps 0..4095 -> 0..1.
   An unsigned file whose values all fit a smaller stored depth (``BitsStored`` 16 holding 12-bit data, as
   some exporters write) is scaled by that depth instead, as for 16-bit PNG (:func:`xvision.io.loader.
   stored_depth`), with a warning: by ``BitsStored`` it would be a nearly black film;
3. -> ``MONOCHROME1`` (white = low values) is inverted, with a warning, so the result is always display polarity.

Only grayscale images are read: other photometric interpretations raise ImageLoadError. Of a multi-frame file
only the first frame is decoded (with a warning). The header is checked (pixel data present, grayscale, size
within ``max_pixels``) before any pixel data is read.
"""

from __future__ import annotations

import logging
import warnings
from contextvars import ContextVar
from pathlib import Path

import numpy as np
import pydicom
from pydicom.dataset import Dataset
from pydicom.pixels import apply_modality_lut, apply_voi_lut, pixel_array

from xvision.errors import ImageLoadError, ImageWarning
from xvision.io.loader import check_dimensions, exception_reason, stored_depth

__all__ = ["check_projection_radiograph", "load_dicom", "read_patient_id"]

_GRAYSCALE = frozenset({"MONOCHROME1", "MONOCHROME2"})
# Values longer than this (the pixel data) are read from disk only when used, so the header is checked first.
_DEFER_SIZE = 4096
# Windowing clips: values this far outside any window land exactly on the ends of the output range.
_FAR_BEYOND = 1e12
# DICOM Modality (0008,0060) codes of images that are not projection radiographs. Chest X-rays are CR or DX
# (Open-i's 7,469 DICOMs: 7,443 CR, 26 DX); scanned films may say OT or SC, and a missing tag is allowed: only
# what is surely something else is refused.
NOT_RADIOGRAPHS = {
    "CT": "computed tomography",
    "MR": "magnetic resonance",
    "US": "ultrasound",
    "NM": "nuclear medicine",
    "PT": "positron emission tomography",
    "MG": "mammography",
    "XA": "X-ray angiography",
    "RF": "fluoroscopy",
    "IO": "intra-oral radiography",
    "PX": "panoramic dental radiography",
    "OP": "ophthalmic photography",
    "OPT": "ophthalmic tomography",
    "IVOCT": "intravascular optical coherence tomography",
    "IVUS": "intravascular ultrasound",
    "ES": "endoscopy",
    "XC": "external camera photography",
    "GM": "general microscopy",
    "SM": "slide microscopy",
}


#: True while :func:`load_dicom` decodes pixel data (its own records only: a user's pydicom keeps its logging).
_DECODING: ContextVar[bool] = ContextVar("xvision_dicom_decoding", default=False)


class _OwnErrorsOnly(logging.Filter):
    """pydicom logs a failed decode at ERROR with a traceback before raising; Xvision turns the exception into
    one ImageLoadError line naming the file (and the job goes on), so those records are dropped, but only
    while Xvision itself decodes: a program that imports Xvision and reads DICOM with pydicom keeps them."""

    def filter(self, record: logging.LogRecord) -> bool:
        return record.levelno < logging.ERROR or not _DECODING.get()


# A logger's filter sees only its own records, so the decoders' module logger is named as well.
for _name in ("pydicom", "pydicom.pixels.decoders.base"):
    logging.getLogger(_name).addFilter(_OwnErrorsOnly())


def _decode_failure(ds: Dataset, exc: Exception) -> str:
    """The reason for an undecodable pixel data: which compression, and how to add a decoder for it."""
    syntax = getattr(getattr(ds, "file_meta", None), "TransferSyntaxUID", None)
    name = getattr(syntax, "name", None) or "unknown transfer syntax"
    message = str(exc).lower()
    if any(sign in message for sign in ("no available plugins", "unable to decode", "unable to decompress")):
        return (
            f"cannot decode the DICOM pixel data ({name}): no installed decoder handles it; "
            f"{_DECODERS.get(str(syntax), _ANY_DECODER)} adds one"
        )
    return f"cannot decode the DICOM pixel data ({name}; {exception_reason(exc)})"


_ANY_DECODER = "`pip install python-gdcm`"
#: Which pydicom decoder plugin to install, by transfer syntax. python-gdcm, a dependency of Xvision, decodes
#: all but 12-bit JPEG Extended; the others are named for a platform where it did not install.
_DECODERS = {
    "1.2.840.10008.1.2.4.51": "`pip install pylibjpeg-libjpeg` (GPL-3.0; GDCM does not decode 12-bit JPEG Extended)",
    **dict.fromkeys(  # JPEG Lossless; 8-bit baseline Pillow decodes
        ("1.2.840.10008.1.2.4.57", "1.2.840.10008.1.2.4.70"),
        "`pip install python-gdcm`",
    ),
    **dict.fromkeys(  # JPEG-LS lossless and near-lossless
        ("1.2.840.10008.1.2.4.80", "1.2.840.10008.1.2.4.81"), "`pip install pyjpegls` or `pip install python-gdcm`"
    ),
    **dict.fromkeys(  # JPEG 2000 and High-Throughput JPEG 2000
        ("1.2.840.10008.1.2.4.90", "1.2.840.10008.1.2.4.91", "1.2.840.10008.1.2.4.201", "1.2.840.10008.1.2.4.203"),
        "`pip install pylibjpeg-openjpeg` or `pip install python-gdcm`",
    ),
}


def load_dicom(path: str | Path, *, max_pixels: int) -> np.ndarray:
    """Read the first frame of a grayscale DICOM as ``float32`` ``(H, W)`` in ``[0, 1]``, display polarity.

    Raises:
        ImageLoadError: unreadable file, no pixel data, non-grayscale photometric interpretation, image larger
            than ``max_pixels``, or pixel data that cannot be decoded.
    """
    path = Path(path)
    try:
        # force=True also reads files without the 128-byte preamble; what was read is validated below.
        with warnings.catch_warnings(record=True) as said:
            warnings.simplefilter("always")
            ds = pydicom.dcmread(path, force=True, defer_size=_DEFER_SIZE)
    except Exception as exc:
        raise ImageLoadError(path, f"not a readable DICOM file ({exception_reason(exc)})") from exc
    cut = [w for w in said if "End of file reached" in str(w.message)]
    if cut and "PixelData" not in ds:  # pydicom's own warning, then "no pixel data", hid the cause
        raise ImageLoadError(path, "the file ends inside its compressed pixel data (a truncated copy?)")
    for w in said:
        if w not in cut:
            warnings.warn_explicit(w.message, w.category, w.filename, w.lineno)
    _check_header(path, ds, max_pixels)

    frames = int(ds.get("NumberOfFrames") or 1)
    if frames > 1:
        warnings.warn(
            ImageWarning(
                path, "multi-frame DICOM; only the first frame is used", f"DICOM has {frames} frames; using the first"
            ),
            stacklevel=3,
        )
    token = _DECODING.set(True)
    try:
        stored = pixel_array(ds, index=0)
    except Exception as exc:
        raise ImageLoadError(path, _decode_failure(ds, exc)) from exc
    finally:
        _DECODING.reset(token)
    if stored.ndim != 2:
        raise ImageLoadError(path, f"DICOM pixel data decoded to shape {stored.shape}, expected (rows, columns)")

    try:
        values, low, high = _to_display_range(path, ds, stored)
    except Exception as exc:
        raise ImageLoadError(path, f"invalid Modality LUT or rescale ({exception_reason(exc)})") from exc
    if high > low:
        image = np.clip((values - low) / (high - low), 0.0, 1.0)
    else:  # a degenerate LUT (e.g. RescaleSlope 0) leaves nothing to show
        image = np.zeros_like(values)

    if str(ds.PhotometricInterpretation).strip() == "MONOCHROME1":
        warnings.warn(
            ImageWarning(path, "DICOM is MONOCHROME1 (low values display white); inverted to display polarity"),
            stacklevel=3,
        )
        image = 1.0 - image
    return image.astype(np.float32)


def check_projection_radiograph(path: str | Path) -> None:
    """Refuse a DICOM whose Modality says it is not a projection radiograph (a CT slice, an MR image, ...):
    it decodes like one, and a chest X-ray model would give it a confident, meaningless answer."""
    try:
        ds = pydicom.dcmread(path, force=True, stop_before_pixels=True, specific_tags=["Modality"])
    except Exception as exc:
        raise ImageLoadError(path, f"not a readable DICOM file ({exception_reason(exc)})") from exc
    modality = str(ds.get("Modality", "")).strip().upper()
    if modality in NOT_RADIOGRAPHS:
        raise ImageLoadError(
            path,
            f"DICOM modality {modality} ({NOT_RADIOGRAPHS[modality]}) is not a chest radiograph; "
            "Xvision reads projection radiographs (CR, DX, and OT/SC secondary captures)",
        )


def read_patient_id(path: str | Path) -> str | None:
    """The Patient ID (0010,0020) in the header of the DICOM file ``path``, without its padding; None when the
    tag is missing or empty or the file does not parse as DICOM. Reads the header only; never raises."""
    try:
        ds = pydicom.dcmread(path, force=True, stop_before_pixels=True, specific_tags=["PatientID"])
        value = str(ds.get("PatientID", "") or "").strip()
    except Exception:  # any unreadable file: it is reported where its pixels are read
        return None
    return value or None


# Elements every real DICOM object has some of: without them and without a file meta header, what
# ``force=True`` parsed is not DICOM at all (a text file or random bytes named .dcm).
_DICOM_SIGNS = ("SOPClassUID", "SOPInstanceUID", "Modality", "StudyInstanceUID", "Rows", "Columns", "PatientID")


def _check_header(path: Path, ds: Dataset, max_pixels: int) -> None:
    if "PixelData" not in ds:
        if not len(getattr(ds, "file_meta", ()) or ()) and not any(sign in ds for sign in _DICOM_SIGNS):
            raise ImageLoadError(path, "not a DICOM file (no DICOM header found) and not another supported image")
        raise ImageLoadError(path, "DICOM file has no pixel data (is it a report or a structured document?)")
    photometric = str(ds.get("PhotometricInterpretation", "")).strip()
    if not photometric:
        raise ImageLoadError(path, "DICOM header has no PhotometricInterpretation; cannot tell how to display it")
    if photometric not in _GRAYSCALE:
        raise ImageLoadError(
            path,
            f"unsupported DICOM photometric interpretation {photometric!r}: "
            "Xvision reads grayscale radiographs (MONOCHROME1/2)",
        )
    samples = int(ds.get("SamplesPerPixel") or 1)
    if samples != 1:
        raise ImageLoadError(path, f"{photometric} DICOM with {samples} samples per pixel; expected 1")
    check_dimensions(path, int(ds.get("Columns") or 0), int(ds.get("Rows") or 0), max_pixels)


def _to_display_range(path: Path, ds: Dataset, stored: np.ndarray) -> tuple[np.ndarray, float, float]:
    """Apply the Modality and VOI LUTs; return the values and the range that maps onto [0, 1]."""
    modality = apply_modality_lut(stored, ds)  # still integer unless rescaled: a VOI LUT indexes with it
    values = np.asarray(modality, dtype=np.float64)
    low, high = _modality_range(path, ds, stored, warn=not _has_voi(ds))
    if not _has_voi(ds):
        return values, low, high
    try:
        return np.asarray(apply_voi_lut(modality, ds, index=0), dtype=np.float64), *_voi_range(ds)
    except Exception as exc:  # a malformed window should not make the radiograph unreadable
        warnings.warn(
            ImageWarning(
                path,
                "unusable VOI LUT/window ignored; scaled by the BitsStored range instead",
                f"ignoring unusable VOI LUT/window ({exception_reason(exc)}); scaling by the BitsStored range instead",
            ),
            stacklevel=4,
        )
        return values, low, high


def _modality_range(path: Path, ds: Dataset, stored: np.ndarray, *, warn: bool) -> tuple[float, float]:
    """The range of Modality LUT output over every value that ``BitsStored`` allows, or the smaller stored
    depth that holds every value of an unsigned image (module docstring; ``warn``: say so)."""
    bits = int(ds.get("BitsStored") or ds.get("BitsAllocated") or 16)
    if int(ds.get("PixelRepresentation") or 0) == 1:
        low, high = -(2 ** (bits - 1)), 2 ** (bits - 1) - 1
    else:
        depth = stored_depth(int(stored.max()) if stored.size else 0, bits)
        if depth < bits and warn:
            warnings.warn(
                ImageWarning(
                    path,
                    "BitsStored is larger than the data needs; scaled by the depth that holds every value "
                    "(the file has no window)",
                    f"BitsStored is {bits} but every value fits {depth} bits; scaled as {depth}-bit data "
                    "(the file has no window)",
                ),
                stacklevel=5,
            )
        low, high = 0, 2**depth - 1
    # Every stored value for a possibly non-monotonic Modality LUT Sequence; both ends suffice for a rescale.
    probe = np.arange(low, high + 1) if bits <= 16 else np.array([low, high])
    mapped = np.asarray(apply_modality_lut(probe, ds), dtype=np.float64)
    return float(mapped.min()), float(mapped.max())


def _has_voi_lut_sequence(ds: Dataset) -> bool:
    sequence = ds.get("VOILUTSequence")
    return bool(sequence) and all(sequence[0].get(key) is not None for key in ("LUTDescriptor", "LUTData"))


def _has_voi(ds: Dataset) -> bool:
    has_window = ds.get("WindowCenter") is not None and ds.get("WindowWidth") is not None
    return has_window or _has_voi_lut_sequence(ds)


def _voi_range(ds: Dataset) -> tuple[float, float]:
    """The output range of ``apply_voi_lut``, whose ends become 0 and 1 (pydicom prefers the LUT to a window)."""
    if _has_voi_lut_sequence(ds):
        bits_per_entry = int(ds.VOILUTSequence[0].LUTDescriptor[2])
        return 0.0, float(2**bits_per_entry - 1)
    # pydicom stretches a window onto a range derived from BitsStored and the rescale; its ends are where
    # values far outside the window land.
    ends = apply_voi_lut(np.array([-_FAR_BEYOND, _FAR_BEYOND]), ds, index=0)
    return float(ends[0]), float(ends[1])
