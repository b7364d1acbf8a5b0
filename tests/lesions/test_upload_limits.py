"""Memory and shape bounds on accepted uploads (issue #11, items 4 and 6)."""

from __future__ import annotations

import io
import struct
import zlib
from pathlib import Path

import numpy as np
import pytest
from django.core.exceptions import ValidationError
from django.core.files.uploadedfile import SimpleUploadedFile
from PIL import Image

from lesions.imaging import validate_and_normalise
from lesions.models import Examination
from tests.factories import jpeg_bytes


def _png16_grey(width: int, height: int) -> bytes:
    """A smooth 16-bit grey PNG, written row by row: tiny on disk, huge once decoded."""
    compressor = zlib.compressobj(9)
    parts = [compressor.compress(b"\x00" + (y * 10).to_bytes(2, "big") * width) for y in range(height)]
    parts.append(compressor.flush())

    def chunk(kind: bytes, payload: bytes) -> bytes:
        return struct.pack(">I", len(payload)) + kind + payload + struct.pack(">I", zlib.crc32(kind + payload))

    ihdr = struct.pack(">IIBBBBB", width, height, 16, 0, 0, 0, 0)
    return b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", ihdr) + chunk(b"IDAT", b"".join(parts)) + chunk(b"IEND", b"")


def _kb(field: str) -> int:
    line = next(x for x in Path("/proc/self/status").read_text().splitlines() if x.startswith(field + ":"))
    return int(line.split()[1])


def test_a_16_bit_40_mp_png_is_normalised_within_300_mb(db):
    """Reproduces item 6: a 77 KB 16-bit 6,300 x 6,300 PNG pushed the web process from 253 MB
    to 1,209 MB (a float64 copy of every pixel, then more)."""
    clear_refs = Path("/proc/self/clear_refs")
    try:
        clear_refs.write_text("5")  # resets the peak-RSS counter (Linux)
    except OSError:
        pytest.skip("needs Linux /proc/self/clear_refs to measure peak memory")
    data = _png16_grey(6300, 6300)
    assert len(data) < 200_000
    before = _kb("VmRSS")
    clear_refs.write_text("5")
    result = validate_and_normalise(io.BytesIO(data))
    extra_mb = (_kb("VmHWM") - before) / 1024
    assert extra_mb < 300, extra_mb
    assert max(result.width, result.height) <= 4096
    stored = Image.open(io.BytesIO(result.png_bytes))
    assert stored.mode == "RGB"
    # The 16-bit range maps onto 8 bits: the bottom rows are brighter than the top ones.
    assert stored.getpixel((10, stored.height - 1))[0] > stored.getpixel((10, 0))[0]


def test_refusal_is_by_decoded_bytes_not_only_pixel_count(db, settings):
    """Same pixel count, twice the bytes: a 16-bit image is refused where the 8-bit one passes."""
    settings.DERMATRACK_MAX_DECODED_BYTES = 1_000_000
    eight_bit = io.BytesIO()
    Image.fromarray(np.full((800, 800), 90, dtype=np.uint8)).save(eight_bit, format="PNG")
    assert validate_and_normalise(io.BytesIO(eight_bit.getvalue())).width == 800  # 0.64 MB to decode
    with pytest.raises(ValidationError, match="memory to decode"):
        validate_and_normalise(io.BytesIO(_png16_grey(800, 800)))  # 1.28 MB


def test_large_images_are_stored_reduced_jpeg_decoded_at_scale(db, settings):
    settings.DERMATRACK_MAX_STORED_SIDE = 500
    result = validate_and_normalise(io.BytesIO(jpeg_bytes(size=(2000, 1500))))
    assert max(result.width, result.height) <= 500
    assert result.width / result.height == pytest.approx(4 / 3, rel=0.02)
    cmyk = io.BytesIO()
    Image.new("CMYK", (1600, 1200), (0, 100, 100, 0)).save(cmyk, format="TIFF")
    result = validate_and_normalise(io.BytesIO(cmyk.getvalue()))
    assert (result.width, result.height) == (400, 300)
    assert Image.open(io.BytesIO(result.png_bytes)).mode == "RGB"


def test_an_extreme_strip_is_refused_at_upload_with_a_clear_message(staff_client, lesion):
    """Reproduces item 4: a 64 x 600,000 PNG passed validation, then CAM and LIME failed with
    "internal error" (height and width must be > 0)."""
    out = io.BytesIO()
    Image.new("L", (600_000, 64), 128).save(out, format="PNG")
    response = staff_client.post(
        f"/api/lesions/{lesion.uuid}/examinations/", {"image": SimpleUploadedFile("strip.png", out.getvalue())}
    )
    assert response.status_code == 400
    assert "too narrow" in response.content.decode()
    assert Examination.objects.count() == 0


def test_a_wide_but_ordinary_photo_is_still_accepted(staff_client, lesion):
    response = staff_client.post(
        f"/api/lesions/{lesion.uuid}/examinations/",
        {"image": SimpleUploadedFile("wide.jpg", jpeg_bytes(size=(960, 120)))},  # 8:1
    )
    assert response.status_code == 201, response.content


def test_a_huge_icc_profile_is_not_carried_into_the_stored_image(db):
    """Found by benchmarks/upload_memory.py: a JPEG's 15 MB ICC profile was copied into the
    stored PNG, whose text chunk the worker then refused to read (MAX_TEXT_CHUNK)."""
    out = io.BytesIO()
    Image.new("RGB", (300, 200), (120, 80, 60)).save(out, format="JPEG", icc_profile=b"\x00" * 3_000_000)
    result = validate_and_normalise(io.BytesIO(out.getvalue()))
    assert len(result.png_bytes) < 100_000
    assert "icc_profile" not in Image.open(io.BytesIO(result.png_bytes)).info
