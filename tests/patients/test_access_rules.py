"""One home per rule: who may register patients, which permission a read needs, and that
list reads are audited by the selectors (so every page and API endpoint gets it)."""

from __future__ import annotations

import datetime as dt

import pytest
from django.core.exceptions import PermissionDenied
from django.http import Http404

from patients.selectors import patient_get_for, patient_list_for
from patients.services import patient_register
from portal import permissions
from portal.models import AuditEntry

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
