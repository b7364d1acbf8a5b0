"""The one access layer. The only module that talks to django-guardian.

Roles get object permissions on Patient records only, through one group per clinic and
role, never model-wide permissions. Lesions, examinations, predictions and alerts are
visible exactly when their patient is. A record the user may not see is a 404, never a 403.
"""

from __future__ import annotations

from typing import Any, TypeVar

from django.apps import apps
from django.contrib.auth.models import Group
from django.db.models import Model, Q, QuerySet
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


def _records(model: str = "Patient") -> type[Model]:
    """The patients app's models, named by label like the permission strings above (and as
    Django names the user model): the access layer sits below that app on the ladder
    (docs/architecture.md) and never imports it."""
    return apps.get_model("patients", model)


def visible_patients(user: Any, perm: str = VIEW) -> QuerySet:
    Patient = _records()

    if not getattr(user, "is_authenticated", False):
        return Patient.objects.none()
    # accept_global_perms=False: a model-wide permission must never reveal every row.
    visible = get_objects_for_user(
        user, f"patients.{perm}", Patient, accept_global_perms=False, with_superuser=True, use_groups=True
    )
    if perm == VIEW and user.role == Role.DERMATOLOGIST:
        # Break-the-glass: read-only access while an emergency grant lasts (privacy.services).
        visible = visible | Patient.objects.filter(pk__in=_emergency_patient_ids(user))
    return visible


def visible_patient_condition(user: Any, perm: str = VIEW, *, patient_field: str = "pk") -> Q:
    """The rows of `visible_patients`, as a filter for any queryset that reaches the patient
    id through `patient_field` (e.g. "lesion__patient_id" on alerts).

    A correlated EXISTS on the object-permission rows, answered with one index probe per row
    on the direct (foreign-key) grant tables: on a big table read in another order (the triage
    queue, by risk) the database can stop after the first page instead of first joining every
    record the user may see."""
    from django.db.models import Exists, OuterRef

    PatientGroupObjectPermission = _records("PatientGroupObjectPermission")
    PatientUserObjectPermission = _records("PatientUserObjectPermission")
    if not getattr(user, "is_authenticated", False):
        return Q(pk__in=[])
    if user.is_superuser:  # as visible_patients(with_superuser=True): every record
        return Q()
    rows = {"permission__codename": perm, "content_object_id": OuterRef(patient_field)}
    condition = Q(Exists(PatientGroupObjectPermission.objects.filter(group__user=user, **rows))) | Q(
        Exists(PatientUserObjectPermission.objects.filter(user=user, **rows))
    )
    if perm == VIEW and user.role == Role.DERMATOLOGIST:
        condition |= Q(**{f"{patient_field}__in": _emergency_patient_ids(user)})
    return condition


def visible_patient_ids(user: Any, perm: str = VIEW) -> QuerySet | None:
    """The ids of the rows of `visible_patients`, as one subquery for `patient_id__in=`: the
    union of the user's group grants, their own grants and (VIEW, dermatologists) their active
    emergency grants. None means every record (superusers), so callers add no filter.

    For counting and listing everything a user may see. One IN over a UNION lets the database
    build the visible set once from the grant indexes (5,000 ids for a clinic) and join it,
    with a row estimate it can plan with; guardian's OR of two IN subqueries is a filter it
    can only test row by row after reading every alert or lesion of every clinic."""
    PatientGroupObjectPermission = _records("PatientGroupObjectPermission")
    PatientUserObjectPermission = _records("PatientUserObjectPermission")
    Patient = _records()
    if not getattr(user, "is_authenticated", False):
        return Patient.objects.none().values("pk")
    if user.is_superuser:
        return None
    ids = (
        PatientGroupObjectPermission.objects.filter(group__user=user, permission__codename=perm)
        .order_by()
        .values("content_object_id")
        .union(
            PatientUserObjectPermission.objects.filter(user=user, permission__codename=perm)
            .order_by()
            .values("content_object_id")
        )
    )
    if perm == VIEW and user.role == Role.DERMATOLOGIST:
        ids = ids.union(_emergency_patient_ids(user).order_by())
    return ids


def visible_patient_filter(user: Any, perm: str = VIEW, *, patient_field: str = "pk") -> Q:
    """`visible_patient_ids` as a filter on any queryset that reaches the patient id through
    `patient_field` (e.g. "lesion__patient_id" on alerts, "patient_id" on lesions)."""
    ids = visible_patient_ids(user, perm)
    return Q() if ids is None else Q(**{f"{patient_field}__in": ids})


def clinics_for(user: Any) -> QuerySet[Clinic]:
    """Clinics a user works in (for filters and choices): every clinic for superusers, their
    own for dermatologists and staff, none for patients. Not an access check on records."""
    if not getattr(user, "is_authenticated", False):
        return Clinic.objects.none()
    if user.is_superuser:
        return Clinic.objects.all()
    if user.role in ROLE_PATIENT_PERMS and user.clinic_id:
        return Clinic.objects.filter(pk=user.clinic_id)
    return Clinic.objects.none()


def has_patient_perm(user: Any, perm: str, patient: Any) -> bool:
    if not getattr(user, "is_authenticated", False):
        return False
    if user.has_perm(f"patients.{perm}", patient):
        return True
    return perm == VIEW and is_emergency_access(user, patient)


def patient_perms(user: Any, patient: Any) -> frozenset[str]:
    """Every patient permission (VIEW, CHANGE, MANAGE_LESIONS, TRIAGE) the user holds on one
    record, in one lookup: for pages that offer several actions."""
    if not getattr(user, "is_authenticated", False):
        return frozenset()
    from guardian.core import ObjectPermissionChecker

    perms = set(ObjectPermissionChecker(user).get_perms(patient))
    if VIEW not in perms and is_emergency_access(user, patient):
        perms.add(VIEW)
    return frozenset(perms)


def _emergency_patient_ids(user: Any) -> QuerySet:
    return _records("EmergencyAccess").objects.active().filter(user=user).values("patient_id")


def is_emergency_access(user: Any, patient: Any) -> bool:
    """True when the user reads this record only because of an active break-the-glass grant."""
    if getattr(user, "role", None) != Role.DERMATOLOGIST or user.clinic_id == patient.clinic_id:
        return False
    return _emergency_patient_ids(user).filter(patient_id=patient.pk).exists()


def _grant_rows(patient: Any) -> list[QuerySet]:
    """Every object-permission row that names this record: the direct tables, and guardian's
    generic tables in case anything ever wrote a patient grant there (it should not)."""
    from django.contrib.contenttypes.models import ContentType
    from guardian.models import GroupObjectPermission, UserObjectPermission

    PatientGroupObjectPermission = _records("PatientGroupObjectPermission")
    PatientUserObjectPermission = _records("PatientUserObjectPermission")

    content_type = ContentType.objects.get_for_model(type(patient))
    generic = {"content_type": content_type, "object_pk": str(patient.pk)}
    return [
        PatientUserObjectPermission.objects.filter(content_object_id=patient.pk),
        PatientGroupObjectPermission.objects.filter(content_object_id=patient.pk),
        UserObjectPermission.objects.filter(**generic),
        GroupObjectPermission.objects.filter(**generic),
    ]


def patient_access_revoke_all(patient: Any) -> None:
    """Erasure: remove every object-permission row (user and group) that names this record.
    (Deleting the record would cascade on the direct tables; this does not rely on it.)"""
    for rows in _grant_rows(patient):
        rows.delete()


def patient_permission_rows(patient: Any) -> int:
    """How many object-permission rows still name this record (for erasure checks)."""
    return sum(rows.count() for rows in _grant_rows(patient))


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


def require_can_export_patient(user: Any, patient: Any) -> None:
    """A patient downloads their own record; an administrator may do it on their behalf."""
    from django.core.exceptions import PermissionDenied

    if not (user.is_superuser or (patient.account_id is not None and patient.account_id == user.pk)):
        raise PermissionDenied("Only the patient or an administrator can download the whole record.")


def require_can_erase_patient(user: Any) -> None:
    from django.core.exceptions import PermissionDenied

    if not user.is_superuser:
        raise PermissionDenied("Only an administrator can erase a patient's record.")


def can_view_audit_trail(user: Any) -> bool:
    return bool(getattr(user, "is_superuser", False))


def require_can_view_audit_trail(user: Any) -> None:
    from django.core.exceptions import PermissionDenied

    if not can_view_audit_trail(user):
        raise PermissionDenied("The audit trail is for administrators.")


def require_can_break_glass(user: Any) -> None:
    from django.core.exceptions import PermissionDenied

    if getattr(user, "role", None) != Role.DERMATOLOGIST:
        raise PermissionDenied("Emergency access is for dermatologists.")


def can_register_patients(user: Any, clinic: Clinic | None = None) -> bool:
    """The one rule: administrators anywhere, dermatologists and clinic staff at their own
    clinic (at `clinic`, when given)."""
    if not getattr(user, "is_authenticated", False):
        return False
    if user.is_superuser:
        return True
    if user.role not in ROLE_PATIENT_PERMS or not user.clinic_id:
        return False
    return clinic is None or clinic.pk == user.clinic_id


def require_can_register_patients(user: Any, clinic: Clinic | None = None) -> None:
    from django.core.exceptions import PermissionDenied

    if not can_register_patients(user, clinic):
        raise PermissionDenied(
            "Only clinic staff and dermatologists register patients."
            if clinic is None
            else "You cannot register patients at this clinic."
        )
