"""The PDF reports from the pages, in headless Chromium: a dermatologist opens the examination
report and writes a referral letter from the examination page; the patient downloads their
summary from their lesion page. Each PDF is text-extracted (pypdf). Screenshots:
test-artifacts/reports-*.png; the PDFs: test-artifacts/reports/browser-*.pdf."""

from __future__ import annotations

import io
from pathlib import Path

import numpy as np
import pytest
from django.core.files.base import ContentFile
from django.urls import reverse
from PIL import Image
from pypdf import PdfReader

from lesions.models import BodySite, Examination, Explanation, ModelVersion
from lesions.services import triage_decide
from tests.browser.conftest import ARTIFACTS, login, shot
from tests.factories import (
    AlertFactory,
    ExaminationFactory,
    LesionFactory,
    PredictionFactory,
    ReferralCentreFactory,
    png_bytes,
)

pytestmark = [pytest.mark.browser, pytest.mark.django_db(transaction=True)]

SHA = "cd" * 32


@pytest.fixture
def report_case(patient, clinician):
    ModelVersion.objects.create(
        name="dermatrack-lesion-classifier",
        version="2.0.0",
        sha256=SHA,
        alert_threshold=0.2,
        validation={"n": 1280, "balanced_accuracy": 0.689, "malignant_auc": 0.883, "melanoma_sensitivity": 0.927},
    )
    lesion = LesionFactory(patient=patient, body_site=BodySite.LEFT_FOREARM, label="inner side")
    exam = ExaminationFactory(
        lesion=lesion,
        image=ContentFile(png_bytes(size=(600, 450)), name="a.png"),
        status=Examination.Status.DONE,
        notes="New since spring.",
    )
    prediction = PredictionFactory(
        examination=exam,
        malignancy_risk="0.740000",
        model_name="dermatrack-lesion-classifier",
        model_version="2.0.0",
        model_sha256=SHA,
    )
    heat = np.linspace(0, 255, 300 * 400, dtype=np.uint8).reshape(300, 400)
    layer = io.BytesIO()
    Image.fromarray(np.dstack([np.full_like(heat, 230), heat // 2, np.zeros_like(heat), heat]), "RGBA").save(
        layer, format="PNG"
    )
    cam = Explanation(examination=exam, kind="cam", target="risk", model_sha256=SHA, status="done")
    cam.image.save("overlay", ContentFile(layer.getvalue()), save=False)
    cam.save()
    alert = AlertFactory(prediction=prediction)
    triage_decide(actor=clinician, alert=alert, decision="refer", reason="Atypical network")
    return exam


def _pdf_text(data: bytes, name: str) -> str:
    assert data.startswith(b"%PDF-")
    (ARTIFACTS / "reports").mkdir(parents=True, exist_ok=True)
    (ARTIFACTS / "reports" / f"browser-{name}.pdf").write_bytes(data)
    return " ".join("\n".join(p.extract_text() for p in PdfReader(io.BytesIO(data)).pages).split())


def test_dermatologist_opens_the_report_and_writes_a_referral_letter(new_page, clinician, report_case):
    centre = ReferralCentreFactory(name="Vienna Skin Cancer Centre")
    page = new_page(accept_downloads=True)
    login(page, clinician.username)
    page.goto(reverse("lesions:examination-detail", kwargs={"examination_uuid": report_case.uuid}))
    shot(page, "reports-examination-page-links")
    # Inline: Chromium opens it in its PDF viewer.
    with page.expect_response(lambda r: r.url.endswith("/report/")) as report:
        page.get_by_role("link", name="Examination report (PDF)").click()
    response = report.value
    assert response.status == 200
    assert response.headers["content-type"] == "application/pdf"
    assert response.headers["content-disposition"] == (
        f'inline; filename="examination-report-{report_case.uuid.hex[:8]}.pdf"'
    )
    # The viewer keeps the bytes to itself: the same request again, with the page's session.
    text = _pdf_text(page.context.request.get(response.url).body(), "examination-report")
    assert "Estimated malignancy risk: 74 %" in text
    assert "dermatrack-lesion-classifier v2.0.0" in text
    assert "triage aid, not a diagnosis" in text
    assert "Left forearm" in text
    assert "Refer" in text

    page.go_back()
    page.get_by_role("link", name="Referral letter").click()
    page.get_by_label("Referral centre").select_option(label=centre.name)
    page.get_by_label("Reason for referral").fill("Rapid growth, atypical network")
    shot(page, "reports-referral-letter-form")
    with page.expect_download() as letter:
        page.get_by_role("button", name="Make the letter (PDF)").click()
    assert letter.value.suggested_filename == f"referral-letter-{report_case.uuid.hex[:8]}.pdf"
    text = _pdf_text(Path(letter.value.path()).read_bytes(), "referral-letter")
    assert "Vienna Skin Cancer Centre" in text
    assert "Rapid growth, atypical network" in text
    assert not page.js_errors, page.js_errors


def test_patient_downloads_their_summary(new_page, patient, report_case):
    page = new_page(accept_downloads=True)
    login(page, patient.account.username)
    page.goto(reverse("lesions:lesion-detail", kwargs={"lesion_uuid": report_case.lesion.uuid}))
    shot(page, "reports-patient-lesion-page-summary-link")
    with page.expect_download() as summary:
        page.get_by_role("link", name="Download a summary (PDF)").click()
    assert summary.value.suggested_filename == f"summary-{report_case.lesion.uuid.hex[:8]}.pdf"
    text = _pdf_text(Path(summary.value.path()).read_bytes(), "patient-summary")
    assert "Your spot: Left forearm" in text
    assert "referred you to a specialist centre" in text
    assert "74 %" not in text
    assert not page.js_errors, page.js_errors
