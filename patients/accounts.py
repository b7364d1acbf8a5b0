"""Patient portal accounts: invitations, activation and revoking access.

Staff invite a patient whose record has no login, in one of two ways:

- **e-mail**: a link carrying only a random token (`secrets.token_urlsafe`, 256 bits), valid
  `DERMATRACK_INVITE_LINK_HOURS`; the mail names the clinic and nothing about the patient.
- **printed code**: 12 characters from an alphabet without look-alikes (about 59 bits), shown
  once to staff in groups of four, valid `DERMATRACK_INVITE_CODE_HOURS`. The patient types it at
  the public activation page together with their **date of birth**: a printed slip can be lost
  or photographed, and the second factor means the slip alone opens nothing. Only someone with
  both learns whether a code has expired or been used; a wrong date counts against the code
  (`DERMATRACK_INVITE_CODE_ATTEMPTS`, then it is revoked).

Only an HMAC-SHA256 of the token or code is stored. Every failed attempt is a flagged audit
entry (`invite.failure`, by client address), and an address with
`DERMATRACK_INVITE_FAILURE_LIMIT` failures in `DERMATRACK_INVITE_FAILURE_WINDOW_MINUTES` is
refused (HTTP 429) before any lookup: the limit lives in the database, so every web process
shares it. A new invitation revokes the patient's live one; the database allows one.

Revoking access revokes live invitations and turns the patient's login into an inactive
tombstone (random username, no password) unlinked from the record, as erasure does: an old
login that kept its username would otherwise outlive the record's erasure.
"""

from __future__ import annotations

import dataclasses
import datetime as dt
import secrets
import uuid

from django.conf import settings
from django.contrib.auth.password_validation import validate_password
from django.core.exceptions import ValidationError
from django.core.mail import send_mail
from django.db import transaction
from django.urls import reverse
from django.utils import timezone
from django.utils.crypto import salted_hmac

from patients.models import Patient, PatientInvitation
from portal import permissions
from portal.audit import audit_record
from portal.models import AuditEntry, Role, User
from portal.services import user_create

CODE_ALPHABET = "ABCDEFGHJKMNPQRSTUVWXYZ23456789"  # no 0/O, 1/I/L
CODE_LENGTH = 12
CODE_GROUP = 4
_HMAC_SALT = "dermatrack.patients.invitation"
# Inviting and revoking change who can open the record: the "change patient" permission (clinic
# staff and administrators; dermatologists read and triage but do not edit the record's details).
ACCOUNT_PERM = permissions.CHANGE


class InvitationInvalid(Exception):
    """An activation attempt that cannot go on. `reason`: "unknown", "expired", "used", "revoked"."""

    def __init__(self, reason: str) -> None:
        super().__init__(reason)
        self.reason = reason


# --- secrets ---------------------------------------------------------------------------------


def _secret_hash(method: str, secret: str) -> str:
    return salted_hmac(_HMAC_SALT, f"{method}:{secret}", algorithm="sha256").hexdigest()


def normalise_code(raw: str) -> str:
    """What the patient typed, as stored: upper case, without spaces or dashes."""
    return "".join(ch for ch in raw.upper() if ch.isalnum())


def format_code(code: str) -> str:
    return "-".join(code[i : i + CODE_GROUP] for i in range(0, len(code), CODE_GROUP))


def _new_secret(method: str) -> str:
    if method == PatientInvitation.Method.EMAIL:
        return secrets.token_urlsafe(32)
    return "".join(secrets.choice(CODE_ALPHABET) for _ in range(CODE_LENGTH))


# --- staff: invite and revoke -----------------------------------------------------------------


def _revoke_live(*, actor: User | None, patient: Patient, now: dt.datetime) -> int:
    revoked = 0
    for invitation in PatientInvitation.objects.select_for_update().filter(patient=patient).live():
        invitation.revoked_at = now
        invitation.save(update_fields=["revoked_at"])
        audit_record(actor=actor, action="invite.revoke", target=invitation, patient=patient)
        revoked += 1
    return revoked


def _invitation_create(*, actor: User, patient: Patient, method: str) -> tuple[PatientInvitation, str]:
    permissions.require_patient_perm(actor, ACCOUNT_PERM, patient)
    patient = Patient.objects.select_for_update().get(pk=patient.pk)
    if patient.account_id is not None:
        raise ValidationError("This patient already has a portal login. Revoke it first to invite them again.")
    if method == PatientInvitation.Method.EMAIL and not patient.email:
        raise ValidationError("The record has no e-mail address: print a one-time code instead.")
    now = timezone.now()
    _revoke_live(actor=actor, patient=patient, now=now)
    hours = (
        settings.DERMATRACK_INVITE_LINK_HOURS
        if method == PatientInvitation.Method.EMAIL
        else settings.DERMATRACK_INVITE_CODE_HOURS
    )
    secret = _new_secret(method)
    invitation = PatientInvitation(
        patient=patient,
        method=method,
        secret_hash=_secret_hash(method, secret),
        created_at=now,
        created_by=actor,
        expires_at=now + dt.timedelta(hours=hours),
    )
    invitation.full_clean()
    invitation.save()
    audit_record(actor=actor, action="invite.create", target=invitation, patient=patient)
    return invitation, secret


def invitation_link(token: str) -> str:
    return settings.DERMATRACK_BASE_URL.rstrip("/") + reverse("patients:activate-link", kwargs={"token": token})


def activation_page_url() -> str:
    return settings.DERMATRACK_BASE_URL.rstrip("/") + reverse("patients:activate")


@transaction.atomic
def invitation_send_email(*, actor: User, patient: Patient) -> PatientInvitation:
    """E-mail the patient a one-time link. The mail names the clinic, not the patient, and
    says nothing about their health; the link carries only the random token. Sent inside the
    transaction: a mail that cannot be sent leaves no invitation behind."""
    invitation, token = _invitation_create(actor=actor, patient=patient, method=PatientInvitation.Method.EMAIL)
    days = settings.DERMATRACK_INVITE_LINK_HOURS // 24
    body = (
        "Hello,\n\n"
        f"{patient.clinic.name} invites you to the Dermatrack patient portal, where you can see your "
        "own record online.\n\n"
        f"To create your login, open this link and choose a password (within {days} days; it works once):\n\n"
        f"{invitation_link(token)}\n\n"
        "If you did not expect this message, you can ignore it, or tell the clinic.\n"
    )
    send_mail("Your Dermatrack patient portal invitation", body, None, [patient.email])
    return invitation


@transaction.atomic
def invitation_create_code(*, actor: User, patient: Patient) -> tuple[PatientInvitation, str]:
    """A one-time code for a printed slip: returned once (formatted XXXX-XXXX-XXXX), never stored."""
    invitation, code = _invitation_create(actor=actor, patient=patient, method=PatientInvitation.Method.CODE)
    return invitation, format_code(code)


@transaction.atomic
def patient_access_revoke(*, actor: User, patient: Patient) -> None:
    """Revoke live invitations and the patient's login (inactive tombstone, unlinked)."""
    permissions.require_patient_perm(actor, ACCOUNT_PERM, patient)
    patient = Patient.objects.select_for_update().get(pk=patient.pk)
    revoked = _revoke_live(actor=actor, patient=patient, now=timezone.now())
    account = patient.account
    if account is None and not revoked:
        raise ValidationError("This patient has no portal login or invitation to revoke.")
    if account is not None:
        permissions.patient_account_revoke(patient, account)
        patient.account = None
        patient.save(update_fields=["account"])
        if account.role == Role.PATIENT:
            # The password hash changes, so every session of this login ends at its next request.
            account.username = f"revoked-{uuid.uuid4().hex}"
            account.first_name = account.last_name = account.email = ""
            account.is_active = False
            account.set_unusable_password()
            account.save()
    audit_record(actor=actor, action="access.revoke", target=patient, patient=patient)


# --- the patient: activation --------------------------------------------------------------------


def attempts_exceeded(*, ip: str | None) -> bool:
    """Too many failed activation attempts from this address lately (read from the audit trail)."""
    since = timezone.now() - dt.timedelta(minutes=settings.DERMATRACK_INVITE_FAILURE_WINDOW_MINUTES)
    failures = AuditEntry.objects.filter(action="invite.failure", ip_address=ip or None, at__gte=since)
    return failures.count() >= settings.DERMATRACK_INVITE_FAILURE_LIMIT


def _failure(reason: str) -> InvitationInvalid:
    # Committed on its own: the caller's transaction must not roll back the trail of a probe.
    audit_record(actor=None, action="invite.failure", flagged=True)
    return InvitationInvalid(reason)


def _check_live(invitation: PatientInvitation) -> PatientInvitation:
    state = _state(invitation, invitation.patient)
    if state != "live":
        raise _failure(state)
    return invitation


def invitation_from_link(*, token: str) -> PatientInvitation:
    """The invitation an e-mailed link names; InvitationInvalid unless it can still be used."""
    invitation = (
        PatientInvitation.objects.select_related("patient")
        .filter(method=PatientInvitation.Method.EMAIL, secret_hash=_secret_hash("email", token))
        .first()
    )
    if invitation is None:
        raise _failure("unknown")
    return _check_live(invitation)


def invitation_from_code(*, code: str, date_of_birth: dt.date) -> PatientInvitation:
    """The invitation a printed code names, if the date of birth is the patient's. A wrong code
    and a right code with the wrong date get the same answer ("unknown")."""
    normalised = normalise_code(code)
    invitation = (
        PatientInvitation.objects.select_related("patient")
        .filter(method=PatientInvitation.Method.CODE, secret_hash=_secret_hash("code", normalised))
        .first()
        if len(normalised) == CODE_LENGTH
        else None
    )
    if invitation is None:
        raise _failure("unknown")
    if invitation.patient.date_of_birth != date_of_birth:
        with transaction.atomic():
            invitation.failed_attempts += 1
            fields = ["failed_attempts"]
            if invitation.failed_attempts >= settings.DERMATRACK_INVITE_CODE_ATTEMPTS and invitation.state == "live":
                invitation.revoked_at = timezone.now()
                fields.append("revoked_at")
                audit_record(actor=None, action="invite.revoke", target=invitation, patient=invitation.patient)
            invitation.save(update_fields=fields)
        raise _failure("unknown")
    return _check_live(invitation)


def _state(invitation: PatientInvitation, patient: Patient) -> str:
    state = invitation.state
    return "used" if state == "live" and patient.account_id is not None else state  # linked some other way


def invitation_pending(*, invitation_uuid: uuid.UUID | str) -> PatientInvitation:
    """The invitation an activation in progress (the session) names, while it can still be used."""
    invitation = PatientInvitation.objects.select_related("patient").filter(uuid=invitation_uuid).first()
    if invitation is None:
        raise InvitationInvalid("session")
    state = _state(invitation, invitation.patient)
    if state != "live":
        raise InvitationInvalid(state)
    return invitation


@transaction.atomic
def invitation_accept(*, invitation_uuid: uuid.UUID | str, username: str, password: str) -> User:
    """Create the patient's login from a live invitation and link it to their record. The
    invitation is claimed with a conditional update, so two tabs cannot both use it."""
    invitation = (
        PatientInvitation.objects.select_for_update().select_related("patient").filter(uuid=invitation_uuid).first()
    )
    if invitation is None:
        raise InvitationInvalid("session")
    patient = Patient.objects.select_for_update().get(pk=invitation.patient_id)
    state = _state(invitation, patient)
    if state != "live":
        raise InvitationInvalid(state)
    username = username.strip()
    try:
        validate_password(password, User(username=username, role=Role.PATIENT))
    except ValidationError as exc:
        raise ValidationError({"password1": exc.messages}) from exc
    account = user_create(username=username, password=password, role=Role.PATIENT, check_password=False)
    now = timezone.now()
    claimed = PatientInvitation.objects.filter(
        pk=invitation.pk, used_at__isnull=True, revoked_at__isnull=True, expires_at__gt=now
    ).update(used_at=now)
    if claimed != 1:
        raise InvitationInvalid("used")
    patient.account = account
    patient.save(update_fields=["account"])
    permissions.patient_access_grant(patient)
    audit_record(actor=account, action="invite.accept", target=invitation, patient=patient)
    return account


# --- reads -------------------------------------------------------------------------------------


@dataclasses.dataclass(frozen=True)
class PortalAccess:
    """What the patient page says about the patient's portal login."""

    state: str  # "active", "disabled", "invited", "expired", "revoked", "none"
    since: dt.datetime | None = None
    expires_at: dt.datetime | None = None
    method: str = ""
    can_revoke: bool = False


def portal_access_for(*, patient: Patient) -> PortalAccess:
    """For a record the caller has already read through patients.selectors.patient_get_for
    (which audits that read); names nothing beyond the record itself."""
    if patient.account_id is not None and patient.account is not None:
        state = "active" if patient.account.is_active else "disabled"  # e.g. deactivated in the admin
        return PortalAccess(state=state, since=patient.account.date_joined, can_revoke=True)
    latest = PatientInvitation.objects.filter(patient=patient).first()
    last_revoke = (
        AuditEntry.objects.filter(patient_uuid=str(patient.uuid), action="access.revoke").values_list("at", flat=True)
    ).first()
    if latest is not None and latest.state == "live":
        return PortalAccess(
            state="invited",
            since=latest.created_at,
            expires_at=latest.expires_at,
            method=latest.get_method_display(),
            can_revoke=True,
        )
    if last_revoke is not None and (latest is None or last_revoke >= latest.created_at):
        return PortalAccess(state="revoked", since=last_revoke)
    if latest is not None and latest.state == "expired":
        return PortalAccess(state="expired", since=latest.created_at, expires_at=latest.expires_at)
    return PortalAccess(state="none")
