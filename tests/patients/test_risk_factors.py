"""Melanoma risk factors on the record: sex, Fitzpatrick skin type, personal and family history
of melanoma. Entered at registration and on the edit page, stored encrypted, shown to the clinic,
exported with the record and in the API."""

from __future__ import annotations

import io
import json
import zipfile

import pytest
from django.db import connection

from patients.models import Patient
from patients.services import patient_update
from portal.crypto import decrypt_bytes
from portal.models import AuditEntry

RISK = {
    "sex": "female",
    "fitzpatrick_skin_type": "II",
    "personal_history_of_melanoma": "yes",
    "family_history_of_melanoma": "no",
}
REGISTRATION = {
    "given_name": "Ilse",
    "family_name": "Brandauer",
    "date_of_birth": "1950-06-01",
    "medical_record_number": "RF-1001",
    "consent_given": "on",
    **RISK,
}
COLUMNS = ["sex", "fitzpatrick_skin_type", "personal_history_of_melanoma", "family_history_of_melanoma"]


def _raw(patient_pk: int) -> dict[str, str]:
    with connection.cursor() as cursor:
        cursor.execute(f"SELECT {', '.join(COLUMNS)} FROM patients_patient WHERE id = %s", [patient_pk])  # noqa: S608
        row = cursor.fetchone()
    return dict(zip(COLUMNS, row, strict=True))


def test_registration_form_offers_the_risk_factors(staff_client):
    page = staff_client.get("/patients/new/").content.decode()
    for name in COLUMNS:
        assert f'name="{name}"' in page
    assert "Fitzpatrick skin type" in page
    assert "V: very rarely burns" in page
    assert '<option value="unknown" selected>' in page  # sex and both histories default to unknown


def test_registered_risk_factors_are_stored_encrypted(staff_client):
    response = staff_client.post("/patients/new/", REGISTRATION)
    assert response.status_code == 302
    patient = Patient.objects.get()
    assert {name: getattr(patient, name) for name in COLUMNS} == RISK
    raw = _raw(patient.pk)
    for name, value in RISK.items():
        assert raw[name] != value
        if len(value) >= 5:  # a 2-letter value ("no") turns up in random base64 now and then
            assert value not in raw[name].lower()  # not even inside
        assert raw[name].startswith("gAAAAA")  # a Fernet token
        assert decrypt_bytes(raw[name].encode()).decode() == value
    # Two records with the same answers have different ciphertexts (random IV): no equality leak.
    staff_client.post("/patients/new/", {**REGISTRATION, "medical_record_number": "RF-1002"})
    second = Patient.objects.exclude(pk=patient.pk).get()
    assert _raw(second.pk)["sex"] != raw["sex"]


def test_defaults_when_not_recorded(clinic_staff, clinic):
    from tests.factories import PatientFactory

    patient = PatientFactory(clinic=clinic)
    assert (patient.sex, patient.fitzpatrick_skin_type) == ("unknown", "")
    assert patient.personal_history_of_melanoma == patient.family_history_of_melanoma == "unknown"


def test_an_invalid_choice_is_a_form_error(staff_client):
    response = staff_client.post("/patients/new/", {**REGISTRATION, "fitzpatrick_skin_type": "VII"})
    assert response.status_code == 400
    assert "Select a valid choice" in response.content.decode()
    assert not Patient.objects.exists()


def test_patient_page_shows_the_risk_factors_to_the_clinic(staff_client, clinician_client, clinic_staff):
    staff_client.post("/patients/new/", REGISTRATION)
    patient = Patient.objects.get()
    for client in (staff_client, clinician_client):
        page = client.get(f"/patients/{patient.uuid}/").content.decode()
        assert "Fitzpatrick skin type" in page
        assert "II: usually burns" in page
        assert "Personal history of melanoma</dt><dd>Yes" in page
        assert "Family history of melanoma</dt><dd>No" in page
    assert "Edit record" in staff_client.get(f"/patients/{patient.uuid}/").content.decode()
    assert "Edit record" not in clinician_client.get(f"/patients/{patient.uuid}/").content.decode()


def test_edit_page_changes_the_risk_factors(staff_client, clinician_client, patient):
    page = staff_client.get(f"/patients/{patient.uuid}/edit/").content.decode()
    assert 'value="Quackenbush"' in page
    assert 'value="1970-05-17"' in page
    data = {
        "given_name": "Zelda",
        "family_name": "Quackenbush",
        "date_of_birth": "1970-05-17",
        "medical_record_number": patient.medical_record_number,
        **RISK,
    }
    response = staff_client.post(f"/patients/{patient.uuid}/edit/", data)
    assert response.status_code == 302
    patient.refresh_from_db()
    assert {name: getattr(patient, name) for name in COLUMNS} == RISK
    assert AuditEntry.objects.filter(action="patient.update", patient_uuid=str(patient.uuid)).count() == 1
    # Dermatologists read the record but do not change it.
    assert clinician_client.post(f"/patients/{patient.uuid}/edit/", data).status_code == 403


def test_edit_refuses_a_record_number_taken_in_the_clinic(clinic_staff, patient, other_patient):
    from django.core.exceptions import ValidationError

    with pytest.raises(ValidationError, match="already registered"):
        patient_update(
            actor=clinic_staff, patient=patient, medical_record_number=f" {other_patient.medical_record_number} "
        )


def test_export_includes_the_risk_factors_and_no_search_tokens(client, clinic_staff, patient, administrator):
    patient_update(actor=clinic_staff, patient=patient, **RISK)
    client.force_login(administrator)
    archive = zipfile.ZipFile(io.BytesIO(client.get(f"/patients/{patient.uuid}/export/").content))
    document = json.loads(archive.read("record.json"))
    assert {name: document["patient"][name] for name in COLUMNS} == RISK
    assert "patients.patientsearchtoken" not in document["records"]


def test_api_reads_and_writes_the_risk_factors(staff_client, patient, clinic_staff):
    patient_update(actor=clinic_staff, patient=patient, **RISK)
    body = staff_client.get(f"/api/patients/{patient.uuid}/").json()
    assert {name: body[name] for name in COLUMNS} == RISK
    created = staff_client.post(
        "/api/patients/",
        {
            "given_name": "Otto",
            "family_name": "Api",
            "date_of_birth": "1980-01-01",
            "medical_record_number": "API-1",
            "consent_given": True,
            "sex": "male",
            "fitzpatrick_skin_type": "IV",
        },
        content_type="application/json",
    )
    assert created.status_code == 201, created.content
    assert created.json()["fitzpatrick_skin_type"] == "IV"
    assert created.json()["family_history_of_melanoma"] == "unknown"
    bad = staff_client.post(
        "/api/patients/",
        {
            "given_name": "Otto",
            "family_name": "Api",
            "date_of_birth": "1980-01-01",
            "medical_record_number": "API-2",
            "consent_given": True,
            "sex": "robot",
        },
        content_type="application/json",
    )
    assert bad.status_code == 400
    assert "sex" in bad.json()
