"""Triage decisions: the service, the alert page, notifications."""

from __future__ import annotations

import datetime as dt

import pytest
from dateutil.relativedelta import relativedelta
from django.core import mail
from django.core.exceptions import PermissionDenied, ValidationError
from django.db import connection
from django.http import Http404
from django.urls import reverse
from django.utils import timezone

from lesions.models import Alert, Lesion, TriageDecision
from lesions.services import alert_notify, alert_raise, triage_decide
from portal.models import AuditEntry, Role
from tests.factories import AlertFactory, PredictionFactory, UserFactory


@pytest.fixture
def alert(lesion):
    return AlertFactory(prediction__examination__lesion=lesion, prediction__malignancy_risk="0.720000")


def test_follow_up_decision_sets_next_follow_up_and_leaves_the_queue(clinician, alert):
    decision = triage_decide(
        actor=clinician, alert=alert, decision="follow_up", reason="Symmetric, stable pattern", follow_up_months=6
    )
    alert.refresh_from_db()
    lesion = Lesion.objects.get(pk=alert.lesion_id)
    assert alert.status == Alert.Status.TRIAGED
    assert lesion.status == Lesion.Status.MONITORING
    assert lesion.next_follow_up == timezone.localdate() + relativedelta(months=6)
    assert decision.decided_by == clinician
    assert decision.decided_at <= timezone.now()
    assert AuditEntry.objects.filter(action="alert.triage.follow_up", actor=clinician).count() == 1


@pytest.mark.parametrize(
    ("choice", "status"),
    [("biopsy", Lesion.Status.BIOPSY), ("refer", Lesion.Status.REFERRED), ("dismiss", Lesion.Status.MONITORING)],
)
def test_each_decision_moves_the_lesion(clinician, alert, choice, status):
    triage_decide(actor=clinician, alert=alert, decision=choice, reason="Because", follow_up_months=3)
    lesion = Lesion.objects.get(pk=alert.lesion_id)
    assert lesion.status == status
    assert lesion.next_follow_up is None  # months are ignored unless the decision is a follow-up
    assert TriageDecision.objects.get(alert=alert).follow_up_months is None


def test_a_reason_is_required(clinician, alert):
    with pytest.raises(ValidationError) as exc:
        triage_decide(actor=clinician, alert=alert, decision="dismiss", reason="   ")
    assert "reason" in exc.value.error_dict
    alert.refresh_from_db()
    assert alert.status == Alert.Status.OPEN


def test_a_follow_up_needs_months(clinician, alert):
    with pytest.raises(ValidationError) as exc:
        triage_decide(actor=clinician, alert=alert, decision="follow_up", reason="Recheck")
    assert "follow_up_months" in exc.value.error_dict


def test_staff_may_see_but_not_triage(clinic_staff, alert):
    with pytest.raises(PermissionDenied):
        triage_decide(actor=clinic_staff, alert=alert, decision="dismiss", reason="x")


def test_a_clinician_elsewhere_does_not_learn_the_alert_exists(outside_clinician, alert):
    with pytest.raises(Http404):
        triage_decide(actor=outside_clinician, alert=alert, decision="dismiss", reason="x")


def test_an_alert_is_decided_once(clinician, alert):
    triage_decide(actor=clinician, alert=alert, decision="dismiss", reason="Benign")
    stale = Alert.objects.get(pk=alert.pk)
    stale.status = Alert.Status.OPEN  # a second browser tab still shows it open
    with pytest.raises(ValidationError):
        triage_decide(actor=clinician, alert=stale, decision="biopsy", reason="Changed my mind")
    assert TriageDecision.objects.filter(alert=alert).count() == 1


def test_the_reason_is_encrypted_at_rest(clinician, alert):
    decision = triage_decide(actor=clinician, alert=alert, decision="refer", reason="Irregular network, refer")
    with connection.cursor() as cursor:
        cursor.execute("SELECT reason FROM lesions_triagedecision WHERE id = %s", [decision.pk])
        raw = cursor.fetchone()[0]
    assert "Irregular" not in raw
    assert TriageDecision.objects.get(pk=decision.pk).reason == "Irregular network, refer"


def test_follow_up_months_are_calendar_months_clamped_to_the_month_end(clinician, alert, monkeypatch):
    monkeypatch.setattr(timezone, "localdate", lambda *a: dt.date(2026, 1, 31))
    triage_decide(actor=clinician, alert=alert, decision="follow_up", reason="Stable", follow_up_months=1)
    assert Lesion.objects.get(pk=alert.lesion_id).next_follow_up == dt.date(2026, 2, 28)


def test_triage_page_records_the_decision_and_returns_to_the_queue(clinician_client, clinician, alert):
    url = reverse("lesions:alert-triage", kwargs={"alert_uuid": alert.uuid})
    page = clinician_client.get(url)
    assert page.status_code == 200
    assert b"Your decision" in page.content
    response = clinician_client.post(url, {"decision": "follow_up", "follow_up_months": "3", "reason": "Recheck"})
    assert response.status_code == 302
    assert response["Location"] == reverse("portal:triage-queue")
    assert TriageDecision.objects.get(alert=alert).decided_by == clinician
    after = clinician_client.get(url)
    assert b"Recheck" in after.content
    assert b"Your decision" not in after.content
    assert AuditEntry.objects.filter(action="alert.view", target_uuid=str(alert.uuid)).count() == 3  # every read


def test_triage_form_shows_what_is_missing(clinician_client, alert):
    url = reverse("lesions:alert-triage", kwargs={"alert_uuid": alert.uuid})
    response = clinician_client.post(url, {"decision": "follow_up", "reason": ""})
    assert response.status_code == 400
    body = response.content.decode()
    assert "Say in how many months" in body
    assert "This field is required" in body
    alert.refresh_from_db()
    assert alert.status == Alert.Status.OPEN


def test_alert_raise_notifies_only_after_commit_and_only_when_switched_on(
    settings, lesion, django_capture_on_commit_callbacks
):
    settings.DERMATRACK_ALERT_EMAILS = False
    with django_capture_on_commit_callbacks() as callbacks:
        alert_raise(prediction=PredictionFactory(examination__lesion=lesion), risk=0.71)
    assert callbacks == []
    settings.DERMATRACK_ALERT_EMAILS = True
    with django_capture_on_commit_callbacks() as callbacks:
        alert = alert_raise(prediction=PredictionFactory(), risk=0.9)
    assert len(callbacks) == 1
    assert alert.priority == 900
    # Joining an open alert is not news: no second mail for the same lesion.
    with django_capture_on_commit_callbacks() as callbacks:
        joined = alert_raise(prediction=PredictionFactory(examination__lesion=alert.lesion), risk=0.95)
    assert joined.pk == alert.pk
    assert callbacks == []


def test_notification_goes_to_the_clinics_dermatologists_without_patient_details(
    clinician, clinic_staff, outside_clinician, alert
):
    clinician.email = "dr@example.org"
    clinician.save()
    UserFactory(role=Role.DERMATOLOGIST, clinic=clinician.clinic, email="")  # no address: skipped
    clinic_staff.email = "staff@example.org"
    clinic_staff.save()
    outside_clinician.email = "elsewhere@example.org"
    outside_clinician.save()
    assert alert_notify(alert_id=alert.pk) == 1
    assert len(mail.outbox) == 1
    message = mail.outbox[0]
    assert message.to == ["dr@example.org"]
    patient = alert.lesion.patient
    text = message.subject + message.body
    assert patient.family_name not in text
    assert patient.given_name not in text
    assert str(alert.uuid) in message.body  # the link to the alert page


def test_no_notification_once_triaged(clinician, alert):
    clinician.email = "dr@example.org"
    clinician.save()
    triage_decide(actor=clinician, alert=alert, decision="dismiss", reason="Seen already")
    assert alert_notify(alert_id=alert.pk) == 0
    assert mail.outbox == []
