"""Consent at registration, the patient's data export, and erasure that leaves no row and no file."""

from __future__ import annotations

import datetime as dt
import io
import json
import zipfile

import pytest
from django.core.files.base import ContentFile
from django.db import connection

from lesions.models import Alert, Examination, Explanation, Lesion, Prediction
from lesions.services import examination_upload, lesion_add
from patients.models import Consent, Patient
from patients.services import consent_record, emergency_access_grant
from portal import permissions
from portal.models import AuditEntry, User
from portal.web.privacy.services import patient_erase, patient_record_graph
from tests.factories import png_bytes


def _media_files(settings) -> set[str]:
    root = settings.MEDIA_ROOT
    return {str(p.relative_to(root)) for p in root.rglob("*") if p.is_file()} if root.exists() else set()


def _full_record(patient, staff, seed=0):
    """A lesion with two uploaded examinations, a prediction, an alert and an explanation image."""
    lesion = lesion_add(actor=staff, patient=patient, body_site="face", label="left cheek near the ear")
    exams = [
        examination_upload(
            actor=staff,
            lesion=lesion,
            image=io.BytesIO(png_bytes(seed=seed + n)),
            notes=f"raised border, note {n}",
        )
        for n in range(2)
    ]
    prediction = Prediction.objects.create(
        examination=exams[0],
        model_name="lesion classifier",
        model_version="test",
        model_sha256="a" * 64,
        probabilities={"mel": 0.7, "nv": 0.3},
        malignancy_risk="0.700000",
        top_class="mel",
    )
    Alert.objects.create(prediction=prediction, lesion=lesion, clinic=patient.clinic, priority=700)
    explanation = Explanation(
        examination=exams[0], kind="cam", model_sha256="a" * 64, status="done", summary={"explained": "mel"}
    )
    explanation.image.save("cam", ContentFile(png_bytes(seed=seed + 50)), save=True)
    return lesion, exams, prediction, explanation


# --- consent ---------------------------------------------------------------------------------

REGISTRATION = {
    "given_name": "Ottilie",
    "family_name": "Brandstetter",
    "date_of_birth": "1980-02-03",
    "medical_record_number": "MRN-CONSENT-1",
}


def test_registration_without_consent_is_refused(staff_client):
    response = staff_client.post("/patients/new/", REGISTRATION)
    assert response.status_code == 400
    assert "consent" in response.content.decode().lower()
    assert not Patient.objects.exists()
    api = staff_client.post("/api/patients/", REGISTRATION, content_type="application/json")
    assert api.status_code == 400
    assert "consent_given" in api.json()
    assert not Patient.objects.exists()


def test_registration_records_consent_version_date_and_who(staff_client, clinic_staff, settings):
    response = staff_client.post("/patients/new/", {**REGISTRATION, "consent_given": "on"})
    assert response.status_code == 302
    consent = Consent.objects.get()
    assert consent.patient == Patient.objects.get()
    assert consent.version == settings.DERMATRACK_CONSENT_VERSION
    assert consent.recorded_by == clinic_staff
    assert consent.recorded_by_username == clinic_staff.username
    assert abs((consent.given_at - dt.datetime.now(dt.UTC)).total_seconds()) < 60
    assert AuditEntry.objects.filter(action="consent.record", patient_uuid=str(consent.patient.uuid)).exists()


# --- export ----------------------------------------------------------------------------------


@pytest.mark.parametrize("who", ["patient", "administrator"])
def test_export_contains_the_decrypted_record_images_and_explanations(
    who, client, patient, clinic_staff, administrator
):
    _lesion, exams, _prediction, explanation = _full_record(patient, clinic_staff)
    client.force_login(patient.account if who == "patient" else administrator)
    url = "/me/export/" if who == "patient" else f"/patients/{patient.uuid}/export/"
    response = client.get(url)
    assert response.status_code == 200
    assert response["Content-Type"] == "application/zip"
    assert "Quackenbush" not in response["Content-Disposition"]
    archive = zipfile.ZipFile(io.BytesIO(response.content))
    document = json.loads(archive.read("record.json"))
    assert document["patient"]["given_name"] == "Zelda"
    assert document["patient"]["family_name"] == "Quackenbush"
    assert document["patient"]["medical_record_number"] == patient.medical_record_number
    records = document["records"]
    assert [row["label"] for row in records["lesions.lesion"]] == ["left cheek near the ear"]
    assert sorted(row["notes"] for row in records["lesions.examination"]) == [
        "raised border, note 0",
        "raised border, note 1",
    ]
    assert records["lesions.prediction"][0]["probabilities"] == {"mel": 0.7, "nv": 0.3}
    assert records["lesions.explanation"][0]["summary"] == {"explained": "mel"}
    # Every image in the archive is the decrypted PNG, byte for byte what the portal shows.
    for exam in exams:
        row = next(r for r in records["lesions.examination"] if r["uuid"] == str(exam.uuid))
        with exam.image.open("rb") as fh:
            assert archive.read(row["image"]) == fh.read()
        assert archive.read(row["image"]).startswith(b"\x89PNG")
    expl_row = records["lesions.explanation"][0]
    with explanation.image.open("rb") as fh:
        assert archive.read(expl_row["image"]) == fh.read()
    assert AuditEntry.objects.filter(action="patient.export", patient_uuid=str(patient.uuid)).count() == 1


def test_export_leaves_out_emergency_access_bookkeeping(client, patient, outside_clinician, administrator):
    consent_record(patient=patient, actor=administrator)
    emergency_access_grant(
        actor=outside_clinician,
        clinic=patient.clinic,
        medical_record_number=patient.medical_record_number,
        reason="Patient seen unconscious in our emergency department tonight.",
    )
    client.force_login(administrator)
    archive = zipfile.ZipFile(io.BytesIO(client.get(f"/patients/{patient.uuid}/export/").content))
    records = json.loads(archive.read("record.json"))["records"]
    assert "patients.consent" in records
    assert not any("emergency" in label for label in records)


def test_clinic_staff_cannot_export_a_whole_record(staff_client, patient):
    assert staff_client.get(f"/patients/{patient.uuid}/export/").status_code == 403


# --- erasure ---------------------------------------------------------------------------------


def _all_rows_as_text() -> dict[str, str]:
    """Every table's raw contents (ciphertext stays ciphertext), for a search by identifier."""
    out = {}
    with connection.cursor() as cursor:
        for table in connection.introspection.table_names():
            cursor.execute(f'SELECT * FROM "{table}"')  # noqa: S608 - table names come from the schema
            out[table] = repr(cursor.fetchall())
    return out


def test_erasure_leaves_no_row_and_no_file_of_the_patient(
    client, patient, other_patient, clinic_staff, administrator, settings, django_capture_on_commit_callbacks
):
    _full_record(other_patient, clinic_staff, seed=100)  # a neighbour whose record must survive
    before = _media_files(settings)
    lesion, exams, prediction, explanation = _full_record(patient, clinic_staff)
    patient_files = _media_files(settings) - before
    assert len(patient_files) == 3  # two examination images and one explanation image
    account_id = patient.account_id
    identifiers = {str(obj.uuid) for obj in (patient, lesion, *exams, prediction, explanation)}
    graph = patient_record_graph(patient)
    assert {m._meta.label_lower for m in graph} >= {
        "patients.patient",
        "lesions.lesion",
        "lesions.examination",
        "lesions.prediction",
        "lesions.alert",
        "lesions.explanation",
    }
    client.force_login(patient.account)
    client.get(f"/patients/{patient.uuid}/")  # the patient's own reads are in the trail too
    assert permissions.patient_permission_rows(patient) > 0

    client.force_login(administrator)
    with django_capture_on_commit_callbacks(execute=True):
        response = client.post(f"/patients/{patient.uuid}/erase/", {"confirm": "on"})
    assert response.status_code == 302

    assert not Patient.objects.filter(pk=patient.pk).exists()
    assert not Lesion.objects.filter(pk=lesion.pk).exists()
    assert not Examination.objects.filter(pk__in=[e.pk for e in exams]).exists()
    assert not Prediction.objects.filter(pk=prediction.pk).exists()
    assert not Alert.objects.filter(lesion_id=lesion.pk).exists()
    assert not Explanation.objects.filter(pk=explanation.pk).exists()
    assert not Consent.objects.filter(patient_id=patient.pk).exists()
    # The patient's own reads are in the trail, so their login stays only as a tombstone that
    # names nobody (issue #11: audit actors are PROTECTed, never nulled).
    tombstone = User.objects.get(pk=account_id)
    assert not tombstone.is_active
    assert not tombstone.has_usable_password()
    assert tombstone.username.startswith("erased-")
    assert (tombstone.email, tombstone.first_name, tombstone.last_name) == ("", "", "")
    assert permissions.patient_permission_rows(patient) == 0
    # No file of the patient remains; the neighbour's files do.
    assert _media_files(settings) == before
    # No table outside the audit trail names any of the patient's identifiers.
    dump = _all_rows_as_text()
    for table, text in dump.items():
        if table == AuditEntry._meta.db_table:
            continue
        for identifier in identifiers:
            assert identifier not in text, (table, identifier)
            assert identifier.replace("-", "") not in text, (table, identifier)
    # The audit trail keeps pseudonymous entries: random identifiers, no name, record number or login.
    entries = list(AuditEntry.objects.filter(patient_uuid=str(patient.uuid)))
    assert any(e.action == "patient.erase" for e in entries)
    trail = dump[AuditEntry._meta.db_table]
    for secret in ("Zelda", "Quackenbush", patient.medical_record_number, "pat_own"):
        assert secret not in trail
    # The neighbour's record is intact and readable.
    assert Lesion.objects.filter(patient=other_patient).count() == 1


def test_only_administrators_erase(staff_client, clinician_client, patient):
    for c in (staff_client, clinician_client):
        assert c.post(f"/patients/{patient.uuid}/erase/", {"confirm": "on"}).status_code == 403
    assert Patient.objects.filter(pk=patient.pk).exists()


def test_erasure_service_refuses_non_administrators(patient, clinic_staff):
    from django.core.exceptions import PermissionDenied

    with pytest.raises(PermissionDenied):
        patient_erase(actor=clinic_staff, patient=patient)
