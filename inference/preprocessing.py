"""Image preprocessing shared by the portal, the evaluation command, benchmarks and training.

Only Pillow and numpy: the portal must not need torch. Every path that feeds the model
goes through `prepare_image` and `to_model_input` (or `model_pixels` for pixels already at
the input size), so the portal, the evaluation command and training preprocess identically
(tested).

A model's input size is either an int (square, model 1) or (width, height); the colour
constancy step is on for models whose metadata asks for it (model 2 on), so one committed
model and the code always agree.
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np
from PIL import Image, ImageOps

# The ImageNet weights of EfficientNet-Lite0 were trained on (x - 127) / 128.
PIXEL_MEAN = 127.0
PIXEL_SCALE = 128.0
# Shades of Gray (Finlayson & Trezzi 2004) with the Minkowski norm p = 6, as the top
# ISIC 2019 teams used: it removes the colour cast of another dermatoscope or camera.
SHADES_OF_GRAY_P = 6

Size = int | tuple[int, int]


def input_wh(size: Size) -> tuple[int, int]:
    """(width, height) of a model input size given as an int (square) or (width, height)."""
    if isinstance(size, int):
        return size, size
    width, height = size
    return int(width), int(height)


def prepare_image(image: Image.Image, size: Size) -> Image.Image:
    """Orientation applied, RGB, squashed to the model's width x height.

    Squash (not crop) keeps the whole dermoscopic field: lesions are not always centred,
    and a heatmap maps back onto the original by a plain resize.
    """
    wh = input_wh(size)
    image = ImageOps.exif_transpose(image)
    if image.mode != "RGB":
        image = image.convert("RGB")
    if image.size != wh:
        image = image.resize(wh, Image.Resampling.BILINEAR)
    return image


def shades_of_gray(pixels: np.ndarray, p: int = SHADES_OF_GRAY_P) -> np.ndarray:
    """Colour constancy on HWC or NHWC pixels in 0..255 -> float32 in 0..255.

    Each channel's illuminant is its Minkowski p-mean; the gains bring the illuminant to grey
    while keeping its length, so a neutral image is left unchanged.
    """
    x = np.asarray(pixels, dtype=np.float32)
    # Scale to 0..1 first: x**6 of 255 overflows nothing, but keeps float32 precision better.
    illuminant = np.power(np.mean(np.power(x / 255.0, p), axis=(-3, -2), keepdims=True), 1.0 / p)
    illuminant = illuminant / np.maximum(np.linalg.norm(illuminant, axis=-1, keepdims=True), 1e-6)
    gains = 1.0 / np.maximum(illuminant * np.sqrt(3.0), 1e-3)
    return np.clip(x * gains, 0.0, 255.0).astype(np.float32)


def normalise(pixels: np.ndarray) -> np.ndarray:
    """Pixels (uint8 or float in 0..255), HWC or NHWC -> float32 in the model's input range."""
    return (np.asarray(pixels, dtype=np.float32) - PIXEL_MEAN) / PIXEL_SCALE


def model_pixels(pixels: np.ndarray, colour_constancy: bool) -> np.ndarray:
    """Pixels already at the input size (HWC or NHWC) -> normalised float32, still channels-last."""
    return normalise(shades_of_gray(pixels) if colour_constancy else pixels)


def to_model_input(images: Sequence[Image.Image], size: Size, colour_constancy: bool = False) -> np.ndarray:
    """A batch of PIL images -> float32 NCHW array ready for the network."""
    batch = np.stack([np.asarray(prepare_image(img, size), dtype=np.uint8) for img in images])
    return np.ascontiguousarray(model_pixels(batch, colour_constancy).transpose(0, 3, 1, 2))
