"""Training-time augmentation in Pillow and numpy (there is no CPU build of torchvision here)."""

from __future__ import annotations

import math
import random

import numpy as np
from PIL import Image

from inference.preprocessing import normalise


def _edge_colour(image: Image.Image) -> tuple[int, int, int]:
    arr = np.asarray(image)
    border = np.concatenate([arr[0], arr[-1], arr[:, 0], arr[:, -1]])
    return tuple(int(v) for v in border.mean(axis=0))  # type: ignore[return-value]


def random_resized_crop(
    image: Image.Image, size: int, rng: random.Random, scale=(0.45, 1.0), ratio=(0.75, 1.33)
) -> Image.Image:
    w, h = image.size
    area = w * h
    for _ in range(10):
        target = area * rng.uniform(*scale)
        aspect = math.exp(rng.uniform(math.log(ratio[0]), math.log(ratio[1])))
        cw = round(math.sqrt(target * aspect * w / h))
        ch = round(math.sqrt(target / aspect * h / w))
        if 0 < cw <= w and 0 < ch <= h:
            x0 = rng.randint(0, w - cw)
            y0 = rng.randint(0, h - ch)
            return image.resize((size, size), Image.Resampling.BILINEAR, box=(x0, y0, x0 + cw, y0 + ch))
    return image.resize((size, size), Image.Resampling.BILINEAR)


def colour_jitter(pixels: np.ndarray, rng: random.Random, strength: float = 0.2) -> np.ndarray:
    x = pixels.astype(np.float32)
    x *= rng.uniform(1 - strength, 1 + strength)  # brightness
    mean = x.mean()
    x = (x - mean) * rng.uniform(1 - strength, 1 + strength) + mean  # contrast
    grey = x.mean(axis=2, keepdims=True)
    x = (x - grey) * rng.uniform(1 - strength, 1 + strength) + grey  # saturation
    x *= np.array([rng.uniform(0.95, 1.05) for _ in range(3)], dtype=np.float32)  # white balance
    return np.clip(x, 0, 255)


def augment(image: Image.Image, size: int, rng: random.Random) -> np.ndarray:
    """Random rotation, resized crop, dihedral flips, colour jitter -> normalised HWC float32."""
    image = image.convert("RGB")
    angle = rng.uniform(-30, 30)
    image = image.rotate(angle, resample=Image.Resampling.BILINEAR, fillcolor=_edge_colour(image))
    image = random_resized_crop(image, size, rng)
    if rng.random() < 0.5:
        image = image.transpose(Image.Transpose.FLIP_LEFT_RIGHT)
    if rng.random() < 0.5:
        image = image.transpose(Image.Transpose.FLIP_TOP_BOTTOM)
    if rng.random() < 0.5:
        image = image.transpose(Image.Transpose.ROTATE_90)
    pixels = colour_jitter(np.asarray(image), rng)
    return normalise(pixels)
