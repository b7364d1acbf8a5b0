"""A corpus of bad and awkward uploads, each with its intended outcome.

Rejected files get a clear 400 naming the problem; nothing is stored (no examination row, no file,
no audit entry, no task) and the server keeps serving. Accepted files are normalised: an RGB PNG
with orientation applied and no metadata, whatever came in.
"""

from __future__ import annotations

import gzip
import io
import struct
import zlib

import numpy as np
import pytest
from celery.app.task import Task
from django.core.files.uploadedfile import SimpleUploadedFile
from PIL import Image, PngImagePlugin

from lesions.models import Examination
from portal.models import AuditEntry
from tests.factories import jpeg_bytes, png_bytes
from tests.lesions.test_uploads import _animated_webp, _bomb, _jpeg_with_exif, _png_with_broken_crc, _zip_named_jpg


def _save(image: Image.Image, fmt: str, **kwargs) -> bytes:
    out = io.BytesIO()
    image.save(out, format=fmt, **kwargs)
    return out.getvalue()


def _rgb(size=(160, 120), seed=1) -> Image.Image:
    rng = np.random.default_rng(seed)
    return Image.fromarray(rng.integers(0, 255, (size[1], size[0], 3), dtype=np.uint8))


def _animated_gif() -> bytes:
    frames = [Image.new("P", (100, 100), i) for i in (1, 2, 3)]
    return _save(frames[0], "GIF", save_all=True, append_images=frames[1:], duration=100, loop=0)


def _multipage_tiff() -> bytes:
    return _save(_rgb(), "TIFF", save_all=True, append_images=[_rgb(seed=2)])


def _png_header_claiming_huge_size() -> bytes:
    """A tiny PNG whose header says 100000 x 100000 pixels (a bomb by declaration)."""
    ihdr = struct.pack(">IIBBBBB", 100_000, 100_000, 8, 2, 0, 0, 0)
    chunk = b"IHDR" + ihdr
    data = b"\x89PNG\r\n\x1a\n" + struct.pack(">I", len(ihdr)) + chunk + struct.pack(">I", zlib.crc32(chunk))
    idat = b"IDAT" + zlib.compress(b"\x00" * 64)
    data += struct.pack(">I", len(idat) - 4) + idat + struct.pack(">I", zlib.crc32(idat))
    return data + b"\x00\x00\x00\x00IEND\xaeB`\x82"


def _jpeg_header_only() -> bytes:
    return jpeg_bytes()[:20] + b"\xff\xd9"


def _polyglot_jpeg_zip() -> bytes:
    """A valid JPEG with a ZIP (holding a script) appended: opens as either."""
    out = io.BytesIO()
    import zipfile

    with zipfile.ZipFile(out, "w") as zf:
        zf.writestr("run.html", "<script>alert('polyglot')</script>")
    return jpeg_bytes(size=(160, 120)) + out.getvalue()


def _png_with_text_chunks() -> bytes:
    info = PngImagePlugin.PngInfo()
    info.add_text("Author", "Zelda Quackenbush")
    info.add_text("Comment", "MRN 123456")
    return _save(_rgb(), "PNG", pnginfo=info)


def _rgba_png() -> bytes:
    image = Image.new("RGBA", (120, 90), (200, 30, 30, 0))
    image.paste((200, 30, 30, 255), (0, 0, 60, 90))
    return _save(image, "PNG")


def _tiff_16bit() -> bytes:
    return _save(Image.fromarray((np.arange(120 * 90).reshape(90, 120) * 6).astype(np.uint16)), "TIFF")


REJECTED = {
    "0 bytes": (b"", "x.jpg", "empty"),
    "truncated jpeg": (jpeg_bytes()[:1500], "x.jpg", "truncated or corrupt"),
    "jpeg header only": (_jpeg_header_only(), "x.jpg", "not a supported image"),
    "png with a broken crc": (_png_with_broken_crc(), "x.png", "corrupt"),
    "pdf": (b"%PDF-1.4\n1 0 obj<<>>endobj\ntrailer<<>>\n%%EOF", "scan.pdf", "not a supported image"),
    "zip renamed .jpg": (_zip_named_jpg(), "x.jpg", "not a supported image"),
    "gzipped jpeg": (gzip.compress(jpeg_bytes()), "x.jpg.gz", "not a supported image"),
    "svg with a script": (
        b'<svg xmlns="http://www.w3.org/2000/svg" onload="alert(1)"><script>alert(1)</script></svg>',
        "x.svg",
        "not a supported image",
    ),
    "html renamed .png": (b"<!doctype html><script>alert(1)</script>", "x.png", "not a supported image"),
    "windows executable renamed .jpg": (b"MZ\x90\x00" + b"\x00" * 200, "x.jpg", "not a supported image"),
    "plain text": (b"lesion on left arm, see notes", "x.jpg", "not a supported image"),
    "bmp (format not accepted)": (_save(_rgb(), "BMP"), "x.bmp", "not a supported image"),
    "decompression bomb": (_bomb(), "x.png", "too many pixels"),
    "png header claiming 10 gigapixels": (_png_header_claiming_huge_size(), "x.png", "too many pixels"),
    "1x1 pixel": (png_bytes(size=(1, 1)), "x.png", "too small"),
    "animated gif": (_animated_gif(), "x.gif", "not a supported image"),
    "animated webp": (_animated_webp(), "x.webp", "animated"),
    "multi-page tiff": (_multipage_tiff(), "x.tif", "multi-page"),
    "over the size limit": (jpeg_bytes(size=(1200, 900), quality=95), "x.jpg", "larger than"),
}

# name -> (bytes, file name, expected (width, height) after normalisation)
ACCEPTED = {
    "16-bit tiff": (_tiff_16bit(), "x.tif", (120, 90)),
    "cmyk tiff": (_save(Image.new("CMYK", (120, 90), (0, 100, 100, 0)), "TIFF"), "x.tif", (120, 90)),
    "cmyk jpeg": (_save(Image.new("CMYK", (120, 90), (0, 100, 100, 0)), "JPEG"), "x.jpg", (120, 90)),
    "exif with gps and rotation": (_jpeg_with_exif(orientation=6, gps=True), "x.jpg", (150, 200)),
    "good png with a .gif name": (png_bytes(), "photo.gif", (120, 90)),
    "polyglot jpeg + zip": (_polyglot_jpeg_zip(), "x.jpg", (160, 120)),
    "png text chunks with a name": (_png_with_text_chunks(), "x.png", (160, 120)),
    "rgba png": (_rgba_png(), "x.png", (120, 90)),
    "grayscale jpeg": (_save(_rgb().convert("L"), "JPEG"), "x.jpg", (160, 120)),
    "progressive jpeg": (_save(_rgb(), "JPEG", progressive=True), "x.jpg", (160, 120)),
    "lossless webp": (_save(_rgb(), "WEBP", lossless=True), "x.webp", (160, 120)),
}


def test_the_corpus_has_at_least_twenty_kinds():
    assert len(REJECTED) + len(ACCEPTED) >= 20


@pytest.fixture
def queued(monkeypatch):
    sent = []
    monkeypatch.setattr(Task, "apply_async", lambda self, args=None, kwargs=None, **o: sent.append((self.name, args)))
    return sent


def _media_files(settings) -> list:
    root = settings.MEDIA_ROOT
    return [p for p in root.rglob("*") if p.is_file()] if root.exists() else []


@pytest.mark.parametrize("via", ["api", "form"])
@pytest.mark.parametrize("case", list(REJECTED))
def test_rejected_upload_stores_nothing_and_the_server_keeps_serving(
    staff_client, lesion, case, via, settings, queued, django_capture_on_commit_callbacks
):
    data, name, message = REJECTED[case]
    if case == "over the size limit":
        settings.DERMATRACK_MAX_UPLOAD_BYTES = 50_000
        assert len(data) > 50_000
    url = f"/api/lesions/{lesion.uuid}/examinations/" if via == "api" else f"/lesions/{lesion.uuid}/examinations/new/"
    with django_capture_on_commit_callbacks(execute=True):
        response = staff_client.post(url, {"image": SimpleUploadedFile(name, data)})
    assert response.status_code == 400, response.content[:300]
    assert message.lower() in response.content.decode().lower()
    assert Examination.objects.count() == 0
    assert _media_files(settings) == []
    assert not AuditEntry.objects.filter(action="examination.create").exists()
    assert queued == []
    assert staff_client.get(f"/lesions/{lesion.uuid}/").status_code == 200
    if via == "form":
        return
    ok = staff_client.post(
        f"/api/lesions/{lesion.uuid}/examinations/", {"image": SimpleUploadedFile("ok.png", png_bytes())}
    )
    assert ok.status_code == 201


@pytest.mark.parametrize("case", list(ACCEPTED))
def test_accepted_upload_is_normalised_to_a_plain_rgb_png(staff_client, lesion, case, settings):
    data, name, size = ACCEPTED[case]
    response = staff_client.post(f"/api/lesions/{lesion.uuid}/examinations/", {"image": SimpleUploadedFile(name, data)})
    assert response.status_code == 201, response.content[:300]
    exam = Examination.objects.get()
    assert (exam.image_width, exam.image_height) == size
    assert len(_media_files(settings)) == 1
    with exam.image.open("rb") as fh:
        stored = fh.read()
    image = Image.open(io.BytesIO(stored))
    assert image.format == "PNG"
    assert image.mode == "RGB"
    assert image.size == size
    assert not image.getexif()
    assert not getattr(image, "text", {})  # no tEXt/iTXt/zTXt chunks survive
    assert b"PK\x03\x04" not in stored  # nothing appended survives
    assert b"Quackenbush" not in stored
