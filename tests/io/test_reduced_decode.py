"""load_image(target_size=...): large images reduced as early as the format allows, same array form."""

from __future__ import annotations

import numpy as np
import pytest
from PIL import Image
from scipy import ndimage

from xvision.io import load_image


def _smooth(shape: tuple[int, int], seed: int = 0) -> np.ndarray:
    field = ndimage.gaussian_filter(np.random.default_rng(seed).normal(size=shape), sigma=min(shape) / 16)
    return (field - field.min()) / np.ptp(field)


def _box(image: np.ndarray, factor: int) -> np.ndarray:
    h, w = (s // factor * factor for s in image.shape)
    return image[:h, :w].reshape(h // factor, factor, w // factor, factor).mean(axis=(1, 3))


def _check_form(image: np.ndarray) -> None:
    assert image.dtype == np.float32 and image.ndim == 2
    assert image.min() >= 0.0 and image.max() <= 1.0


def test_jpeg_is_decoded_in_draft_mode_keeping_four_times_the_target(tmp_path) -> None:
    pixels = (_smooth((1600, 2000)) * 255).astype(np.uint8)
    Image.fromarray(pixels).save(tmp_path / "big.jpg", quality=95)
    full = load_image(tmp_path / "big.jpg")
    reduced = load_image(tmp_path / "big.jpg", target_size=112)
    _check_form(reduced)
    assert full.shape == (1600, 2000)
    # 1/2 scale: 1/4 would leave 400 px, below four times the target (448) on the short side
    assert reduced.shape == (800, 1000)
    assert np.abs(reduced - _box(full, 2)).mean() < 0.01
    Image.fromarray(np.pad(pixels, ((0, 448), (0, 48)), mode="edge")).save(tmp_path / "bigger.jpg", quality=95)
    assert load_image(tmp_path / "bigger.jpg", target_size=112).shape == (512, 512)  # 2048 px -> 1/4 scale


@pytest.mark.parametrize("bits", [8, 16])
def test_png_is_box_reduced_right_after_decoding(tmp_path, bits: int) -> None:
    scale = 255 if bits == 8 else 65535
    pixels = (_smooth((1030, 1100)) * scale).astype(np.uint8 if bits == 8 else np.uint16)
    Image.fromarray(pixels).save(tmp_path / "big.png")
    full = load_image(tmp_path / "big.png")
    reduced = load_image(tmp_path / "big.png", target_size=112)
    _check_form(reduced)
    assert reduced.shape == (515, 550)  # factor 2: 1030 // 448; partial edge boxes are kept, nothing cropped
    assert np.allclose(reduced[:-1, :-1], _box(full, 2)[:514, :549], atol=1.5 / 255)


def test_small_images_and_no_target_are_untouched(tmp_path) -> None:
    pixels = (_smooth((300, 280)) * 255).astype(np.uint8)
    Image.fromarray(pixels).save(tmp_path / "small.png")
    assert np.array_equal(load_image(tmp_path / "small.png", target_size=112), load_image(tmp_path / "small.png"))
    Image.fromarray(pixels).save(tmp_path / "small.jpg")
    assert load_image(tmp_path / "small.jpg", target_size=112).shape == (300, 280)
    # 1024 // (4 x 224) = 1: a 1024 px radiograph for a 224 px network is decoded whole
    Image.fromarray(np.pad(pixels, ((0, 724), (0, 744)), mode="edge")).save(tmp_path / "mid.png")
    assert load_image(tmp_path / "mid.png", target_size=224).shape == (1024, 1024)
