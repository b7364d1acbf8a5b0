"""Validation and normalisation of uploaded examination images with Pillow.

A file is accepted only if it is a single-frame JPEG, PNG, TIFF or WebP that decodes
completely within the size, pixel, aspect-ratio and decoded-memory limits. Accepted images are
reduced to at most DERMATRACK_MAX_STORED_SIDE pixels on the long side (JPEGs decode at that
scale directly), re-encoded as PNG with orientation applied and all metadata (EXIF, GPS, ICC,
text chunks) dropped.

A DICOM file (the 'DICM' marker at byte 128) of a dermoscopic or VL photographic image is
accepted too: `lesions.dicom.decode_upload` decodes its pixel data with pydicom, within the same
limits, and the result carries the DICOM Patient ID, which the upload service checks against
the patient's record number (`lesions.dicom.check_patient`).
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

from lesions import dicom

ALLOWED_FORMATS = {"JPEG": "JPEG", "PNG": "PNG", "TIFF": "TIFF", "WEBP": "WebP"}


@dataclass(frozen=True)
class NormalisedImage:
    png_bytes: bytes
    sha256: str
    width: int
    height: int
    # The Patient ID (0010,0020) of an uploaded DICOM file ("" when it has none); None for
    # every other format. The upload service compares it with the patient's record number.
    source_patient_id: str | None = None


def _reject(message: str) -> ValidationError:
    return ValidationError(message, code="invalid_image")


# Bytes Pillow holds per pixel while decoding, by mode (it stores RGB, CMYK and friends as
# 32-bit pixels). Modes that must be converted before they can be reduced count the copy too.
_DECODED_BYTES_PER_PIXEL = {"1": 2, "L": 1, "P": 5, "PA": 8, "I;16": 2, "I;16B": 2, "I;16L": 2, "I;16N": 2}
# libwebp decodes into its own RGBA buffers, which Pillow then copies: measured (benchmarks/
# upload_memory.py) about four times the pixels at the peak, so WebP stops at 10 MP by default.
_DECODER_COPIES = {"WEBP": 4}
_SIXTEEN_BIT = ("I;16", "I;16B", "I;16L", "I;16N")


def decoded_bytes(image: Image.Image) -> int:
    """Memory the decode of `image` (as opened, after any draft) needs at its peak."""
    width, height = image.size
    per_pixel = _DECODED_BYTES_PER_PIXEL.get(image.mode, 4)
    return width * height * per_pixel * _DECODER_COPIES.get(image.format or "", 1)


def _sixteen_bit_to_l(image: Image.Image) -> Image.Image:
    """16-bit grey to 8-bit, a band of rows at a time: a float64 copy of a 40 MP image took
    over 300 MB per copy (issue #11). Full 16-bit range if any value needs it, else as is."""
    top = image.getextrema()[1] or 1
    shift = 8 if top > 255 else 0  # type: ignore[operator]  # one band: getextrema() is (min, max)
    width, height = image.size
    out = np.empty((height, width), dtype=np.uint8)
    step = max(1, (4 * 1024 * 1024) // (2 * width))
    for y in range(0, height, step):
        band = np.asarray(image.crop((0, y, width, min(height, y + step))), dtype=np.uint16)
        out[y : y + band.shape[0]] = np.minimum(band >> shift, 255)
    return Image.fromarray(out, mode="L")


def _reduce_to_fit(image: Image.Image, max_side: int) -> Image.Image:
    """Integer box reduction until the longest side fits: cheap, and nothing is kept at a size
    nobody needs (the model sees 224 px; clinicians see the stored image)."""
    factor = -(-max(image.size) // max_side)
    if factor <= 1:
        return image
    if image.mode in _SIXTEEN_BIT:
        image = _sixteen_bit_to_l(image)
    elif image.mode in ("1", "P", "PA"):
        image = image.convert("RGBA" if image.mode == "PA" or "transparency" in image.info else "RGB")
    return image.reduce(factor)


def _to_rgb(image: Image.Image) -> Image.Image:
    if image.mode in _SIXTEEN_BIT:
        image = _sixteen_bit_to_l(image)
    if image.mode in ("I", "F"):
        pixels = np.asarray(image, dtype=np.float32)
        top = pixels.max() or 1.0
        scale = 255.0 / (65535.0 if top > 255 else 255.0)
        return Image.fromarray(np.clip(pixels * scale, 0, 255).astype(np.uint8)).convert("RGB")
    if image.mode in ("RGBA", "LA", "PA") or (image.mode == "P" and "transparency" in image.info):
        rgba = image.convert("RGBA")
        background = Image.new("RGBA", rgba.size, (255, 255, 255, 255))
        return Image.alpha_composite(background, rgba).convert("RGB")
    return image.convert("RGB")


def check_dimensions(width: int, height: int) -> None:
    """The pixel-count, smallest-side and aspect-ratio limits every upload must meet."""
    max_pixels = settings.DERMATRACK_MAX_IMAGE_PIXELS
    if width * height > max_pixels:
        raise _reject(f"The image has too many pixels ({width}x{height}); the limit is {max_pixels:,}.")
    if min(width, height) < settings.DERMATRACK_MIN_IMAGE_SIDE:
        raise _reject(
            f"The image is too small ({width}x{height}); each side must be at least "
            f"{settings.DERMATRACK_MIN_IMAGE_SIDE} pixels."
        )
    max_ratio = settings.DERMATRACK_MAX_ASPECT_RATIO
    if max(width, height) > max_ratio * min(width, height):
        # A 64 x 600,000 strip passed every other check, then no explanation could be made
        # of it (the model's square input leaves a heatmap less than a pixel high).
        raise _reject(
            f"The image is too narrow ({width}x{height}); the long side may be at most "
            f"{max_ratio:g} times the short side. Crop it to the lesion and upload it again."
        )


def _open(data: bytes, max_side: int) -> tuple[Image.Image, tuple[int, int]]:
    """The image, drafted smaller where the decoder can, and its size as uploaded."""
    image = Image.open(io.BytesIO(data), formats=list(ALLOWED_FORMATS))
    uploaded_size = image.size
    if image.format == "JPEG" and max(image.size) > max_side:
        # libjpeg decodes at 1/2, 1/4 or 1/8 scale directly: the full-size pixels never exist.
        scale = max(image.size) / max_side
        image.draft(None, (int(image.width / scale), int(image.height / scale)))
    return image, uploaded_size


def validate_and_normalise(upload: IO[bytes], *, size: int | None = None) -> NormalisedImage:
    max_bytes = settings.DERMATRACK_MAX_UPLOAD_BYTES
    if size is not None and size > max_bytes:
        raise _reject(f"The file is larger than the {max_bytes // (1024 * 1024)} MB limit.")
    data = upload.read(max_bytes + 1)
    if len(data) > max_bytes:
        raise _reject(f"The file is larger than the {max_bytes // (1024 * 1024)} MB limit.")
    if not data:
        raise _reject("The file is empty.")

    if dicom.is_dicom(data):
        decoded = dicom.decode_upload(data, check_dimensions=check_dimensions)
        del data
        return _normalise(decoded.image, source_patient_id=decoded.patient_id)

    allowed = ", ".join(ALLOWED_FORMATS.values()) + " or DICOM"
    max_side = settings.DERMATRACK_MAX_STORED_SIDE
    with warnings.catch_warnings():
        warnings.simplefilter("error", Image.DecompressionBombWarning)
        try:
            probe, (width, height) = _open(data, max_side)
        except UnidentifiedImageError as exc:
            raise _reject(f"This file is not a supported image. Upload a {allowed} file.") from exc
        except (Image.DecompressionBombError, Image.DecompressionBombWarning) as exc:
            raise _reject("The image has too many pixels.") from exc
        except Exception as exc:  # Pillow raises many types for malformed headers
            raise _reject("The image could not be read; the file may be corrupt.") from exc

        check_dimensions(width, height)
        needed, budget = decoded_bytes(probe), settings.DERMATRACK_MAX_DECODED_BYTES
        if needed > budget:
            raise _reject(
                f"The image would need {needed / 1e6:,.0f} MB of memory to decode ({width}x{height}, "
                f"{probe.mode}); the limit is {budget / 1e6:,.0f} MB. Upload a smaller or 8-bit image."
            )
        if getattr(probe, "n_frames", 1) > 1:
            raise _reject("Animated or multi-page images are not accepted; upload a single image.")
        try:
            probe.verify()  # checksums (PNG CRC) and structure
            image, _ = _open(data, max_side)
            image.load()  # decodes every pixel: truncated files fail here
        except (Image.DecompressionBombError, Image.DecompressionBombWarning) as exc:
            raise _reject("The image has too many pixels.") from exc
        except Exception as exc:
            raise _reject("The image is truncated or corrupt and could not be decoded.") from exc
    del data, probe

    return _normalise(image)


def _normalise(image: Image.Image, *, source_patient_id: str | None = None) -> NormalisedImage:
    """The decoded image, reduced to the stored size, upright and RGB, as a PNG without metadata."""
    max_side = settings.DERMATRACK_MAX_STORED_SIDE
    # Smaller first, then rotate and convert: every later copy is of the reduced image.
    image = _reduce_to_fit(image, max_side)
    image = ImageOps.exif_transpose(image)
    rgb = _to_rgb(image)
    del image
    rgb.info.clear()  # PNG's encoder would otherwise copy an ICC profile (up to 16 MB) across
    out = io.BytesIO()
    rgb.save(out, format="PNG", optimize=False, compress_level=3, icc_profile=None)
    png = out.getvalue()
    return NormalisedImage(
        png_bytes=png,
        sha256=hashlib.sha256(png).hexdigest(),
        width=rgb.width,
        height=rgb.height,
        source_patient_id=source_patient_id,
    )
