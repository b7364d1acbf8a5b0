"""Writes on lesions and examinations."""

from __future__ import annotations

import datetime as dt
from decimal import Decimal
from typing import IO

from django.core.exceptions import ValidationError
from django.core.files.base import ContentFile
from django.db import transaction
from django.utils import timezone

from lesions.imaging import validate_and_normalise
from lesions.models import Examination, Lesion
from patients.models import Patient
from portal import permissions
from portal.audit import audit_record
from portal.models import User


@transaction.atomic
def lesion_add(
    *, actor: User, patient: Patient, body_site: str, label: str = "", first_noted: dt.date | None = None
) -> Lesion:
    permissions.require_patient_perm(actor, permissions.MANAGE_LESIONS, patient)
    lesion = Lesion(
        patient=patient,
        body_site=body_site,
        label=label.strip(),
        first_noted=first_noted or timezone.localdate(),
        created_by=actor,
    )
    if lesion.first_noted > timezone.localdate():
        raise ValidationError({"first_noted": "The date first noted is in the future."})
    lesion.full_clean()
    lesion.save()
    audit_record(actor=actor, action="lesion.create", target=lesion, patient=patient)
    return lesion


def examination_upload(
    *,
    actor: User,
    lesion: Lesion,
    image: IO[bytes],
    image_size: int | None = None,
    captured_at: dt.datetime | None = None,
    diameter_mm: Decimal | None = None,
    notes: str = "",
) -> Examination:
    """Validates the image before anything is written: a rejected upload stores nothing."""
    permissions.require_patient_perm(actor, permissions.MANAGE_LESIONS, lesion.patient)
    normalised = validate_and_normalise(image, size=image_size)  # raises ValidationError
    if captured_at and captured_at > timezone.now() + dt.timedelta(minutes=5):
        raise ValidationError({"captured_at": "The capture time is in the future."})
    with transaction.atomic():
        exam = Examination(
            lesion=lesion,
            uploaded_by=actor,
            captured_at=captured_at or timezone.now(),
            diameter_mm=diameter_mm,
            notes=notes.strip(),
            image_sha256=normalised.sha256,
            image_width=normalised.width,
            image_height=normalised.height,
            status=Examination.Status.PENDING,
        )
        exam.image.save("upload", ContentFile(normalised.png_bytes), save=False)
        try:
            exam.full_clean()
            exam.save()
        except Exception:
            exam.image.delete(save=False)
            raise
        audit_record(actor=actor, action="examination.create", target=exam, patient=lesion.patient)
        from inference.tasks import classify_examination_task

        classify_examination_task.delay_on_commit(exam.pk)
    return exam
