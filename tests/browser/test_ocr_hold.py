"""Issue 13 in the browser: staff upload an image with another patient's record number on a
printed label; the real OCR (RapidOCR) reads it in the worker's task body, the examination is
held ("this image may belong to another patient", no result, no alert) until staff confirm.
Screenshots: test-artifacts/ocr-hold-*.png."""

from __future__ import annotations

import csv
import io
import tarfile
from pathlib import Path

import pytest
from PIL import Image

from inference.ocr_testset import label_image
from lesions.models import Alert, Examination, Hold, OcrStatus
from tests.browser.conftest import login, shot
from tests.conftest import DATA_DIR, require_model, skip_or_fail
from tests.factories import LesionFactory, PatientFactory, lesion_jpeg_bytes

pytestmark = [pytest.mark.browser, pytest.mark.django_db(transaction=True)]


def _lesion_photo() -> Image.Image:
    """A real HAM10000 validation image when the shared data set is there, else a synthetic one."""
    if (DATA_DIR / "images.tar").exists():
        with open(DATA_DIR / "metadata.csv") as fh:
            wanted = {r["image_id"] for r in csv.DictReader(fh) if r["split"] == "val" and r["dx"] == "nv"}
        with tarfile.open(DATA_DIR / "images.tar") as tar:
            for member in tar:
                if Path(member.name).stem in wanted:
                    fh = tar.extractfile(member)
                    assert fh is not None
                    return Image.open(fh).convert("RGB")
    return Image.open(io.BytesIO(lesion_jpeg_bytes(size=(200, 150)))).convert("RGB")


@pytest.fixture
def run_tasks_inline(monkeypatch):
    """The classification task body (OCR first) runs as soon as the upload commits; no explanations."""
    from lesions.tasks import classify_examination_task, explain_examination_task

    monkeypatch.setattr(classify_examination_task, "delay", lambda exam_id: classify_examination_task(exam_id))
    monkeypatch.setattr(explain_examination_task, "delay", lambda exam_id, **kw: None)


def _upload_labelled_image(page, staff, lesion, tmp_path) -> Examination:
    """Staff log in and upload, on `lesion`, a lesion photograph with a printed label naming Anna
    Huber, QH-4711; the real OCR reads it while the upload commits."""
    try:
        import rapidocr_onnxruntime  # noqa: F401
    except ImportError:
        skip_or_fail("rapidocr-onnxruntime is not installed (requirements/base.txt)")
    photo = _lesion_photo().resize((400, 300))
    labelled = label_image(photo, ["QH-4711", "Anna Huber"], style="label", size=22, position=(10, 200))
    path = tmp_path / "visit.jpg"
    labelled.save(path, "JPEG", quality=85)
    login(page, staff.username)
    page.goto(f"/lesions/{lesion.uuid}/")
    page.get_by_label("Image(s)").set_input_files(str(path))
    page.get_by_role("button", name="Upload").click()
    page.wait_for_url("**/examinations/*/")
    return Examination.objects.get(lesion=lesion)


def test_image_with_another_patients_record_number_is_held(new_page, clinic_staff, patient, run_tasks_inline, tmp_path):
    require_model()
    assert patient.medical_record_number != "QH-4711"
    lesion = LesionFactory(patient=patient)
    page = new_page()
    exam = _upload_labelled_image(page, clinic_staff, lesion, tmp_path)
    assert exam.ocr_status == OcrStatus.DONE
    assert exam.hold == Hold.HELD, exam.ocr_text
    assert "QH-4711" in exam.ocr_record_numbers
    page.reload()
    assert page.get_by_text("This image may belong to another patient").is_visible()
    assert page.get_by_text("Text found in the image").is_visible()
    assert page.get_by_text("Estimated malignancy risk").count() == 0
    assert not Alert.objects.filter(lesion=lesion).exists()
    shot(page, "ocr-hold-01-held")

    page.get_by_role("button", name="The image belongs to this patient").click()
    page.wait_for_url("**/examinations/*/")
    assert page.get_by_text("Confirmed as this patient's image").is_visible()
    assert page.get_by_text("Estimated malignancy risk").is_visible()
    exam.refresh_from_db()
    assert exam.hold == Hold.CONFIRMED
    shot(page, "ocr-hold-02-confirmed")
    assert page.js_errors == []


def test_held_image_is_moved_to_the_patient_whose_label_it_shows(
    new_page, clinic_staff, patient, clinic, run_tasks_inline, tmp_path
):
    """The label names Anna Huber (QH-4711), registered at the same clinic: staff move the image
    from Zelda's lesion onto a new lesion of Anna's, picking the number the OCR read."""
    require_model()
    owner = PatientFactory(clinic=clinic, medical_record_number="QH-4711", given_name="Anna", family_name="Huber")
    lesion = LesionFactory(patient=patient)
    page = new_page()
    exam = _upload_labelled_image(page, clinic_staff, lesion, tmp_path)
    assert exam.hold == Hold.HELD, exam.ocr_text
    page.reload()
    page.get_by_role("link", name="Another patient's: move the image").click()
    page.wait_for_url("**/hold/move/")
    page.get_by_role("button", name="QH-4711").click()  # the number read in the image
    assert page.get_by_role("heading", name="Huber, Anna").is_visible()
    shot(page, "ocr-hold-03-move-found")
    page.get_by_label("A new lesion on the").check()
    page.get_by_role("button", name="Move the image to this patient").click()
    page.wait_for_url(f"**/examinations/{exam.uuid}/")
    assert page.get_by_text("moved to the other patient's record").is_visible()
    assert page.get_by_text("Estimated malignancy risk").is_visible()
    exam.refresh_from_db()
    assert exam.lesion.patient == owner
    assert exam.hold == Hold.CONFIRMED
    assert not Examination.objects.filter(lesion=lesion).exists()
    assert "QH-4711" not in page.url
    shot(page, "ocr-hold-04-moved")
    assert page.js_errors == []
