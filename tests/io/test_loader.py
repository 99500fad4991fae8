"""xvision.io.load_image: one array form (float32, (H, W), [0, 1], display polarity) for every format."""

from __future__ import annotations

import logging
import struct
import warnings
import zlib
from pathlib import Path

import numpy as np
import pydicom
import pytest
import skimage.data
from PIL import Image
from pydicom.data import get_testdata_file
from pydicom.dataset import FileDataset, FileMetaDataset
from pydicom.uid import ExplicitVRLittleEndian, generate_uid
from scipy import ndimage

from xvision.errors import ImageLoadError
from xvision.io import DEFAULT_MAX_PIXELS, SUPPORTED_SUFFIXES, is_dicom, load_image, load_radiograph
from xvision.io.loader import MIN_GREY_LEVELS, MIN_SIDE

DX_FOR_PRESENTATION = "1.2.840.10008.5.1.4.1.1.1.1"


def write_png(path: Path, pixels: np.ndarray) -> Path:
    Image.fromarray(pixels).save(path, format="PNG")
    return path


def write_dicom(
    path: Path,
    pixels: np.ndarray,
    *,
    photometric: str = "MONOCHROME2",
    bits_stored: int | None = None,
    frames: int = 1,
    **elements: object,
) -> Path:
    """A minimal DX DICOM, Explicit VR Little Endian; ``pixels`` is (rows, cols[, samples]) per frame."""
    meta = FileMetaDataset()
    meta.MediaStorageSOPClassUID = DX_FOR_PRESENTATION
    meta.MediaStorageSOPInstanceUID = generate_uid()
    meta.TransferSyntaxUID = ExplicitVRLittleEndian
    ds = FileDataset(str(path), {}, file_meta=meta, preamble=b"\0" * 128)
    ds.SOPClassUID = meta.MediaStorageSOPClassUID
    ds.SOPInstanceUID = meta.MediaStorageSOPInstanceUID
    ds.Modality = "DX"
    ds.Rows, ds.Columns = pixels.shape[:2]
    ds.SamplesPerPixel = pixels.shape[2] if pixels.ndim == 3 else 1
    if ds.SamplesPerPixel > 1:
        ds.PlanarConfiguration = 0
    ds.PhotometricInterpretation = photometric
    ds.BitsAllocated = pixels.dtype.itemsize * 8
    ds.BitsStored = bits_stored or ds.BitsAllocated
    ds.HighBit = ds.BitsStored - 1
    ds.PixelRepresentation = int(pixels.dtype.kind == "i")
    if frames > 1:
        ds.NumberOfFrames = frames
    ds.PixelData = np.concatenate([pixels + i for i in range(frames)]).tobytes()
    for keyword, value in elements.items():
        setattr(ds, keyword, value)
    ds.save_as(path, enforce_file_format=True)
    return path


def png_chunk(kind: bytes, data: bytes) -> bytes:
    return struct.pack(">I", len(data)) + kind + data + struct.pack(">I", zlib.crc32(kind + data))


def png_header_only(width: int, height: int) -> bytes:
    """A PNG whose IHDR claims width x height (8-bit gray), followed by a token IDAT: no real image data."""
    ihdr = struct.pack(">IIBBBBB", width, height, 8, 0, 0, 0, 0)
    return (
        b"\x89PNG\r\n\x1a\n"
        + png_chunk(b"IHDR", ihdr)
        + png_chunk(b"IDAT", zlib.compress(b"\0" * 16))
        + png_chunk(b"IEND", b"")
    )


def bundled_dicom(name: str) -> str:
    path = get_testdata_file(name, download=False)
    if path is None:
        pytest.skip(f"pydicom test file {name} is not bundled with this pydicom")
    return str(path)


def assert_array_form(image: np.ndarray, shape: tuple[int, ...]) -> None:
    assert image.dtype == np.float32
    assert image.shape == shape
    assert image.min() >= 0.0 and image.max() <= 1.0


# --- PNG, JPEG, TIFF, BMP -------------------------------------------------------------------------------


def test_png_8bit_values_are_divided_by_255(tmp_path: Path) -> None:
    path = write_png(tmp_path / "gray.png", np.array([[0, 128, 255], [10, 20, 30]], dtype=np.uint8))
    image = load_image(path)
    assert_array_form(image, (2, 3))
    np.testing.assert_allclose(image, np.array([[0, 128, 255], [10, 20, 30]]) / 255, atol=1e-7)


def test_png_16bit_full_range_is_divided_by_65535(tmp_path: Path) -> None:
    path = write_png(tmp_path / "16.png", np.array([[0, 32768, 65535]], dtype=np.uint16))
    image = load_image(path)
    assert_array_form(image, (1, 3))
    np.testing.assert_allclose(image, [[0.0, 32768 / 65535, 1.0]], atol=1e-7)


def test_png_16bit_is_scaled_by_the_stored_depth_that_holds_it_never_by_its_own_max(tmp_path: Path) -> None:
    # 12-bit data exported into a 16-bit PNG: read / 65535 it was a nearly black film (max 0.06).
    path = write_png(tmp_path / "12in16.png", np.array([[0, 2048, 4095]], dtype=np.uint16))
    np.testing.assert_allclose(load_image(path), [[0.0, 2048 / 4095, 1.0]], atol=1e-7)
    dim = write_png(tmp_path / "dim12.png", np.array([[0, 1000, 3000]], dtype=np.uint16))
    np.testing.assert_allclose(load_image(dim), [[0.0, 1000 / 4095, 3000 / 4095]], atol=1e-7)  # not / 3000
    # 14-bit detectors are common: / 65535 such a film was at most a quarter white.
    fourteen = write_png(tmp_path / "14bit.png", np.array([[0, 4096, 16383]], dtype=np.uint16))
    np.testing.assert_allclose(load_image(fourteen), [[0.0, 4096 / 16383, 1.0]], atol=1e-7)
    just_over = write_png(tmp_path / "13bit.png", np.array([[0, 2048, 4096]], dtype=np.uint16))
    np.testing.assert_allclose(load_image(just_over), [[0.0, 2048 / 16383, 4096 / 16383]], atol=1e-7)
    eight = write_png(tmp_path / "8in16.png", np.array([[0, 128, 255]], dtype=np.uint16))
    np.testing.assert_allclose(load_image(eight), [[0.0, 128 / 255, 1.0]], atol=1e-7)


def test_dicom_bits_stored_16_holding_12_bit_data_is_scaled_as_12_bit_with_a_warning(tmp_path: Path) -> None:
    path = write_dicom(tmp_path / "bs16.dcm", STORED_12BIT)  # BitsStored 16, no window
    with pytest.warns(UserWarning, match="BitsStored is 16 but every value fits 12 bits"):
        image = load_image(path)
    np.testing.assert_allclose(image, STORED_12BIT / 4095, atol=1e-6)
    windowed = write_dicom(tmp_path / "w.dcm", STORED_12BIT, WindowCenter=1024, WindowWidth=2048)
    with warnings.catch_warnings():
        warnings.simplefilter("error")  # a window says how to show it: no depth guess, no warning
        assert load_image(windowed).max() == 1.0


def test_jpeg_exif_orientation_is_applied_as_viewers_show_it(tmp_path: Path) -> None:
    upright = np.zeros((40, 60), dtype=np.uint8)
    upright[:10, :] = 255  # a bright band along the top
    stored = np.ascontiguousarray(np.rot90(upright))  # the pixels as a camera held sideways stores them
    exif = Image.Exif()
    exif[0x0112] = 6  # "rotate 90 degrees clockwise to view"
    path = tmp_path / "phone.jpg"
    Image.fromarray(stored).save(path, quality=95, exif=exif)
    image = load_image(path)
    assert image.shape == (40, 60)
    assert image[:10].mean() > 0.9 and image[20:].mean() < 0.1
    plain = tmp_path / "plain.jpg"
    Image.fromarray(stored).save(plain, quality=95)
    assert load_image(plain).shape == (60, 40)  # no tag: the pixels as stored


def test_rgb_and_rgba_png_become_2d_luminance_with_alpha_dropped(tmp_path: Path) -> None:
    rgba = np.array([[[255, 255, 255, 0], [255, 0, 0, 255], [0, 0, 0, 128]]], dtype=np.uint8)
    for name, pixels in {"rgb.png": rgba[..., :3], "rgba.png": rgba}.items():
        image = load_image(write_png(tmp_path / name, pixels))
        assert_array_form(image, (1, 3))
        # ITU-R 601-2 luma: pure red is 0.299 of white; transparency does not darken white.
        np.testing.assert_allclose(image, [[1.0, 76 / 255, 0.0]], atol=1e-6)


def test_palette_png_becomes_luminance(tmp_path: Path) -> None:
    palette_image = Image.fromarray(np.array([[0, 1]], dtype=np.uint8), mode="P")
    palette_image.putpalette([0, 0, 0, 255, 255, 255] + [0] * (256 * 3 - 6))
    path = tmp_path / "palette.png"
    palette_image.save(path, transparency=0)
    np.testing.assert_allclose(load_image(path), [[0.0, 1.0]], atol=1e-7)


@pytest.mark.parametrize("mode", ["L", "RGB"])
def test_jpeg_gray_and_rgb_become_2d(tmp_path: Path, mode: str) -> None:
    path = tmp_path / "x.jpg"
    Image.new(mode, (16, 8), 200 if mode == "L" else (200, 200, 200)).save(path, quality=95)
    image = load_image(path)
    assert_array_form(image, (8, 16))
    np.testing.assert_allclose(image, 200 / 255, atol=2 / 255)  # JPEG is lossy


def test_tiff_16bit_and_bmp_8bit(tmp_path: Path) -> None:
    tiff = tmp_path / "x.tif"
    Image.fromarray(np.array([[0, 4095, 65535]], dtype=np.uint16)).save(tiff)
    np.testing.assert_allclose(load_image(tiff), [[0.0, 4095 / 65535, 1.0]], atol=1e-7)
    bmp = tmp_path / "x.bmp"
    Image.fromarray(np.array([[0, 51, 255]], dtype=np.uint8)).save(bmp)
    np.testing.assert_allclose(load_image(bmp), [[0.0, 0.2, 1.0]], atol=1e-7)


def png16(path: Path, samples: np.ndarray, colour_type: int) -> Path:
    """A 16-bit PNG of ``samples`` (rows, cols, channels), written by hand: Pillow cannot write 16-bit colour."""
    height, width = samples.shape[:2]
    rows = b"".join(b"\0" + samples[y].astype(">u2").tobytes() for y in range(height))
    ihdr = struct.pack(">IIBBBBB", width, height, 16, colour_type, 0, 0, 0)
    body = png_chunk(b"IHDR", ihdr) + png_chunk(b"IDAT", zlib.compress(rows)) + png_chunk(b"IEND", b"")
    path.write_bytes(b"\x89PNG\r\n\x1a\n" + body)
    return path


def test_sixteen_bit_colour_files_are_refused_not_read_nearly_black(tmp_path: Path) -> None:
    """A 12-bit film saved as 16-bit RGB or grey+alpha PNG came out with 16 grey levels, mean 0.05, and was
    scored with confidence: Pillow decodes only the high byte of each sample of these types."""
    film = (np.add.outer(np.arange(64), np.arange(64)) * 32).astype(np.uint16)  # 0..4032, 12-bit values
    np.testing.assert_allclose(load_image(png16(tmp_path / "grey.png", film[..., None], 0)), film / 4095, atol=1e-6)
    for name, samples, colour_type in (
        ("rgb.png", np.dstack([film] * 3), 2),
        ("greyalpha.png", np.dstack([film, np.full_like(film, 65535)]), 4),
        ("rgba.png", np.dstack([film] * 3 + [np.full_like(film, 65535)]), 6),
    ):
        with pytest.raises(ImageLoadError, match=rf"{name}: 16-bit .* PNG: only the high 8 bits .* 16-bit greyscale"):
            load_image(png16(tmp_path / name, samples, colour_type))
    tifffile = pytest.importorskip("tifffile")
    tifffile.imwrite(tmp_path / "rgb16.tif", np.dstack([film] * 3), photometric="rgb")
    with pytest.raises(ImageLoadError, match=r"rgb16\.tif: 16-bit RGB TIFF: only the high 8 bits"):
        load_image(tmp_path / "rgb16.tif")


def test_sixteen_bit_min_is_white_tiff_is_read_in_display_polarity_as_eight_bit_is(tmp_path: Path) -> None:
    tifffile = pytest.importorskip("tifffile")
    film = (np.add.outer(np.arange(64), np.arange(64)) * 32).astype(np.uint16)
    tifffile.imwrite(tmp_path / "white16.tif", (4095 - film).astype(np.uint16), photometric="miniswhite")
    tifffile.imwrite(tmp_path / "white8.tif", (255 - film // 16).astype(np.uint8), photometric="miniswhite")
    np.testing.assert_allclose(load_image(tmp_path / "white16.tif"), film / 4095, atol=1e-6)
    np.testing.assert_allclose(load_image(tmp_path / "white8.tif"), (film // 16) / 255, atol=1e-6)


def test_only_the_first_page_of_a_multi_page_tiff_is_read_with_a_warning(tmp_path: Path) -> None:
    from xvision.errors import ImageWarning

    pages = [Image.fromarray(np.full((40, 40), value, dtype=np.uint8)) for value in (10, 200, 90)]
    pages[0].save(tmp_path / "stack.tif", save_all=True, append_images=pages[1:])
    with pytest.warns(ImageWarning, match=r"stack\.tif: TIFF has 3 pages; using the first"):
        image = load_image(tmp_path / "stack.tif")
    np.testing.assert_allclose(image, 10 / 255, atol=1e-7)
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        load_image(write_png(tmp_path / "one.png", np.zeros((4, 4), dtype=np.uint8)))


def test_constant_image_is_allowed(tmp_path: Path) -> None:
    path = write_png(tmp_path / "flat.png", np.full((4, 4), 7, dtype=np.uint8))
    np.testing.assert_allclose(load_image(path), np.full((4, 4), 7 / 255), atol=1e-7)


def test_load_radiograph_refuses_blank_and_binary_images_naming_the_file(tmp_path: Path) -> None:
    """load_image reads them (above); what the models read refuses them: a lung mask is not a film."""
    blank = write_png(tmp_path / "blank.png", np.zeros((300, 300), dtype=np.uint8))
    with pytest.raises(ImageLoadError, match=r"blank\.png: every pixel has the same value \(0\): a blank image"):
        load_radiograph(blank)
    mask = np.zeros((600, 520), dtype=np.uint8)
    mask[100:500, 60:240] = 1  # JSRT's lung masks: 0 outside, 1 inside
    mask[599, 519] = 1  # a level the 256 x 256 sample skips: still counted before refusing
    with pytest.raises(ImageLoadError, match=r"mask\.png: only 2 grey levels: a mask"):
        load_radiograph(write_png(tmp_path / "mask.png", mask))
    few = (np.arange(600 * 520).reshape(600, 520) % (MIN_GREY_LEVELS - 1)).astype(np.uint8)
    with pytest.raises(ImageLoadError, match=f"only {MIN_GREY_LEVELS - 1} grey levels"):
        load_radiograph(write_png(tmp_path / "few.png", few))


def test_load_radiograph_returns_what_load_image_does_for_a_film(tmp_path: Path) -> None:
    """Enough levels, even where the sample sees too few: the whole image is counted before refusing."""
    film = np.random.default_rng(0).integers(0, 256, (300, 200), dtype=np.uint8)
    path = write_png(tmp_path / "film.png", film)
    np.testing.assert_array_equal(load_radiograph(path), load_image(path))
    sparse = np.zeros((1024, 1024), dtype=np.uint8)
    sparse[1::4, 1::4] = np.arange(256 * 256).reshape(256, 256) % 200  # levels off the sample's grid only
    sparse[0, 0] = 5
    path = write_png(tmp_path / "sparse.png", sparse)
    np.testing.assert_array_equal(load_radiograph(path, target_size=256), load_image(path, target_size=256))


def test_load_radiograph_refuses_icons_and_colour_pictures_but_not_grey_films_saved_in_colour(tmp_path: Path) -> None:
    """An 8 x 8 icon and a colour photograph used to get confident predictions; a film saved as RGB (as JPEG
    or with a red annotation arrow) is still a film."""
    rng = np.random.default_rng(0)
    icon = write_png(tmp_path / "icon.png", rng.integers(0, 256, (8, 12), dtype=np.uint8))
    assert load_image(icon).shape == (8, 12)
    with pytest.raises(ImageLoadError, match=rf"icon\.png: image is 12 x 8 pixels: too small .*at least {MIN_SIDE}"):
        load_radiograph(icon)
    smallest = write_png(tmp_path / "small.png", rng.integers(0, 256, (MIN_SIDE, MIN_SIDE + 5), dtype=np.uint8))
    assert load_radiograph(smallest).shape == (MIN_SIDE, MIN_SIDE + 5)

    photo = tmp_path / "cat.jpg"
    Image.fromarray(skimage.data.chelsea()).save(photo, quality=90)
    with pytest.raises(ImageLoadError, match=r"cat\.jpg: a colour image \(\d+% of its pixels coloured\)"):
        load_radiograph(photo)
    assert load_image(photo).ndim == 2  # load_image, for display, still reads it

    grey = rng.integers(0, 256, (200, 160), dtype=np.uint8)
    rgb = np.repeat(grey[:, :, None], 3, axis=2)
    rgb[20:60, 20:30] = (255, 0, 0)  # an annotation arrow: 1.25% of the film
    annotated = tmp_path / "annotated.jpg"
    Image.fromarray(rgb).save(annotated, quality=85)  # JPEG chroma noise on top
    assert load_radiograph(annotated).shape == (200, 160)
    # What Xvision itself draws is not a film: a Grad-CAM overlay with one focal hot spot.
    from xvision.evaluation.plots import plot_heatmap

    yy, xx = np.mgrid[0:200, 0:160]
    spot = np.exp(-((yy - 80) ** 2 + (xx - 60) ** 2) / (2 * 20.0**2))  # a 7 x 7 map upsampled: broad
    overlay = plot_heatmap(grey / 255.0, spot, tmp_path / "gradcam.png")
    with pytest.raises(ImageLoadError, match=r"gradcam\.png: a colour image"):
        load_radiograph(overlay)
    # A tint is not colour: a film photographed on a bluish light box, or toned sepia, is still a film.
    smooth = ndimage.gaussian_filter(grey.astype(float), 3)  # a film's grain, not pixel noise, under JPEG
    smooth = 255 * (smooth - smooth.min()) / np.ptp(smooth)
    level = smooth / 255.0
    tinted = {
        "lightbox.jpg": np.stack([0.8 * smooth + 10, 0.9 * smooth + 20, smooth + 30], axis=2),
        "sepia.png": np.stack([112 + 143 * level, 66 + 160 * level**0.9, 20 + 170 * level**1.2], axis=2),
    }
    for name, pixels in tinted.items():
        Image.fromarray(np.clip(pixels, 0, 255).astype(np.uint8)).save(tmp_path / name)
        assert load_radiograph(tmp_path / name).shape == (200, 160)
    palette = tmp_path / "palette.png"
    Image.fromarray(grey).convert("P").save(palette)
    np.testing.assert_array_equal(load_radiograph(palette), load_image(palette))


@pytest.mark.parametrize("colour", [(255, 0, 0), (0, 200, 0), (255, 255, 0)])
def test_the_coloured_share_is_counted_on_the_pixels_that_are_coloured(tmp_path: Path, colour) -> None:
    """A grey-to-colour curve fitted to every pixel was pulled by the annotation itself: 2% of red read as 6%
    and was refused. Up to 5% is read; beyond it the message gives the true share."""
    grey = ndimage.gaussian_filter(np.random.default_rng(1).integers(0, 256, (200, 200)).astype(float), 3)
    grey = (255 * (grey - grey.min()) / np.ptp(grey)).astype(np.uint8)
    for percent in (2, 4, 8):
        rgb = np.repeat(grey[:, :, None], 3, axis=2)
        rgb[: 2 * percent, :] = colour  # percent% of the rows
        path = tmp_path / f"marked{percent}.png"
        Image.fromarray(rgb).save(path)
        if percent <= 4:
            assert load_radiograph(path).shape == (200, 200)
        else:
            with pytest.raises(ImageLoadError, match=rf"a colour image \({percent}% of its pixels coloured\)"):
                load_radiograph(path)


def test_load_radiograph_refuses_dicoms_of_other_modalities(tmp_path: Path) -> None:
    """A CT slice or an MR image decodes like a film; its Modality says it is not one."""
    pixels = (np.arange(64 * 64, dtype=np.uint16).reshape(64, 64) * 16) % 4096
    for modality in ("DX", "CR", "OT", None):  # radiographs, a scanned film, a header without the tag
        path = write_dicom(tmp_path / f"{modality}.dcm", pixels, bits_stored=12, Modality=modality or "DX")
        if modality is None:
            ds = pydicom.dcmread(path)
            del ds.Modality
            ds.save_as(path)
        np.testing.assert_array_equal(load_radiograph(path), load_image(path))
    for modality, name in (("CT", "computed tomography"), ("MR", "magnetic resonance"), ("MG", "mammography")):
        path = write_dicom(tmp_path / f"{modality}.dcm", pixels, bits_stored=12, Modality=modality)
        assert load_image(path).shape == (64, 64)  # readable, but not what a chest X-ray model reads
        with pytest.raises(ImageLoadError, match=rf"{modality}\.dcm: DICOM modality {modality} \({name}\) is not"):
            load_radiograph(path)
    with pytest.raises(ImageLoadError, match="modality CT"):
        load_radiograph(bundled_dicom("CT_small.dcm"))


def test_contents_not_suffix_choose_the_decoder(tmp_path: Path) -> None:
    png_named_dcm = write_png(tmp_path / "actually_png.dcm", np.array([[0, 255]], dtype=np.uint8))
    assert not is_dicom(png_named_dcm)
    np.testing.assert_allclose(load_image(png_named_dcm), [[0.0, 1.0]])
    dicom_named_bin = write_dicom(tmp_path / "scan.bin", np.array([[0, 4095]], dtype=np.uint16), bits_stored=12)
    assert is_dicom(dicom_named_bin)
    np.testing.assert_allclose(load_image(dicom_named_bin), [[0.0, 1.0]])
    assert is_dicom(tmp_path / "missing.DCM")  # judged by suffix alone
    assert not is_dicom(tmp_path / "missing.png")


def test_supported_suffixes() -> None:
    assert SUPPORTED_SUFFIXES == {".png", ".jpg", ".jpeg", ".dcm", ".dicom", ".tif", ".tiff", ".bmp"}
    assert DEFAULT_MAX_PIXELS == 50_000_000


# --- DICOM ----------------------------------------------------------------------------------------------

STORED_12BIT = np.array([[0, 2048], [1024, 4095]], dtype=np.uint16)


def test_dicom_monochrome2_12bit_is_scaled_by_bits_stored(tmp_path: Path) -> None:
    path = write_dicom(tmp_path / "mono2.dcm", STORED_12BIT, bits_stored=12)
    image = load_image(path)
    assert_array_form(image, (2, 2))
    np.testing.assert_allclose(image, STORED_12BIT / 4095, atol=1e-6)


def test_dicom_monochrome1_is_inverted_with_a_warning(tmp_path: Path) -> None:
    path = write_dicom(tmp_path / "mono1.dcm", STORED_12BIT, bits_stored=12, photometric="MONOCHROME1")
    with pytest.warns(UserWarning, match="MONOCHROME1"):
        image = load_image(path)
    np.testing.assert_allclose(image, 1.0 - STORED_12BIT / 4095, atol=1e-6)


def test_dicom_rescale_is_applied_before_the_window(tmp_path: Path) -> None:
    # Stored 1024 is 0 HU after rescale; the window centred on 0 HU must put it in the middle.
    stored = np.array([[0, 1024, 2048, 4095]], dtype=np.uint16)
    path = write_dicom(
        tmp_path / "ct.dcm",
        stored,
        bits_stored=12,
        RescaleSlope=1,
        RescaleIntercept=-1024,
        WindowCenter=0,
        WindowWidth=2048,
    )
    np.testing.assert_allclose(load_image(path), [[0.0, 0.5, 1.0, 1.0]], atol=1e-3)


@pytest.mark.parametrize(("center", "width"), [(1500, 1000), ([1500, 500], [1000, 200])])
def test_dicom_first_window_maps_onto_0_1(tmp_path: Path, center: object, width: object) -> None:
    stored = np.array([[0, 1000, 1500, 2000, 4095]], dtype=np.uint16)
    path = write_dicom(tmp_path / "w.dcm", stored, bits_stored=12, WindowCenter=center, WindowWidth=width)
    np.testing.assert_allclose(load_image(path), [[0.0, 0.0, 0.5, 1.0, 1.0]], atol=1e-3)


def test_dicom_signed_pixels_use_the_signed_bits_stored_range(tmp_path: Path) -> None:
    stored = np.array([[-2048, 0, 2047]], dtype=np.int16)
    path = write_dicom(tmp_path / "signed.dcm", stored, bits_stored=12)
    np.testing.assert_allclose(load_image(path), [[0.0, 2048 / 4095, 1.0]], atol=1e-6)


def test_dicom_multiframe_uses_the_first_frame_with_a_warning(tmp_path: Path) -> None:
    path = write_dicom(tmp_path / "multi.dcm", STORED_12BIT, bits_stored=12, frames=3)
    with pytest.warns(UserWarning, match="3 frames"):
        image = load_image(path)
    np.testing.assert_allclose(image, STORED_12BIT / 4095, atol=1e-6)


def test_rgb_dicom_is_rejected_naming_the_photometric_interpretation(tmp_path: Path) -> None:
    path = write_dicom(tmp_path / "rgb.dcm", np.zeros((2, 2, 3), dtype=np.uint8), photometric="RGB")
    with pytest.raises(ImageLoadError) as caught:
        load_image(path)
    assert str(caught.value) == (
        f"{path}: unsupported DICOM photometric interpretation 'RGB': "
        "Xvision reads grayscale radiographs (MONOCHROME1/2)"
    )


def test_dicom_without_pixel_data_is_rejected(tmp_path: Path) -> None:
    path = write_dicom(tmp_path / "nopix.dcm", STORED_12BIT, bits_stored=12)
    ds = pydicom.dcmread(path)
    del ds.PixelData
    ds.save_as(path)
    with pytest.raises(ImageLoadError, match="no pixel data") as caught:
        load_image(path)
    assert str(path) in str(caught.value)


def test_text_or_random_bytes_named_dcm_are_not_called_a_dicom_without_pixels(tmp_path: Path) -> None:
    (tmp_path / "junk.dcm").write_text("junk\n")
    (tmp_path / "noise.dcm").write_bytes(np.random.default_rng(0).bytes(5000))
    for name in ("junk.dcm", "noise.dcm"):
        with pytest.raises(ImageLoadError, match="not a DICOM file") as caught:
            load_image(tmp_path / name)
        assert str(caught.value).startswith(str(tmp_path / name)) and "pixel data" not in str(caught.value)


def test_truncated_dicom_pixel_data_is_an_image_load_error(tmp_path: Path) -> None:
    path = write_dicom(tmp_path / "cut.dcm", np.arange(64 * 64, dtype=np.uint16).reshape(64, 64), bits_stored=12)
    data = path.read_bytes()
    path.write_bytes(data[: len(data) - 4096])
    with pytest.raises(ImageLoadError) as caught:
        load_image(path)
    assert str(caught.value).startswith(f"{path}: ")


def test_dicom_size_is_checked_before_pixel_data_is_read(tmp_path: Path) -> None:
    path = write_dicom(tmp_path / "bomb.dcm", STORED_12BIT, bits_stored=12, Rows=60_000, Columns=60_000)
    with pytest.raises(ImageLoadError, match=r"60000 x 60000 pixels .*decompression bomb"):
        load_image(path)


@pytest.mark.parametrize("name", ["CT_small.dcm", "MR_small.dcm", "JPEG2000.dcm", "MR_small_RLE.dcm"])
def test_bundled_pydicom_files_load_into_the_array_form(name: str) -> None:
    path = bundled_dicom(name)
    ds = pydicom.dcmread(path, stop_before_pixels=True)
    image = load_image(path)
    assert_array_form(image, (ds.Rows, ds.Columns))
    assert image.std() > 0


def test_bundled_mr_window_matches_the_dicom_linear_window_formula() -> None:
    ds = pydicom.dcmread(bundled_dicom("MR_small.dcm"))
    center, width = float(ds.WindowCenter), float(ds.WindowWidth)
    expected = np.clip((ds.pixel_array - (center - 0.5)) / (width - 1) + 0.5, 0, 1)
    np.testing.assert_allclose(load_image(bundled_dicom("MR_small.dcm")), expected, atol=1e-5)


@pytest.mark.parametrize("name", ["MR_small_RLE.dcm", "MR_small_jp2klossless.dcm"])
def test_lossless_compressed_dicom_equals_the_uncompressed_one(name: str) -> None:
    np.testing.assert_array_equal(load_image(bundled_dicom(name)), load_image(bundled_dicom("MR_small.dcm")))


# --- bad input ------------------------------------------------------------------------------------------


def assert_load_error(path: Path, *reason_words: str, **kwargs: int) -> None:
    with pytest.raises(ImageLoadError) as caught:
        load_image(path, **kwargs)
    message = str(caught.value)
    assert message.startswith(f"{path}: ")
    assert caught.value.path == str(path)
    for word in reason_words:
        assert word in message


def test_text_file_renamed_png(tmp_path: Path) -> None:
    path = tmp_path / "notes.png"
    path.write_text("patient 12: follow up in 3 months\n")
    assert_load_error(path, "not a supported image", "PNG, JPEG")


def test_empty_file(tmp_path: Path) -> None:
    path = tmp_path / "empty.png"
    path.write_bytes(b"")
    assert_load_error(path, "empty", "0 bytes")


def test_missing_file_and_directory(tmp_path: Path) -> None:
    assert_load_error(tmp_path / "nowhere.png", "file not found")
    assert_load_error(tmp_path, "directory")


def test_truncated_png_is_not_silently_accepted(tmp_path: Path) -> None:
    noise = np.random.default_rng(0).integers(0, 256, size=(64, 64), dtype=np.uint8)  # incompressible
    path = write_png(tmp_path / "cut.png", noise)
    data = path.read_bytes()
    path.write_bytes(data[: len(data) // 2])
    assert_load_error(path, "truncated")


def test_truncated_jpeg_is_not_silently_accepted(tmp_path: Path) -> None:
    noise = np.random.default_rng(0).integers(0, 256, size=(64, 64), dtype=np.uint8)
    path = tmp_path / "cut.jpg"
    Image.fromarray(noise).save(path, quality=95)
    data = path.read_bytes()
    path.write_bytes(data[: len(data) // 2])
    assert_load_error(path, "truncated")


def test_png_claiming_100000_squared_pixels_is_refused_by_our_check_not_pillows(tmp_path: Path) -> None:
    path = tmp_path / "bomb.png"
    path.write_bytes(png_header_only(100_000, 100_000))
    with warnings.catch_warnings():
        warnings.simplefilter("error")  # Pillow's DecompressionBombWarning would fail the test
        assert_load_error(
            path,
            "image is 100000 x 100000 pixels (10000.0 megapixels), more than the 50.0 megapixel limit",
            "decompression bomb",
        )


def test_max_pixels_is_the_limit(tmp_path: Path) -> None:
    path = write_png(tmp_path / "small.png", np.zeros((10, 10), dtype=np.uint8))
    assert load_image(path, max_pixels=100).shape == (10, 10)
    assert_load_error(path, "10 x 10 pixels", max_pixels=99)


def test_png_with_zero_width_is_refused(tmp_path: Path) -> None:
    path = tmp_path / "zero.png"
    path.write_bytes(png_header_only(0, 10))
    assert_load_error(path)


def test_dicom_voi_lut_sequence_output_range_maps_onto_0_1(tmp_path: Path) -> None:
    lut_item = pydicom.Dataset()
    lut_item.LUTDescriptor = [4096, 0, 12]  # entries, first stored value mapped, bits per entry
    lut_item.add_new("LUTData", "US", [4095 - value for value in range(4096)])  # an inverting LUT
    path = write_dicom(
        tmp_path / "voilut.dcm", STORED_12BIT, bits_stored=12, VOILUTSequence=pydicom.Sequence([lut_item])
    )
    np.testing.assert_allclose(load_image(path), 1.0 - STORED_12BIT / 4095, atol=1e-6)


def test_dicom_unusable_window_falls_back_to_bits_stored_with_a_warning(tmp_path: Path) -> None:
    path = write_dicom(tmp_path / "w0.dcm", STORED_12BIT, bits_stored=12, WindowCenter=2048, WindowWidth=0)
    with pytest.warns(UserWarning, match="ignoring unusable VOI LUT/window"):
        image = load_image(path)
    np.testing.assert_allclose(image, STORED_12BIT / 4095, atol=1e-6)


def test_a_compressed_dicom_cut_short_says_so_in_one_line(tmp_path: Path, recwarn) -> None:
    """It said "no pixel data (is it a report?)", after pydicom's own "End of file reached" warning."""
    data = Path(get_testdata_file("MR_small_jpeg_ls_lossless.dcm", download=False)).read_bytes()
    (tmp_path / "cut.dcm").write_bytes(data[: len(data) * 2 // 3])
    with pytest.raises(ImageLoadError, match="the file ends inside its compressed pixel data"):
        load_image(tmp_path / "cut.dcm")
    assert not [w for w in recwarn if "End of file" in str(w.message)]


def test_jpeg_lossless_and_jpeg_ls_dicoms_decode_out_of_the_box(tmp_path: Path) -> None:
    """JPEG Lossless (Process 14, SV1) is how many CR/DX exports are compressed; its pylibjpeg decoder is GPL,
    so Xvision depends on GDCM (BSD), which decodes it and JPEG-LS."""
    import gdcm

    film = (np.arange(64 * 64).reshape(64, 64) % 4096).astype(np.uint16)  # 12-bit values
    raw = write_dicom(tmp_path / "raw.dcm", film, bits_stored=12)
    reader = gdcm.ImageReader()
    reader.SetFileName(str(raw))
    assert reader.Read()
    change = gdcm.ImageChangeTransferSyntax()
    change.SetTransferSyntax(gdcm.TransferSyntax(gdcm.TransferSyntax.JPEGLosslessProcess14_1))
    change.SetInput(reader.GetImage())
    assert change.Change()
    writer = gdcm.ImageWriter()
    writer.SetFileName(str(tmp_path / "lossless.dcm"))
    writer.SetFile(reader.GetFile())
    writer.SetImage(change.GetOutput())
    assert writer.Write()
    assert pydicom.dcmread(tmp_path / "lossless.dcm").file_meta.TransferSyntaxUID == "1.2.840.10008.1.2.4.70"
    np.testing.assert_allclose(load_radiograph(tmp_path / "lossless.dcm"), film / 4095, atol=1e-6)
    jpeg_ls = load_image(get_testdata_file("MR_small_jpeg_ls_lossless.dcm", download=False))
    np.testing.assert_array_equal(jpeg_ls, load_image(get_testdata_file("MR_small.dcm", download=False)))


@pytest.mark.parametrize(
    ("name", "syntax", "install"),
    [
        # 12-bit: neither GDCM nor Pillow decodes it (JPEG-LS, once here too, decodes with GDCM: tested above)
        ("JPEG-lossy.dcm", "JPEG Extended (Process 2 and 4)", "`pip install pylibjpeg-libjpeg`"),
    ],
)
def test_an_undecodable_dicom_is_one_line_naming_its_decoder(caplog, name: str, syntax: str, install: str) -> None:
    try:
        load_image(get_testdata_file(name, download=False))
    except ImageLoadError as error:
        message = str(error)
    else:
        pytest.skip(f"a decoder for {syntax} is installed here")
    assert syntax in message and install in message
    assert "requires" not in message and len(message.splitlines()) == 1  # not pydicom's list of plugins
    # pydicom's own ERROR record with its traceback is dropped: the ImageLoadError says it, on one line.
    assert not [r for r in caplog.records if r.levelno >= logging.ERROR and r.name.startswith("pydicom")]


def test_pydicom_errors_outside_xvision_are_still_logged(caplog) -> None:
    """The filter that drops pydicom's decode tracebacks works only inside Xvision's own loading."""
    import xvision.io.dicom  # noqa: F401  (installs the filter)

    with caplog.at_level(logging.ERROR):
        logging.getLogger("pydicom").error("a user's own pydicom error")
        logging.getLogger("pydicom.pixels.decoders.base").error("a decoder error outside Xvision")
    assert [r.getMessage() for r in caplog.records] == [
        "a user's own pydicom error",
        "a decoder error outside Xvision",
    ]


def test_a_picture_in_a_format_not_read_is_named_as_that_format(tmp_path: Path) -> None:
    path = tmp_path / "film.webp"
    Image.fromarray(np.full((64, 64), 90, dtype=np.uint8)).save(path)
    with pytest.raises(ImageLoadError, match=r"film.webp: a .webp picture: Xvision reads PNG, JPEG, TIFF, BMP"):
        load_image(path)
