"""PDF reports (issue 12 item 6): the examination report, the referral letter and the patient's
plain-language summary. Each PDF is text-extracted with pypdf and checked for what it must say."""

from __future__ import annotations

import io
from pathlib import Path

import numpy as np
import pytest
from django.core.files.base import ContentFile
from django.urls import reverse
from PIL import Image
from pypdf import PdfReader

from lesions import reports
from lesions.models import Explanation, ModelVersion
from lesions.services import triage_decide
from portal.models import AuditEntry
from tests.factories import AlertFactory, PredictionFactory, ReferralCentreFactory, png_bytes

SHA = "ab" * 32
VALIDATION = {"n": 1280, "balanced_accuracy": 0.6887, "malignant_auc": 0.8831, "melanoma_sensitivity": 0.927}


@pytest.fixture(autouse=True)
def _model_info(monkeypatch):
    monkeypatch.setattr(
        "lesions.risk.model_info",
        lambda: {"name": "dermatrack-lesion-classifier", "version": "2.0.0", "alert_threshold": 0.2},
    )


def _heatmap_png(size=(120, 90)) -> bytes:
    """An RGBA layer like inference.explanations.heatmap_rgba makes: red, alpha following the heat."""
    heat = np.linspace(0, 255, size[0] * size[1], dtype=np.uint8).reshape(size[1], size[0])
    rgba = np.dstack([np.full_like(heat, 230), np.zeros_like(heat), np.zeros_like(heat), heat])
    out = io.BytesIO()
    Image.fromarray(rgba, "RGBA").save(out, format="PNG")
    return out.getvalue()


@pytest.fixture
def exam(lesion):
    ModelVersion.objects.create(
        name="dermatrack-lesion-classifier", version="2.0.0", sha256=SHA, alert_threshold=0.2, validation=VALIDATION
    )
    prediction = PredictionFactory(
        examination__lesion=lesion,
        examination__notes="Irregular border at 2 o'clock.",
        model_name="dermatrack-lesion-classifier",
        model_version="2.0.0",
        model_sha256=SHA,
        malignancy_risk="0.634000",
    )
    exam = prediction.examination
    cam = Explanation(examination=exam, kind="cam", target="risk", model_sha256=SHA, status="done")
    cam.image.save("overlay", ContentFile(_heatmap_png()), save=False)
    cam.save()
    return exam


ARTIFACTS = Path(__file__).resolve().parents[2] / "test-artifacts" / "reports"


def _text(response, save_as: str = "") -> str:
    """The PDF's text; `save_as` also keeps the PDF in test-artifacts/reports/ for a person to look at."""
    data = b"".join(response.streaming_content) if response.streaming else response.content
    assert data.startswith(b"%PDF-")
    if save_as:
        ARTIFACTS.mkdir(parents=True, exist_ok=True)
        (ARTIFACTS / f"{save_as}.pdf").write_bytes(data)
    reader = PdfReader(io.BytesIO(data))
    return "\n".join(page.extract_text() for page in reader.pages)


def _images(pdf: bytes) -> list:
    """The distinct images of a PDF (WeasyPrint's pages share one resource dictionary)."""
    seen: dict[str, object] = {}
    for page in PdfReader(io.BytesIO(pdf)).pages:
        for image in page.images:
            seen.setdefault(image.name, image)
    return list(seen.values())


def _flat(text: str) -> str:
    return " ".join(text.split())


def _report_url(exam) -> str:
    return reverse("lesions:examination-report", kwargs={"examination_uuid": exam.uuid})


def test_examination_report_is_a_pdf_with_risk_model_site_notes_and_the_triage_aid_statement(
    clinician_client, clinician, exam, patient
):
    response = clinician_client.get(_report_url(exam))
    assert response.status_code == 200
    assert response["Content-Type"] == "application/pdf"
    assert response["Cache-Control"] == "private, no-store"
    assert response["Content-Disposition"] == f'inline; filename="examination-report-{exam.uuid.hex[:8]}.pdf"'
    text = _flat(_text(response))
    assert "Estimated malignancy risk: 63 %" in text  # widthratio, as on the examination page
    assert "dermatrack-lesion-classifier v2.0.0" in text
    assert "balanced accuracy 0.69" in text
    assert "malignant-vs-benign AUC 0.883" in text
    assert "triage aid, not a diagnosis" in text
    assert "Upper back" in text
    assert "below left scapula" in text
    assert "Irregular border at 2 o'clock." in text
    assert patient.full_name in text
    assert patient.medical_record_number in text
    assert exam.captured_at.strftime("%Y-%m-%d") in text
    assert "Heatmap not available" not in text
    assert "No alert was raised" in text


def test_examination_report_embeds_the_image_and_its_heatmap(clinician, exam):
    pdf, _ = reports.examination_report_for(user=clinician, examination_uuid=exam.uuid)
    images = _images(pdf)
    assert len(images) == 2  # the photograph, and the photograph with the heatmap over it
    photo, heat = (np.asarray(image.image.convert("RGB"), dtype=float) for image in images)
    assert photo.shape == heat.shape
    assert heat[..., 0].mean() > photo[..., 0].mean()  # the red heatmap shows over the photograph


def test_examination_report_names_the_triage_decision(clinician_client, clinician, exam):
    alert = AlertFactory(prediction=exam.predictions.get())
    triage_decide(actor=clinician, alert=alert, decision="biopsy", reason="Asymmetric, new since last visit")
    text = _flat(_text(clinician_client.get(_report_url(exam)), save_as="examination-report-with-decision"))
    assert "Biopsy / excise" in text
    assert "Asymmetric, new since last visit" in text


def test_open_alert_says_it_awaits_triage(clinician_client, exam):
    AlertFactory(prediction=exam.predictions.get())
    assert "awaiting a dermatologist's triage decision" in _flat(_text(clinician_client.get(_report_url(exam))))


def test_report_without_a_heatmap_still_renders_and_says_so(clinician_client, exam):
    Explanation.objects.filter(examination=exam).delete()
    text = _flat(_text(clinician_client.get(_report_url(exam)), save_as="examination-report-no-heatmap"))
    assert "Heatmap not available: no heatmap was computed for this result." in text
    assert "Estimated malignancy risk: 63 %" in text


def test_report_with_an_unreadable_heatmap_file_says_so(clinician_client, exam):
    cam = Explanation.objects.get(examination=exam)
    cam.image.storage.delete(cam.image.name)
    assert "Heatmap not available: the heatmap image could not be read." in _flat(
        _text(clinician_client.get(_report_url(exam)))
    )


def test_report_of_an_examination_not_yet_analysed(clinician_client, lesion):
    from tests.factories import ExaminationFactory

    exam = ExaminationFactory(lesion=lesion)
    text = _flat(_text(clinician_client.get(_report_url(exam))))
    assert "no result yet" in text
    assert "triage aid, not a diagnosis" in text


def test_opening_a_report_is_an_audited_read(clinician_client, clinician, exam, patient):
    clinician_client.get(_report_url(exam))
    entry = AuditEntry.objects.get(action="report.examination")
    assert entry.actor == clinician
    assert entry.target_uuid == str(exam.uuid)
    assert entry.patient_uuid == str(patient.uuid)
    assert not AuditEntry.objects.filter(action="examination.view").exists()  # one entry: the report


def test_a_user_of_another_clinic_gets_404_and_no_report(outside_client, exam):
    assert outside_client.get(_report_url(exam)).status_code == 404
    letter = reverse("lesions:referral-letter", kwargs={"examination_uuid": exam.uuid})
    assert outside_client.post(letter, {"recipient": "Dr X", "reason": "r"}).status_code == 404
    summary = reverse("lesions:patient-summary", kwargs={"lesion_uuid": exam.lesion.uuid})
    assert outside_client.get(summary).status_code == 404
    assert not AuditEntry.objects.filter(action__startswith="report.").exists()


def test_a_patient_gets_404_on_the_clinician_report_and_referral_letter(patient_client, exam):
    assert patient_client.get(_report_url(exam)).status_code == 404
    letter = reverse("lesions:referral-letter", kwargs={"examination_uuid": exam.uuid})
    assert patient_client.get(letter).status_code == 404
    assert patient_client.post(letter, {"recipient": "Dr X", "reason": "r"}).status_code == 404


# --- The patient's summary ----------------------------------------------------------------


def _summary_url(lesion) -> str:
    return reverse("lesions:patient-summary", kwargs={"lesion_uuid": lesion.uuid})


def test_patient_downloads_their_own_plain_language_summary(patient_client, patient_user, clinician, exam, patient):
    alert = AlertFactory(prediction=exam.predictions.get())
    triage_decide(actor=clinician, alert=alert, decision="follow_up", reason="Watch it", follow_up_months=3)
    response = patient_client.get(_summary_url(exam.lesion))
    assert response.status_code == 200
    assert response["Content-Disposition"] == f'attachment; filename="summary-{exam.lesion.uuid.hex[:8]}.pdf"'
    assert response["Cache-Control"] == "private, no-store"
    text = _flat(_text(response, save_as="patient-summary"))
    assert "Your spot: Upper back" in text
    assert "would like to see this spot again in 3 months" in text  # guidance.decision_text
    assert "triage aid, not a diagnosis" in text
    assert "ABCDE" in text
    # Plain language only: no model output, no heatmap, no clinician-only reason.
    assert "63 %" not in text
    assert "0.63" not in text
    assert "dermatrack-lesion-classifier" not in text
    assert "heatmap" not in text.lower()
    assert "Watch it" not in text
    images = _images(response.content)
    assert len(images) == 1  # their photograph, not the heatmap
    entry = AuditEntry.objects.get(action="report.patient_summary")
    assert entry.actor == patient_user
    assert entry.patient_uuid == str(patient.uuid)


def test_summary_before_any_decision_gives_the_guidance(patient_client, exam):
    text = _flat(_text(patient_client.get(_summary_url(exam.lesion))))
    assert "The computer check found features that a dermatologist should review promptly." in text


def test_a_patient_gets_404_on_another_patients_summary(other_patient_client, exam):
    assert other_patient_client.get(_summary_url(exam.lesion)).status_code == 404
    assert not AuditEntry.objects.filter(action="report.patient_summary").exists()


def test_patient_page_links_to_the_summary_and_examination_page_to_the_reports(
    patient_client, clinician_client, staff_client, exam
):
    assert (
        _summary_url(exam.lesion)
        in patient_client.get(
            reverse("lesions:lesion-detail", kwargs={"lesion_uuid": exam.lesion.uuid})
        ).content.decode()
    )
    detail = reverse("lesions:examination-detail", kwargs={"examination_uuid": exam.uuid})
    letter = reverse("lesions:referral-letter", kwargs={"examination_uuid": exam.uuid})
    body = clinician_client.get(detail).content.decode()
    assert _report_url(exam) in body
    assert letter in body
    staff_body = staff_client.get(detail).content.decode()
    assert _report_url(exam) in staff_body
    assert letter not in staff_body


# --- The referral letter --------------------------------------------------------------------


def _letter_url(exam) -> str:
    return reverse("lesions:referral-letter", kwargs={"examination_uuid": exam.uuid})


def test_referral_letter_to_a_centre_names_patient_lesion_reason_decision_and_signatory(
    clinician_client, clinician, exam, patient
):
    clinician.first_name, clinician.last_name = "Wilhelmina", "Drake"
    clinician.save()
    centre = ReferralCentreFactory(name="Vienna Skin Cancer Centre")
    alert = AlertFactory(prediction=exam.predictions.get())
    triage_decide(actor=clinician, alert=alert, decision="refer", reason="Atypical network, needs excision")
    assert clinician_client.get(_letter_url(exam)).status_code == 200
    response = clinician_client.post(
        _letter_url(exam), {"centre": str(centre.uuid), "reason": "Rapid growth over three months"}
    )
    assert response.status_code == 200
    assert response["Content-Disposition"] == f'attachment; filename="referral-letter-{exam.uuid.hex[:8]}.pdf"'
    text = _flat(_text(response, save_as="referral-letter-to-a-centre"))
    for expected in (
        "Vienna Skin Cancer Centre",
        "Demogasse 1",
        patient.full_name,
        patient.medical_record_number,
        "1970-05-17",
        "Upper back",
        "Rapid growth over three months",
        "Refer",
        "Atypical network, needs excision",
        "Wilhelmina Drake",
        "Dermatologist, Northside Dermatology",
    ):
        assert expected in text, expected
    assert AuditEntry.objects.filter(action="report.referral", target_uuid=str(exam.uuid)).count() == 1


def test_referral_letter_to_a_typed_in_recipient(clinician_client, exam):
    response = clinician_client.post(
        _letter_url(exam), {"recipient": "Dr Ada Example\nGartenweg 3\n1010 Vienna", "reason": "Second opinion"}
    )
    text = _flat(_text(response))
    assert "Dr Ada Example" in text
    assert "Gartenweg 3" in text
    assert "No triage decision recorded" in text


@pytest.mark.parametrize(
    ("data", "error"),
    [
        ({"reason": "x"}, "Choose a referral centre or type in a recipient."),
        ({"recipient": "Dr X"}, "This field is required."),
    ],
)
def test_referral_letter_form_errors(clinician_client, exam, data, error):
    response = clinician_client.post(_letter_url(exam), data)
    assert response.status_code == 400
    assert error in response.content.decode()
    assert not AuditEntry.objects.filter(action="report.referral").exists()


def test_staff_may_not_write_a_referral_letter(staff_client, exam):
    assert staff_client.get(_letter_url(exam)).status_code == 403
    assert staff_client.post(_letter_url(exam), {"recipient": "Dr X", "reason": "r"}).status_code == 403


# --- Rendering ---------------------------------------------------------------------------


def test_the_renderer_fetches_nothing_but_data_uris(clinician):
    fetcher = reports.LocalOnlyFetcher()
    with pytest.raises(ValueError, match="disallowed protocol"):
        fetcher.fetch("https://example.org/font.woff2")
    with pytest.raises(ValueError, match="disallowed protocol"):
        fetcher.fetch("file:///etc/passwd")
    data = "data:image/png;base64," + __import__("base64").b64encode(png_bytes()).decode()
    assert fetcher.fetch(data).read().startswith(b"\x89PNG")


def test_a_remote_url_in_a_template_stops_the_render(settings, tmp_path):
    from weasyprint.urls import FatalURLFetchingError

    (tmp_path / "remote.html").write_text('<img src="https://example.org/x.png">')
    settings.TEMPLATES = [{**settings.TEMPLATES[0], "DIRS": [tmp_path, *settings.TEMPLATES[0]["DIRS"]]}]
    with pytest.raises(FatalURLFetchingError):
        reports.render_pdf("remote.html", {})


def test_reports_use_an_installed_debian_font(clinician, exam):
    pdf, _ = reports.examination_report_for(user=clinician, examination_uuid=exam.uuid)
    reader = PdfReader(io.BytesIO(pdf))
    fonts = {str(font["/BaseFont"]) for page in reader.pages for font in page["/Resources"]["/Font"].values()}
    assert fonts
    assert all("DejaVu-Sans" in name for name in fonts), fonts


def test_summary_of_a_lesion_without_images(patient_client, lesion):
    text = _flat(_text(patient_client.get(_summary_url(lesion))))
    assert "No images of this spot yet." in text
    assert "triage aid, not a diagnosis" in text


def test_markup_in_notes_is_printed_as_text_and_fetches_nothing(clinician_client, exam):
    exam.notes = '<img src="https://example.org/track.png"> <b>bold</b>'
    exam.save()
    text = _flat(_text(clinician_client.get(_report_url(exam))))
    assert '<img src="https://example.org/track.png">' in text  # escaped, so never a request


def test_a_camera_size_image_is_printed_at_report_size(clinician, exam):
    exam.image.save("x.png", ContentFile(png_bytes(size=(3000, 2250))), save=True)
    pdf, _ = reports.examination_report_for(user=clinician, examination_uuid=exam.uuid)
    sizes = {image.image.size for image in _images(pdf)}
    assert sizes == {(reports.REPORT_IMAGE_LONG_SIDE, 480)}


def test_the_referral_letter_is_one_audit_entry(clinician_client, exam):
    clinician_client.get(_letter_url(exam))
    assert AuditEntry.objects.filter(action="examination.view").count() == 1  # the form
    clinician_client.post(_letter_url(exam), {"recipient": "Dr X", "reason": "r"})
    assert AuditEntry.objects.filter(action="report.referral").count() == 1
    assert AuditEntry.objects.filter(action="examination.view").count() == 1


def test_loading_the_reports_module_keeps_truncated_uploads_refused():
    """WeasyPrint switches Pillow's LOAD_TRUNCATED_IMAGES on when imported; upload validation
    (lesions.imaging) must still refuse a truncated JPEG in a process that renders reports."""
    import io

    from django.core.exceptions import ValidationError
    from PIL import ImageFile

    import lesions.reports  # noqa: F401 - the import is what is tested
    from lesions.imaging import validate_and_normalise
    from tests.factories import jpeg_bytes

    assert ImageFile.LOAD_TRUNCATED_IMAGES is False
    data = jpeg_bytes(size=(400, 300))
    with pytest.raises(ValidationError):
        validate_and_normalise(io.BytesIO(data[: len(data) // 2]), size=len(data) // 2)
