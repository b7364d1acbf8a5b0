"""Text in images (issue 13): the test-set generator, record-number matching, the hold, the
failure paths of the OCR step, and the real engine on a few generated images."""

from __future__ import annotations

import hashlib
import io
import json
import time

import pytest
from django.urls import reverse
from PIL import Image

from inference import ocr as text_reader
from inference.ocr_testset import generate
from lesions import ocr, risk
from lesions.models import Alert, Examination, Hold, OcrStatus, Prediction
from lesions.selectors import latest_prediction
from lesions.services import examination_upload
from lesions.tasks import classify_examination_task
from portal.models import AuditEntry
from tests.conftest import skip_or_fail
from tests.factories import lesion_jpeg_bytes


def _sources(n: int, seed: int = 0):
    for i in range(n):
        yield f"synthetic_{i}", Image.open(io.BytesIO(lesion_jpeg_bytes(seed=seed + i, size=(200, 150))))


# --- the generator -------------------------------------------------------------------------


def test_generator_is_deterministic(tmp_path):
    first = generate(_sources(6), tmp_path / "a", count=4, unlabeled=2, seed=7)
    second = generate(_sources(6), tmp_path / "b", count=4, unlabeled=2, seed=7)
    assert first == second
    for entry in first:
        a = (tmp_path / "a" / entry["file"]).read_bytes()
        assert a == (tmp_path / "b" / entry["file"]).read_bytes()
        assert hashlib.sha256(a).hexdigest() == entry["sha256"]
    other = generate(_sources(6), tmp_path / "c", count=4, unlabeled=2, seed=8)
    assert [e["sha256"] for e in other] != [e["sha256"] for e in first]


def test_generator_writes_the_ground_truth_in_range(tmp_path):
    manifest = generate(_sources(12), tmp_path, count=10, unlabeled=2, seed=1)
    labelled = [m for m in manifest if m["record_number"]]
    assert len(labelled) == 10
    assert len(manifest) == 12
    assert json.loads((tmp_path / "manifest.json").read_text()) == manifest
    for m in labelled:
        assert m["style"] in ("label", "overlay")
        assert text_reader.find_record_numbers(m["record_number"]) == [m["record_number"]]
        assert m["record_number"] in m["lines"]
        assert 10 <= m["size"] <= 40
        assert -15 <= m["angle"] <= 15
        assert 40 <= m["quality"] <= 90
        with Image.open(tmp_path / m["file"]) as image:
            assert image.format == "JPEG"
            assert image.size == (400, 300)
    plain = [m for m in manifest if not m["record_number"]]
    assert all(m["style"] == "none" and m["lines"] == [] for m in plain)


# --- matching ------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("DT-1001", ["DT-1001"]),
        ("dt 1001", ["DT-1001"]),
        ("QH\u20134711 Anna Huber", ["QH-4711"]),
        ("D7-1O01", []),  # a digit in the letters part other than 0/1 is not undone
        ("0T-1O0I", ["OT-1001"]),  # O/0, I/1 undone by position inside the match only
        ("2017-01-20", []),  # a date
        ("ruler 10 20 30 mm", []),
        ("MRN-100042\nDT-1001 DT-1001", ["MRN-100042", "DT-1001"]),
    ],
)
def test_record_numbers_are_found_and_normalised(text, expected):
    assert text_reader.find_record_numbers(text) == expected


def test_own_record_number_compares_after_normalisation():
    assert text_reader.same_record_number("DT-1001", "dt1001")
    assert text_reader.same_record_number("DT-1O01", "DT-1001")
    assert not text_reader.same_record_number("DT-1002", "DT-1001")
    assert ocr.other_patients_numbers(["DT-1001", "QH-4711"], "dt-1001") == ["QH-4711"]


def test_masking_fills_boxes_with_the_median_colour():
    image = Image.new("RGB", (40, 30), (200, 150, 120))
    image.paste((0, 0, 0), (5, 5, 15, 10))
    masked = text_reader.mask_text(image, [(5, 5, 15, 10)], pad=0)
    assert masked.getpixel((10, 7)) == (200, 150, 120)
    assert text_reader.mask_text(image, []) is image


def test_stored_boxes_keep_four_number_rectangles_and_drop_the_rest():
    """What masking and export redaction read from `Examination.ocr_boxes` (JSON): floats are cut
    to pixels, an entry of the wrong length is dropped (not padded), nothing stored is nothing."""
    stored = [[1.7, 2, 30.2, 12], [5, 5, 9], [], [0, 0, 4, 4, 9]]
    assert text_reader.stored_boxes(stored) == [(1, 2, 30, 12)]
    assert text_reader.stored_boxes(None) == []


# --- the hold, with a fake engine ----------------------------------------------------------


class FakeEngine:
    def __init__(self, text: str = "", *, error: Exception | None = None, delay: float = 0.0) -> None:
        self.text, self.error, self.delay = text, error, delay

    def read(self, image):
        if self.delay:
            time.sleep(self.delay)
        if self.error:
            raise self.error
        lines = [t for t in self.text.split("\n") if t]
        return text_reader.OcrResult(
            boxes=[
                text_reader.TextBox(text=t, score=0.9, box=(2, 2 + 12 * i, 60, 12 + 12 * i))
                for i, t in enumerate(lines)
            ]
        )


@pytest.fixture
def exam(lesion, clinic_staff):
    return examination_upload(actor=clinic_staff, lesion=lesion, image=io.BytesIO(lesion_jpeg_bytes()))


@pytest.fixture
def always_alert(monkeypatch):
    monkeypatch.setattr(risk, "is_alert", lambda value, threshold: True)


def _use(monkeypatch, engine):
    monkeypatch.setattr(ocr, "engine", lambda: engine)


def test_another_patients_record_number_holds_the_examination(monkeypatch, exam, always_alert):
    _use(monkeypatch, FakeEngine("QH-4711\nAnna Huber"))
    classify_examination_task(exam.pk)
    exam.refresh_from_db()
    assert exam.status == Examination.Status.DONE
    assert exam.ocr_status == OcrStatus.DONE
    assert exam.hold == Hold.HELD
    assert exam.ocr_record_numbers == ["QH-4711"]
    assert Prediction.objects.filter(examination=exam).count() == 1  # computed, kept, not shown
    assert latest_prediction(exam) is None
    assert not Alert.objects.exists()
    assert AuditEntry.objects.filter(action="examination.hold").count() == 1
    # encrypted at rest: the stored column is not the text
    from django.db import connection

    with connection.cursor() as cur:
        cur.execute("SELECT ocr_text, ocr_record_numbers FROM lesions_examination WHERE id = %s", [exam.pk])
        raw_text, raw_numbers = cur.fetchone()
    assert "QH-4711" not in raw_text
    assert "QH-4711" not in raw_numbers


def test_confirming_a_held_image_shows_the_result_and_raises_the_alert(monkeypatch, exam, clinic_staff, always_alert):
    _use(monkeypatch, FakeEngine("QH-4711"))
    classify_examination_task(exam.pk)
    exam.refresh_from_db()
    ocr.examination_hold_confirm(actor=clinic_staff, exam=exam)
    exam.refresh_from_db()
    assert exam.hold == Hold.CONFIRMED
    assert latest_prediction(exam) is not None
    assert Alert.objects.filter(lesion=exam.lesion, status=Alert.Status.OPEN).count() == 1
    assert AuditEntry.objects.filter(action="examination.hold_confirm", actor=clinic_staff).count() == 1
    ocr.examination_hold_confirm(actor=clinic_staff, exam=exam)  # twice: nothing more
    assert Alert.objects.count() == 1


def test_rejecting_a_held_image_deletes_it(monkeypatch, exam, clinic_staff, client):
    _use(monkeypatch, FakeEngine("QH-4711"))
    classify_examination_task(exam.pk)
    client.force_login(clinic_staff)
    page = client.get(reverse("lesions:examination-detail", args=[exam.uuid]))
    assert b"This image may belong to another patient" in page.content
    assert b"Estimated malignancy risk" not in page.content
    lesion_page = client.get(reverse("lesions:lesion-detail", args=[exam.lesion.uuid]))
    assert b"Held: this image may belong to another patient" in lesion_page.content
    response = client.post(reverse("lesions:examination-hold-reject", args=[exam.uuid]))
    assert response.status_code == 302
    assert not Examination.objects.filter(pk=exam.pk).exists()
    assert not Prediction.objects.filter(examination_id=exam.pk).exists()
    assert AuditEntry.objects.filter(action="examination.hold_reject").count() == 1


def test_the_patients_own_number_does_not_hold_and_the_text_is_shown(monkeypatch, exam, patient, clinician, client):
    _use(monkeypatch, FakeEngine(f"{patient.medical_record_number.lower()}\n12.03.2025"))
    classify_examination_task(exam.pk)
    exam.refresh_from_db()
    assert exam.hold == Hold.NONE
    assert exam.ocr_record_numbers == [patient.medical_record_number]
    assert latest_prediction(exam) is not None
    client.force_login(clinician)
    page = client.get(reverse("lesions:examination-detail", args=[exam.uuid]))
    assert b"Text found in the image" in page.content
    assert b"12.03.2025" in page.content


def test_masked_regions_are_what_the_model_sees(monkeypatch, exam):
    seen = []
    original = ocr.image_for_model

    def spy(e, image):
        out = original(e, image)
        seen.append(out)
        return out

    monkeypatch.setattr(ocr, "image_for_model", spy)
    _use(monkeypatch, FakeEngine("some text"))
    classify_examination_task(exam.pk)
    exam.refresh_from_db()
    assert exam.ocr_boxes == [[2, 2, 60, 12]]
    median = seen[0].getpixel((0, 0))
    assert all(seen[0].getpixel((x, 7)) == median for x in (2, 30, 60))


def test_ocr_failure_never_blocks_the_prediction(monkeypatch, exam, clinician, client):
    _use(monkeypatch, FakeEngine(error=RuntimeError("engine broke")))
    classify_examination_task(exam.pk)
    exam.refresh_from_db()
    assert exam.status == Examination.Status.DONE
    assert exam.ocr_status == OcrStatus.FAILED
    assert exam.hold == Hold.NONE
    assert latest_prediction(exam) is not None
    client.force_login(clinician)
    page = client.get(reverse("lesions:examination-detail", args=[exam.uuid]))
    assert b"OCR could not run" in page.content


def test_ocr_timeout_is_recorded_and_classification_goes_on(monkeypatch, settings, exam):
    settings.DERMATRACK_OCR_TIMEOUT_SECONDS = 0.05
    _use(monkeypatch, FakeEngine("QH-4711", delay=0.5))
    classify_examination_task(exam.pk)
    exam.refresh_from_db()
    assert exam.ocr_status == OcrStatus.TIMEOUT
    assert exam.hold == Hold.NONE
    assert exam.status == Examination.Status.DONE
    assert Prediction.objects.filter(examination=exam).exists()
    time.sleep(0.5)  # let the abandoned read finish before the next test uses the reader thread


def test_ocr_is_read_once_per_examination(monkeypatch, exam):
    calls = []

    class Counting(FakeEngine):
        def read(self, image):
            calls.append(1)
            return super().read(image)

    _use(monkeypatch, Counting("QH-4711"))
    classify_examination_task(exam.pk)
    Examination.objects.filter(pk=exam.pk).update(status=Examination.Status.PENDING)  # a redelivery
    classify_examination_task(exam.pk)
    assert len(calls) == 1


# --- the real engine -----------------------------------------------------------------------


def test_rapidocr_reads_record_numbers_on_generated_images(tmp_path):
    try:
        import rapidocr_onnxruntime  # noqa: F401
    except ImportError:
        skip_or_fail("rapidocr-onnxruntime is not installed (requirements/base.txt)")
    manifest = generate(_sources(6, seed=40), tmp_path, count=6, unlabeled=0, seed=3)
    engine = text_reader.RapidOcrEngine()
    hits = 0
    for m in manifest:
        with Image.open(tmp_path / m["file"]) as image:
            hits += m["record_number"] in engine.read(image).record_numbers
    assert hits >= 5, f"{hits} of 6 record numbers read"


def test_single_characters_and_lesion_sized_boxes_are_not_text():
    assert text_reader.plausible_text("DT-1001", (10, 10, 90, 30), (400, 300))
    assert not text_reader.plausible_text("8", (82, 49, 284, 212), (400, 300))
    assert not text_reader.plausible_text("MRN", (0, 0, 300, 200), (400, 300))


def test_the_api_says_an_examination_is_held_and_gives_no_prediction(monkeypatch, exam, clinician, client):
    _use(monkeypatch, FakeEngine("QH-4711"))
    classify_examination_task(exam.pk)
    client.force_login(clinician)
    data = client.get(reverse("api:examination-detail", args=[exam.uuid])).json()
    assert data["held"] is True
    assert data["ocr_status"] == "done"
    assert data["prediction"] is None
    assert "QH-4711" not in str(data)


def test_the_tasks_soft_time_limit_during_ocr_fails_the_examination(monkeypatch, exam):
    from celery.exceptions import SoftTimeLimitExceeded

    _use(monkeypatch, FakeEngine(error=SoftTimeLimitExceeded()))
    with pytest.raises(SoftTimeLimitExceeded):
        classify_examination_task(exam.pk)
    exam.refresh_from_db()
    assert exam.status == Examination.Status.FAILED
    assert "too long" in exam.failure_reason
