"""Bad uploads get a clear 400 and store nothing; good ones are normalised."""

from __future__ import annotations

import io
import struct
import zipfile

import numpy as np
import pytest
from django.core.files.uploadedfile import SimpleUploadedFile
from PIL import Image

from lesions.models import Examination
from tests.factories import jpeg_bytes, png_bytes


def _png_with_broken_crc() -> bytes:
    data = bytearray(png_bytes())
    idat = data.find(b"IDAT")
    length = struct.unpack(">I", data[idat - 4 : idat])[0]
    crc_at = idat + 4 + length
    data[crc_at : crc_at + 4] = b"\x00\x00\x00\x00"
    return bytes(data)


def _zip_named_jpg() -> bytes:
    out = io.BytesIO()
    with zipfile.ZipFile(out, "w") as zf:
        zf.writestr("a.txt", "hello")
    return out.getvalue()


def _bomb() -> bytes:
    out = io.BytesIO()
    Image.new("L", (9000, 9000)).save(out, format="PNG")  # 81 MP, tiny file
    return out.getvalue()


def _gif() -> bytes:
    out = io.BytesIO()
    Image.new("RGB", (100, 100), "red").save(out, format="GIF")
    return out.getvalue()


def _animated_webp() -> bytes:
    frames = [Image.new("RGB", (100, 100), c) for c in ("red", "blue")]
    out = io.BytesIO()
    frames[0].save(out, format="WEBP", save_all=True, append_images=frames[1:])
    return out.getvalue()


BAD = {
    "empty file": (b"", "empty"),
    "truncated jpeg": (jpeg_bytes()[:1500], "truncated or corrupt"),
    "png with broken crc": (_png_with_broken_crc(), "corrupt"),
    "pdf": (b"%PDF-1.4\n1 0 obj<<>>endobj\ntrailer<<>>\n%%EOF", "not a supported image"),
    "zip renamed jpg": (_zip_named_jpg(), "not a supported image"),
    "svg with script": (
        b'<svg xmlns="http://www.w3.org/2000/svg"><script>alert(1)</script></svg>',
        "not a supported image",
    ),
    "decompression bomb": (_bomb(), "too many pixels"),
    "gif (not allowed)": (_gif(), "not a supported image"),
    "1x1 pixel": (png_bytes(size=(1, 1)), "too small"),
    "animated webp": (_animated_webp(), "Animated"),
}


@pytest.mark.parametrize("case", list(BAD))
def test_bad_upload_is_rejected_with_a_clear_message_and_nothing_stored(staff_client, lesion, case, settings):
    data, message = BAD[case]
    upload = SimpleUploadedFile("lesion.jpg", data, content_type="image/jpeg")
    response = staff_client.post(f"/api/lesions/{lesion.uuid}/examinations/", {"image": upload})
    assert response.status_code == 400, response.content
    assert message.lower() in response.content.decode().lower()
    assert Examination.objects.count() == 0
    media = settings.MEDIA_ROOT
    assert not media.exists() or not any(p.is_file() for p in media.rglob("*"))


def test_oversized_upload_is_rejected(staff_client, lesion, settings):
    settings.DERMATRACK_MAX_UPLOAD_BYTES = 50_000
    big = jpeg_bytes(size=(1200, 900), quality=95)
    assert len(big) > 50_000
    response = staff_client.post(
        f"/api/lesions/{lesion.uuid}/examinations/", {"image": SimpleUploadedFile("x.jpg", big)}
    )
    assert response.status_code == 400
    assert "larger than" in response.content.decode()
    assert Examination.objects.count() == 0


def test_missing_image_field_is_a_400(staff_client, lesion):
    response = staff_client.post(f"/api/lesions/{lesion.uuid}/examinations/", {"notes": "no file"})
    assert response.status_code == 400
    assert "image" in response.json()


def test_web_form_shows_the_error_and_keeps_serving(staff_client, lesion):
    response = staff_client.post(
        f"/lesions/{lesion.uuid}/examinations/new/", {"image": SimpleUploadedFile("x.jpg", b"not an image")}
    )
    assert response.status_code == 400
    assert "not a supported image" in response.content.decode()
    assert staff_client.get(f"/lesions/{lesion.uuid}/").status_code == 200


def _jpeg_with_exif(orientation: int, gps: bool) -> bytes:
    pixels = np.zeros((150, 200, 3), dtype=np.uint8)
    pixels[:, :100] = 255  # left half white: lets us see the rotation
    image = Image.fromarray(pixels)
    exif = Image.Exif()
    exif[0x0112] = orientation
    if gps:
        exif[0x8825] = {1: "N", 2: (48.0, 12.0, 0.0)}
    out = io.BytesIO()
    image.save(out, format="JPEG", exif=exif.tobytes())
    return out.getvalue()


def test_exif_is_stripped_and_orientation_applied(staff_client, lesion):
    data = _jpeg_with_exif(orientation=6, gps=True)  # 6 = rotate 90 degrees clockwise to display
    response = staff_client.post(
        f"/api/lesions/{lesion.uuid}/examinations/", {"image": SimpleUploadedFile("a.jpg", data)}
    )
    assert response.status_code == 201, response.content
    exam = Examination.objects.get()
    assert (exam.image_width, exam.image_height) == (150, 200)
    with exam.image.open("rb") as fh:
        stored = Image.open(io.BytesIO(fh.read()))
        assert stored.format == "PNG"
        assert not stored.getexif()
        assert stored.getpixel((75, 10))[0] > 200  # white half is now on top
        assert stored.getpixel((75, 190))[0] < 50


@pytest.mark.parametrize("mode", ["CMYK", "I;16"])
def test_tiff_variants_are_accepted_and_normalised(staff_client, lesion, mode):
    if mode == "CMYK":
        image = Image.new("CMYK", (120, 90), (0, 100, 100, 0))
    else:
        image = Image.fromarray((np.arange(120 * 90).reshape(90, 120) * 6).astype(np.uint16))
        assert image.mode.startswith("I;16")
    out = io.BytesIO()
    image.save(out, format="TIFF")
    response = staff_client.post(
        f"/api/lesions/{lesion.uuid}/examinations/", {"image": SimpleUploadedFile("a.tif", out.getvalue())}
    )
    assert response.status_code == 201, response.content
    with Examination.objects.get().image.open("rb") as fh:
        assert Image.open(io.BytesIO(fh.read())).mode == "RGB"


def test_good_image_with_wrong_extension_is_accepted(staff_client, lesion):
    response = staff_client.post(
        f"/api/lesions/{lesion.uuid}/examinations/", {"image": SimpleUploadedFile("photo.gif", png_bytes())}
    )
    assert response.status_code == 201
