"""Classification of examinations: claim, predict, record. Called by tasks."""

from __future__ import annotations

import datetime as dt
import logging

from django.conf import settings
from django.db import IntegrityError, transaction
from django.db.models import F, Q
from django.utils import timezone
from PIL import Image

from lesions import model_versions, ocr, risk, services, tasks
from lesions.models import Examination, Prediction
from portal.audit import audit_record

logger = logging.getLogger(__name__)


class BadImage(Exception):
    """The stored image cannot be classified; retrying will not help."""


def examination_claim(*, examination_id: int) -> bool:
    """Conditional update: only one worker moves PENDING (or a stale RUNNING) to RUNNING."""
    now = timezone.now()
    stale_before = now - dt.timedelta(seconds=settings.DERMATRACK_STALE_CLAIM_SECONDS)
    claimable = Q(status=Examination.Status.PENDING) | Q(status=Examination.Status.RUNNING, claimed_at__lt=stale_before)
    changed = Examination.objects.filter(claimable, pk=examination_id).update(
        status=Examination.Status.RUNNING, claimed_at=now, attempts=F("attempts") + 1
    )
    return changed == 1


def examination_release(*, examination_id: int) -> None:
    """Back to the queue after a transient failure (the task will be retried)."""
    Examination.objects.filter(pk=examination_id, status=Examination.Status.RUNNING).update(
        status=Examination.Status.PENDING, claimed_at=None
    )


def examination_mark_failed(*, examination_id: int, reason: str) -> None:
    Examination.objects.filter(pk=examination_id).update(
        status=Examination.Status.FAILED, failure_reason=reason[:300], claimed_at=None
    )


def _load_image(exam: Examination) -> Image.Image:
    import io

    try:
        with exam.image.open("rb") as fh:
            data = fh.read()
        image = Image.open(io.BytesIO(data))
        image.load()
        return image
    except FileNotFoundError as exc:
        raise BadImage("The stored image file is missing.") from exc
    except OSError as exc:
        raise BadImage("The stored image could not be decoded.") from exc


def _score(exam: Examination, classifier, image: Image.Image | None = None) -> dict:
    """One inference of the stored image with its text masked (lesions.ocr), and the image check
    on that same inference."""
    image = ocr.image_for_model(exam, image if image is not None else _load_image(exam))
    try:
        batch = classifier.preprocess([image])
    except OSError as exc:  # a truncated file can decode lazily only here
        raise BadImage("The stored image could not be decoded.") from exc
    probabilities, logits, features = classifier.predict_arrays(batch)
    check = risk.image_checker(classifier).check(image, logits=logits[0], features=features[0])
    return {"probabilities": probabilities[0], "check": check}


def examination_classify(*, examination_id: int) -> Prediction:
    """Runs the classifier on a claimed examination and records the prediction (idempotent)."""
    exam = Examination.objects.select_related("lesion__patient__clinic").get(pk=examination_id)
    classifier = risk.classifier()
    image = _load_image(exam)
    ocr.examination_read_text(exam=exam, image=image)  # first: a held image raises no alert
    existing = Prediction.objects.filter(examination=exam, model_sha256=classifier.sha256).first()
    if existing is None:
        existing = prediction_record(exam=exam, classifier=classifier, **_score(exam, classifier, image))
    Examination.objects.filter(pk=exam.pk).update(status=Examination.Status.DONE, failure_reason="", claimed_at=None)
    return existing


def examination_rescore(*, examination_id: int) -> Prediction | None:
    """Scores an analysed examination with the model on disk into that model's prediction,
    leaving the examination and its other predictions as they are (idempotent; the re-scoring
    command's task). None when the examination is not analysed (nothing to re-score)."""
    exam = Examination.objects.select_related("lesion__patient__clinic").get(pk=examination_id)
    if exam.status != Examination.Status.DONE:
        return None
    classifier = risk.classifier()
    existing = Prediction.objects.filter(examination=exam, model_sha256=classifier.sha256).first()
    if existing is None:
        existing = prediction_record(exam=exam, classifier=classifier, **_score(exam, classifier))
    return existing


@transaction.atomic
def prediction_record(*, exam: Examination, classifier, probabilities, check=None) -> Prediction:
    """Records one prediction with its image check. `check` None: not checked (kept for callers
    that score without an image check; the page then says so)."""
    model_versions.register(classifier)
    classes = list(classifier.classes)
    probs = {c: round(float(p), 6) for c, p in zip(classes, probabilities, strict=False)}
    malignancy = float(classifier.malignancy_risk(probabilities[None, :])[0])
    try:
        with transaction.atomic():
            prediction = Prediction.objects.create(
                examination=exam,
                model_name=classifier.name,
                model_version=classifier.version,
                model_sha256=classifier.sha256,
                probabilities=probs,
                malignancy_risk=f"{malignancy:.6f}",
                top_class=classes[int(probabilities.argmax())],
                assessable=None if check is None else bool(check.assessable),
                check_reasons=[] if check is None else [{"code": r.code, "message": r.message} for r in check.reasons],
                check_scores={}
                if check is None
                else {
                    **{k: round(float(v), 4) for k, v in check.scores.items()},
                    "model_checks_used": bool(check.model_checks_used),
                },
            )
    except IntegrityError:
        # Another run of the same task won the race: keep its result, add nothing.
        return Prediction.objects.get(examination=exam, model_sha256=classifier.sha256)
    if model_versions.raises_alert(prediction=prediction, threshold=classifier.alert_threshold):
        services.alert_raise(prediction=prediction, risk=malignancy)
    audit_record(actor=None, action="prediction.create", target=prediction, patient=exam.lesion.patient)
    if check is not None and not check.assessable:
        # Codes only: never the image or patient in a log line.
        logger.info("examination %s not assessable: %s", exam.uuid, ",".join(check.codes))
    logger.info("examination %s classified by %s %s", exam.uuid, classifier.name, classifier.version)
    return prediction


def requeue_stale_examinations() -> list[int]:
    """Examinations to send to the queue again; returns their ids.

    RUNNING rows whose claim expired (their worker died) go back to PENDING. PENDING rows
    older than the same limit are returned too: their message may never have reached the
    broker (it was down at upload time). A duplicate message is harmless, the claim is atomic.
    """
    stale_before = timezone.now() - dt.timedelta(seconds=settings.DERMATRACK_STALE_CLAIM_SECONDS)
    running = list(
        Examination.objects.filter(status=Examination.Status.RUNNING, claimed_at__lt=stale_before).values_list(
            "pk", flat=True
        )
    )
    Examination.objects.filter(pk__in=running, status=Examination.Status.RUNNING, claimed_at__lt=stale_before).update(
        status=Examination.Status.PENDING, claimed_at=None
    )
    forgotten = list(
        Examination.objects.filter(status=Examination.Status.PENDING, created_at__lt=stale_before)
        .exclude(pk__in=running)
        .values_list("pk", flat=True)
    )
    return sorted(running + forgotten)


def requeue_stale_explanations() -> list[int]:
    """Examinations whose explanations are still PENDING past the claim limit: the explain task
    died with its worker (or its message was lost). Returns their ids and restarts the clock, so
    each is sent once per limit. A duplicate is harmless: explanation_compute is idempotent."""
    from lesions.models import Explanation

    stale_before = timezone.now() - dt.timedelta(seconds=settings.DERMATRACK_STALE_CLAIM_SECONDS)
    stale = Explanation.objects.filter(status=Explanation.Status.PENDING, updated_at__lt=stale_before)
    ids = sorted(set(stale.values_list("examination_id", flat=True)))
    stale.update(updated_at=timezone.now())
    return ids


def enqueue_classification(examination_id: int) -> bool:
    """Sends the classification task; a broker outage is logged, never raised into the request
    that saved the examination (the periodic sweep sends it later)."""
    try:
        tasks.classify_examination_task.delay(examination_id)
    except Exception:
        logger.warning("broker unavailable: examination id %s will be queued by the sweep", examination_id)
        return False
    return True
