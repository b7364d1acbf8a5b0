"""Encryption at rest: raw rows and raw files hold no plaintext PHI; a wrong key fails loudly."""

from __future__ import annotations

import io

import pytest
from cryptography.fernet import Fernet
from django.db import connection

from lesions.models import Examination
from lesions.services import examination_upload
from patients.models import Patient
from portal.crypto import DecryptionError, blind_index
from tests.factories import jpeg_bytes

PHI = {"given_name": "Zelda", "family_name": "Quackenbush"}


def _raw_row(table: str, pk: int) -> str:
    with connection.cursor() as cursor:
        cursor.execute(f"SELECT * FROM {table} WHERE id = %s", [pk])  # noqa: S608 - fixed table names
        return " ".join(str(v) for v in cursor.fetchone())


def test_patient_fields_are_ciphertext_in_the_database(patient):
    raw = _raw_row("patients_patient", patient.pk)
    for value in (*PHI.values(), patient.medical_record_number, "1970-05-17", patient.email):
        assert value not in raw
    reloaded = Patient.objects.get(pk=patient.pk)
    assert reloaded.family_name == "Quackenbush"
    assert str(reloaded.date_of_birth) == "1970-05-17"


def test_lookup_by_record_number_uses_the_blind_index(patient):
    assert Patient.objects.filter(mrn_index=blind_index(patient.medical_record_number.lower())).get() == patient
    assert patient.medical_record_number not in _raw_row("patients_patient", patient.pk)


def test_wrong_key_raises_instead_of_returning_ciphertext(patient, settings):
    settings.FIELD_ENCRYPTION_KEY = [Fernet.generate_key().decode()]
    with pytest.raises(DecryptionError):
        Patient.objects.get(pk=patient.pk)


def test_rotation_keys_still_decrypt_old_rows(patient, settings):
    old = list(settings.FIELD_ENCRYPTION_KEY)
    settings.FIELD_ENCRYPTION_KEY = [Fernet.generate_key().decode(), *old]
    assert Patient.objects.get(pk=patient.pk).given_name == "Zelda"


def test_uploaded_image_and_notes_are_encrypted_on_disk(lesion, clinic_staff, settings):
    data = jpeg_bytes(size=(200, 150))
    exam = examination_upload(
        actor=clinic_staff, lesion=lesion, image=io.BytesIO(data), notes="Itches at night, Zelda says"
    )
    path = settings.MEDIA_ROOT / exam.image.name
    stored = path.read_bytes()
    assert stored.startswith(b"gAAAAA")  # a Fernet token, not an image
    # The file is url-safe base64: the image's signature bytes (0x89 "PNG", the JPEG SOI
    # 0xFF 0xD8) cannot appear in it. ASCII markers such as "JFIF" can, by chance, in any token.
    assert b"\x89PNG" not in stored
    assert b"\xff\xd8" not in stored
    assert set(stored) <= set(b"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789-_=")
    assert "Zelda" not in _raw_row("lesions_examination", exam.pk)
    with Examination.objects.get(pk=exam.pk).image.open("rb") as fh:
        assert fh.read().startswith(b"\x89PNG")


def test_stored_file_name_never_carries_the_upload_name(lesion, clinic_staff):
    upload = io.BytesIO(jpeg_bytes())
    upload.name = "Quackenbush_Zelda_back.jpg"
    exam = examination_upload(actor=clinic_staff, lesion=lesion, image=upload)
    assert "Quackenbush" not in exam.image.name


def test_no_key_in_the_repository():
    import subprocess
    from pathlib import Path

    root = Path(__file__).resolve().parents[2]
    tracked = subprocess.run(["git", "ls-files"], cwd=root, capture_output=True, text=True, check=False).stdout.split()
    assert not [f for f in tracked if f.endswith(".key")]
