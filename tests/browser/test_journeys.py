"""Each role's daily job, end to end in headless Chromium: staff register a patient, add a
lesion on the body map and upload images; a dermatologist takes an alert, compares and
decides; a patient logs in, reads their history and guidance and finds the nearest clinic,
and cannot open another patient's pages. Screenshots: test-artifacts/*.png."""

from __future__ import annotations

import csv
import datetime as dt
import io
import tarfile
from decimal import Decimal
from pathlib import Path

import pytest
from django.core.files.base import ContentFile
from django.urls import reverse
from django.utils import timezone
from PIL import Image

from lesions.models import Alert, BodySite, Examination, Explanation, Lesion, TriageDecision
from patients.models import Patient
from tests.browser.conftest import PHONE, fits_phone_width, images_loaded, login, shot
from tests.conftest import DATA_DIR, require_model
from tests.factories import (
    AlertFactory,
    ExaminationFactory,
    LesionFactory,
    PredictionFactory,
    ReferralCentreFactory,
    png_bytes,
)

pytestmark = [pytest.mark.browser, pytest.mark.django_db(transaction=True)]


def _dermoscopic_pngs(n: int) -> list[bytes]:
    """Real HAM10000 images (as PNG) when the shared data set is there, else synthetic ones."""
    out: list[bytes] = []
    if (DATA_DIR / "images.tar").exists():
        with open(DATA_DIR / "metadata.csv") as fh:
            wanted = {r["image_id"] for r in csv.DictReader(fh) if r["split"] == "val" and r["dx"] in ("mel", "nv")}
        with tarfile.open(DATA_DIR / "images.tar") as tar:
            for member in tar:
                if Path(member.name).stem in wanted:
                    buffer = io.BytesIO()
                    Image.open(tar.extractfile(member)).convert("RGB").save(buffer, format="PNG")
                    out.append(buffer.getvalue())
                    if len(out) == n:
                        break
    while len(out) < n:
        out.append(png_bytes(size=(600, 450), seed=len(out)))
    return out


def _model_or_skip():
    require_model()


@pytest.fixture
def run_tasks_inline(monkeypatch):
    """Classification runs in the request thread as soon as the upload commits (the real task
    body, no broker); explanations are limited to the fast CAM heatmap."""
    from lesions import explanation_services
    from lesions.tasks import classify_examination_task, explain_examination_task

    monkeypatch.setattr(classify_examination_task, "delay", lambda exam_id: classify_examination_task(exam_id))
    monkeypatch.setattr(
        explain_examination_task,
        "delay",
        lambda exam_id, **kw: explanation_services.explanation_compute(examination_id=exam_id, kind="cam"),
    )


# --- clinic staff ---------------------------------------------------------------------


def test_staff_journey_register_lesion_upload_result(new_page, clinic_staff, run_tasks_inline, tmp_path):
    _model_or_skip()
    page = new_page()
    login(page, clinic_staff.username)
    page.get_by_role("link", name="Patients", exact=True).click()
    page.get_by_role("link", name="Register a patient").click()
    form = {
        "Given name": "Ada",
        "Family name": "Lovelace",
        "Date of birth": "1975-12-10",
        "Medical record number": "BR-4711",
    }
    for label, value in form.items():
        page.get_by_label(label).fill(value)
    page.get_by_label("The patient consents").check()
    shot(page, "staff-01-register-form")
    page.get_by_role("button", name="Register").click()
    page.wait_for_url("**/patients/*/")
    assert page.get_by_role("heading", name="Ada Lovelace").is_visible()
    patient_url = page.url

    # The same record number again: the blind index finds the duplicate.
    page.goto("/patients/new/")
    for label, value in {**form, "Given name": "Ada B."}.items():
        page.get_by_label(label).fill(value)
    page.get_by_label("The patient consents").check()
    page.get_by_role("button", name="Register").click()
    assert page.get_by_text("already registered here").is_visible()
    shot(page, "staff-02-duplicate-mrn")
    assert Patient.objects.count() == 1

    # Add a lesion by choosing the left forearm on the body map (keyboard: focus + Enter).
    page.goto(patient_url)
    site_link = page.locator('a.site-link[href="?site=left_forearm#add-lesion"]').first
    site_link.focus()
    page.keyboard.press("Enter")
    page.wait_for_url("**?site=left_forearm*")
    assert page.get_by_label("Body site").input_value() == "left_forearm"
    page.get_by_label("Label").fill("dorsal, 3 cm below elbow")
    shot(page, "staff-03-body-map-site-chosen")
    page.get_by_role("button", name="Add lesion").click()
    page.wait_for_url("**/lesions/*/")
    lesion = Lesion.objects.get()
    assert lesion.body_site == BodySite.LEFT_FOREARM

    # Upload two images at once; analysis runs and the page shows each result.
    files = []
    for n, data in enumerate(_dermoscopic_pngs(2)):
        path = tmp_path / f"image{n}.png"
        path.write_bytes(data)
        files.append(str(path))
    page.get_by_label("Image(s)").set_input_files(files)
    page.get_by_label("Measured diameter (mm)").fill("5.5")
    page.get_by_role("button", name="Upload").click()
    page.wait_for_url("**/lesions/*/#examinations")
    assert page.get_by_text("2 images uploaded").is_visible()
    exams = list(Examination.objects.filter(lesion=lesion))
    assert len(exams) == 2
    assert {e.status for e in exams} == {Examination.Status.DONE}
    items = page.locator(".timeline-item")
    assert items.count() == 2
    assert page.locator(".timeline-item .status-done").count() == 2
    assert page.locator(".timeline-item .risk").count() == 2
    assert all(images_loaded(page, ".timeline-item img.thumb"))
    shot(page, "staff-04-lesion-results")
    assert page.js_errors == []


def test_staff_follow_up_list_on_a_phone(new_page, clinic_staff, patient):
    LesionFactory(patient=patient, next_follow_up=timezone.localdate() - dt.timedelta(days=4))
    LesionFactory(patient=patient, body_site=BodySite.FACE, next_follow_up=timezone.localdate() + dt.timedelta(days=2))
    page = new_page(viewport=PHONE)
    login(page, clinic_staff.username)
    page.goto("/follow-ups/")
    assert page.get_by_role("link", name="Overdue 1").is_visible()  # the filter, with its count
    assert page.get_by_text("Quackenbush, Zelda").first.is_visible()
    assert fits_phone_width(page)
    shot(page, "staff-05-follow-ups-phone")


# --- dermatologist --------------------------------------------------------------------


@pytest.fixture
def alert_case(patient):
    """A lesion with an older low-risk examination and a new high-risk one with an open alert;
    CAM heatmaps for both when the classifier is available."""
    from inference.classifier import default_metadata_path

    sha = "0" * 64
    have_model = default_metadata_path().exists()
    if have_model:
        from lesions.risk import classifier as get_classifier

        sha = get_classifier().sha256
    lesion = LesionFactory(patient=patient, body_site=BodySite.UPPER_BACK, label="below left scapula")
    older_png, newer_png = _dermoscopic_pngs(2)
    older = ExaminationFactory(
        lesion=lesion,
        image=ContentFile(older_png, name="a.png"),
        captured_at=timezone.now() - dt.timedelta(days=120),
        diameter_mm=Decimal("4.0"),
        status=Examination.Status.DONE,
    )
    newer = ExaminationFactory(
        lesion=lesion,
        image=ContentFile(newer_png, name="b.png"),
        captured_at=timezone.now() - dt.timedelta(days=1),
        diameter_mm=Decimal("5.5"),
        status=Examination.Status.DONE,
    )
    PredictionFactory(examination=older, malignancy_risk="0.180000", model_sha256=sha)
    alert = AlertFactory(prediction=PredictionFactory(examination=newer, malignancy_risk="0.740000", model_sha256=sha))
    if have_model:
        from lesions import explanation_services

        for exam in (older, newer):
            explanation_services.explanation_compute(examination_id=exam.pk, kind="cam")
    return alert


def test_dermatologist_journey_alert_compare_decide(new_page, clinician, alert_case):
    page = new_page()
    login(page, clinician.username)
    page.goto("/triage/")
    row = page.locator("tr.alert-row").first
    assert "Quackenbush, Zelda" in row.inner_text()
    assert "74 %" in row.inner_text()
    assert all(images_loaded(page, "tr.alert-row img.thumb"))
    shot(page, "dermatologist-01-queue")

    row.get_by_role("link", name="Review & decide").click()
    page.wait_for_url("**/alerts/*/")
    shot(page, "dermatologist-02-alert")
    page.get_by_role("link", name="Compare with earlier examinations").click()
    page.wait_for_url("**/compare/**")
    assert page.locator(".compare figure").count() == 2
    assert all(images_loaded(page, ".compare img"))
    assert page.get_by_text("up 56 points").is_visible()
    assert page.get_by_text("+1.5 mm").is_visible()
    shot(page, "dermatologist-03-compare")

    page.get_by_role("link", name="Decide on the open alert").click()
    page.wait_for_url("**/alerts/*/")
    # Keyboard and labels only: the form is usable without a mouse.
    page.get_by_label("Follow up", exact=True).focus()
    page.keyboard.press("Space")
    page.get_by_label("Follow up in (months)").fill("3")
    page.get_by_label("Reason").fill("Regular network, mild growth; recheck with dermoscopy")
    shot(page, "dermatologist-04-decision")
    page.get_by_label("Reason").focus()
    page.keyboard.press("Tab")
    page.keyboard.press("Enter")
    page.wait_for_url("**/triage/")
    assert page.get_by_text("Decision recorded").is_visible()
    assert page.locator("tr.alert-row").count() == 0
    shot(page, "dermatologist-05-queue-after")
    decision = TriageDecision.objects.get()
    assert decision.decision == "follow_up"
    assert decision.decided_by == clinician
    assert Alert.objects.get().status == Alert.Status.TRIAGED
    lesion = Lesion.objects.get(pk=alert_case.lesion_id)
    assert lesion.next_follow_up is not None

    page.goto(reverse("lesions:lesion-detail", kwargs={"lesion_uuid": lesion.uuid}))
    assert page.locator("svg.chart:visible circle").count() == 2
    assert "alert threshold" in page.locator("svg.chart:visible .threshold text").text_content()
    shot(page, "dermatologist-06-lesion-progress")
    page.goto(reverse("patients:patient-detail", kwargs={"patient_uuid": lesion.patient.uuid}))
    assert page.locator("svg.body-map circle.marker").count() == 1
    shot(page, "dermatologist-07-patient-body-map")
    assert page.js_errors == []


def test_triage_queue_on_a_phone(new_page, clinician, alert_case):
    page = new_page(viewport=PHONE)
    login(page, clinician.username)
    page.goto("/triage/")
    assert page.locator("tr.alert-row").count() == 1
    assert fits_phone_width(page)
    shot(page, "dermatologist-08-queue-phone")


# --- patient --------------------------------------------------------------------------


@pytest.fixture
def centres(db):
    return [
        ReferralCentreFactory(name="Vienna Skin Clinic", city="Vienna", postcode="1090"),
        ReferralCentreFactory(
            name="Graz Cancer Centre",
            kind="cancer_centre",
            city="Graz",
            postcode="8036",
            latitude=Decimal("47.08100"),
            longitude=Decimal("15.46900"),
            phone="+43 316 555 014",
        ),
    ]


def test_patient_journey_history_guidance_nearest_clinic(new_page, patient, clinician, alert_case, centres):
    from lesions.services import triage_decide

    triage_decide(actor=clinician, alert=alert_case, decision="biopsy", reason="Dr-only: atypical network")
    page = new_page(geolocation={"latitude": 47.07, "longitude": 15.44}, permissions=["geolocation"])
    login(page, patient.account.username)
    assert page.get_by_role("heading", name="Your skin check record").is_visible()
    assert page.get_by_text("recommends removing this spot").is_visible()
    body = page.content()
    assert "Dr-only" not in body
    assert "74 %" not in body
    shot(page, "patient-01-my-record")

    page.get_by_role("link", name="See all images and results for this spot").click()
    page.wait_for_url("**/lesions/*/")
    assert page.locator(".timeline-item").count() == 2
    assert all(images_loaded(page, ".timeline-item img.thumb"))
    page.get_by_text("What the computer check measured").first.click()  # opens the framed score
    assert page.get_by_text("out of 100").first.is_visible()
    shot(page, "patient-02-history")

    page.get_by_role("link", name="More about what this means").click()
    page.wait_for_url("**/guidance/**")
    assert page.get_by_role("heading", name="Signs to watch: the ABCDE rule").is_visible()
    shot(page, "patient-03-guidance")

    page.get_by_role("link", name="Find a clinic or cancer centre near you").click()
    page.get_by_label("Postcode or city").fill("Wien")
    page.get_by_role("button", name="Find the nearest").click()
    assert page.locator(".centre h3").first.inner_text().startswith("Vienna Skin Clinic")
    shot(page, "patient-04-nearest-by-city")
    with page.expect_navigation():
        page.get_by_role("button", name="Use my location").click()
    assert page.get_by_role("heading", name="Nearest to your location").is_visible()
    assert page.locator(".centre h3").first.inner_text().startswith("Graz Cancer Centre")
    assert "km" in page.locator(".centre .distance").first.inner_text()
    shot(page, "patient-05-nearest-by-location")
    assert page.js_errors == []

    phone = new_page(viewport=PHONE)
    login(phone, patient.account.username)
    assert fits_phone_width(phone)
    shot(phone, "patient-06-my-record-phone")


def test_patient_cannot_open_another_patients_pages(new_page, patient, other_patient, alert_case):
    """Logged in as the other patient: every page of Zelda's record is a 404 that names nobody."""
    lesion = Lesion.objects.get(pk=alert_case.lesion_id)
    exam = alert_case.prediction.examination
    urls = [
        reverse("patients:patient-detail", kwargs={"patient_uuid": patient.uuid}),
        reverse("lesions:lesion-detail", kwargs={"lesion_uuid": lesion.uuid}),
        reverse("lesions:lesion-compare", kwargs={"lesion_uuid": lesion.uuid}),
        reverse("lesions:examination-detail", kwargs={"examination_uuid": exam.uuid}),
        reverse("lesions:examination-image", kwargs={"examination_uuid": exam.uuid}),
        reverse("lesions:examination-thumbnail", kwargs={"examination_uuid": exam.uuid}),
        reverse("lesions:alert-triage", kwargs={"alert_uuid": alert_case.uuid}),
        f"/api/patients/{patient.uuid}/",
        f"/api/lesions/{lesion.uuid}/examinations/",
    ]
    page = new_page()
    login(page, other_patient.account.username)
    for url in urls:
        response = page.goto(url)
        assert response.status == 404, url
        text = page.content()
        assert "Quackenbush" not in text
        assert "Zelda" not in text
    shot(page, "patient-07-other-patients-page-404")
    page.goto("/")
    assert "Oddington" in page.content() or page.get_by_role("heading", name="Your skin check record").is_visible()


def test_heatmap_overlay_lies_exactly_over_the_image(new_page, clinician, alert_case):
    """Reproduces issue #10's finding: the overlays ran 7 px past the photo's bottom edge (an
    inline image left a descender gap in the viewer the layers are sized to)."""
    if not Explanation.objects.filter(status=Explanation.Status.DONE).exists():
        pytest.skip("no committed model: no heatmap to lay over the image")
    page = new_page()
    login(page, clinician.username)
    exam = alert_case.prediction.examination
    page.goto(reverse("lesions:examination-detail", kwargs={"examination_uuid": exam.uuid}))
    page.locator('input[name="layer"]:not([value="none"]):not([disabled])').first.check()
    base = page.locator("#viewer img.base").bounding_box()
    layer = page.locator("#viewer img.layer:not([hidden])").first.bounding_box()
    assert base is not None
    assert layer is not None
    for key in ("x", "y", "width", "height"):
        assert abs(base[key] - layer[key]) < 0.5, (key, base, layer)
    assert page.js_errors == []
