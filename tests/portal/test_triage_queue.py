"""The dermatologist's triage queue: order, filters, counts, names, thumbnails, query count."""

from __future__ import annotations

import datetime as dt
import io

import pytest
from django.urls import reverse
from django.utils import timezone
from PIL import Image

from lesions.models import Alert
from lesions.services import triage_decide
from portal.models import AuditEntry
from tests.factories import AlertFactory, LesionFactory, PatientFactory

URL = "/triage/"


def _alert(patient, risk: str, hours_ago: float = 0):
    alert = AlertFactory(
        prediction__examination__lesion=LesionFactory(patient=patient), prediction__malignancy_risk=risk
    )
    Alert.objects.filter(pk=alert.pk).update(created_at=timezone.now() - dt.timedelta(hours=hours_ago))
    return alert


def _queue(response) -> list[str]:
    return [r["alert"].uuid for r in response.context["rows"]]


def test_queue_is_ordered_by_risk_then_waiting_time(clinician_client, patient, other_patient):
    newer_high = _alert(patient, "0.700000", hours_ago=1)
    older_high = _alert(other_patient, "0.700000", hours_ago=5)
    highest = _alert(patient, "0.910000", hours_ago=0)
    low = _alert(patient, "0.350000", hours_ago=48)
    response = clinician_client.get(URL)
    assert _queue(response) == [highest.uuid, older_high.uuid, newer_high.uuid, low.uuid]


def test_queue_shows_name_site_risk_model_and_age(clinician_client, patient):
    _alert(patient, "0.820000", hours_ago=26)
    body = clinician_client.get(URL).content.decode()
    assert "Quackenbush, Zelda" in body
    assert "Upper back" in body
    assert "82 %" in body
    assert "v1.0.0" in body
    assert "1\xa0day" in body  # timesince of the alert
    assert "/thumbnail/" in body


def test_filters_by_risk_band_and_status(clinician, clinician_client, patient):
    very_high = _alert(patient, "0.850000")
    high = _alert(patient, "0.600000")
    moderate = _alert(patient, "0.400000")
    assert _queue(clinician_client.get(URL, {"band": "very_high"})) == [very_high.uuid]
    assert _queue(clinician_client.get(URL, {"band": "moderate"})) == [moderate.uuid]
    triage_decide(actor=clinician, alert=high, decision="dismiss", reason="Benign on dermoscopy")
    assert _queue(clinician_client.get(URL)) == [very_high.uuid, moderate.uuid]
    triaged = clinician_client.get(URL, {"status": "triaged"})
    assert _queue(triaged) == [high.uuid]
    assert "Dismiss" in triaged.content.decode()
    assert len(_queue(clinician_client.get(URL, {"status": "all"}))) == 3
    # Nonsense filter values fall back to the open queue rather than erroring.
    assert len(_queue(clinician_client.get(URL, {"status": "bogus", "band": "x"}))) == 2


def test_counts(clinician, clinician_client, patient):
    _alert(patient, "0.850000")
    _alert(patient, "0.810000")
    decided = _alert(patient, "0.600000")
    _alert(patient, "0.400000")
    triage_decide(actor=clinician, alert=decided, decision="refer", reason="Atypical")
    counts = clinician_client.get(URL).context["counts"]
    assert counts["open"] == 3
    assert counts["open_very_high"] == 2
    assert counts["open_high"] == 0
    assert counts["open_moderate"] == 1
    assert counts["triaged_today"] == 1
    assert "triaged" not in counts  # the open queue does not pay for counting all history
    everything = clinician_client.get(URL, {"status": "all"}).context["counts"]
    assert everything["triaged"] == 1
    assert everything["all"] == 4
    assert everything["triaged_high"] == 1


def test_administrator_filters_by_clinic(administrator, client, patient, other_clinic):
    here = _alert(patient, "0.700000")
    elsewhere = _alert(PatientFactory(clinic=other_clinic), "0.900000")
    client.force_login(administrator)
    assert _queue(client.get(URL)) == [elsewhere.uuid, here.uuid]
    assert _queue(client.get(URL, {"clinic": str(other_clinic.uuid)})) == [elsewhere.uuid]
    assert "Clinic</label>" in client.get(URL).content.decode()


def test_a_dermatologist_sees_only_their_clinics_alerts(outside_client, patient):
    _alert(patient, "0.900000")
    response = outside_client.get(URL)
    assert _queue(response) == []
    assert response.context["counts"]["open"] == 0
    assert "Quackenbush" not in response.content.decode()


def test_listing_the_queue_is_audited(clinician_client, clinician):
    clinician_client.get(URL)
    assert AuditEntry.objects.filter(action="alert.list", actor=clinician).count() == 1


def test_thumbnail_is_a_small_png_and_the_page_not_each_image_is_audited(clinician_client, patient):
    alert = _alert(patient, "0.700000")
    exam = alert.prediction.examination
    response = clinician_client.get(reverse("lesions:examination-thumbnail", kwargs={"examination_uuid": exam.uuid}))
    assert response.status_code == 200
    assert response["Content-Type"] == "image/png"
    assert "no-store" in response["Cache-Control"]
    image = Image.open(io.BytesIO(response.content))
    assert max(image.size) <= 192
    exam.refresh_from_db()
    assert exam.thumbnail.name.endswith(".png.enc")  # made once, stored encrypted
    again = clinician_client.get(reverse("lesions:examination-thumbnail", kwargs={"examination_uuid": exam.uuid}))
    assert again.content == response.content
    assert not AuditEntry.objects.filter(action="examination.thumbnail").exists()
    clinician_client.get(URL)  # the queue that shows the thumbnail audits its read once
    assert AuditEntry.objects.filter(action="alert.list").count() == 1


@pytest.mark.parametrize("n_alerts", [3, 30])
def test_triage_queue_query_count_does_not_grow_with_the_queue(
    clinician_client, patient, other_patient, n_alerts, django_assert_num_queries
):
    for i in range(n_alerts):
        _alert(patient if i % 2 else other_patient, f"0.{500 + i:06d}", hours_ago=i)
    clinician_client.get(URL)  # warm the session and content-type caches
    # session, user, clinics for the filter, open counts, triaged today, the page of alerts
    # (one join), which names may be shown, the audit entry.
    with django_assert_num_queries(8):
        response = clinician_client.get(URL)
    assert len(response.context["rows"]) == n_alerts


def test_the_old_dashboard_address_redirects_to_the_queue(clinician_client):
    response = clinician_client.get("/dashboard/?band=very_high")
    assert response.status_code == 301
    assert response["Location"] == "/triage/?band=very_high"
