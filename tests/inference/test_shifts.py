"""The synthetic device shifts of the robustness benchmark (inference.shifts): deterministic, and each
does what its name says."""

from __future__ import annotations

import numpy as np
import pytest
from PIL import Image

from inference import shifts


@pytest.fixture
def image() -> Image.Image:
    rng = np.random.default_rng(0)
    pixels = np.clip(rng.normal([180, 130, 110], 25, (150, 200, 3)), 0, 255).astype(np.uint8)
    return Image.fromarray(pixels, "RGB")


def _px(image: Image.Image) -> np.ndarray:
    return np.asarray(image, dtype=np.float32)


@pytest.mark.parametrize("name", ["clean", *shifts.SHIFTS])
def test_every_shift_is_deterministic_rgb_and_described(name, image):
    first, second = shifts.apply_shift(name, image), shifts.apply_shift(name, image)
    assert first.mode == "RGB"
    assert np.array_equal(_px(first), _px(second))
    assert shifts.DESCRIPTIONS[name]


@pytest.mark.parametrize("name", list(shifts.SHIFTS))
def test_every_shift_changes_the_image(name, image):
    shifted = shifts.apply_shift(name, image)
    assert shifted.size != image.size or not np.array_equal(_px(shifted), _px(image))


def test_vignette_darkens_corners_and_keeps_the_centre(image):
    out = _px(shifts.vignette(image))
    assert out[:5, :5].mean() < 15
    assert out[-5:, -5:].mean() < 15
    assert np.array_equal(out[70:80, 95:105], _px(image)[70:80, 95:105])


def test_white_balance_scales_each_channel(image):
    flat = Image.new("RGB", (20, 10), (100, 100, 100))
    assert _px(shifts.white_balance(flat, (1.15, 1.0, 0.85)))[0, 0].tolist() == [115, 100, 85]
    warm, cool = shifts.apply_shift("white_balance_warm", image), shifts.apply_shift("white_balance_cool", image)
    assert _px(warm)[..., 0].mean() > _px(image)[..., 0].mean() > _px(cool)[..., 0].mean()


def test_blur_removes_detail(image):
    def detail(im):
        return np.abs(np.diff(_px(im), axis=1)).mean()

    assert detail(shifts.blur(image, 2.0)) < detail(shifts.blur(image, 1.0)) < detail(image)


def test_jpeg_and_rescale_and_rotate(image):
    assert shifts.jpeg(image, 30).size == image.size
    assert shifts.rescale(image, 0.5).size == (100, 75)
    assert shifts.rotate(image, 90).size == (150, 200)
    assert np.array_equal(_px(shifts.rotate(image, 360)), _px(image))
    assert np.array_equal(_px(shifts.rotate(shifts.rotate(image, 90), 270)), _px(image))
    assert shifts.rotate(image, 45).size == image.size


def test_brightness_is_clipped():
    flat = Image.new("RGB", (4, 4), (100, 200, 10))
    assert _px(shifts.brightness(flat, 3))[0, 0].tolist() == [255, 255, 30]


def test_bad_arguments_are_refused(image):
    with pytest.raises(ValueError, match="unknown shift"):
        shifts.apply_shift("fisheye", image)
    with pytest.raises(ValueError):
        shifts.jpeg(image, 0)
    with pytest.raises(ValueError):
        shifts.white_balance(image, (1.0, 0.0, 1.0))
    with pytest.raises(ValueError):
        shifts.vignette(image, radius=0)
    with pytest.raises(ValueError):
        shifts.rescale(image, 0)
