"""visible_patient_condition (the EXISTS form used by the triage queue) must select exactly
what visible_patients selects, for every role and permission."""

from __future__ import annotations

import pytest
from django.contrib.auth.models import Permission

from lesions.models import Alert
from patients.models import Patient
from portal import permissions
from tests.factories import AlertFactory, LesionFactory, PatientFactory


@pytest.fixture
def everyone(patient, other_patient, clinic_staff, clinician, outside_clinician, administrator, other_clinic):
    elsewhere = PatientFactory(clinic=other_clinic)
    for record in (patient, other_patient, elsewhere):
        AlertFactory(prediction__examination__lesion=LesionFactory(patient=record))
    return [patient.account, other_patient.account, clinic_staff, clinician, outside_clinician, administrator]


@pytest.mark.parametrize("perm", [permissions.VIEW, permissions.CHANGE, permissions.MANAGE_LESIONS, permissions.TRIAGE])
def test_condition_matches_visible_patients(everyone, perm):
    for user in everyone:
        expected = set(permissions.visible_patients(user, perm).values_list("pk", flat=True))
        direct = set(
            Patient.objects.filter(permissions.visible_patient_condition(user, perm)).values_list("pk", flat=True)
        )
        via_alerts = set(
            Alert.objects.filter(
                permissions.visible_patient_condition(user, perm, patient_field="lesion__patient_id")
            ).values_list("lesion__patient_id", flat=True)
        )
        assert direct == expected, (user.username, perm)
        assert via_alerts == expected, (user.username, perm)


@pytest.mark.parametrize("perm", [permissions.VIEW, permissions.CHANGE, permissions.MANAGE_LESIONS, permissions.TRIAGE])
def test_union_filter_matches_visible_patients(everyone, outside_clinician, patient, perm):
    """visible_patient_filter (the IN-over-UNION form the counts and lists use) selects the
    same records, an emergency grant included."""
    from patients.services import emergency_access_grant

    emergency_access_grant(
        actor=outside_clinician,
        clinic=patient.clinic,
        medical_record_number=patient.medical_record_number,
        reason="Unconscious patient in our emergency room, history needed",
    )
    for user in everyone:
        expected = set(permissions.visible_patients(user, perm).values_list("pk", flat=True))
        direct = set(
            Patient.objects.filter(permissions.visible_patient_filter(user, perm)).values_list("pk", flat=True)
        )
        via_alerts = set(
            Alert.objects.filter(
                permissions.visible_patient_filter(user, perm, patient_field="lesion__patient_id")
            ).values_list("lesion__patient_id", flat=True)
        )
        assert direct == expected, (user.username, perm)
        assert via_alerts == expected, (user.username, perm)
    outsider = set(Patient.objects.filter(permissions.visible_patient_filter(outside_clinician, perm)))
    assert (patient in outsider) == (perm == permissions.VIEW)  # break-the-glass is read-only


def test_union_filter_for_anonymous_is_empty(db):
    from django.contrib.auth.models import AnonymousUser

    assert not Patient.objects.filter(permissions.visible_patient_filter(AnonymousUser())).exists()


def test_anonymous_and_model_wide_permissions_see_nothing(everyone, outside_clinician, django_user_model):
    from django.contrib.auth.models import AnonymousUser

    assert not Patient.objects.filter(permissions.visible_patient_condition(AnonymousUser())).exists()
    outside_clinician.user_permissions.add(Permission.objects.get(codename="view_patient"))
    outsider = django_user_model.objects.get(pk=outside_clinician.pk)  # fresh permission cache
    visible = Patient.objects.filter(permissions.visible_patient_condition(outsider))
    assert set(visible) == set(permissions.visible_patients(outsider))
    assert all(p.clinic_id == outsider.clinic_id for p in visible)


def test_break_the_glass_grants_view_in_both_forms(everyone, outside_clinician, patient):
    from patients.services import emergency_access_grant

    emergency_access_grant(
        actor=outside_clinician,
        clinic=patient.clinic,
        medical_record_number=patient.medical_record_number,
        reason="Unconscious patient in our emergency room, history needed",
    )
    for perm in (permissions.VIEW, permissions.TRIAGE):
        expected = set(permissions.visible_patients(outside_clinician, perm))
        assert set(Patient.objects.filter(permissions.visible_patient_condition(outside_clinician, perm))) == expected
    assert patient in permissions.visible_patients(outside_clinician)
    assert patient not in permissions.visible_patients(outside_clinician, permissions.TRIAGE)
