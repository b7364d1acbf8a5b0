"""Text in an examination's image: read it before classification, hold an image that names another
patient, and let staff confirm or reject a held image. Called by the classify task
(`classification.examination_classify`) and by views.

- Read once per examination (idempotent: `ocr_status` other than NOT_RUN is never read again).
- A record number read that is not this patient's MRN (after `inference.ocr` normalisation) holds
  the examination: the prediction is still computed and stored, but no page shows it and no alert
  is raised until staff confirm (`examination_hold_confirm`: the alert rule then runs), move the
  image to the patient it belongs to (`examination_hold_move`: the alert rule runs there) or
  reject it (`examination_hold_reject`: the image and its results are deleted).
- OCR failure or timeout never blocks classification: the examination records FAILED / TIMEOUT and
  the page says "OCR could not run"; the image goes to the model unmasked.
"""

from __future__ import annotations

import functools
import logging
from concurrent.futures import ThreadPoolExecutor
from concurrent.futures import TimeoutError as FutureTimeout
from typing import Protocol

from celery.exceptions import SoftTimeLimitExceeded
from django.conf import settings
from django.db import transaction
from PIL import Image

from inference import ocr as text_reader
from lesions import model_versions, services
from lesions.models import Examination, Hold, Lesion, OcrStatus, Visit
from patients.models import Patient
from portal import permissions
from portal.audit import audit_record
from portal.models import User

logger = logging.getLogger(__name__)


class NotHeld(Exception):
    """Only a held examination can be rejected."""


class Engine(Protocol):
    def read(self, image: Image.Image) -> text_reader.OcrResult: ...


# One reader thread per worker process: a run past the limit is abandoned (it finishes in the
# background and its result is dropped); the next examination waits for the thread.
_pool = ThreadPoolExecutor(max_workers=1, thread_name_prefix="ocr")


def engine() -> Engine:
    """The engine the portal runs (a seam for tests)."""
    return text_reader.default_engine()


def examination_read_text(*, exam: Examination, image: Image.Image) -> None:
    """Reads the text of a claimed examination's image and records it (status, encrypted text and
    record numbers, boxes, hold). A failure is recorded as FAILED or TIMEOUT, never raised (only
    the task's own soft time limit goes through)."""
    if exam.ocr_status != OcrStatus.NOT_RUN or not settings.DERMATRACK_OCR_ENABLED:
        return
    try:
        future = _pool.submit(engine().read, image)
        result = future.result(timeout=settings.DERMATRACK_OCR_TIMEOUT_SECONDS)
    except SoftTimeLimitExceeded:
        raise  # the task's own limit: its handler marks the examination
    except FutureTimeout:
        logger.warning("OCR of examination %s timed out", exam.uuid)
        _record_status(exam, OcrStatus.TIMEOUT)
        return
    except Exception:
        logger.exception("OCR of examination %s failed", exam.uuid)
        _record_status(exam, OcrStatus.FAILED)
        return
    numbers = result.record_numbers
    others = other_patients_numbers(numbers, exam.lesion.patient.medical_record_number)
    fields = {
        "ocr_status": OcrStatus.DONE,
        "ocr_text": result.text,
        "ocr_record_numbers": numbers,
        "ocr_boxes": [list(b.box) for b in result.boxes],
        "hold": Hold.HELD if others and exam.hold == Hold.NONE else exam.hold,
    }
    for name, value in fields.items():
        setattr(exam, name, value)
    exam.save(update_fields=list(fields))
    if exam.hold == Hold.HELD:
        # No numbers in the audit entry or the log: only that it was held.
        audit_record(actor=None, action="examination.hold", target=exam, patient=exam.lesion.patient)
        logger.info("examination %s held: another record number in the image", exam.uuid)


def _record_status(exam: Examination, status: str) -> None:
    exam.ocr_status = status
    Examination.objects.filter(pk=exam.pk).update(ocr_status=status)


def other_patients_numbers(numbers: list[str], own_mrn: str) -> list[str]:
    """The record numbers read that are not the patient's own (normalised compare)."""
    return [n for n in numbers if not text_reader.same_record_number(n, own_mrn or "")]


def image_for_model(exam: Examination, image: Image.Image) -> Image.Image:
    """What the classifier sees: text regions filled with the image's median colour."""
    return text_reader.mask_text(image, text_reader.stored_boxes(exam.ocr_boxes))


@transaction.atomic
def examination_hold_confirm(*, actor: User, exam: Examination) -> Examination:
    """Staff confirm a held image belongs to this patient: results show, the alert rule runs."""
    permissions.require_patient_perm(actor, permissions.MANAGE_LESIONS, exam.lesion.patient)
    exam = Examination.objects.select_for_update().select_related("lesion__patient").get(pk=exam.pk)
    if exam.hold != Hold.HELD:
        return exam
    exam.hold = Hold.CONFIRMED
    exam.save(update_fields=["hold"])
    audit_record(actor=actor, action="examination.hold_confirm", target=exam, patient=exam.lesion.patient)
    _alert_rule(exam)
    return exam


def _alert_rule(exam: Examination) -> None:
    """What classification would have done had the image not been held: the preferred
    prediction over its threshold raises (or joins) the lesion's alert."""
    prediction = model_versions.preferred_prediction(list(exam.predictions.all()), model_versions.active_sha())
    if prediction is not None:
        threshold = model_versions.threshold_of(prediction)
        if model_versions.raises_alert(prediction=prediction, threshold=threshold):
            services.alert_raise(prediction=prediction, risk=prediction.risk)


class CannotMove(Exception):
    """The move asked for is not possible (not held, or to the lesion it is already on)."""


@transaction.atomic
def examination_hold_move(
    *, actor: User, exam: Examination, to_patient: Patient, to_lesion: Lesion | None = None
) -> Examination:
    """Staff say a held image is another patient's and move it there: onto `to_lesion` (one of
    `to_patient`'s lesions) or, without one, onto a new lesion of `to_patient` at the same body
    site. The image keeps its results (computed on the same pixels) and its capture time, in a
    visit of its own on the new lesion; its old visit goes when it was the only image. Staff
    chose the patient, so the hold ends as CONFIRMED and the alert rule runs on the new lesion
    (a held image raised no alert where it was). Needs MANAGE_LESIONS on both patients; audited
    on both records. Raises ValidationError when the capture date is before the new patient's
    date of birth."""
    source = exam.lesion.patient
    permissions.require_patient_perm(actor, permissions.MANAGE_LESIONS, source)
    permissions.require_patient_perm(actor, permissions.MANAGE_LESIONS, to_patient)
    exam = Examination.objects.select_for_update().select_related("lesion__patient", "visit").get(pk=exam.pk)
    if exam.hold != Hold.HELD:
        raise CannotMove("Only a held image can be moved to another patient.")
    if to_lesion is not None and to_lesion.patient_id != to_patient.pk:
        raise CannotMove("That lesion is not the chosen patient's.")
    if to_lesion is not None and to_lesion.pk == exam.lesion_id:
        raise CannotMove("The image is already on this lesion.")
    old_visit = exam.visit
    if to_lesion is None:
        to_lesion = services.lesion_add(actor=actor, patient=to_patient, body_site=exam.lesion.body_site)
    visit = services.visit_record(
        actor=actor, lesion=to_lesion, captured_at=old_visit.captured_at, recorded_by=old_visit.recorded_by
    )
    exam.lesion, exam.visit, exam.hold = to_lesion, visit, Hold.CONFIRMED
    exam.save(update_fields=["lesion", "visit", "hold"])
    if not old_visit.examinations.exists():
        old_visit.delete()
    # One entry on each record: both patients' trails say where the image went (by UUID only).
    audit_record(actor=actor, action="examination.hold_move_out", target=exam, patient=source)
    audit_record(actor=actor, action="examination.hold_move_in", target=exam, patient=to_patient)
    _alert_rule(exam)
    return exam


@transaction.atomic
def examination_hold_reject(*, actor: User, exam: Examination) -> Visit:
    """Staff say a held image is not this patient's: it is deleted with its results (it raised
    no alert while held), and its visit too when it was the visit's only image. Returns the visit
    (unsaved when deleted) so the caller can go back to the lesion. To keep the image on another
    patient's record instead: `examination_hold_move`."""
    permissions.require_patient_perm(actor, permissions.MANAGE_LESIONS, exam.lesion.patient)
    exam = Examination.objects.select_for_update().select_related("lesion__patient", "visit").get(pk=exam.pk)
    if exam.hold != Hold.HELD:
        raise NotHeld("Only a held image can be rejected.")
    patient, visit = exam.lesion.patient, exam.visit
    audit_record(actor=actor, action="examination.hold_reject", target=exam, patient=patient)
    files = [exam.image, exam.thumbnail]
    for explanation in exam.explanations.all():
        files.append(explanation.image)
        explanation.delete()
    exam.predictions.all().delete()
    exam.delete()
    if not visit.examinations.exists():
        visit.delete()
    for f in files:
        if f:
            transaction.on_commit(functools.partial(f.storage.delete, f.name))
    return visit
