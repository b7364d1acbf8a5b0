"""One home per rule: who may register patients, which permission a read needs, and that
list reads are audited by the selectors (so every page and API endpoint gets it)."""

from __future__ import annotations

import datetime as dt

import pytest
from django.core.exceptions import PermissionDenied, ValidationError
from django.http import Http404

from patients.selectors import patient_get_for, patient_list_for
from patients.services import patient_account_link, patient_register
from portal import permissions
from portal.models import AuditEntry, Role
from tests.factories import PatientFactory, UserFactory

REGISTRATION = {
    "given_name": "Ada",
    "family_name": "Pemberton",
    "date_of_birth": dt.date(1970, 1, 1),
    "medical_record_number": "RULE-1",
    "consent_given": True,
}


@pytest.mark.parametrize("who", ["clinic_staff", "clinician", "outside_clinician", "administrator", "patient_user"])
def test_may_register_is_one_rule_for_pages_api_and_service(request, who, clinic):
    user = request.getfixturevalue(who)
    allowed = permissions.can_register_patients(user, clinic)
    if allowed:
        assert patient_register(actor=user, clinic=clinic, **REGISTRATION).clinic == clinic
    else:
        with pytest.raises(PermissionDenied):
            patient_register(actor=user, clinic=clinic, **REGISTRATION)
    assert allowed == (who in ("clinic_staff", "clinician", "administrator"))


def test_selector_checks_the_permission_it_is_asked_for(patient, patient_user, outside_clinician, clinic_staff):
    # The patient sees their record but may not manage its lesions: 403, not 404.
    assert patient_get_for(user=patient_user, patient_uuid=patient.uuid) == patient
    with pytest.raises(PermissionDenied):
        patient_get_for(user=patient_user, patient_uuid=patient.uuid, perm=permissions.MANAGE_LESIONS)
    with pytest.raises(Http404):
        patient_get_for(user=outside_clinician, patient_uuid=patient.uuid, perm=permissions.MANAGE_LESIONS)
    assert patient_get_for(user=clinic_staff, patient_uuid=patient.uuid, perm=permissions.MANAGE_LESIONS) == patient


def test_list_reads_are_audited_by_the_selector(clinic_staff, staff_client, patient):
    patient_list_for(user=clinic_staff, paginate=lambda qs: qs[:10])
    assert AuditEntry.objects.filter(action="patient.list", actor=clinic_staff).count() == 1
    assert staff_client.get("/api/patients/").status_code == 200
    assert staff_client.get("/patients/").status_code == 200
    assert staff_client.get("/follow-ups/").status_code == 200
    assert AuditEntry.objects.filter(action="patient.list", actor=clinic_staff).count() == 3
    assert AuditEntry.objects.filter(action="follow_up.list", actor=clinic_staff).count() == 1


def test_factory_patients_get_their_access_from_the_services(clinic, clinic_staff, outside_clinician):
    account = UserFactory(username="pat_linked", role=Role.PATIENT, clinic=None)
    patient = PatientFactory(clinic=clinic, account=account)
    assert patient.consents.count() == 1  # registered, as a real record is
    assert patient_get_for(user=account, patient_uuid=patient.uuid) == patient
    assert patient_get_for(user=clinic_staff, patient_uuid=patient.uuid) == patient
    with pytest.raises(Http404):
        patient_get_for(user=outside_clinician, patient_uuid=patient.uuid)


def test_linking_a_login_refuses_non_patients_and_taken_logins(clinic, clinic_staff, patient, patient_user):
    fresh = PatientFactory(clinic=clinic)
    with pytest.raises(ValidationError, match="Only a patient login"):
        patient_account_link(actor=clinic_staff, patient=fresh, account=clinic_staff)
    with pytest.raises(ValidationError, match="another patient record"):
        patient_account_link(actor=clinic_staff, patient=fresh, account=patient_user)
    with pytest.raises(ValidationError, match="already has an account"):
        patient_account_link(actor=clinic_staff, patient=patient, account=patient_user)
