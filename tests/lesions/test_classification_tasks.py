"""The classification task: idempotent, after commit, bad input marked failed, stale claims swept."""

from __future__ import annotations

import datetime as dt
import io

import pytest
from django.utils import timezone

from lesions import classification
from lesions.models import Alert, Examination, Prediction
from lesions.risk import classifier as get_classifier
from lesions.services import examination_upload
from lesions.tasks import classify_examination_task
from tests.factories import ExaminationFactory, jpeg_bytes, lesion_jpeg_bytes


@pytest.fixture
def exam(lesion, clinic_staff):
    return examination_upload(actor=clinic_staff, lesion=lesion, image=io.BytesIO(lesion_jpeg_bytes()))


def test_upload_queues_classification_only_after_commit(lesion, clinic_staff, django_capture_on_commit_callbacks):
    with django_capture_on_commit_callbacks(execute=False) as callbacks:
        exam = examination_upload(actor=clinic_staff, lesion=lesion, image=io.BytesIO(jpeg_bytes()))
        assert Examination.objects.get(pk=exam.pk).status == Examination.Status.PENDING
    assert len(callbacks) == 1  # the enqueue waits for the commit


def test_classify_writes_one_encrypted_prediction_with_model_version(exam):
    classify_examination_task(exam.pk)
    exam.refresh_from_db()
    assert exam.status == Examination.Status.DONE
    prediction = Prediction.objects.get(examination=exam)
    classifier = get_classifier()
    assert prediction.model_sha256 == classifier.sha256
    assert prediction.model_version == classifier.version
    assert set(prediction.probabilities) == set(classifier.classes)
    assert abs(sum(prediction.probabilities.values()) - 1) < 1e-3
    assert prediction.created_at <= timezone.now()


def test_running_the_task_twice_leaves_one_prediction(exam):
    classify_examination_task(exam.pk)
    Examination.objects.filter(pk=exam.pk).update(status=Examination.Status.PENDING)  # a redelivery
    classify_examination_task(exam.pk)
    classify_examination_task(exam.pk)
    assert Prediction.objects.filter(examination=exam).count() == 1
    assert Examination.objects.get(pk=exam.pk).status == Examination.Status.DONE


def test_second_claim_is_refused_while_the_first_is_fresh(exam):
    assert classification.examination_claim(examination_id=exam.pk)
    assert not classification.examination_claim(examination_id=exam.pk)


def test_stale_claim_is_swept_back_and_completed(exam, settings):
    assert classification.examination_claim(examination_id=exam.pk)  # a worker claimed it, then died
    Examination.objects.filter(pk=exam.pk).update(claimed_at=timezone.now() - dt.timedelta(hours=1))
    assert classification.requeue_stale_examinations() == [exam.pk]
    exam.refresh_from_db()
    assert exam.status == Examination.Status.PENDING
    classify_examination_task(exam.pk)
    assert Prediction.objects.filter(examination=exam).count() == 1


def test_corrupt_stored_image_marks_exam_failed_without_retry(lesion):
    broken = ExaminationFactory(lesion=lesion)
    broken.image.storage.delete(broken.image.name)
    broken.image.storage.save(broken.image.name, io.BytesIO(b"garbage that is not a PNG"))
    classify_examination_task(broken.pk)
    broken.refresh_from_db()
    assert broken.status == Examination.Status.FAILED
    assert "could not be decoded" in broken.failure_reason
    assert not Prediction.objects.filter(examination=broken).exists()


def test_missing_stored_image_marks_exam_failed(lesion):
    exam = ExaminationFactory(lesion=lesion)
    exam.image.storage.delete(exam.image.name)
    classify_examination_task(exam.pk)
    exam.refresh_from_db()
    assert exam.status == Examination.Status.FAILED
    assert "missing" in exam.failure_reason


@pytest.mark.parametrize(("threshold", "alerts"), [(0.0, 1), (1.01, 0)])
def test_alert_raised_only_above_the_threshold(exam, monkeypatch, threshold, alerts):
    monkeypatch.setattr(get_classifier(), "alert_threshold", threshold)
    classify_examination_task(exam.pk)
    assert Alert.objects.count() == alerts
    if alerts:
        alert = Alert.objects.get()
        assert alert.priority == round(Prediction.objects.get().risk * 1000)
        assert alert.clinic == exam.lesion.patient.clinic


def test_task_arguments_carry_no_phi(lesion, clinic_staff, django_capture_on_commit_callbacks, monkeypatch):
    sent = []
    monkeypatch.setattr(classify_examination_task, "delay", lambda *a, **k: sent.append((a, k)))
    with django_capture_on_commit_callbacks(execute=True):
        examination_upload(actor=clinic_staff, lesion=lesion, image=io.BytesIO(jpeg_bytes()))
    assert len(sent) == 1
    args, kwargs = sent[0]
    assert all(isinstance(a, int) for a in args)
    assert not kwargs


def test_upload_survives_a_broker_outage_and_the_sweep_queues_it_later(
    lesion, clinic_staff, django_capture_on_commit_callbacks, monkeypatch
):
    """Tried: the broker refuses the message at upload time. The upload must still succeed,
    and once the examination is older than the claim limit the sweep hands it out again."""
    from kombu.exceptions import OperationalError

    def broker_down(*args, **kwargs):
        raise OperationalError("connection refused")

    monkeypatch.setattr(classify_examination_task, "delay", broker_down)
    with django_capture_on_commit_callbacks(execute=True):
        exam = examination_upload(actor=clinic_staff, lesion=lesion, image=io.BytesIO(jpeg_bytes()))
    assert Examination.objects.get(pk=exam.pk).status == Examination.Status.PENDING
    assert classification.requeue_stale_examinations() == []  # too young: its message may still be queued
    Examination.objects.filter(pk=exam.pk).update(created_at=timezone.now() - dt.timedelta(hours=1))
    assert classification.requeue_stale_examinations() == [exam.pk]
