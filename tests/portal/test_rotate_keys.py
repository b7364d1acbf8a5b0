"""Key rotation on real data: every encrypted field and stored file is re-encrypted under the
new key, the command resumes after an interruption, a second run changes nothing, and
everything reads back with the new key alone."""

from __future__ import annotations

import io

import pytest
from cryptography.fernet import Fernet
from django.core.management import CommandError, call_command

from lesions.models import Examination, Explanation, Lesion, Prediction
from patients.models import Patient
from patients.services import emergency_access_grant
from portal.crypto import DecryptionError
from portal.management.commands.rotate_keys import rotation_units
from tests.privacy.test_export_erasure import _full_record


def _snapshot(patient):
    patient = Patient.objects.get(pk=patient.pk)
    lesion = Lesion.objects.get(patient=patient)
    exams = list(Examination.objects.filter(lesion=lesion).order_by("pk"))
    prediction = Prediction.objects.get(examination__lesion=lesion)
    explanation = Explanation.objects.get(examination__lesion=lesion)
    images = []
    for f in [e.image for e in exams] + [explanation.image]:
        with f.open("rb") as fh:
            images.append(fh.read())
    return {
        "patient": (patient.given_name, patient.family_name, patient.date_of_birth, patient.medical_record_number),
        "lesion": lesion.label,
        "notes": [e.notes for e in exams],
        "prediction": (prediction.probabilities, prediction.malignancy_risk),
        "summary": explanation.summary,
        "reason": patient.emergency_accesses.get().reason,
        "images": images,
    }


def _run(*args) -> str:
    out = io.StringIO()
    call_command("rotate_keys", *args, stdout=out)
    return out.getvalue()


def test_rotation_reencrypts_everything_resumably_and_idempotently(
    settings, patient, clinic_staff, outside_clinician, tmp_path
):
    _full_record(patient, clinic_staff)
    emergency_access_grant(
        actor=outside_clinician,
        clinic=patient.clinic,
        medical_record_number=patient.medical_record_number,
        reason="Seen in the emergency unit tonight, history needed.",
    )
    before = _snapshot(patient)
    old_keys = list(settings.FIELD_ENCRYPTION_KEY)
    new_key = Fernet.generate_key().decode()
    settings.FIELD_ENCRYPTION_KEY = [new_key, *old_keys]
    state = str(tmp_path / "rotation.json")

    with pytest.raises(CommandError, match="still under an old key"):
        _run("--check")

    # Interrupted after 3 rows: some data is rotated, the rest is not.
    assert "run again to continue" in _run("--state-file", state, "--batch-size", "2", "--limit", "3")
    with pytest.raises(CommandError):
        _run("--check")
    # Resumed: finishes the rest.
    assert "Rotation complete" in _run("--state-file", state, "--batch-size", "2")
    assert "Everything is under the newest key" in _run("--check")
    # Idempotent: a full second pass finds nothing to do.
    assert "re-encrypted 0," in _run("--state-file", state, "--restart")

    # The new key alone reads everything back, identical.
    settings.FIELD_ENCRYPTION_KEY = [new_key]
    assert _snapshot(patient) == before
    # The old key alone reads nothing any more.
    settings.FIELD_ENCRYPTION_KEY = old_keys
    with pytest.raises(DecryptionError):
        Patient.objects.get(pk=patient.pk)


def test_every_encrypted_model_and_file_field_is_covered():
    keys = {u.key for u in rotation_units()}
    assert {
        "patients.patient:fields",
        "lesions.lesion:fields",
        "lesions.examination:fields",
        "lesions.examination:file:image",
        "lesions.prediction:fields",
        "lesions.explanation:fields",
        "lesions.explanation:file:image",
        "patients.emergencyaccess:fields",
    } <= keys


def test_rotation_refuses_data_no_configured_key_can_read(settings, patient, tmp_path):
    settings.FIELD_ENCRYPTION_KEY = [Fernet.generate_key().decode()]  # the data's key is gone
    with pytest.raises(CommandError, match="cannot be decrypted"):
        _run("--state-file", str(tmp_path / "s.json"))
