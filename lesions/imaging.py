"""Validation and normalisation of uploaded examination images with Pillow.

A file is accepted only if it is a single-frame JPEG, PNG, TIFF or WebP that decodes
completely within the size and pixel limits. Accepted images are re-encoded as PNG with
orientation applied and all metadata (EXIF, GPS, ICC text chunks) dropped.
"""

from __future__ import annotations

import hashlib
import io
import warnings
from dataclasses import dataclass
from typing import IO

import numpy as np
from django.conf import settings
from django.core.exceptions import ValidationError
from PIL import Image, ImageOps, UnidentifiedImageError

ALLOWED_FORMATS = {"JPEG": "JPEG", "PNG": "PNG", "TIFF": "TIFF", "WEBP": "WebP"}


@dataclass(frozen=True)
class NormalisedImage:
    png_bytes: bytes
    sha256: str
    width: int
    height: int


def _reject(message: str) -> ValidationError:
    return ValidationError(message, code="invalid_image")


def _to_rgb(image: Image.Image) -> Image.Image:
    if image.mode in ("I;16", "I;16B", "I;16L", "I", "F"):
        pixels = np.asarray(image, dtype=np.float64)
        top = pixels.max() or 1.0
        scale = 255.0 / (65535.0 if top > 255 else 255.0)
        return Image.fromarray(np.clip(pixels * scale, 0, 255).astype(np.uint8)).convert("RGB")
    if image.mode in ("RGBA", "LA", "PA") or (image.mode == "P" and "transparency" in image.info):
        rgba = image.convert("RGBA")
        background = Image.new("RGBA", rgba.size, (255, 255, 255, 255))
        return Image.alpha_composite(background, rgba).convert("RGB")
    return image.convert("RGB")


def validate_and_normalise(upload: IO[bytes], *, size: int | None = None) -> NormalisedImage:
    max_bytes = settings.DERMATRACK_MAX_UPLOAD_BYTES
    if size is not None and size > max_bytes:
        raise _reject(f"The file is larger than the {max_bytes // (1024 * 1024)} MB limit.")
    data = upload.read(max_bytes + 1)
    if len(data) > max_bytes:
        raise _reject(f"The file is larger than the {max_bytes // (1024 * 1024)} MB limit.")
    if not data:
        raise _reject("The file is empty.")

    allowed = ", ".join(ALLOWED_FORMATS.values())
    max_pixels = settings.DERMATRACK_MAX_IMAGE_PIXELS
    with warnings.catch_warnings():
        warnings.simplefilter("error", Image.DecompressionBombWarning)
        try:
            probe = Image.open(io.BytesIO(data), formats=list(ALLOWED_FORMATS))
        except UnidentifiedImageError as exc:
            raise _reject(f"This file is not a supported image. Upload a {allowed} file.") from exc
        except (Image.DecompressionBombError, Image.DecompressionBombWarning) as exc:
            raise _reject("The image has too many pixels.") from exc
        except Exception as exc:  # Pillow raises many types for malformed headers
            raise _reject("The image could not be read; the file may be corrupt.") from exc

        width, height = probe.size
        if width * height > max_pixels:
            raise _reject(f"The image has too many pixels ({width}x{height}); the limit is {max_pixels:,}.")
        if min(width, height) < settings.DERMATRACK_MIN_IMAGE_SIDE:
            raise _reject(
                f"The image is too small ({width}x{height}); each side must be at least "
                f"{settings.DERMATRACK_MIN_IMAGE_SIDE} pixels."
            )
        if getattr(probe, "n_frames", 1) > 1:
            raise _reject("Animated or multi-page images are not accepted; upload a single image.")
        try:
            probe.verify()  # checksums (PNG CRC) and structure
            image = Image.open(io.BytesIO(data), formats=list(ALLOWED_FORMATS))
            image.load()  # decodes every pixel: truncated files fail here
        except (Image.DecompressionBombError, Image.DecompressionBombWarning) as exc:
            raise _reject("The image has too many pixels.") from exc
        except Exception as exc:
            raise _reject("The image is truncated or corrupt and could not be decoded.") from exc

    image = ImageOps.exif_transpose(image)
    rgb = _to_rgb(image)
    out = io.BytesIO()
    rgb.save(out, format="PNG", optimize=False, compress_level=3)
    png = out.getvalue()
    return NormalisedImage(png_bytes=png, sha256=hashlib.sha256(png).hexdigest(), width=rgb.width, height=rgb.height)
