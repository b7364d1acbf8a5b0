"""Upload file names never reach the file system or a log; odd names get clear answers (#11 items 1, 7)."""

from __future__ import annotations

import logging
import tempfile
from pathlib import Path

import pytest
from django.core.files.uploadedfile import SimpleUploadedFile
from django.test import Client

from lesions.models import Examination
from tests.factories import png_bytes

PATIENT_NAME = "ZeldaQuackenbush"
BOUNDARY = "----dermatrack-test-boundary"


def _big_png() -> bytes:
    data = png_bytes(size=(1400, 1000))
    assert len(data) > 2 * 1024 * 1024  # over FILE_UPLOAD_MAX_MEMORY_SIZE: goes to a temporary file
    return data


def _multipart(filename: str, data: bytes) -> bytes:
    """Built by hand: the test client would shorten the file name to 255 characters first."""
    head = (
        f'--{BOUNDARY}\r\nContent-Disposition: form-data; name="image"; filename="{filename}"\r\n'
        "Content-Type: image/png\r\n\r\n"
    ).encode()
    return head + data + f"\r\n--{BOUNDARY}--\r\n".encode()


def _post_raw(client: Client, url: str, filename: str, data: bytes):
    return client.post(url, data=_multipart(filename, data), content_type=f"multipart/form-data; boundary={BOUNDARY}")


@pytest.fixture
def upload_tmp(settings, tmp_path):
    settings.FILE_UPLOAD_TEMP_DIR = str(tmp_path / "uploads")
    Path(settings.FILE_UPLOAD_TEMP_DIR).mkdir()
    return Path(settings.FILE_UPLOAD_TEMP_DIR)


@pytest.mark.parametrize("where", ["api", "web"])
def test_large_upload_with_a_very_long_extension_is_accepted_and_its_name_never_logged(
    staff_client, lesion, caplog, upload_tmp, monkeypatch, where
):
    """Reproduces item 1: before the fix Django named the temporary file `tmpXXXX.upload.<ext>`,
    an extension of >= 237 characters raised OSError [Errno 36] (HTTP 500) and the traceback
    logged the file name."""
    seen_names: list[str] = []
    real = tempfile.NamedTemporaryFile

    def spy(*args, **kwargs):
        handle = real(*args, **kwargs)
        seen_names.append(handle.name)
        return handle

    monkeypatch.setattr(tempfile, "NamedTemporaryFile", spy)
    caplog.set_level(logging.DEBUG)
    staff_client.raise_request_exception = False
    name = f"{PATIENT_NAME}." + "x" * 240
    url = f"/api/lesions/{lesion.uuid}/examinations/" if where == "api" else f"/lesions/{lesion.uuid}/examinations/new/"
    response = staff_client.post(url, {"image": SimpleUploadedFile(name, _big_png(), content_type="image/png")})
    assert response.status_code in (201, 302), response.content[:300]
    assert Examination.objects.count() == 1
    assert seen_names
    assert all(PATIENT_NAME not in n and "xxxx" not in n for n in seen_names)
    assert PATIENT_NAME not in caplog.text
    assert PATIENT_NAME not in response.content.decode()
    assert not any(upload_tmp.iterdir())  # the temporary file is gone afterwards


@pytest.mark.parametrize("enforce_csrf", [False, True])
def test_a_1000_character_file_name_gets_a_clear_form_error(staff_client, clinic_staff, lesion, caplog, enforce_csrf):
    """Reproduces item 7: Django could not parse the part (its headers exceed 1 KB) and the web
    form answered with the bare "Bad Request (400)" page. With CSRF enforced the failure comes
    from the CSRF middleware, before the view runs."""
    client = staff_client
    if enforce_csrf:
        client = Client(enforce_csrf_checks=True)
        client.force_login(clinic_staff)
        assert client.get(f"/lesions/{lesion.uuid}/").status_code == 200  # sets the CSRF cookie, as a browser has it
    caplog.set_level(logging.DEBUG)
    name = PATIENT_NAME + "y" * 1000 + ".png"
    response = _post_raw(client, f"/lesions/{lesion.uuid}/examinations/new/", name, png_bytes())
    body = response.content.decode()
    assert response.status_code == 400
    assert "Bad Request (400)" not in body
    assert "rename the file" in body
    assert "examinations/new/" in body  # the upload form is there again, on the lesion page
    assert PATIENT_NAME not in body
    assert PATIENT_NAME not in caplog.text
    assert Examination.objects.count() == 0


def test_a_1000_character_file_name_is_explained_by_the_api(staff_client, lesion):
    response = _post_raw(staff_client, f"/api/lesions/{lesion.uuid}/examinations/", "z" * 1000 + ".png", png_bytes())
    assert response.status_code == 400
    assert "header size" in response.json()["detail"]


def test_anonymous_unreadable_upload_gets_the_plain_400_page(lesion):
    response = _post_raw(Client(), f"/lesions/{lesion.uuid}/examinations/new/", "z" * 1000 + ".png", png_bytes())
    assert response.status_code in (302, 400)
