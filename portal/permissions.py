"""The one access layer. The only module that talks to django-guardian.

Roles get object permissions on Patient records only, through one group per clinic and
role, never model-wide permissions. Lesions, examinations, predictions and alerts are
visible exactly when their patient is. A record the user may not see is a 404, never a 403.
"""

from __future__ import annotations

from typing import Any, TypeVar

from django.contrib.auth.models import Group
from django.db.models import Model, QuerySet
from django.http import Http404
from guardian.shortcuts import assign_perm, get_objects_for_user, remove_perm

from portal.models import Clinic, Role

M = TypeVar("M", bound=Model)

VIEW = "view_patient"
CHANGE = "change_patient"
MANAGE_LESIONS = "manage_lesions"
TRIAGE = "triage_patient"

ROLE_PATIENT_PERMS: dict[str, tuple[str, ...]] = {
    Role.DERMATOLOGIST: (VIEW, MANAGE_LESIONS, TRIAGE),
    Role.STAFF: (VIEW, CHANGE, MANAGE_LESIONS),
}
PATIENT_OWN_PERMS: tuple[str, ...] = (VIEW,)


def clinic_group(clinic: Clinic, role: str) -> Group:
    group, _ = Group.objects.get_or_create(name=f"clinic:{clinic.uuid}:{role}")
    return group


def clinic_member_add(user: Any) -> None:
    """Put a dermatologist or staff member in their clinic's role group, and in no other
    clinic group (a moved or demoted account must lose its old clinic's records)."""
    keep = None
    if user.clinic_id and user.role in ROLE_PATIENT_PERMS and user.is_active:
        keep = clinic_group(user.clinic, user.role)
    stale = user.groups.filter(name__startswith="clinic:")
    if keep is not None:
        stale = stale.exclude(pk=keep.pk)
    user.groups.remove(*stale)
    if keep is not None:
        user.groups.add(keep)


def patient_access_grant(patient: Any) -> None:
    """Grant the clinic's role groups, and the patient's own account, access to one record."""
    for role, perms in ROLE_PATIENT_PERMS.items():
        group = clinic_group(patient.clinic, role)
        for perm in perms:
            assign_perm(f"patients.{perm}", group, patient)
    if patient.account_id:
        for perm in PATIENT_OWN_PERMS:
            assign_perm(f"patients.{perm}", patient.account, patient)


def patient_account_revoke(patient: Any, user: Any) -> None:
    for perm in PATIENT_OWN_PERMS:
        remove_perm(f"patients.{perm}", user, patient)


def visible_patients(user: Any, perm: str = VIEW) -> QuerySet:
    from patients.models import Patient

    if not getattr(user, "is_authenticated", False):
        return Patient.objects.none()
    # accept_global_perms=False: a model-wide permission must never reveal every row.
    return get_objects_for_user(
        user, f"patients.{perm}", Patient, accept_global_perms=False, with_superuser=True, use_groups=True
    )


def has_patient_perm(user: Any, perm: str, patient: Any) -> bool:
    if not getattr(user, "is_authenticated", False):
        return False
    return bool(user.has_perm(f"patients.{perm}", patient))


def get_visible_or_404(queryset: QuerySet[M], **lookup: Any) -> M:
    """One error for 'does not exist' and 'not yours'."""
    try:
        return queryset.get(**lookup)
    except (queryset.model.DoesNotExist, ValueError, TypeError) as exc:
        raise Http404("No such record.") from exc


def require_patient_perm(user: Any, perm: str, patient: Any) -> None:
    """For writes on a record the user can already see: raises PermissionDenied (403)."""
    from django.core.exceptions import PermissionDenied

    if not has_patient_perm(user, perm, patient):
        if not has_patient_perm(user, VIEW, patient):
            raise Http404("No such record.")
        raise PermissionDenied("You may view this record but not change it.")


def can_register_patients(user: Any) -> bool:
    return bool(user.is_superuser or (user.role in ROLE_PATIENT_PERMS and user.clinic_id))


def require_can_register_patients(user: Any) -> None:
    from django.core.exceptions import PermissionDenied

    if not can_register_patients(user):
        raise PermissionDenied("Only clinic staff and dermatologists register patients.")
