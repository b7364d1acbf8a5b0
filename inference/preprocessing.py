"""Image preprocessing shared by the portal, the evaluation command, benchmarks and training.

Only Pillow and numpy: the portal must not need torch. Every path that feeds the model
goes through `prepare_image` and `to_model_input`, so the portal and the evaluation
command preprocess identically (tested).
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np
from PIL import Image, ImageOps

# The ImageNet weights of EfficientNet-Lite0 were trained on (x - 127) / 128.
PIXEL_MEAN = 127.0
PIXEL_SCALE = 128.0


def prepare_image(image: Image.Image, size: int) -> Image.Image:
    """Orientation applied, RGB, squashed to size x size.

    Squash (not crop) keeps the whole 4:3 dermoscopic field: lesions are not always centred,
    and a heatmap maps back onto the original by a plain resize.
    """
    image = ImageOps.exif_transpose(image)
    if image.mode != "RGB":
        image = image.convert("RGB")
    if image.size != (size, size):
        image = image.resize((size, size), Image.Resampling.BILINEAR)
    return image


def normalise(pixels: np.ndarray) -> np.ndarray:
    """uint8 HWC or NHWC -> float32 in the model's input range."""
    return (pixels.astype(np.float32) - PIXEL_MEAN) / PIXEL_SCALE


def to_model_input(images: Sequence[Image.Image], size: int) -> np.ndarray:
    """A batch of PIL images -> float32 NCHW array ready for the network."""
    batch = np.stack([np.asarray(prepare_image(img, size), dtype=np.uint8) for img in images])
    return np.ascontiguousarray(normalise(batch).transpose(0, 3, 1, 2))
