"""Writes on lesions and examinations."""

from __future__ import annotations

import datetime as dt
from decimal import Decimal
from typing import IO

from dateutil.relativedelta import relativedelta
from django.conf import settings
from django.core.exceptions import ValidationError
from django.core.files.base import ContentFile
from django.core.mail import send_mail
from django.db import IntegrityError, transaction
from django.urls import reverse
from django.utils import timezone

from lesions import classification, dicom, tasks
from lesions.imaging import NormalisedImage, validate_and_normalise
from lesions.models import Alert, AlertTrigger, Examination, Lesion, Prediction, TriageDecision, Visit
from patients.models import Patient
from portal import permissions
from portal.audit import audit_record
from portal.models import Role, User


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


def _check_capture_time(*, lesion: Lesion, captured_at: dt.datetime) -> None:
    if captured_at > timezone.now() + dt.timedelta(minutes=5):  # a camera clock a little ahead
        raise ValidationError({"captured_at": "The capture time is in the future."})
    born = lesion.patient.date_of_birth
    if born and timezone.localdate(captured_at) < born:
        raise ValidationError({"captured_at": "The capture date is before the patient's date of birth."})


def visit_record(
    *, actor: User, lesion: Lesion, captured_at: dt.datetime | None = None, recorded_by: User | None = None
) -> Visit:
    """A visit of a lesion at `captured_at` (default now; in the past for a visit entered
    afterwards, never in the future or before the patient was born). Its images are added
    with `examination_upload(visit=...)`. `recorded_by` (default the actor) keeps who took the
    images when a visit is re-created on another lesion (`lesions.ocr.examination_hold_move`)."""
    permissions.require_patient_perm(actor, permissions.MANAGE_LESIONS, lesion.patient)
    captured_at = captured_at or timezone.now()
    _check_capture_time(lesion=lesion, captured_at=captured_at)
    visit = Visit.objects.create(lesion=lesion, captured_at=captured_at, recorded_by=recorded_by or actor)
    audit_record(actor=actor, action="visit.create", target=visit, patient=lesion.patient)
    return visit


def examination_upload(
    *,
    actor: User,
    lesion: Lesion,
    image: IO[bytes],
    image_size: int | None = None,
    visit: Visit | None = None,
    captured_at: dt.datetime | None = None,
    diameter_mm: Decimal | None = None,
    notes: str = "",
    synthetic: bool = False,
) -> Examination:
    """One image of a visit. Validates the image before anything is written: a rejected upload
    stores nothing (not even a new visit). Without `visit`, the image is a visit of its own at
    `captured_at`. `synthetic` marks a generated demo image (seed_demo), which every page then
    labels."""
    permissions.require_patient_perm(actor, permissions.MANAGE_LESIONS, lesion.patient)
    if visit is not None and visit.lesion_id != lesion.pk:
        raise ValidationError("This visit belongs to another lesion.")
    if visit is None:
        _check_capture_time(lesion=lesion, captured_at=captured_at or timezone.now())
    normalised = validate_and_normalise(image, size=image_size)  # raises ValidationError
    dicom.check_patient(normalised.source_patient_id, patient=lesion.patient)  # a DICOM of another patient
    with transaction.atomic():
        if visit is None:
            visit = visit_record(actor=actor, lesion=lesion, captured_at=captured_at)
        return _examination_store(
            actor=actor, visit=visit, normalised=normalised, diameter_mm=diameter_mm, notes=notes, synthetic=synthetic
        )


def visit_upload(
    *,
    actor: User,
    lesion: Lesion,
    images: list[tuple[IO[bytes], int | None]],
    captured_at: dt.datetime | None = None,
    diameter_mm: Decimal | None = None,
    notes: str = "",
) -> tuple[list[Examination], list[str]]:
    """A visit with its images, as staff upload them in one form: every image is validated
    first; the visit and the valid images are stored together, or nothing when none is valid.
    Returns the examinations made and one message per rejected image (never the file's name:
    it may carry the patient's name). A bad capture time raises before any image is read."""
    permissions.require_patient_perm(actor, permissions.MANAGE_LESIONS, lesion.patient)
    captured_at = captured_at or timezone.now()
    _check_capture_time(lesion=lesion, captured_at=captured_at)
    valid: list[NormalisedImage] = []
    rejected: list[str] = []
    for number, (image, size) in enumerate(images, start=1):
        try:
            normalised = validate_and_normalise(image, size=size)
            dicom.check_patient(normalised.source_patient_id, patient=lesion.patient)
            valid.append(normalised)
        except ValidationError as exc:
            prefix = f"Image {number} of {len(images)}: " if len(images) > 1 else ""
            rejected.append(prefix + " ".join(exc.messages))
    created: list[Examination] = []
    if valid:
        with transaction.atomic():
            visit = visit_record(actor=actor, lesion=lesion, captured_at=captured_at)
            for normalised in valid:
                created.append(
                    _examination_store(
                        actor=actor, visit=visit, normalised=normalised, diameter_mm=diameter_mm, notes=notes
                    )
                )
    return created, rejected


def _examination_store(
    *,
    actor: User,
    visit: Visit,
    normalised: NormalisedImage,
    diameter_mm: Decimal | None,
    notes: str,
    synthetic: bool = False,
) -> Examination:
    """Stores one validated image of a visit (inside the caller's transaction) and queues its
    classification after commit."""
    lesion = visit.lesion
    exam = Examination(
        lesion=lesion,
        visit=visit,
        uploaded_by=actor,
        captured_at=visit.captured_at,
        diameter_mm=diameter_mm,
        notes=notes.strip(),
        image_sha256=normalised.sha256,
        image_width=normalised.width,
        image_height=normalised.height,
        status=Examination.Status.PENDING,
        synthetic=synthetic,
    )
    exam.image.save("upload", ContentFile(normalised.png_bytes), save=False)
    try:
        exam.full_clean()
        exam.save()
    except Exception:
        exam.image.delete(save=False)
        raise
    audit_record(actor=actor, action="examination.create", target=exam, patient=lesion.patient)
    exam_id = exam.pk
    transaction.on_commit(lambda: classification.enqueue_classification(exam_id))
    return exam


# What each decision does to the lesion. A follow-up also sets the next follow-up date.
_DECISION_LESION_STATUS: dict[str, Lesion.Status | None] = {
    TriageDecision.Decision.BIOPSY: Lesion.Status.BIOPSY,
    TriageDecision.Decision.REFER: Lesion.Status.REFERRED,
    TriageDecision.Decision.FOLLOW_UP: Lesion.Status.MONITORING,
    TriageDecision.Decision.DISMISS: None,  # the lesion stays as it was
}


def triage_decide(
    *, actor: User, alert: Alert, decision: str, reason: str, follow_up_months: int | None = None
) -> TriageDecision:
    """Records a dermatologist's decision on an open alert; the alert leaves the queue.

    Two people deciding at once: the alert row is locked and must still be open, so the
    second one gets a validation error instead of a second decision."""
    permissions.require_patient_perm(actor, permissions.TRIAGE, alert.lesion.patient)
    reason = (reason or "").strip()
    if decision not in TriageDecision.Decision.values:
        raise ValidationError({"decision": "Choose a decision."})
    if not reason:
        raise ValidationError({"reason": "A reason is required."})
    if decision == TriageDecision.Decision.FOLLOW_UP:
        if not follow_up_months:
            raise ValidationError({"follow_up_months": "Say in how many months to follow up."})
    else:
        follow_up_months = None
    with transaction.atomic():
        locked = Alert.objects.select_for_update().select_related("lesion").get(pk=alert.pk)
        if locked.status != Alert.Status.OPEN:
            raise ValidationError("This alert has already been triaged.")
        now = timezone.now()
        triage = TriageDecision(
            alert=locked,
            decision=decision,
            reason=reason,
            follow_up_months=follow_up_months,
            decided_by=actor,
            decided_at=now,
        )
        triage.full_clean()
        triage.save()
        locked.status = Alert.Status.TRIAGED
        locked.save(update_fields=["status"])
        lesion = locked.lesion
        changed = []
        new_status = _DECISION_LESION_STATUS[decision]
        if new_status is not None and lesion.status != new_status:
            lesion.status = new_status
            changed.append("status")
        if follow_up_months:
            # Calendar months, clamped to the month's end (31 Jan + 1 month = 28/29 Feb).
            lesion.next_follow_up = timezone.localdate(now) + relativedelta(months=follow_up_months)
            changed.append("next_follow_up")
        if changed:
            lesion.save(update_fields=changed)
        audit_record(actor=actor, action=f"alert.triage.{decision}", target=locked, patient=alert.lesion.patient)
    alert.status = locked.status
    return triage


def alert_raise(*, prediction: Prediction, risk: float) -> Alert:
    """Puts a high-risk prediction in its clinic's queue: it joins the lesion's open alert,
    or opens one. Called by the classification service (and on a model-version switch).

    Joining: the alert shows the most recently captured trigger's examination, and its
    priority is the highest risk among its triggers. The lesion row is locked first, so two
    workers with two images of one lesion queue one after the other; where the database has
    no row locks (SQLite serialises writers anyway) the partial unique constraint
    `one_open_alert_per_lesion` refuses the second open alert and the loser joins the winner.
    When DERMATRACK_ALERT_EMAILS is on, a newly opened alert (not a joined one) is mailed to
    the clinic's dermatologists after commit."""
    exam = prediction.examination
    priority = min(1000, round(risk * 1000))
    with transaction.atomic():
        Lesion.objects.select_for_update().filter(pk=exam.lesion_id).values_list("pk", flat=True).first()
        alert = _open_alert_locked(exam.lesion_id)
        opened = False
        if alert is None:
            try:
                with transaction.atomic():
                    alert = Alert.objects.create(
                        prediction=prediction,
                        lesion=exam.lesion,
                        clinic=exam.lesion.patient.clinic,
                        priority=priority,
                    )
                opened = True
            except IntegrityError:
                alert = _open_alert_locked(exam.lesion_id)
                if alert is None:
                    raise
        if not opened:
            changed = ["updated_at"]
            if priority > alert.priority:
                alert.priority = priority
                changed.append("priority")
            shown = alert.prediction.examination
            if (exam.captured_at, exam.pk) >= (shown.captured_at, shown.pk):
                alert.prediction = prediction
                changed.append("prediction")
            alert.save(update_fields=changed)
        AlertTrigger.objects.get_or_create(prediction=prediction, defaults={"alert": alert, "priority": priority})
        audit_record(actor=None, action="alert.open" if opened else "alert.join", target=alert)
    if opened and getattr(settings, "DERMATRACK_ALERT_EMAILS", False):
        tasks.notify_alert_task.delay_on_commit(alert.pk)  # type: ignore[attr-defined]  # Celery 5.4+, not in celery-types
    return alert


def _open_alert_locked(lesion_id: int) -> Alert | None:
    return (
        Alert.objects.select_for_update()
        .select_related("prediction__examination")
        .filter(lesion_id=lesion_id, status=Alert.Status.OPEN)
        .first()
    )


def alert_notify(*, alert_id: int) -> int:
    """E-mails the clinic's dermatologists that a new high-risk alert is waiting.

    No PHI in the message: no name, no site, no risk, only a link that asks them to log in."""
    alert = Alert.objects.select_related("clinic").get(pk=alert_id)
    if alert.status != Alert.Status.OPEN:
        return 0
    recipients = list(
        User.objects.filter(clinic=alert.clinic, role=Role.DERMATOLOGIST, is_active=True)
        .exclude(email="")
        .values_list("email", flat=True)
    )
    if not recipients:
        return 0
    base = getattr(settings, "DERMATRACK_BASE_URL", "http://127.0.0.1:8000").rstrip("/")
    link = base + reverse("lesions:alert-triage", kwargs={"alert_uuid": alert.uuid})
    body = (
        f"A new high-risk alert is waiting in the {alert.clinic.name} triage queue.\n\n"
        f"Log in to review it: {link}\n\n"
        "This message deliberately contains no patient details."
    )
    sent = send_mail(
        "Dermatrack: new high-risk alert",
        body,
        getattr(settings, "DEFAULT_FROM_EMAIL", None),
        recipients,
    )
    audit_record(actor=None, action="alert.notify", target=alert)
    return sent


THUMBNAIL_SIZE = 96


def examination_thumbnail_render(*, exam: Examination) -> bytes:
    """A small PNG of the examination image, encrypted on disk; made once, on first use."""
    import io

    from PIL import Image

    if exam.thumbnail:
        try:
            with exam.thumbnail.open("rb") as fh:
                return fh.read()
        except FileNotFoundError:
            pass
    with exam.image.open("rb") as fh:
        image: Image.Image = Image.open(io.BytesIO(fh.read()))
        image.load()
    image = image.convert("RGB")
    image.thumbnail((THUMBNAIL_SIZE * 2, THUMBNAIL_SIZE * 2))  # 2x for high-density screens
    out = io.BytesIO()
    image.save(out, format="PNG", optimize=True)
    data = out.getvalue()
    exam.thumbnail.save("thumbnail", ContentFile(data), save=False)
    Examination.objects.filter(pk=exam.pk).update(thumbnail=exam.thumbnail.name)
    return data
