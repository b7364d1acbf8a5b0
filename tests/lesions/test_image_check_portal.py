"""The image check in the portal: an unassessable image shows "cannot assess", raises no
alert, and stays visible to clinicians (issue 10). Real classification service and model."""

from __future__ import annotations

import io

import numpy as np
import pytest
from PIL import Image

from lesions.models import Alert, Prediction
from lesions.risk import classifier as get_classifier
from lesions.risk import image_checker
from lesions.services import examination_upload
from lesions.tasks import classify_examination_task
from tests.conftest import real_dermoscopy


def _jpeg(pixels: np.ndarray) -> io.BytesIO:
    out = io.BytesIO()
    Image.fromarray(pixels).save(out, format="JPEG", quality=92)
    out.seek(0)
    return out


@pytest.fixture
def always_alert(monkeypatch):
    # Every assessable image would alert: so a missing alert is the image check's doing.
    monkeypatch.setattr(get_classifier(), "alert_threshold", 0.0)


def _classified(lesion, actor, data):
    exam = examination_upload(actor=actor, lesion=lesion, image=data)
    classify_examination_task(exam.pk)
    return exam, Prediction.objects.get(examination=exam)


def test_dark_capture_is_not_assessable_raises_no_alert_and_says_why(lesion, clinic_staff, always_alert):
    rng = np.random.default_rng(1)
    dark = np.clip(rng.normal(18, 6, (450, 600, 3)), 0, 255).astype(np.uint8)
    _, prediction = _classified(lesion, clinic_staff, _jpeg(dark))
    assert prediction.assessable is False
    assert "too_dark" in prediction.reason_codes
    assert all(r["message"] for r in prediction.check_reasons)
    assert "central_p95_luminance" in prediction.check_scores
    assert not Alert.objects.exists()


@pytest.mark.parametrize("photo", ["coffee", "astronaut"])
def test_natural_photo_is_not_assessable(lesion, clinic_staff, always_alert, photo):
    from skimage import data

    if photo == "astronaut" and not image_checker(get_classifier()).model_checks_used:
        # Only the out-of-distribution check (statistics fitted for this model file) catches a
        # portrait; the heuristics alone pass it. Re-fit: python -m inference.training.fit_image_check
        pytest.skip("image-check statistics are not fitted for the committed model")
    _, prediction = _classified(lesion, clinic_staff, _jpeg(getattr(data, photo)()))
    assert prediction.assessable is False
    assert prediction.reason_codes  # not dermoscopic and/or out of distribution
    assert not Alert.objects.exists()


def test_dermoscopic_image_is_assessable_and_alerts(lesion, clinic_staff, always_alert):
    data = real_dermoscopy(1)[0]
    _, prediction = _classified(lesion, clinic_staff, io.BytesIO(data))
    assert prediction.assessable is True
    assert prediction.check_reasons == []
    assert Alert.objects.filter(prediction=prediction).exists()


def test_unassessable_result_is_shown_as_such_everywhere(
    lesion, clinic_staff, always_alert, clinician_client, patient_client
):
    rng = np.random.default_rng(2)
    dark = np.clip(rng.normal(15, 5, (300, 400, 3)), 0, 255).astype(np.uint8)
    exam, prediction = _classified(lesion, clinic_staff, _jpeg(dark))
    page = clinician_client.get(f"/examinations/{exam.uuid}/").content.decode()
    assert "Cannot assess — please retake" in page
    assert "too dark" in page  # the reason's text
    assert "no alert was raised" in page
    assert f"/examinations/{exam.uuid}/image/" in page  # the image stays visible
    assert "Class probabilities" in page  # and the raw figures, marked
    assert "above the alert threshold" not in page
    assert f"v{prediction.model_version}" in page
    lesion_page = clinician_client.get(f"/lesions/{lesion.uuid}/").content.decode()
    assert "Cannot assess — please retake" in lesion_page
    patient_page = clinician_client.get(f"/patients/{lesion.patient.uuid}/").content.decode()
    assert "Cannot assess — please retake" in patient_page
    own = patient_client.get(f"/lesions/{lesion.uuid}/").content.decode()
    assert "Please retake it" in own
    api = clinician_client.get(f"/api/examinations/{exam.uuid}/").json()
    assert api["prediction"]["assessable"] is False
    assert "too_dark" in [r["code"] for r in api["prediction"]["check_reasons"]]
    assert api["prediction"]["model_version"] == prediction.model_version
    assert api["prediction"]["model_active"] is True
    queue = clinician_client.get("/").content.decode()
    assert str(exam.uuid) not in queue
