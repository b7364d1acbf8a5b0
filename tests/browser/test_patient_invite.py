"""A new patient gets a login, in headless Chromium: staff print a one-time code on the patient
page; in a browser of their own the patient enters it with their date of birth at the public
activation page, chooses a password and lands on their own record, and only theirs. The used
code then gives the clear "already used" page. Screenshots: test-artifacts/invite-*.png."""

from __future__ import annotations

import datetime as dt
import re

import pytest
from django.urls import reverse

from patients.models import Patient
from tests.browser.conftest import PHONE, fits_phone_width, login, shot
from tests.factories import PatientFactory

pytestmark = [pytest.mark.browser, pytest.mark.django_db(transaction=True)]

PASSWORD = "lantern-orchard-tide-42"


@pytest.fixture
def newcomer(clinic):
    """Registered at the desk a moment ago (through the registration service): no login yet."""
    return PatientFactory(
        clinic=clinic,
        given_name="Henrietta",
        family_name="Vandersloot",
        date_of_birth=dt.date(1981, 3, 4),
        email="",  # no e-mail address: the printed code is the way in
    )


def test_staff_invite_by_code_patient_activates_and_sees_own_record(new_page, clinic_staff, newcomer, other_patient):
    record = reverse("patients:patient-detail", kwargs={"patient_uuid": newcomer.uuid})

    staff = new_page()
    login(staff, clinic_staff.username)
    staff.goto(record)
    access = staff.locator("#portal-access")
    assert "No portal login yet" in access.inner_text()
    assert staff.get_by_role("button", name="E-mail an invitation link").count() == 0  # no address on record
    shot(staff, "invite-01-staff-patient-page")
    staff.get_by_role("button", name="Print a one-time code").click()
    staff.wait_for_load_state()
    code = staff.get_by_test_id("invitation-code").inner_text().strip()
    assert re.fullmatch(r"[A-Z2-9]{4}-[A-Z2-9]{4}-[A-Z2-9]{4}", code)
    slip = staff.locator(".slip").inner_text()
    assert "Vandersloot" not in slip
    assert "/activate/" in slip
    shot(staff, "invite-02-printable-code")

    # The patient, at home: a browser that never saw the clinic's session.
    patient = new_page(viewport=PHONE)
    patient.goto("/accounts/login/")
    patient.get_by_role("link", name="Activate your account").click()
    patient.get_by_label("Invitation code").fill(code.lower().replace("-", " "))
    patient.get_by_label("Your date of birth").fill("1981-03-04")
    assert fits_phone_width(patient)
    shot(patient, "invite-03-activate-code")
    patient.get_by_role("button", name="Continue").click()
    patient.wait_for_url("**/activate/password/")
    assert "/activate/password/" in patient.url
    patient.get_by_label("Choose a username").fill("henrietta")
    patient.get_by_label("Choose a password").fill("short")
    patient.get_by_label("Password again").fill("short")
    patient.get_by_role("button", name="Create my login").click()
    assert patient.get_by_text("This password is too short").is_visible()  # Django's validators
    patient.get_by_label("Choose a password").fill(PASSWORD)
    patient.get_by_label("Password again").fill(PASSWORD)
    shot(patient, "invite-04-choose-password")
    patient.get_by_role("button", name="Create my login").click()
    patient.wait_for_url(f"**{record}")
    assert patient.get_by_text("Your skin check record").first.is_visible()
    assert patient.get_by_role("link", name="My record").is_visible()
    shot(patient, "invite-05-own-record")
    # Only their own: another patient's record is a 404.
    response = patient.goto(reverse("patients:patient-detail", kwargs={"patient_uuid": other_patient.uuid}))
    assert response is not None
    assert response.status == 404
    assert Patient.objects.get(pk=newcomer.pk).account.username == "henrietta"

    # The clinic's page now says so.
    staff.goto(record)
    assert "Has a portal login" in staff.locator("#portal-access").inner_text()
    shot(staff, "invite-06-staff-sees-active-login")

    # The slip again, in a third browser: a clear page, nothing changed.
    again = new_page()
    again.goto("/activate/")
    again.get_by_label("Invitation code").fill(code)
    again.get_by_label("Your date of birth").fill("1981-03-04")
    with again.expect_response(lambda r: r.url.endswith("/activate/")) as answer:
        again.get_by_role("button", name="Continue").click()
    assert answer.value.status == 410
    assert again.get_by_role("heading", name="This invitation was already used").is_visible()
    shot(again, "invite-07-code-already-used")
