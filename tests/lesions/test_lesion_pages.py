"""The lesion page (timeline, progress chart, change since last time), the comparison page and
uploading several images at once."""

from __future__ import annotations

import datetime as dt
from decimal import Decimal

import pytest
from django.core.files.uploadedfile import SimpleUploadedFile
from django.urls import reverse
from django.utils import timezone

from lesions import trend
from lesions.models import Examination
from lesions.services import triage_decide
from portal.models import AuditEntry
from tests.factories import AlertFactory, ExaminationFactory, PredictionFactory, png_bytes

MODEL = {"name": "test model", "version": "9.9", "alert_threshold": 0.3}


@pytest.fixture(autouse=True)
def _model_info(monkeypatch):
    monkeypatch.setattr("lesions.risk.model_info", lambda: MODEL)


def _exam(lesion, days_ago: int, risk: str | None, diameter: str | None = None):
    captured = timezone.now() - dt.timedelta(days=days_ago)
    if risk is None:
        return ExaminationFactory(lesion=lesion, captured_at=captured, diameter_mm=diameter and Decimal(diameter))
    prediction = PredictionFactory(
        examination__lesion=lesion,
        examination__captured_at=captured,
        examination__diameter_mm=diameter and Decimal(diameter),
        malignancy_risk=risk,
    )
    return prediction.examination


def _url(name, lesion, **query):
    url = reverse(name, kwargs={"lesion_uuid": lesion.uuid})
    return url + ("?" + "&".join(f"{k}={v}" for k, v in query.items()) if query else "")


def test_lesion_page_draws_risk_and_diameter_with_the_threshold(clinician_client, lesion):
    _exam(lesion, 200, "0.120000", "4.0")
    _exam(lesion, 100, "0.180000", "4.5")
    _exam(lesion, 1, "0.410000", "6.0")
    response = clinician_client.get(_url("lesions:lesion-detail", lesion))
    body = response.content.decode()
    chart = response.context["chart"]
    assert len(chart.risk_dots) == 3
    assert len(chart.diameter_dots) == 3
    assert chart.threshold_label == "alert threshold 30 %"
    assert '<svg class="chart"' in body
    assert 'stroke-dasharray="6 4"' in body
    assert "Latest risk 41 %" in body  # the chart's text alternative
    assert "<script>" not in body  # scripts come from static files only (CSP)


def test_change_since_the_last_examination_is_called_out(clinician_client, lesion):
    _exam(lesion, 90, "0.200000", "5.0")
    _exam(lesion, 0, "0.450000", "6.5")
    response = clinician_client.get(_url("lesions:lesion-detail", lesion))
    change = response.context["change"]
    assert change.risk_points == 25
    assert change.diameter_delta == 1.5
    assert change.crossed_threshold == "up"
    assert change.worse
    body = response.content.decode()
    assert "up 25 points" in body
    assert "now above the alert threshold" in body
    assert "+1.5 mm" in body


def test_timeline_shows_newest_first_with_status_and_decision(clinician, clinician_client, lesion):
    old = _exam(lesion, 30, "0.650000", "5.0")
    alert = AlertFactory(prediction=old.predictions.get())
    triage_decide(actor=clinician, alert=alert, decision="follow_up", reason="Watch", follow_up_months=3)
    pending = _exam(lesion, 0, None)
    response = clinician_client.get(_url("lesions:lesion-detail", lesion))
    timeline = [r["exam"] for r in response.context["timeline"]]
    assert timeline == [pending, old]
    body = response.content.decode()
    assert "Waiting for analysis" in body
    assert "data-status-url" in body
    assert "Follow up</strong> in 3 mo" in body
    assert "Compare with the previous examination" in body


def test_compare_defaults_to_the_latest_two(clinician_client, lesion):
    first = _exam(lesion, 300, "0.100000", "3.0")
    second = _exam(lesion, 200, "0.200000", "3.5")
    third = _exam(lesion, 10, "0.500000", "5.0")
    response = clinician_client.get(_url("lesions:lesion-compare", lesion))
    assert [s["exam"] for s in response.context["sides"]] == [second, third]
    assert response.context["change"].risk_points == 30
    picked = clinician_client.get(_url("lesions:lesion-compare", lesion, a=first.uuid, b=third.uuid))
    assert [s["exam"] for s in picked.context["sides"]] == [first, third]
    assert picked.context["change"].days == 290
    body = picked.content.decode()
    assert body.count('class="stack"') == 2
    assert AuditEntry.objects.filter(action="examination.compare").count() == 4


def test_compare_ignores_examinations_of_other_lesions(clinician_client, lesion, other_patient):
    own = _exam(lesion, 5, "0.200000")
    foreign = PredictionFactory(examination__lesion__patient=other_patient).examination
    response = clinician_client.get(_url("lesions:lesion-compare", lesion, a=foreign.uuid, b=own.uuid))
    assert [s["exam"] for s in response.context["sides"]] == [own]
    assert str(foreign.uuid) not in response.content.decode()


def test_staff_upload_several_images_at_once(staff_client, lesion, django_capture_on_commit_callbacks):
    files = [SimpleUploadedFile(f"img{i}.png", png_bytes(seed=i), content_type="image/png") for i in range(3)]
    with django_capture_on_commit_callbacks() as callbacks:
        response = staff_client.post(
            reverse("lesions:examination-create", kwargs={"lesion_uuid": lesion.uuid}),
            {"image": files, "diameter_mm": "4.2"},
        )
    assert response.status_code == 302
    assert response["Location"].endswith("#examinations")
    exams = Examination.objects.filter(lesion=lesion)
    assert exams.count() == 3
    assert {e.diameter_mm for e in exams} == {Decimal("4.2")}
    assert len(callbacks) == 3  # one classification task per image, after commit


def test_a_bad_image_in_a_batch_is_reported_and_the_good_ones_kept(staff_client, lesion):
    files = [
        SimpleUploadedFile("good.png", png_bytes(), content_type="image/png"),
        SimpleUploadedFile("patient-name.png", b"not an image", content_type="image/png"),
    ]
    response = staff_client.post(
        reverse("lesions:examination-create", kwargs={"lesion_uuid": lesion.uuid}), {"image": files}, follow=True
    )
    assert Examination.objects.filter(lesion=lesion).count() == 1
    body = response.content.decode()
    assert "Image 2 of 2" in body
    assert "patient-name" not in body


def test_one_image_still_opens_its_examination_page(staff_client, lesion):
    response = staff_client.post(
        reverse("lesions:examination-create", kwargs={"lesion_uuid": lesion.uuid}),
        {"image": SimpleUploadedFile("a.png", png_bytes(), content_type="image/png")},
    )
    exam = Examination.objects.get(lesion=lesion)
    assert response["Location"] == reverse("lesions:examination-detail", kwargs={"examination_uuid": exam.uuid})


@pytest.mark.parametrize("n_exams", [2, 12])
def test_lesion_page_query_count_does_not_grow_with_examinations(
    clinician_client, lesion, n_exams, django_assert_num_queries
):
    for i in range(n_exams):
        exam = _exam(lesion, 10 * (n_exams - i), f"0.{300 + 40 * i:06d}", "5.0")
        if i % 3 == 0:  # one open alert per lesion: the earlier ones decided
            AlertFactory(prediction=exam.predictions.get(), status="open" if i == 0 else "triaged")
    url = _url("lesions:lesion-detail", lesion)
    clinician_client.get(url)
    # session, user, lesion, audit, examinations, their predictions, their explanations, the
    # audit of the examinations listed, alerts with decisions, the manage-lesions permission
    # check (guardian: 2), the active model version.
    with django_assert_num_queries(12):
        response = clinician_client.get(url)
    assert len(response.context["rows"]) == n_exams


def test_risk_levels_follow_the_threshold():
    assert trend.risk_level(None, 0.3) == "none"
    assert trend.risk_level(0.29, 0.3) == "low"
    assert trend.risk_level(0.31, 0.3) == "moderate"
    assert trend.risk_level(0.55, 0.3) == "high"
    assert trend.risk_level(0.95, 0.3) == "very_high"


def test_chart_with_a_single_examination_and_no_diameter():
    chart = trend.progress_chart([trend.Point(timezone.now(), 0.4, None)], 0.3)
    assert chart.diameter_path == ""
    assert len(chart.risk_dots) == 1
    assert trend.change_since_last([trend.Point(timezone.now(), 0.4, None)], 0.3) is None


def test_patient_is_sent_from_the_clinical_examination_page_to_the_plain_language_one(patient_client, lesion):
    from tests.factories import ExaminationFactory

    exam = ExaminationFactory(lesion=lesion)
    response = patient_client.get(f"/examinations/{exam.uuid}/")
    assert response.status_code == 302
    assert response["Location"] == f"/lesions/{lesion.uuid}/"
