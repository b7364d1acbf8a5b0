"""Reads of patient records, always for an acting user, always audited."""

from __future__ import annotations

from collections.abc import Callable, Iterable

from django.db.models import QuerySet

from patients.models import EmergencyAccess, Patient, ReferralCentre
from portal import permissions
from portal.audit import audit_record
from portal.crypto import blind_index
from portal.models import Clinic, User


def _visible(user: User) -> QuerySet[Patient]:
    return permissions.visible_patients(user).select_related("clinic").order_by("-created_at")


def patient_list_for(*, user: User, paginate: Callable[[QuerySet[Patient]], Iterable[Patient]]) -> list[Patient]:
    """One page of the records the user may see, newest first. `paginate` cuts the page (a
    slice, DRF's paginator); the audit entry names exactly the records on it, by UUID."""
    page = list(paginate(_visible(user)))
    audit_record(actor=user, action="patient.list", shown={"patient": page})
    return page


def patient_get_for(*, user: User, patient_uuid: object, perm: str = permissions.VIEW, audit: bool = True) -> Patient:
    """404 unless the user may see the record; 403 unless they also hold `perm` (a write)."""
    patient = permissions.get_visible_or_404(_visible(user), uuid=patient_uuid)
    if audit:
        audit_record(actor=user, action="patient.view", target=patient, patient=patient)
    if perm != permissions.VIEW:
        permissions.require_patient_perm(user, perm, patient)
    return patient


def own_patient_record(*, user: User) -> Patient | None:
    """The record of a logged-in patient, if they have one."""
    patient = Patient.objects.filter(account=user).select_related("clinic").first()
    if patient is not None and permissions.has_patient_perm(user, permissions.VIEW, patient):
        audit_record(actor=user, action="patient.view", target=patient, patient=patient)
        return patient
    return None


def patient_find_by_mrn(*, clinic: Clinic, medical_record_number: str) -> Patient | None:
    """Not for a user: the uniqueness check at registration and the break-the-glass lookup use it."""
    return Patient.objects.filter(clinic=clinic, mrn_index=blind_index(medical_record_number)).first()


def emergency_access_list_for(*, user: User) -> QuerySet[EmergencyAccess]:
    return EmergencyAccess.objects.active().filter(user=user).select_related("patient")


def referral_centre_list_for(*, user: User) -> QuerySet[ReferralCentre]:
    """The public referral directory: active centres, for any logged-in user."""
    if not getattr(user, "is_authenticated", False):
        return ReferralCentre.objects.none()
    return ReferralCentre.objects.filter(active=True).order_by("name")
