"""Patient accounts (patients.accounts): staff invite a patient by e-mailed link or printed code,
the patient chooses a password and sees only their own record; expired, reused and revoked
invitations give a clear page and change nothing; staff revoke portal access."""

from __future__ import annotations

import datetime as dt
import re

import pytest
from django.core import mail
from django.db import IntegrityError, transaction
from django.test import Client
from django.urls import reverse
from django.utils import timezone

from patients.models import Patient, PatientInvitation
from portal.models import AuditEntry, Role, User
from tests.factories import PatientFactory, UserFactory

DOB = dt.date(1981, 3, 4)
NEW_PASSWORD = "lantern-orchard-tide-42"
PHI = ("Henrietta", "Vandersloot", "INV-5531-QZ", "henrietta.v@example.org", "1981-03-04", "04.03.1981", "melanoma")


@pytest.fixture
def newcomer(clinic):
    """A registered patient with an e-mail address and no login yet."""
    return PatientFactory(
        clinic=clinic,
        given_name="Henrietta",
        family_name="Vandersloot",
        medical_record_number="INV-5531-QZ",
        email="henrietta.v@example.org",
        date_of_birth=DOB,
    )


def _url(name: str, patient: Patient) -> str:
    return reverse(name, kwargs={"patient_uuid": patient.uuid})


def _leaks(text: str, patient: Patient) -> list[str]:
    return [s for s in (*PHI, str(patient.uuid)) if s.lower() in text.lower()]


def _invite_by_email(staff_client, patient) -> str:
    """Staff press the button; returns the link's path."""
    response = staff_client.post(_url("patients:invite-email", patient))
    assert response.status_code == 302
    (message,) = mail.outbox[-1:]
    links = re.findall(r"https?://\S+/activate/[\w-]+/", message.body)
    assert len(links) == 1
    return "/" + links[0].split("/", 3)[3]


def _invite_by_code(staff_client, patient) -> str:
    response = staff_client.post(_url("patients:invite-code", patient))
    assert response.status_code == 200
    return response.context["code"]


def _choose_password(client, username="henrietta", password=NEW_PASSWORD):
    return client.post(
        reverse("patients:activate-password"), {"username": username, "password1": password, "password2": password}
    )


def _can_log_in(username: str, password: str) -> bool:
    response = Client().post(reverse("login"), {"username": username, "password": password})
    return response.status_code == 302


def _nothing_changed(patient: Patient, users_before: int) -> None:
    patient.refresh_from_db()
    assert patient.account_id is None
    assert User.objects.count() == users_before
    assert not AuditEntry.objects.filter(action="invite.accept").exists()


# --- e-mail -------------------------------------------------------------------------------------


def test_invite_by_email_sends_a_token_link_without_phi(staff_client, newcomer, clinic_staff):
    link = _invite_by_email(staff_client, newcomer)
    (message,) = mail.outbox
    assert message.to == ["henrietta.v@example.org"]
    assert _leaks(message.subject + message.body, newcomer) == []
    assert _leaks(link, newcomer) == []
    assert "Northside Dermatology" in message.body  # who sends it: the clinic, nothing about the patient
    token = link.rstrip("/").rsplit("/", 1)[1]
    assert len(token) >= 40
    invitation = PatientInvitation.objects.get(patient=newcomer)
    assert invitation.method == "email"
    assert invitation.created_by == clinic_staff
    assert token not in invitation.secret_hash
    assert len(invitation.secret_hash) == 64
    assert dt.timedelta(days=6, hours=23) < invitation.expires_at - timezone.now() <= dt.timedelta(days=7)
    entry = AuditEntry.objects.get(action="invite.create")
    assert entry.patient_uuid == str(newcomer.uuid)
    assert entry.target_uuid == str(invitation.uuid)
    assert entry.actor == clinic_staff


def test_email_link_sets_password_logs_in_and_shows_only_the_own_record(staff_client, newcomer, other_patient):
    link = _invite_by_email(staff_client, newcomer)
    client = Client()
    response = client.get(link)
    assert response.status_code == 302
    assert response["Location"] == reverse("patients:activate-password")  # the token leaves the address bar
    assert client.get(response["Location"]).status_code == 200

    response = _choose_password(client)
    assert response.status_code == 302
    assert response["Location"] == reverse("patients:my-record")
    newcomer.refresh_from_db()
    account = newcomer.account
    assert account is not None
    assert account.role == Role.PATIENT
    assert account.username == "henrietta"
    assert account.check_password(NEW_PASSWORD)
    page = client.get(reverse("patients:my-record"), follow=True)
    assert page.templates[0].name == "patients/my_record.html"
    assert page.context["patient"] == newcomer
    assert client.get(_url("patients:patient-detail", other_patient)).status_code == 404
    assert client.get(reverse("patients:patient-list")).status_code == 403

    invitation = PatientInvitation.objects.get(patient=newcomer)
    assert invitation.used_at is not None
    accept = AuditEntry.objects.get(action="invite.accept")
    assert accept.actor == account
    assert accept.patient_uuid == str(newcomer.uuid)
    assert accept.actor_username == f"patient-account-{account.pk}"  # the pseudonym, never the chosen name
    # The password login works later too.
    assert _can_log_in("henrietta", NEW_PASSWORD)


def test_weak_password_is_refused_and_the_invitation_stays_usable(staff_client, newcomer):
    link = _invite_by_email(staff_client, newcomer)
    client = Client()
    client.get(link)
    users = User.objects.count()
    response = _choose_password(client, password="12345678")
    assert response.status_code == 400
    assert response.context["form"].errors["password1"]
    _nothing_changed(newcomer, users)
    assert _choose_password(client).status_code == 302


def test_taken_username_is_a_form_error(staff_client, newcomer, clinic_staff):
    client = Client()
    client.get(_invite_by_email(staff_client, newcomer))
    response = _choose_password(client, username=clinic_staff.username)
    assert response.status_code == 400
    assert "username" in response.context["form"].errors
    assert PatientInvitation.objects.get(patient=newcomer).used_at is None


def test_no_email_on_record_offers_only_the_code(staff_client, clinic):
    patient = PatientFactory(clinic=clinic, email="")
    response = staff_client.post(_url("patients:invite-email", patient), follow=True)
    assert "no e-mail address" in response.content.decode()
    assert not PatientInvitation.objects.exists()
    assert mail.outbox == []
    body = staff_client.get(_url("patients:patient-detail", patient)).content.decode()
    assert "E-mail an invitation link" not in body
    assert "Print a one-time code" in body


# --- printed code -------------------------------------------------------------------------------


def test_code_invitation_with_date_of_birth_activates_the_account(staff_client, newcomer):
    response = staff_client.post(_url("patients:invite-code", newcomer))
    code = response.context["code"]
    assert re.fullmatch(r"[A-HJKMNP-Z2-9]{4}-[A-HJKMNP-Z2-9]{4}-[A-HJKMNP-Z2-9]{4}", code)
    assert code in response.content.decode()
    assert response["Cache-Control"].startswith("max-age=0")  # never_cache: the code is not kept anywhere
    invitation = PatientInvitation.objects.get(patient=newcomer)
    assert invitation.method == "code"
    assert code.replace("-", "") not in invitation.secret_hash
    assert dt.timedelta(hours=71) < invitation.expires_at - timezone.now() <= dt.timedelta(hours=72)
    slip = response.content.decode().split('class="card slip"')[1]
    assert _leaks(slip, newcomer) == []  # the printed slip names the clinic, not the patient

    client = Client()
    assert client.get(reverse("patients:activate")).status_code == 200
    typed = code.lower().replace("-", " ")  # as a patient might type it
    response = client.post(reverse("patients:activate"), {"code": typed, "date_of_birth": "1981-03-04"})
    assert response.status_code == 302
    assert response["Location"] == reverse("patients:activate-password")
    assert _choose_password(client).status_code == 302
    newcomer.refresh_from_db()
    assert newcomer.account is not None
    assert client.get(_url("patients:patient-detail", newcomer)).templates[0].name == "patients/my_record.html"


def test_wrong_date_of_birth_answers_like_a_wrong_code_and_revokes_at_the_limit(staff_client, newcomer, settings):
    settings.DERMATRACK_INVITE_CODE_ATTEMPTS = 3
    code = _invite_by_code(staff_client, newcomer)
    client = Client()
    wrong_code = client.post(reverse("patients:activate"), {"code": "ABCD-EFGH-JKMN", "date_of_birth": "1981-03-04"})
    wrong_date = client.post(reverse("patients:activate"), {"code": code, "date_of_birth": "1981-03-05"})
    assert wrong_code.status_code == wrong_date.status_code == 400
    assert wrong_code.context["form"].non_field_errors() == wrong_date.context["form"].non_field_errors()
    for _ in range(2):
        client.post(reverse("patients:activate"), {"code": code, "date_of_birth": "1990-01-01"})
    invitation = PatientInvitation.objects.get(patient=newcomer)
    assert invitation.revoked_at is not None
    assert invitation.failed_attempts == 3
    response = client.post(reverse("patients:activate"), {"code": code, "date_of_birth": "1981-03-04"})
    assert response.status_code == 410
    assert AuditEntry.objects.filter(action="invite.failure", flagged=True).count() == 5


def test_failed_attempts_from_one_address_are_rate_limited(staff_client, newcomer, settings):
    settings.DERMATRACK_INVITE_FAILURE_LIMIT = 3
    code = _invite_by_code(staff_client, newcomer)
    client = Client()
    for _ in range(3):
        bad = client.post(reverse("patients:activate"), {"code": "ABCD-EFGH-JKMN", "date_of_birth": "1981-03-04"})
        assert bad.status_code == 400
    # Now even the right code, or a link, is refused before any lookup.
    refused = client.post(reverse("patients:activate"), {"code": code, "date_of_birth": "1981-03-04"})
    assert refused.status_code == 429
    assert "Too many attempts" in refused.content.decode()
    assert client.get(reverse("patients:activate-link", kwargs={"token": "x" * 43})).status_code == 429
    assert PatientInvitation.objects.get(patient=newcomer).state == "live"
    # Another address is not affected.
    other = Client(REMOTE_ADDR="10.0.0.7")
    assert other.post(reverse("patients:activate"), {"code": code, "date_of_birth": "1981-03-04"}).status_code == 302


# --- expired, reused, revoked ----------------------------------------------------------------------


def test_expired_link_gives_a_clear_page_and_changes_nothing(staff_client, newcomer):
    link = _invite_by_email(staff_client, newcomer)
    PatientInvitation.objects.filter(patient=newcomer).update(expires_at=timezone.now() - dt.timedelta(minutes=1))
    users = User.objects.count()
    response = Client().get(link)
    assert response.status_code == 410
    body = response.content.decode()
    assert "This invitation has expired" in body
    assert "ask the clinic for a new one" in body.lower()
    _nothing_changed(newcomer, users)
    assert PatientInvitation.objects.get(patient=newcomer).used_at is None
    assert _leaks(body, newcomer) == []


def test_invitation_expiring_between_the_two_steps_is_refused(staff_client, newcomer):
    code = _invite_by_code(staff_client, newcomer)
    client = Client()
    client.post(reverse("patients:activate"), {"code": code, "date_of_birth": "1981-03-04"})
    PatientInvitation.objects.filter(patient=newcomer).update(expires_at=timezone.now() - dt.timedelta(seconds=1))
    users = User.objects.count()
    response = _choose_password(client)
    assert response.status_code == 410
    assert "has expired" in response.content.decode()
    _nothing_changed(newcomer, users)


def test_reused_link_gives_a_clear_page(staff_client, newcomer):
    link = _invite_by_email(staff_client, newcomer)
    first = Client()
    first.get(link)
    assert _choose_password(first).status_code == 302
    users = User.objects.count()
    response = Client().get(link)
    assert response.status_code == 410
    assert "This invitation was already used" in response.content.decode()
    assert User.objects.count() == users
    # The same tab submitting again cannot make a second login either.
    assert first.get(reverse("patients:activate-password")).status_code == 400


def test_unknown_link_and_missing_session_give_a_clear_page(client, newcomer):
    response = client.get(reverse("patients:activate-link", kwargs={"token": "A" * 43}))
    assert response.status_code == 400
    assert "not valid" in response.content.decode()
    assert client.post(reverse("patients:activate-password"), {}).status_code == 400
    assert AuditEntry.objects.filter(action="invite.failure").count() == 1


def test_a_new_invitation_revokes_the_live_one(staff_client, newcomer):
    old_link = _invite_by_email(staff_client, newcomer)
    code = _invite_by_code(staff_client, newcomer)
    assert PatientInvitation.objects.filter(patient=newcomer).live().count() == 1
    response = Client().get(old_link)
    assert response.status_code == 410
    assert "no longer valid" in response.content.decode()
    assert AuditEntry.objects.filter(action="invite.revoke", patient_uuid=str(newcomer.uuid)).count() == 1
    client = Client()
    assert client.post(reverse("patients:activate"), {"code": code, "date_of_birth": "1981-03-04"}).status_code == 302


def test_database_allows_one_live_invitation_per_patient(newcomer):
    fields = {"patient": newcomer, "method": "code", "expires_at": timezone.now() + dt.timedelta(hours=1)}
    PatientInvitation.objects.create(secret_hash="a" * 64, **fields)
    with pytest.raises(IntegrityError), transaction.atomic():
        PatientInvitation.objects.create(secret_hash="b" * 64, **fields)
    PatientInvitation.objects.update(used_at=timezone.now())
    PatientInvitation.objects.create(secret_hash="c" * 64, **fields)  # once the first is used


# --- revoking access, and who may do what ------------------------------------------------------------


def test_revoked_access_can_no_longer_log_in(staff_client, newcomer, clinic_staff):
    client = Client()
    client.get(_invite_by_email(staff_client, newcomer))
    _choose_password(client)
    account = Patient.objects.get(pk=newcomer.pk).account
    assert client.get(reverse("patients:my-record")).status_code == 302  # to the record

    response = staff_client.post(_url("patients:access-revoke", newcomer))
    assert response.status_code == 302
    newcomer.refresh_from_db()
    account.refresh_from_db()
    assert newcomer.account is None
    assert not account.is_active
    assert not account.has_usable_password()
    assert account.username.startswith("revoked-")  # no chosen name outlives the link to the record
    assert not _can_log_in("henrietta", NEW_PASSWORD)
    # The open session ends at its next request.
    assert client.get(_url("patients:patient-detail", newcomer))["Location"].startswith(reverse("login"))
    entry = AuditEntry.objects.get(action="access.revoke")
    assert entry.actor == clinic_staff
    assert entry.patient_uuid == str(newcomer.uuid)
    # A new invitation can follow, and the name can be chosen again.
    client = Client()
    client.get(_invite_by_email(staff_client, newcomer))
    assert _choose_password(client).status_code == 302


def test_revoke_also_withdraws_a_pending_invitation(staff_client, newcomer):
    link = _invite_by_email(staff_client, newcomer)
    staff_client.post(_url("patients:access-revoke", newcomer))
    assert Client().get(link).status_code == 410
    assert AuditEntry.objects.filter(action="invite.revoke").count() == 1


def test_patient_page_shows_the_portal_status(staff_client, newcomer):
    def state() -> str:
        response = staff_client.get(_url("patients:patient-detail", newcomer))
        return response.context["portal_access"].state

    assert state() == "none"
    link = _invite_by_email(staff_client, newcomer)
    assert state() == "invited"
    assert "Invited by e-mail link" in staff_client.get(_url("patients:patient-detail", newcomer)).content.decode()
    client = Client()
    client.get(link)
    _choose_password(client)
    assert state() == "active"
    staff_client.post(_url("patients:access-revoke", newcomer))
    assert state() == "revoked"
    _invite_by_code(staff_client, newcomer)
    PatientInvitation.objects.update(expires_at=timezone.now() - dt.timedelta(hours=1))
    assert state() == "expired"


def test_outside_staff_get_404_and_a_dermatologist_403(newcomer, other_clinic, clinician_client):
    outsider = Client()
    outsider.force_login(UserFactory(username="staff_elsewhere", role=Role.STAFF, clinic=other_clinic))
    for name in ("patients:invite-email", "patients:invite-code", "patients:access-revoke"):
        assert outsider.post(_url(name, newcomer)).status_code == 404
        assert clinician_client.post(_url(name, newcomer)).status_code == 403  # may see, not change
    assert not PatientInvitation.objects.exists()
    assert mail.outbox == []
    assert not AuditEntry.objects.filter(action__startswith="invite.").exists()


def test_a_patient_with_a_login_is_not_invited_again(staff_client, patient):
    response = staff_client.post(_url("patients:invite-code", patient), follow=True)
    assert "already has a portal login" in response.content.decode()
    assert not PatientInvitation.objects.exists()


def test_administrator_invites_too(administrator_client, newcomer):
    assert administrator_client.post(_url("patients:invite-code", newcomer)).status_code == 200


def test_no_phi_in_the_audit_entries_of_the_whole_flow(staff_client, newcomer):
    client = Client()
    client.get(_invite_by_email(staff_client, newcomer))
    _choose_password(client)
    staff_client.post(_url("patients:access-revoke", newcomer))
    for entry in AuditEntry.objects.all():
        text = " ".join(str(getattr(entry, f.attname)) for f in AuditEntry._meta.concrete_fields)
        assert [s for s in PHI if s.lower() in text.lower()] == [], entry.action


def test_erasure_and_export_handle_invitations(administrator, newcomer, staff_client):
    import json
    import zipfile
    from io import BytesIO

    from portal.web.privacy.services import patient_erase, patient_export

    _invite_by_code(staff_client, newcomer)
    record = json.loads(
        zipfile.ZipFile(BytesIO(patient_export(actor=administrator, patient=newcomer))).read("record.json")
    )
    assert "patients.patientinvitation" not in record["records"]  # access bookkeeping, not the record
    patient_erase(actor=administrator, patient=newcomer)
    assert not PatientInvitation.objects.exists()


def test_a_deactivated_login_shows_as_such_and_can_be_revoked_then_reinvited(staff_client, patient):
    User.objects.filter(pk=patient.account_id).update(is_active=False)
    url = _url("patients:patient-detail", patient)
    assert staff_client.get(url).context["portal_access"].state == "disabled"
    assert staff_client.post(_url("patients:access-revoke", patient)).status_code == 302
    assert staff_client.get(url).context["portal_access"].state == "revoked"
    assert _invite_by_code(staff_client, patient)


def test_accepting_twice_makes_one_login(staff_client, newcomer):
    from patients import accounts

    _invite_by_code(staff_client, newcomer)
    invitation = PatientInvitation.objects.get(patient=newcomer)
    accounts.invitation_accept(invitation_uuid=invitation.uuid, username="first-tab", password=NEW_PASSWORD)
    users = User.objects.count()
    with pytest.raises(accounts.InvitationInvalid) as refused:
        accounts.invitation_accept(invitation_uuid=invitation.uuid, username="second-tab", password=NEW_PASSWORD)
    assert refused.value.reason == "used"
    assert User.objects.count() == users
    assert Patient.objects.get(pk=newcomer.pk).account.username == "first-tab"
