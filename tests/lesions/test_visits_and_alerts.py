"""Visits (capture date, one or more images) and the one-alert-per-lesion lifecycle (issue 12)."""

from __future__ import annotations

import datetime as dt
import threading

import pytest
from django.core.files.uploadedfile import SimpleUploadedFile
from django.db import IntegrityError, connection, transaction
from django.db.migrations.executor import MigrationExecutor
from django.urls import reverse
from django.utils import timezone

from lesions import risk
from lesions.models import Alert, AlertTrigger, Examination, Visit
from lesions.services import alert_raise, triage_decide
from tests.factories import AlertFactory, ExaminationFactory, LesionFactory, PredictionFactory, png_bytes


def _upload_url(lesion):
    return reverse("lesions:examination-create", kwargs={"lesion_uuid": lesion.uuid})


def _png(name="a.png", seed=0):
    return SimpleUploadedFile(name, png_bytes(size=(200, 150), seed=seed), content_type="image/png")


def _local(value: dt.datetime) -> str:
    return timezone.localtime(value).strftime("%Y-%m-%dT%H:%M")


# --- Visits --------------------------------------------------------------------------------


def test_a_past_visit_and_one_today_are_two_points_on_the_chart(
    staff_client, lesion, django_capture_on_commit_callbacks
):
    three_months_ago = timezone.now() - dt.timedelta(days=91)
    with django_capture_on_commit_callbacks():
        staff_client.post(
            _upload_url(lesion), {"image": [_png()], "captured_at": _local(three_months_ago), "diameter_mm": "4.0"}
        )
        staff_client.post(_upload_url(lesion), {"image": [_png(seed=1)], "diameter_mm": "5.0"})
    visits = list(Visit.objects.filter(lesion=lesion).order_by("captured_at"))
    assert len(visits) == 2
    assert timezone.localdate(visits[0].captured_at) == timezone.localdate(three_months_ago)
    assert timezone.now() - visits[1].captured_at < dt.timedelta(minutes=2)
    for visit in visits:
        assert [e.captured_at for e in visit.examinations.all()] == [visit.captured_at]

    page = staff_client.get(reverse("lesions:lesion-detail", kwargs={"lesion_uuid": lesion.uuid}))
    chart = page.context["chart"]
    assert len(chart.diameter_dots) == 2
    ticks = [tick["label"] for tick in chart.date_ticks]  # the x-axis spans the two capture dates
    assert ticks[0] == f"{timezone.localtime(visits[0].captured_at):%Y-%m-%d}"
    assert ticks[-1] == f"{timezone.localtime(visits[1].captured_at):%Y-%m-%d}"
    change = page.context["change"]
    assert change.days in (90, 91, 92)
    assert change.diameter_delta == 1.0


def test_several_images_make_one_visit_and_one_bad_image_loses_nothing_else(staff_client, lesion):
    corrupt = SimpleUploadedFile("c.png", b"\x89PNG\r\n\x1a\nnot really", content_type="image/png")
    response = staff_client.post(_upload_url(lesion), {"image": [_png(), corrupt, _png(seed=2)]})
    assert response.status_code == 302
    visit = Visit.objects.get(lesion=lesion)
    assert visit.examinations.count() == 2
    messages = [str(m) for m in response.wsgi_request._messages]
    assert any(m.startswith("Image 2 of 3:") for m in messages)


def test_a_visit_with_only_bad_images_stores_nothing(staff_client, lesion):
    corrupt = SimpleUploadedFile("c.png", b"garbage", content_type="image/png")
    response = staff_client.post(_upload_url(lesion), {"image": [corrupt]})
    assert response.status_code == 400
    assert not Visit.objects.exists()
    assert not Examination.objects.exists()


def test_a_capture_time_in_the_future_is_a_form_error_and_stores_nothing(staff_client, lesion):
    tomorrow = timezone.now() + dt.timedelta(days=1)
    response = staff_client.post(_upload_url(lesion), {"image": [_png()], "captured_at": _local(tomorrow)})
    assert response.status_code == 400
    assert "in the future" in response.content.decode()
    assert not Visit.objects.exists()


def test_a_capture_date_before_the_patients_birth_is_a_form_error(staff_client, lesion):
    born = lesion.patient.date_of_birth
    before = timezone.make_aware(dt.datetime.combine(born - dt.timedelta(days=3), dt.time(10, 0)))
    response = staff_client.post(_upload_url(lesion), {"image": [_png()], "captured_at": _local(before)})
    assert response.status_code == 400
    assert "before the patient&#x27;s date of birth" in response.content.decode()
    assert not Examination.objects.exists()


def test_the_upload_form_offers_now_as_an_iso_datetime_local_value(staff_client, lesion):
    body = staff_client.get(reverse("lesions:lesion-detail", kwargs={"lesion_uuid": lesion.uuid})).content.decode()
    assert 'type="datetime-local"' in body
    assert f'value="{timezone.localtime().strftime("%Y-%m-%dT")}' in body


def test_the_visit_result_is_the_highest_assessable_image_risk():
    assert risk.visit_risk([0.2, None, 0.7, 0.4]) == 0.7
    assert risk.visit_risk([None, None]) is None


def test_the_examination_page_lists_the_visits_images_with_the_visit_result(clinician_client, lesion):
    first = ExaminationFactory(lesion=lesion, status=Examination.Status.DONE)
    second = ExaminationFactory(lesion=lesion, visit=first.visit, captured_at=first.captured_at, status="done")
    PredictionFactory(examination=first, malignancy_risk="0.300000")
    PredictionFactory(examination=second, malignancy_risk="0.650000")
    response = clinician_client.get(reverse("lesions:examination-detail", kwargs={"examination_uuid": first.uuid}))
    assert response.context["visit_result_pct"] == 65
    assert [v["risk_pct"] for v in response.context["visit_images"]] == [30, 65]
    assert "This visit: 2 images" in response.content.decode()


# --- One alert per lesion --------------------------------------------------------------------


def _scored(lesion, risk_text, days_ago=0):
    when = timezone.now() - dt.timedelta(days=days_ago)
    exam = ExaminationFactory(lesion=lesion, captured_at=when, status=Examination.Status.DONE)
    return PredictionFactory(examination=exam, malignancy_risk=risk_text)


def test_predictions_over_the_threshold_join_the_lesions_open_alert(lesion):
    first = _scored(lesion, "0.600000", days_ago=10)
    later = _scored(lesion, "0.450000", days_ago=0)
    backdated = _scored(lesion, "0.900000", days_ago=30)
    alert = alert_raise(prediction=first, risk=0.6)
    assert alert_raise(prediction=later, risk=0.45).pk == alert.pk
    assert alert_raise(prediction=backdated, risk=0.9).pk == alert.pk
    alert.refresh_from_db()
    assert Alert.objects.filter(lesion=lesion).count() == 1
    assert alert.priority == 900  # the highest trigger
    assert alert.prediction == later  # the most recently captured examination
    assert sorted(alert.triggers.values_list("priority", flat=True)) == [450, 600, 900]


def test_a_decision_closes_the_alert_and_a_later_examination_opens_a_new_one(clinician, lesion):
    alert = alert_raise(prediction=_scored(lesion, "0.700000", days_ago=5), risk=0.7)
    triage_decide(actor=clinician, alert=alert, decision="biopsy", reason="Irregular network")
    alert.refresh_from_db()
    assert alert.status == Alert.Status.TRIAGED
    new = alert_raise(prediction=_scored(lesion, "0.800000"), risk=0.8)
    assert new.pk != alert.pk
    assert new.status == Alert.Status.OPEN
    assert list(Alert.objects.filter(lesion=lesion, status="open")) == [new]


def test_the_database_refuses_a_second_open_alert_for_a_lesion(lesion):
    AlertFactory(prediction=_scored(lesion, "0.700000"))
    with pytest.raises(IntegrityError), transaction.atomic():
        AlertFactory(prediction=_scored(lesion, "0.800000"))
    # A closed alert beside the open one is fine: the constraint is on open ones only.
    AlertFactory(prediction=_scored(lesion, "0.800000"), status=Alert.Status.TRIAGED)


def test_the_queue_counts_lesions_not_images(clinician_client, lesion):
    for days in (3, 2, 1):
        alert_raise(prediction=_scored(lesion, "0.700000", days_ago=days), risk=0.7)
    other = LesionFactory(patient=lesion.patient)
    alert_raise(prediction=_scored(other, "0.600000"), risk=0.6)
    body = clinician_client.get(reverse("portal:triage-queue")).content.decode()
    assert body.count('class="alert-row"') == 2


def test_the_patient_page_says_when_an_alert_was_decided(clinician, clinician_client, lesion):
    alert = alert_raise(prediction=_scored(lesion, "0.700000"), risk=0.7)
    url = reverse("patients:patient-detail", kwargs={"patient_uuid": lesion.patient.uuid})
    assert "Open alert — awaiting triage" in clinician_client.get(url).content.decode()
    triage_decide(actor=clinician, alert=alert, decision="refer", reason="Needs a specialist")
    body = clinician_client.get(url).content.decode()
    assert "Open alert" not in body
    assert "Decided: Refer" in body


@pytest.mark.django_db(transaction=True)
def test_concurrent_workers_make_one_open_alert(patient):
    """Two threads raise on the same lesion at once (each its own database connection): the
    lesion lock (PostgreSQL) or the write lock (SQLite) serialises them and the constraint is
    the backstop, so one alert is open with both triggers."""
    lesion = LesionFactory(patient=patient)
    predictions = [_scored(lesion, "0.700000", days_ago=1), _scored(lesion, "0.800000")]
    barrier = threading.Barrier(2)
    errors: list[BaseException] = []

    def raise_one(prediction):
        try:
            barrier.wait(timeout=10)
            alert_raise(prediction=prediction, risk=prediction.risk)
        except BaseException as exc:  # reported below
            errors.append(exc)
        finally:
            connection.close()

    threads = [threading.Thread(target=raise_one, args=(p,)) for p in predictions]
    for t in threads:
        t.start()
    for t in threads:
        t.join(timeout=30)
    assert errors == []
    alert = Alert.objects.get(lesion=lesion)
    assert alert.status == Alert.Status.OPEN
    assert alert.priority == 800
    assert AlertTrigger.objects.filter(alert=alert).count() == 2


@pytest.mark.django_db(transaction=True)
def test_the_migration_merges_a_lesions_open_alerts_and_gives_each_examination_a_visit(lesion):
    executor = MigrationExecutor(connection)
    executor.migrate([("lesions", "0009_dashboard_indexes")])
    try:
        old = executor.loader.project_state([("lesions", "0009_dashboard_indexes")]).apps
        OldExam, OldPrediction, OldAlert = (
            old.get_model("lesions", name) for name in ("Examination", "Prediction", "Alert")
        )
        alerts = []
        for n, priority in enumerate((600, 900, 700)):
            exam = OldExam.objects.create(
                lesion_id=lesion.pk,
                image=f"examinations/{n}.png.enc",
                image_sha256="0" * 64,
                image_width=1,
                image_height=1,
            )
            prediction = OldPrediction.objects.create(
                examination_id=exam.pk, model_name="m", model_version="1", model_sha256=f"{n:064x}",
                probabilities={}, malignancy_risk="0.5", top_class="nv",
            )  # fmt: skip
            alerts.append(
                OldAlert.objects.create(
                    prediction_id=prediction.pk,
                    lesion_id=lesion.pk,
                    clinic_id=lesion.patient.clinic_id,
                    priority=priority,
                )
            )
    finally:
        MigrationExecutor(connection).migrate(MigrationExecutor(connection).loader.graph.leaf_nodes())
    kept = Alert.objects.get(lesion=lesion, status=Alert.Status.OPEN)
    assert kept.pk == alerts[1].pk  # the highest priority stays open
    assert kept.triggers.count() == 3
    assert set(Alert.objects.exclude(pk=kept.pk).values_list("status", flat=True)) == {Alert.Status.MERGED}
    assert Visit.objects.filter(lesion=lesion).count() == 3
    assert not Examination.objects.filter(visit__isnull=True).exists()
