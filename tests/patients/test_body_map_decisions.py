"""The body map after a triage decision (issue 12, item 9): a lesion a dermatologist has
decided on shows what was decided, not the amber "flagged" of the risk that raised the alert.
Before the change a dismissed lesion kept `dot-moderate` for as long as its latest result was
above the threshold."""

from __future__ import annotations

import datetime as dt

import pytest
from django.urls import reverse
from django.utils import timezone

from lesions import bodymap
from lesions.models import BodySite
from lesions.services import triage_decide
from tests.factories import AlertFactory, LesionFactory, PredictionFactory

MODEL = {"name": "test model", "version": "9.9", "alert_threshold": 0.3}


@pytest.fixture(autouse=True)
def _model_info(monkeypatch):
    monkeypatch.setattr("lesions.risk.model_info", lambda: MODEL)


def _alerted(patient, site, risk="0.400000", days_ago=10):
    lesion = LesionFactory(patient=patient, body_site=site)
    prediction = PredictionFactory(
        examination__lesion=lesion,
        examination__captured_at=timezone.now() - dt.timedelta(days=days_ago),
        malignancy_risk=risk,
    )
    return lesion, AlertFactory(prediction=prediction)


def _markers(client, patient) -> dict:
    response = client.get(reverse("patients:patient-detail", kwargs={"patient_uuid": patient.uuid}))
    return {m["lesion"].pk: m["lesion"] for m in response.context["body_map"]["markers"]}, response.content.decode()


@pytest.mark.parametrize(
    ("decision", "months", "level", "words"),
    [
        ("dismiss", None, "reviewed", "reviewed, dismissed"),
        ("follow_up", 3, "reviewed", "reviewed, follow-up"),
        ("biopsy", None, "action", "reviewed, biopsy or excision ordered"),
        ("refer", None, "action", "reviewed, referred"),
    ],
)
def test_a_decided_lesion_shows_the_decision_not_flagged(
    clinician, clinician_client, patient, decision, months, level, words
):
    lesion, alert = _alerted(patient, BodySite.CHEST)
    _, body = _markers(clinician_client, patient)
    assert 'class="marker dot-moderate"' in body  # flagged while it waits
    triage_decide(actor=clinician, alert=alert, decision=decision, reason="Seen", follow_up_months=months)
    markers, body = _markers(clinician_client, patient)
    assert 'class="marker dot-moderate"' not in body
    assert f'class="marker dot-{level}"' in body
    assert markers[lesion.pk].level == "moderate"  # the risk itself is unchanged (the lesion table)
    assert f"Chest: 40 %, {words}</title>" in body
    assert f'latest risk 40 %, {words}"' in body  # the marker link's accessible name


def test_a_later_result_or_a_waiting_alert_shows_the_risk_again(clinician, clinician_client, patient):
    dismissed, alert = _alerted(patient, BodySite.CHEST, days_ago=30)
    triage_decide(actor=clinician, alert=alert, decision="dismiss", reason="Benign look")
    # A new examination scored after the decision: its result is what the marker shows.
    PredictionFactory(examination__lesion=dismissed, malignancy_risk="0.550000")
    # Decided, then a later examination opened a new alert on the same lesion, still waiting.
    waiting, first = _alerted(patient, BodySite.NECK, days_ago=20)
    triage_decide(actor=clinician, alert=first, decision="dismiss", reason="Benign look")
    AlertFactory(prediction=PredictionFactory(examination__lesion=waiting, malignancy_risk="0.350000"))
    _, body = _markers(clinician_client, patient)
    assert 'class="marker dot-high"' in body  # the new result
    assert 'class="marker dot-moderate"' in body  # the alert still waiting
    assert "reviewed, dismissed" not in body


def test_the_patients_own_map_shows_the_review_too(clinician, patient_client, patient):
    _, alert = _alerted(patient, BodySite.LEFT_HAND)
    triage_decide(actor=clinician, alert=alert, decision="dismiss", reason="Benign look")
    _, body = _markers(patient_client, patient)
    assert 'class="marker dot-moderate"' not in body
    assert 'class="marker dot-reviewed"' in body
    assert "reviewed by your dermatologist" in body


def test_decided_state_rule():
    class D:  # a decision's two fields the rule reads
        def __init__(self, decision, at):
            self.decision, self.decided_at = decision, at

    class P:
        def __init__(self, at):
            self.created_at = at

    now = timezone.now()
    assert bodymap.decided_state(decision=None, latest_prediction=P(now), has_open_alert=False) is None
    assert bodymap.decided_state(decision=D("dismiss", now), latest_prediction=P(now), has_open_alert=True) is None
    earlier = now - dt.timedelta(minutes=1)
    assert bodymap.decided_state(decision=D("dismiss", earlier), latest_prediction=P(now), has_open_alert=False) is None
    assert bodymap.decided_state(decision=D("refer", now), latest_prediction=P(earlier), has_open_alert=False) == (
        "action",
        "reviewed, referred",
    )
