"""Load any chest X-ray file into one documented array form.

The array form
--------------
:func:`load_image` returns a ``numpy.ndarray`` of dtype ``float32`` and shape ``(H, W)`` with every value in
``[0, 1]``, in display polarity: 0 is black (air), 1 is white (bone), as a radiologist views the film.

Intensities are divided by the range the *file format* implies, never by the image's own minimum and maximum,
so a given stored value means the same thing in every image:

- 8-bit PNG, JPEG, TIFF, BMP: value / 255. Colour (RGB, palette, CMYK) becomes luminance (ITU-R 601-2 weights,
  as Pillow's ``convert("L")``); alpha is dropped.
- 16-bit PNG and TIFF: value / (2^d - 1), d the smallest of the depths detectors store (8, 10, 12, 14, 16
  bits: :data:`STORED_DEPTHS`) that holds the file's largest value. Digital radiographs are 10- to 14-bit and
  are often exported into 16-bit PNG: read / 65535, 12-bit data would be a nearly black film (at most 6% of
  white), 14-bit data one at most 25% white. A film's brightest value reaches at least a quarter of its depth
  (direct exposure, markers), so each film's brightest value lands between 0.25 and 1; a true 16-bit film is
  read / 65535 as before.
- JPEG and TIFF with an EXIF orientation tag are turned upright, as every viewer shows them (phone photos of
  films carry one).
- DICOM: Modality LUT, then the first VOI LUT or window, else the range implied by ``BitsStored``;
  ``MONOCHROME1`` is inverted. See :mod:`xvision.io.dicom`.

Every failure (missing, empty, not an image, truncated, absurd size, unsupported kind) raises
:class:`~xvision.errors.ImageLoadError`, whose message starts with the file's path. :func:`load_radiograph`, what
the models read, also refuses an image that cannot be a chest radiograph (blank, a mask, a CT or MR DICOM).
"""

from __future__ import annotations

import errno
import os
import warnings
from pathlib import Path

import numpy as np
from PIL import BmpImagePlugin, Image, ImageFile, ImageOps, JpegImagePlugin, PngImagePlugin, TiffImagePlugin

from xvision._fileio import not_regular
from xvision.errors import ImageLoadError, ImageWarning

__all__ = [
    "DEFAULT_MAX_PIXELS",
    "MIN_GREY_LEVELS",
    "MIN_SIDE",
    "SUPPORTED_SUFFIXES",
    "is_dicom",
    "load_image",
    "load_radiograph",
]

DEFAULT_MAX_PIXELS = 50_000_000
"""Largest width x height decoded by default; the largest detector panels are about 4300 x 4300 (18.5 MP)."""

MIN_GREY_LEVELS = 8
"""Fewer distinct values than this and an image cannot be a radiograph: a blank export, or a lung mask or other
binary image given by mistake (JSRT's ``lung_masks/`` beside its ``images/``). A real film has hundreds."""

MIN_SIDE = 32
"""Smallest width or height of a radiograph: below it an image is an icon, a tracking pixel or a thumbnail of a
thumbnail, and resizing it to a network's 224+ px input would invent everything the model reads."""

COLOUR_CHROMA = 16
"""A pixel is coloured when one of its channels is more than this (of 255) off what the image's own grey-to-
colour curve predicts from its brightness. The curve (a quadratic per channel, fitted to the image) absorbs a
tint: a film scanned in colour, photographed on a bluish light box, or toned sepia has no coloured pixels,
while grey saved as RGB (JPEG included) stays within a few levels of it."""

MAX_COLOUR_FRACTION = 0.05
"""Above this fraction of coloured pixels an RGB image is a photograph or a heatmap overlay, not a radiograph.
Photographs measured 15-60%; Xvision's own Grad-CAM pictures 5.4-79% (a focal spot to a diffuse map; a very
small spot can fall under the limit); an annotation arrow about 1% of a film, tinted films 0%. A plot on white
(a ROC curve) is not caught."""

SUPPORTED_SUFFIXES: frozenset[str] = frozenset({".png", ".jpg", ".jpeg", ".dcm", ".dicom", ".tif", ".tiff", ".bmp"})
"""Lower-case file suffixes that folder scanners should pick up."""
#: Picture formats Xvision does not read: named as such when met (a folder scan lists them as skipped, and a file
#: given by name is refused as that format), so a user whose films are WebP or JPEG 2000 learns why.
UNREAD_PICTURES: frozenset[str] = frozenset(
    {".webp", ".gif", ".jp2", ".j2k", ".jpx", ".heic", ".heif", ".avif", ".pgm", ".ppm", ".pnm", ".jxl"}
)

_DICOM_SUFFIXES = frozenset({".dcm", ".dicom"})
_DICOM_MAGIC_OFFSET = 128  # a DICOM file is a 128-byte preamble, then b"DICM"

# The formats read through Pillow, recognised by their first bytes. The plugin classes are used instead of
# Image.open because Image.open runs Pillow's own decompression-bomb check (a warning above 89 MP, an error
# above 179 MP) before the size can be seen; the classes read only the header, so our limit is the one applied.
_PILLOW_SIGNATURES: tuple[tuple[bytes, type[ImageFile.ImageFile]], ...] = (
    (b"\x89PNG\r\n\x1a\n", PngImagePlugin.PngImageFile),
    (b"\xff\xd8\xff", JpegImagePlugin.JpegImageFile),
    (b"II*\x00", TiffImagePlugin.TiffImageFile),
    (b"MM\x00*", TiffImagePlugin.TiffImageFile),
    (b"II+\x00", TiffImagePlugin.TiffImageFile),  # BigTIFF
    (b"MM\x00+", TiffImagePlugin.TiffImageFile),
    (b"BM", BmpImagePlugin.BmpImageFile),
)
_SIXTEEN_BIT_MODES = frozenset({"I;16", "I;16L", "I;16B", "I;16N"})
STORED_DEPTHS = (8, 10, 12, 14, 16)
"""Bit depths radiographs are stored at: a 16-bit container is scaled by the smallest holding its values."""
DANGLING_LINK = "a link that leads to no file (its target is missing, or links loop)"
ORIENTATION_TAG = 0x0112  # EXIF Orientation: 1 is upright
_EIGHT_BIT_MODES = frozenset({"1", "L", "LA", "La", "P", "PA", "RGB", "RGBA", "RGBa", "RGBX", "CMYK", "YCbCr"})
_REASON_LIMIT = 200
# Reduced decoding keeps at least 4x the target size, so the final anti-aliased resize still dominates the
# filtering: with 2x, EfficientNet-Lite0 features of real 1024 px radiographs fell to cosine 0.9990 of the
# full-resolution path; with 4x a 1024 px image is left alone and a 2048 px one is halved.
_DECODE_MARGIN = 4


def stored_depth(largest: int, bits: int = 16) -> int:
    """The smallest of :data:`STORED_DEPTHS` below ``bits`` (the container's depth) that holds ``largest``,
    else ``bits``: the depth the data was recorded at, which the container's own depth may overstate."""
    return next((depth for depth in STORED_DEPTHS if depth < bits and largest < 2**depth), bits)


def _as_path(path: object) -> Path:
    """The file to read; a TypeError that says so for anything else (an array, bytes, None)."""
    if not isinstance(path, (str, os.PathLike)):
        hint = "; for pixels already in memory use Predictor.predict_arrays" if hasattr(path, "shape") else ""
        raise TypeError(f"path takes a file path (str or Path), got {type(path).__name__}{hint}")
    return Path(path)


def load_image(path: str | Path, *, max_pixels: int = DEFAULT_MAX_PIXELS, target_size: int | None = None) -> np.ndarray:
    """Read a radiograph (PNG, JPEG, TIFF, BMP or DICOM) into the module's array form.

    Args:
        path: The image file. Its contents decide the decoder; a ``.dcm``/``.dicom`` suffix is needed only for
            DICOM files without the ``DICM`` preamble.
        max_pixels: Refuse images whose header declares more than this many pixels (width x height), before
            any pixel data is decoded.
        target_size: The side the caller will resize to, if known. Large images are then reduced as early as
            the format allows, keeping at least four times ``target_size`` pixels on the shorter side: JPEG
            is decoded at 1/2, 1/4 or 1/8 scale (draft mode), other formats are box-averaged by an integer
            factor right after decoding. ``None`` (the default) returns the full resolution.

    Returns:
        ``float32`` array of shape ``(H, W)``, values in ``[0, 1]``, 0 = black (air), 1 = white (bone).

    Raises:
        ImageLoadError: The file is missing, empty, not a supported image, truncated or corrupt, larger than
            ``max_pixels``, or of an unsupported kind (e.g. a colour DICOM).
    """
    return _decode(_as_path(path), max_pixels, target_size, refuse_colour=False)


def _decode(path: Path, max_pixels: int, target_size: int | None, *, refuse_colour: bool) -> np.ndarray:
    if max_pixels <= 0:
        raise ValueError(f"max_pixels must be positive, got {max_pixels}")
    head = _read_head(path)
    try:
        if _is_dicom_head(path, head):
            # Imported here so that pydicom is loaded only once a DICOM file is read.
            from xvision.io.dicom import load_dicom

            image = _reduce_array(load_dicom(path, max_pixels=max_pixels), target_size)
        else:
            image = _load_with_pillow(path, head, max_pixels, target_size, refuse_colour=refuse_colour)
    except ImageLoadError:
        raise
    except Exception as exc:  # a decoder failed in a way not foreseen below: still one clean error
        raise ImageLoadError(path, f"could not decode the image ({exception_reason(exc)})") from exc
    if not np.isfinite(image).all():
        raise ImageLoadError(path, "decoded pixel values include NaN or infinity")
    return image


def load_radiograph(path: str | Path, *, target_size: int | None = None) -> np.ndarray:
    """:func:`load_image`, refusing an image that cannot be a chest radiograph with an
    :class:`~xvision.errors.ImageLoadError`: fewer than :data:`MIN_GREY_LEVELS` distinct values (blank, or a
    mask), or a DICOM whose Modality is another kind of image (CT, MR, ...; see
    :data:`xvision.io.dicom.NOT_RADIOGRAPHS`). What the models read: without it, a lung mask or a CT slice
    given by mistake gets a confident prediction. Also refused: a side under :data:`MIN_SIDE` pixels, and an RGB
    image with more than :data:`MAX_COLOUR_FRACTION` of its pixels coloured (a photograph or an overlay)."""
    image = _decode(_as_path(path), DEFAULT_MAX_PIXELS, target_size, refuse_colour=True)
    if is_dicom(path):
        from xvision.io.dicom import check_projection_radiograph

        check_projection_radiograph(path)
    problem = not_a_radiograph(image)
    if problem:
        raise ImageLoadError(path, problem)
    return image


def not_a_radiograph(image: np.ndarray) -> str | None:
    """Why a decoded image (Xvision's array form) cannot be a chest radiograph, or None: a side under
    :data:`MIN_SIDE` pixels, one value everywhere (blank), or fewer than :data:`MIN_GREY_LEVELS` (a mask)."""
    if min(image.shape) < MIN_SIDE:
        height, width = image.shape
        return f"image is {width} x {height} pixels: too small for a radiograph (at least {MIN_SIDE} a side)"
    step = max(1, min(image.shape) // 256)  # a 256 x 256 sample decides in about a millisecond
    if np.unique(image[::step, ::step]).size >= MIN_GREY_LEVELS:
        return None
    levels = np.unique(image).size  # the sample may miss a few: count them all before refusing
    if levels == 1:
        return f"every pixel has the same value ({float(image.flat[0]):g}): a blank image, not a radiograph"
    if levels < MIN_GREY_LEVELS:
        return f"only {levels} grey levels: a mask or a label image, not a radiograph (a film has hundreds)"
    return None


def is_dicom(path: str | Path) -> bool:
    """Whether :func:`load_image` reads ``path`` as DICOM.

    True when the file has ``DICM`` at byte 128, or has a ``.dcm``/``.dicom`` suffix and no PNG, JPEG, TIFF
    or BMP signature (a missing or unreadable file is judged by its suffix alone). Never raises.
    """
    path = Path(path)
    try:
        with path.open("rb") as handle:
            head = handle.read(_DICOM_MAGIC_OFFSET + 4)
    except OSError:
        head = b""
    return _is_dicom_head(path, head)


def check_dimensions(path: Path, width: int, height: int, max_pixels: int) -> None:
    """Raise ImageLoadError unless a header's width and height are positive and within ``max_pixels``."""
    if width <= 0 or height <= 0:
        raise ImageLoadError(path, f"image is {width} x {height} pixels; a width or height of 0 is not an image")
    pixels = width * height
    if pixels > max_pixels:
        raise ImageLoadError(
            path,
            f"image is {width} x {height} pixels ({pixels / 1e6:.1f} megapixels), more than the "
            f"{max_pixels / 1e6:.1f} megapixel limit; refusing to decode (decompression bomb?). "
            "If the file is genuine, save it smaller (about 4096 px a side keeps every detail a model sees); "
            "from Python, load_image(path, max_pixels=...) reads it",
        )


def exception_reason(exc: BaseException) -> str:
    """A one-line, bounded description of a decoder's exception, for an ImageLoadError reason."""
    text = " ".join(str(exc).split())
    if len(text) > _REASON_LIMIT:
        text = text[: _REASON_LIMIT - 3] + "..."
    return f"{type(exc).__name__}: {text}" if text else type(exc).__name__


def _read_head(path: Path) -> bytes:
    """The first bytes of the file, enough to recognise its format; the checks that need no decoder."""
    kind = not_regular(path)
    if kind:
        raise ImageLoadError(path, f"is {kind}, not an image file")
    try:
        with path.open("rb") as handle:
            head = handle.read(_DICOM_MAGIC_OFFSET + 4)
    except FileNotFoundError:
        raise ImageLoadError(path, DANGLING_LINK if path.is_symlink() else "file not found") from None
    except IsADirectoryError:
        raise ImageLoadError(path, "is a directory, not an image file") from None
    except PermissionError:
        raise ImageLoadError(path, "permission denied") from None
    except OSError as exc:
        if exc.errno == errno.ELOOP:  # a link to itself, or a ring of links
            raise ImageLoadError(path, DANGLING_LINK) from None
        raise ImageLoadError(path, f"cannot read the file ({exception_reason(exc)})") from exc
    if not head:
        raise ImageLoadError(path, "file is empty (0 bytes)")
    return head


def _pillow_class(head: bytes) -> type[ImageFile.ImageFile] | None:
    for signature, image_class in _PILLOW_SIGNATURES:
        if head.startswith(signature):
            return image_class
    return None


def _is_dicom_head(path: Path, head: bytes) -> bool:
    if head[_DICOM_MAGIC_OFFSET : _DICOM_MAGIC_OFFSET + 4] == b"DICM":
        return True
    return path.suffix.lower() in _DICOM_SUFFIXES and _pillow_class(head) is None


def _reduction_factor(width: int, height: int, target_size: int | None) -> int:
    """The integer downscale that keeps at least ``_DECODE_MARGIN * target_size`` pixels on the shorter side."""
    if target_size is None or target_size <= 0:
        return 1
    return max(1, min(width, height) // (_DECODE_MARGIN * target_size))


def _reduce_array(image: np.ndarray, target_size: int | None) -> np.ndarray:
    factor = _reduction_factor(image.shape[1], image.shape[0], target_size)
    if factor < 2:
        return image
    # Pillow's box reduction of a float image averages partial boxes at the edges, so nothing is cropped.
    return np.asarray(Image.fromarray(image, mode="F").reduce(factor), dtype=np.float32)


def _load_with_pillow(
    path: Path, head: bytes, max_pixels: int, target_size: int | None = None, *, refuse_colour: bool = False
) -> np.ndarray:
    image_class = _pillow_class(head)
    if image_class is None:
        if path.suffix.lower() in UNREAD_PICTURES:
            raise ImageLoadError(
                path,
                f"a {path.suffix.lower()} picture: Xvision reads PNG, JPEG, TIFF, BMP and DICOM; convert it to PNG",
            )
        raise ImageLoadError(path, "not a supported image: the contents are not PNG, JPEG, TIFF, BMP or DICOM")
    with path.open("rb") as handle:
        try:
            image = image_class(handle, str(path))  # reads the header only
        except Exception as exc:
            raise ImageLoadError(path, f"corrupt image header ({exception_reason(exc)})") from exc
        check_dimensions(path, image.width, image.height, max_pixels)
        factor = _reduction_factor(image.width, image.height, target_size)
        if factor >= 2 and image.format == "JPEG":
            # DCT-domain scaling: decodes 1/2, 1/4 or 1/8 of the pixels, never below the requested size.
            image.draft(None, (image.width // factor, image.height // factor))
            factor = _reduction_factor(image.width, image.height, target_size)
        # ImageFile.LOAD_TRUNCATED_IMAGES stays False, so a short file fails here instead of loading grey.
        try:
            image.load()
        except Exception as exc:
            raise ImageLoadError(path, f"truncated or corrupt image data ({exception_reason(exc)})") from exc
        _check_sample_depth(path, image, head)
        image = _upright(image)
        if refuse_colour:
            _check_not_colour(path, image)
        if factor >= 2 and image.mode == "L":
            return np.asarray(image.reduce(factor), dtype=np.float32) / np.float32(255)
        return _reduce_array(_pillow_to_array(path, image), target_size)


# PNG colour types (IHDR byte 25) with more than one sample per pixel; their 16-bit form is read by Pillow as
# 8 bits per sample (the high byte), so a 12-bit film in 16-bit RGB would come out as 16 grey levels, nearly black.
_PNG_MULTI_SAMPLE = {2: "RGB", 4: "grey + alpha", 6: "RGBA"}
_TIFF_BITS_PER_SAMPLE = 258
_TIFF_PHOTOMETRIC = 262
_TIFF_MIN_IS_WHITE = 0


def _check_sample_depth(path: Path, image: ImageFile.ImageFile, head: bytes) -> None:
    """Refuse a file whose samples are deeper than the mode Pillow gives it (16-bit colour PNG or TIFF: only the
    high byte of each sample is decoded); warn that only the first page of a multi-page TIFF is read."""
    kind = None
    if image.format == "PNG" and len(head) > 25 and head[24] == 16 and head[25] in _PNG_MULTI_SAMPLE:
        kind = f"16-bit {_PNG_MULTI_SAMPLE[head[25]]} PNG"
    elif image.format == "TIFF":
        bits = image.tag_v2.get(_TIFF_BITS_PER_SAMPLE, 1)
        deepest = max(bits) if isinstance(bits, tuple) else int(bits)
        if deepest > 8 and image.mode in _EIGHT_BIT_MODES:
            kind = f"{deepest}-bit {image.mode} TIFF"
        if getattr(image, "n_frames", 1) > 1:
            warnings.warn(
                ImageWarning(
                    path,
                    "multi-page TIFF; only the first page is used",
                    f"TIFF has {image.n_frames} pages; using the first",
                ),
                stacklevel=4,
            )
    if kind is not None:
        raise ImageLoadError(
            path,
            f"{kind}: only the high 8 bits of each sample can be decoded, which would lose the film's grey levels; "
            "save it as 16-bit greyscale PNG or TIFF (or DICOM)",
        )


def _upright(image: Image.Image) -> Image.Image:
    """The image turned as its EXIF orientation tag says (a viewer's view), or itself when there is none."""
    if image.format not in ("JPEG", "TIFF", "MPO") or image.getexif().get(ORIENTATION_TAG, 1) == 1:
        return image
    return ImageOps.exif_transpose(image)


def _check_not_colour(path: Path, image: ImageFile.ImageFile) -> None:
    """Raise ImageLoadError when more than MAX_COLOUR_FRACTION of an RGB-like image's pixels are coloured."""
    if image.mode not in ("P", "PA", "RGB", "RGBA", "RGBa", "RGBX", "CMYK", "YCbCr"):
        return
    rgb = image if image.mode == "RGB" else image.convert("RGB")
    step = max(1, min(rgb.size) // 256)  # a 256 x 256 sample is plenty for a fraction
    pixels = np.asarray(rgb)[::step, ::step].reshape(-1, 3).astype(np.float64)
    brightness = pixels.mean(axis=1)
    curve = np.column_stack([np.ones_like(brightness), brightness, brightness**2])
    inliers = np.ones(len(pixels), dtype=bool)
    for _ in range(3):  # refitted on the pixels it explains: a red arrow pulled one fit off every grey pixel
        fit, *_ = np.linalg.lstsq(curve[inliers], pixels[inliers], rcond=None)  # each channel vs brightness
        off = np.abs(pixels - curve @ fit).max(axis=1)
        if (off <= COLOUR_CHROMA).sum() < curve.shape[1]:
            break
        inliers = off <= COLOUR_CHROMA
    fraction = float(np.mean(off > COLOUR_CHROMA))
    if fraction > MAX_COLOUR_FRACTION:
        raise ImageLoadError(
            path,
            f"a colour image ({fraction:.0%} of its pixels coloured): a photograph or an overlay, not a radiograph",
        )


def _pillow_to_array(path: Path, image: ImageFile.ImageFile) -> np.ndarray:
    """Grayscale float32 in [0, 1], scaled by the bit depth of the pixel mode."""
    mode = image.mode
    # Pillow before 10.x opened 16-bit grayscale PNG as "I" (32-bit int); PNG has no deeper grayscale.
    if mode in _SIXTEEN_BIT_MODES or (mode == "I" and image.format == "PNG"):
        values = np.asarray(image, dtype=np.float32)
        depth = stored_depth(int(values.max()) if values.size else 0)
        scaled = values / np.float32(2**depth - 1)
        if image.format == "TIFF" and image.tag_v2.get(_TIFF_PHOTOMETRIC) == _TIFF_MIN_IS_WHITE:
            return np.float32(1) - scaled  # white is 0: Pillow inverts 8-bit MinIsWhite itself, not 16-bit
        return scaled
    if mode in _EIGHT_BIT_MODES:
        if mode in ("P", "PA"):  # via RGBA so that palette transparency is dropped, not misread
            image = image.convert("RGBA")
        gray = image.convert("L")
        return np.asarray(gray, dtype=np.float32) / np.float32(255)
    raise ImageLoadError(
        path,
        f"unsupported pixel mode {mode!r} (no implied intensity range); save the image as 8- or 16-bit grayscale PNG",
    )
