"""Writes on patient records. Each one validates, audits and grants access in one transaction."""

from __future__ import annotations

import datetime as dt

from django.conf import settings
from django.core.exceptions import ValidationError
from django.db import transaction
from django.utils import timezone

from patients import search
from patients.models import Consent, EmergencyAccess, Patient, ReferralCentre, Sex, YesNoUnknown
from patients.selectors import patient_find_by_mrn
from portal import permissions
from portal.audit import audit_record
from portal.crypto import blind_index
from portal.models import Clinic, Role, User
from portal.services import user_create


@transaction.atomic
def patient_register(
    *,
    actor: User,
    clinic: Clinic,
    given_name: str,
    family_name: str,
    date_of_birth: dt.date,
    medical_record_number: str,
    phone: str = "",
    email: str = "",
    address: str = "",
    sex: str = Sex.UNKNOWN,
    fitzpatrick_skin_type: str = "",
    personal_history_of_melanoma: str = YesNoUnknown.UNKNOWN,
    family_history_of_melanoma: str = YesNoUnknown.UNKNOWN,
    consent_given: bool = False,
) -> Patient:
    permissions.require_can_register_patients(actor, clinic)
    if not consent_given:
        raise ValidationError({"consent_given": "The patient's consent to the processing of their data is required."})
    mrn = medical_record_number.strip()
    if not mrn:
        raise ValidationError({"medical_record_number": "A medical record number is required."})
    if date_of_birth > dt.date.today():
        raise ValidationError({"date_of_birth": "The date of birth is in the future."})
    if patient_find_by_mrn(clinic=clinic, medical_record_number=mrn) is not None:
        raise ValidationError(
            {"medical_record_number": "A patient with this medical record number is already registered here."}
        )
    patient = Patient(
        clinic=clinic,
        given_name=given_name.strip(),
        family_name=family_name.strip(),
        date_of_birth=date_of_birth,
        medical_record_number=mrn,
        mrn_index=blind_index(mrn),
        phone=phone.strip(),
        email=email.strip(),
        address=address.strip(),
        sex=sex or Sex.UNKNOWN,
        fitzpatrick_skin_type=fitzpatrick_skin_type or "",
        personal_history_of_melanoma=personal_history_of_melanoma or YesNoUnknown.UNKNOWN,
        family_history_of_melanoma=family_history_of_melanoma or YesNoUnknown.UNKNOWN,
        created_by=actor,
    )
    patient.full_clean()
    patient.save()
    search.tokens_write(patient)
    permissions.patient_access_grant(patient)
    audit_record(actor=actor, action="patient.create", target=patient, patient=patient)
    consent_record(patient=patient, actor=actor)
    return patient


# What patient_update may change; the rest (clinic, account, consent) has its own services.
PATIENT_EDITABLE = (
    "given_name",
    "family_name",
    "date_of_birth",
    "medical_record_number",
    "phone",
    "email",
    "address",
    "sex",
    "fitzpatrick_skin_type",
    "personal_history_of_melanoma",
    "family_history_of_melanoma",
)
_UNKNOWN_WHEN_BLANK = ("sex", "personal_history_of_melanoma", "family_history_of_melanoma")
_SEARCHED = {"given_name", "family_name", "date_of_birth", "medical_record_number"}


@transaction.atomic
def patient_update(*, actor: User, patient: Patient, **changes: object) -> Patient:
    """Change a record's demographics or risk factors (clinic staff, administrators). A change
    of name, number or birth date rewrites the record's search tokens in the same transaction."""
    permissions.require_patient_perm(actor, permissions.CHANGE, patient)
    unknown = set(changes) - set(PATIENT_EDITABLE)
    if unknown:
        raise TypeError(f"patient_update cannot change {', '.join(sorted(unknown))}")
    patient = Patient.objects.select_for_update().select_related("clinic").get(pk=patient.pk)
    values = {name: value.strip() if isinstance(value, str) else value for name, value in changes.items()}
    for name in _UNKNOWN_WHEN_BLANK:
        if name in values and not values[name]:
            values[name] = YesNoUnknown.UNKNOWN  # == Sex.UNKNOWN
    if "medical_record_number" in values:
        mrn = str(values["medical_record_number"])
        if not mrn:
            raise ValidationError({"medical_record_number": "A medical record number is required."})
        other = patient_find_by_mrn(clinic=patient.clinic, medical_record_number=mrn)
        if other is not None and other.pk != patient.pk:
            raise ValidationError(
                {"medical_record_number": "A patient with this medical record number is already registered here."}
            )
        patient.mrn_index = blind_index(mrn)
    date_of_birth = values.get("date_of_birth")
    if isinstance(date_of_birth, dt.date) and date_of_birth > dt.date.today():
        raise ValidationError({"date_of_birth": "The date of birth is in the future."})
    changed = [name for name, value in values.items() if getattr(patient, name) != value]
    for name in changed:
        setattr(patient, name, values[name])
    if not changed:
        return patient
    patient.full_clean()
    patient.save(update_fields=[*changed, "mrn_index"] if "medical_record_number" in changed else changed)
    if _SEARCHED & set(changed):
        search.tokens_write(patient)
    audit_record(actor=actor, action="patient.update", target=patient, patient=patient)
    return patient


def consent_record(*, patient: Patient, actor: User, version: str | None = None) -> Consent:
    consent = Consent(
        patient=patient,
        version=version or settings.DERMATRACK_CONSENT_VERSION,
        recorded_by=actor,
        recorded_by_username=actor.username,
    )
    consent.full_clean()
    consent.save()
    audit_record(actor=actor, action="consent.record", target=consent, patient=patient)
    return consent


@transaction.atomic
def patient_account_create(*, actor: User, patient: Patient, username: str, password: str) -> User:
    """Give a patient a login that sees their own record only."""
    permissions.require_patient_perm(actor, permissions.CHANGE, patient)
    if patient.account_id:
        raise ValidationError("This patient already has an account.")
    account = user_create(username=username, password=password, role=Role.PATIENT, actor=actor)
    _account_attach(patient, account)
    audit_record(actor=actor, action="patient.account_create", target=patient, patient=patient)
    return account


@transaction.atomic
def patient_account_link(*, actor: User, patient: Patient, account: User) -> None:
    """Give a patient an existing patient login (one linked to no other record)."""
    permissions.require_patient_perm(actor, permissions.CHANGE, patient)
    if patient.account_id:
        raise ValidationError("This patient already has an account.")
    if account.role != Role.PATIENT:
        raise ValidationError("Only a patient login can be linked to a patient record.")
    if Patient.objects.filter(account=account).exists():
        raise ValidationError("This login already belongs to another patient record.")
    _account_attach(patient, account)
    audit_record(actor=actor, action="patient.account_link", target=patient, patient=patient)


def _account_attach(patient: Patient, account: User) -> None:
    patient.account = account
    patient.save(update_fields=["account"])
    permissions.patient_access_grant(patient)


@transaction.atomic
def referral_centre_add(**fields) -> ReferralCentre:
    """A centre in the public referral directory (administrators also edit them in the admin)."""
    centre = ReferralCentre(**fields)
    centre.full_clean()
    centre.save()
    return centre


def emergency_access_grant(*, actor: User, clinic: Clinic, medical_record_number: str, reason: str) -> EmergencyAccess:
    """A dermatologist opens a record outside their clinic for a limited time, with a reason.
    A request for a number the clinic does not have is audited (flagged) too: probing for
    records is exactly what the trail must show."""
    permissions.require_can_break_glass(actor)
    reason = reason.strip()
    if len(reason) < 20:
        raise ValidationError({"reason": "Describe the emergency in at least 20 characters."})
    patient = patient_find_by_mrn(clinic=clinic, medical_record_number=medical_record_number.strip())
    if patient is None:
        # Committed on its own, before the error: the caller's transaction must not roll it back.
        audit_record(actor=actor, action="emergency_access.not_found", target=clinic, flagged=True)
        raise ValidationError({"medical_record_number": "No record with this number at that clinic."})
    with transaction.atomic():
        grant = EmergencyAccess(
            user=actor,
            patient=patient,
            reason=reason,
            expires_at=timezone.now() + dt.timedelta(minutes=settings.DERMATRACK_EMERGENCY_ACCESS_MINUTES),
        )
        grant.full_clean()
        grant.save()
        audit_record(actor=actor, action="emergency_access.grant", target=grant, patient=patient, flagged=True)
    return grant
