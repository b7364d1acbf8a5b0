"""Training-time augmentation in Pillow and numpy (there is no CPU build of torchvision here).

Besides the usual geometry and colour jitter it imitates what another clinic's capture does
to an image (issue #10): a dermatoscope's circular frame and dark corners, a different
magnification (the lesion 2-3x larger, or smaller inside a padded frame), hair, blur and JPEG
re-compression. Colour constancy runs after all of it, exactly as at inference.
"""

from __future__ import annotations

import io
import math
import random

import numpy as np
from PIL import Image, ImageDraw, ImageFilter

from inference.preprocessing import Size, input_wh, model_pixels


def _edge_colour(image: Image.Image) -> tuple[int, int, int]:
    arr = np.asarray(image)
    border = np.concatenate([arr[0], arr[-1], arr[:, 0], arr[:, -1]])
    return tuple(int(v) for v in border.mean(axis=0))  # type: ignore[return-value]


def random_resized_crop(
    image: Image.Image, wh: tuple[int, int], rng: random.Random, scale=(0.15, 1.0), ratio=(0.8, 1.25)
) -> Image.Image:
    """A crop of `scale` of the area, aspect within `ratio` of the output's, resized to wh.

    Scale down to 0.15 imitates dermatoscopes that show the lesion 2-3x larger in the frame.
    """
    w, h = image.size
    area = w * h
    out_aspect = wh[0] / wh[1]
    for _ in range(10):
        target = area * rng.uniform(*scale)
        aspect = out_aspect * math.exp(rng.uniform(math.log(ratio[0]), math.log(ratio[1])))
        cw = round(math.sqrt(target * aspect))
        ch = round(math.sqrt(target / aspect))
        if 0 < cw <= w and 0 < ch <= h:
            x0 = rng.randint(0, w - cw)
            y0 = rng.randint(0, h - ch)
            return image.resize(wh, Image.Resampling.BILINEAR, box=(x0, y0, x0 + cw, y0 + ch))
    return image.resize(wh, Image.Resampling.BILINEAR)


def zoom_out(image: Image.Image, rng: random.Random) -> Image.Image:
    """The whole field smaller inside a dark or skin-coloured frame (a wider-field device)."""
    w, h = image.size
    f = rng.uniform(0.6, 0.9)
    small = image.resize((max(1, round(w * f)), max(1, round(h * f))), Image.Resampling.BILINEAR)
    fill = _edge_colour(image) if rng.random() < 0.5 else tuple(rng.randint(0, 40) for _ in range(3))
    canvas = Image.new("RGB", (w, h), fill)  # type: ignore[arg-type]
    canvas.paste(small, (rng.randint(0, w - small.width), rng.randint(0, h - small.height)))
    return canvas


def dermoscope_frame(pixels: np.ndarray, rng: random.Random) -> np.ndarray:
    """A circular field of view with soft dark surroundings, of random radius, centre and softness."""
    h, w = pixels.shape[:2]
    yy, xx = np.mgrid[0:h, 0:w].astype(np.float32)
    cx = w / 2 + rng.uniform(-0.1, 0.1) * w
    cy = h / 2 + rng.uniform(-0.1, 0.1) * h
    radius = rng.uniform(0.45, 0.75) * math.hypot(w, h) / 2
    softness = rng.uniform(0.02, 0.15) * radius
    dist = np.sqrt((xx - cx) ** 2 + (yy - cy) ** 2)
    inside = np.clip((radius - dist) / softness + 0.5, 0.0, 1.0)[..., None]
    dark = np.array([rng.uniform(0, 25)] * 3, dtype=np.float32)
    return pixels * inside + dark * (1 - inside)


def hair(image: Image.Image, rng: random.Random) -> Image.Image:
    draw = ImageDraw.Draw(image)
    w, h = image.size
    colour = tuple(rng.randint(10, 70) for _ in range(3))
    for _ in range(rng.randint(1, 8)):
        x, y = rng.uniform(0, w), rng.uniform(0, h)
        angle = rng.uniform(0, 2 * math.pi)
        points = [(x, y)]
        for _ in range(rng.randint(3, 8)):
            angle += rng.uniform(-0.4, 0.4)
            step = rng.uniform(5, 20)
            x, y = x + step * math.cos(angle), y + step * math.sin(angle)
            points.append((x, y))
        draw.line(points, fill=colour, width=rng.randint(1, 2))  # type: ignore[arg-type]
    return image


def jpeg(image: Image.Image, quality: int) -> Image.Image:
    buffer = io.BytesIO()
    image.save(buffer, format="JPEG", quality=quality)
    buffer.seek(0)
    out = Image.open(buffer)
    out.load()
    return out


def colour_jitter(pixels: np.ndarray, rng: random.Random, strength: float = 0.2) -> np.ndarray:
    x = pixels.astype(np.float32)
    x *= rng.uniform(1 - strength, 1 + strength)  # brightness
    mean = x.mean()
    x = (x - mean) * rng.uniform(1 - strength, 1 + strength) + mean  # contrast
    grey = x.mean(axis=2, keepdims=True)
    x = (x - grey) * rng.uniform(1 - strength, 1 + strength) + grey  # saturation
    x *= np.array([rng.uniform(0.85, 1.15) for _ in range(3)], dtype=np.float32)  # white balance +-15 %
    return np.clip(x, 0, 255)


def augment(image: Image.Image, size: Size, rng: random.Random, colour_constancy: bool = True) -> np.ndarray:
    """Geometry, device artefacts, colour jitter, colour constancy -> normalised HWC float32."""
    wh = input_wh(size)
    image = image.convert("RGB")
    angle = rng.uniform(-30, 30)
    image = image.rotate(angle, resample=Image.Resampling.BILINEAR, fillcolor=_edge_colour(image))
    if rng.random() < 0.15:
        image = zoom_out(image, rng)
    image = random_resized_crop(image, wh, rng)
    if rng.random() < 0.5:
        image = image.transpose(Image.Transpose.FLIP_LEFT_RIGHT)
    if rng.random() < 0.5:
        image = image.transpose(Image.Transpose.FLIP_TOP_BOTTOM)
    if rng.random() < 0.2:
        image = hair(image, rng)
    if rng.random() < 0.2:
        image = image.filter(ImageFilter.GaussianBlur(rng.uniform(0.3, 1.5)))
    pixels = np.asarray(image, dtype=np.float32)
    if rng.random() < 0.4:
        pixels = dermoscope_frame(pixels, rng)
    pixels = colour_jitter(pixels, rng)
    if rng.random() < 0.3:
        pixels = np.asarray(jpeg(Image.fromarray(pixels.astype(np.uint8)), rng.randint(30, 90)), dtype=np.float32)
    return model_pixels(pixels, colour_constancy)
