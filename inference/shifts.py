"""Synthetic device shifts: what another clinic's camera or dermatoscope does to an image.

Used by `benchmarks/robustness.py` to measure how much each shift costs the classifier, and by
`benchmarks/image_check.py` to build bad captures. Pillow and numpy only (no torch, no Django).
Every shift is a pure, deterministic function PIL image -> PIL image (RGB, the same size unless
the shift is about size or orientation), so a table computed today is reproduced bit for bit.

    from inference.shifts import SHIFTS, apply_shift
    shifted = apply_shift("jpeg_q30", image)
    for name, shift in SHIFTS.items(): ...

The parameters are fixed here, not drawn at random: they are one plausible, fairly strong
instance of each device difference (issue #10), not a distribution.
"""

from __future__ import annotations

import io
import math
from collections.abc import Callable

import numpy as np
from PIL import Image, ImageFilter, ImageOps


def _rgb(image: Image.Image) -> Image.Image:
    image = ImageOps.exif_transpose(image)
    return image if image.mode == "RGB" else image.convert("RGB")


def _from_float(pixels: np.ndarray) -> Image.Image:
    return Image.fromarray(np.clip(np.rint(pixels), 0, 255).astype(np.uint8), "RGB")


def vignette(image: Image.Image, radius: float = 0.62, softness: float = 0.06, darkness: float = 8.0) -> Image.Image:
    """A dermatoscope's circular field of view: outside a centred circle the image is near black.

    `radius` is a fraction of the half-diagonal (0.62 of a 4:3 image: the circle just
    reaches past the short sides, the corners are dark, as in many contact dermatoscopes);
    `softness` is the width of the edge as a fraction of the radius.
    """
    if radius <= 0 or softness <= 0:
        raise ValueError("radius and softness must be positive")
    image = _rgb(image)
    w, h = image.size
    yy, xx = np.mgrid[0:h, 0:w].astype(np.float32)
    r = radius * math.hypot(w, h) / 2
    dist = np.hypot(xx - (w - 1) / 2, yy - (h - 1) / 2)
    inside = np.clip((r - dist) / (softness * r) + 0.5, 0.0, 1.0)[..., None]
    pixels = np.asarray(image, dtype=np.float32)
    return _from_float(pixels * inside + darkness * (1.0 - inside))


def white_balance(image: Image.Image, gains: tuple[float, float, float]) -> Image.Image:
    """Per-channel gains: another camera's white balance (e.g. (1.15, 1, 0.85) is warmer)."""
    if len(gains) != 3 or min(gains) <= 0:
        raise ValueError(f"gains must be three positive numbers, got {gains!r}")
    pixels = np.asarray(_rgb(image), dtype=np.float32)
    return _from_float(pixels * np.asarray(gains, dtype=np.float32))


def blur(image: Image.Image, radius: float = 1.0) -> Image.Image:
    """Gaussian blur (slightly out of focus); `radius` in pixels of the image as given."""
    if radius < 0:
        raise ValueError(f"radius must be >= 0, got {radius}")
    return _rgb(image).filter(ImageFilter.GaussianBlur(radius))


def jpeg(image: Image.Image, quality: int = 30) -> Image.Image:
    """Re-compressed as JPEG at `quality` (a messaging app or an old PACS export)."""
    if not 1 <= quality <= 95:
        raise ValueError(f"JPEG quality must be within 1..95, got {quality}")
    buffer = io.BytesIO()
    _rgb(image).save(buffer, format="JPEG", quality=quality)
    buffer.seek(0)
    out = Image.open(buffer)
    out.load()
    return out.convert("RGB")


def rescale(image: Image.Image, factor: float = 0.5) -> Image.Image:
    """Captured at `factor` of the resolution (0.5: half the width and height)."""
    if not 0 < factor <= 4:
        raise ValueError(f"factor must be within (0, 4], got {factor}")
    image = _rgb(image)
    w, h = image.size
    return image.resize((max(1, round(w * factor)), max(1, round(h * factor))), Image.Resampling.BILINEAR)


def _edge_colour(image: Image.Image) -> tuple[int, int, int]:
    arr = np.asarray(image)
    border = np.concatenate([arr[0], arr[-1], arr[:, 0], arr[:, -1]])
    return tuple(int(v) for v in border.mean(axis=0))  # type: ignore[return-value]


def rotate(image: Image.Image, degrees: float) -> Image.Image:
    """Rotated counter-clockwise. Multiples of 90 are exact (a portrait upload is W and H swapped);
    other angles keep the size and fill the corners with the mean edge colour (surrounding skin)."""
    image = _rgb(image)
    quarter = degrees / 90.0
    if quarter == int(quarter):
        turns = int(quarter) % 4
        ops = {0: None, 1: Image.Transpose.ROTATE_90, 2: Image.Transpose.ROTATE_180, 3: Image.Transpose.ROTATE_270}
        op = ops[turns]
        return image.copy() if op is None else image.transpose(op)
    return image.rotate(degrees, resample=Image.Resampling.BILINEAR, fillcolor=_edge_colour(image))


def brightness(image: Image.Image, factor: float) -> Image.Image:
    """All channels times `factor` (0.15: a badly under-exposed capture; 3: over-exposed)."""
    if factor < 0:
        raise ValueError(f"factor must be >= 0, got {factor}")
    return _from_float(np.asarray(_rgb(image), dtype=np.float32) * factor)


Shift = Callable[[Image.Image], Image.Image]

# The device shifts of issue #10, in the order the robustness table shows them.
SHIFTS: dict[str, Shift] = {
    "vignette": vignette,
    "white_balance_warm": lambda im: white_balance(im, (1.15, 1.0, 0.85)),
    "white_balance_cool": lambda im: white_balance(im, (0.85, 1.0, 1.15)),
    "blur_1px": lambda im: blur(im, 1.0),
    "blur_2px": lambda im: blur(im, 2.0),
    "jpeg_q30": lambda im: jpeg(im, 30),
    "half_resolution": lambda im: rescale(im, 0.5),
    "rotate_90": lambda im: rotate(im, 90),
    "rotate_45": lambda im: rotate(im, 45),
}

DESCRIPTIONS: dict[str, str] = {
    "clean": "the validation image as stored",
    "vignette": "dark circular dermatoscope frame, radius 0.62 of the half-diagonal",
    "white_balance_warm": "white balance R x1.15, B x0.85",
    "white_balance_cool": "white balance R x0.85, B x1.15",
    "blur_1px": "Gaussian blur, radius 1 px (of 200 x 150)",
    "blur_2px": "Gaussian blur, radius 2 px (of 200 x 150)",
    "jpeg_q30": "JPEG re-compression at quality 30",
    "half_resolution": "half the width and height (the model's resize brings it back)",
    "rotate_90": "rotated 90 degrees (portrait: width and height swapped)",
    "rotate_45": "rotated 45 degrees, corners filled with the edge colour",
}


def apply_shift(name: str, image: Image.Image) -> Image.Image:
    """The named shift of SHIFTS applied to `image`; 'clean' returns it as RGB."""
    if name == "clean":
        return _rgb(image)
    try:
        shift = SHIFTS[name]
    except KeyError:
        raise ValueError(f"unknown shift {name!r}; known: clean, {', '.join(SHIFTS)}") from None
    return shift(image)
