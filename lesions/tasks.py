"""Celery tasks for lesions: load by primary key, call a service, handle retry or failure."""

from __future__ import annotations

import logging
from smtplib import SMTPException

from celery import shared_task
from celery.exceptions import SoftTimeLimitExceeded
from django.db import DatabaseError, transaction

from lesions import classification, explanation_services, risk, services
from lesions.models import Explanation

logger = logging.getLogger(__name__)

# Transient: the database or the file store hiccupped. Bad input is never retried.
TRANSIENT_ERRORS = (DatabaseError, TimeoutError, ConnectionError)


@shared_task(
    bind=True,
    acks_late=True,
    reject_on_worker_lost=True,
    soft_time_limit=60,
    time_limit=90,
    max_retries=5,
    ignore_result=True,
)
def classify_examination_task(self, examination_id: int) -> None:
    if not classification.examination_claim(examination_id=examination_id):
        logger.info("examination %s already claimed or finished; nothing to do", examination_id)
        return
    try:
        classification.examination_classify(examination_id=examination_id)
    except classification.BadImage as exc:
        classification.examination_mark_failed(examination_id=examination_id, reason=str(exc))
    except SoftTimeLimitExceeded:
        classification.examination_mark_failed(
            examination_id=examination_id, reason="Analysis took too long and was stopped."
        )
        raise
    except TRANSIENT_ERRORS as exc:
        classification.examination_release(examination_id=examination_id)
        raise self.retry(exc=exc, countdown=min(60, 2**self.request.retries * 5))
    except Exception:
        logger.exception("classification of examination %s failed", examination_id)
        classification.examination_mark_failed(
            examination_id=examination_id,
            reason="Analysis failed because of an internal error; staff have been notified.",
        )
        raise
    else:
        explanation_services.explanations_pending(examination_id=examination_id)
        transaction.on_commit(lambda: explain_examination_task.delay(examination_id))


@shared_task(
    bind=True,
    acks_late=True,
    reject_on_worker_lost=True,
    soft_time_limit=60,
    time_limit=90,
    max_retries=3,
    ignore_result=True,
)
def explain_examination_task(self, examination_id: int, force: bool = False) -> None:
    """CAM then LIME, of the risk and of the top class. A failure marks that explanation
    FAILED and never touches the prediction."""
    for kind, target in explanation_services.ORDER:
        try:
            explanation_services.explanation_compute(
                examination_id=examination_id, kind=kind, target=target, force=force
            )
        except SoftTimeLimitExceeded:
            _mark_failed(examination_id, kind, target, "Explanation took too long and was stopped.")
            raise
        except TRANSIENT_ERRORS as exc:
            raise self.retry(exc=exc, countdown=min(60, 2**self.request.retries * 5))
        except Exception:
            logger.exception("%s/%s explanation of examination %s failed", kind, target, examination_id)
            _mark_failed(examination_id, kind, target, "Explanation failed because of an internal error.")


def _mark_failed(examination_id: int, kind: str, target: str, reason: str) -> None:
    Explanation.objects.filter(
        examination_id=examination_id, kind=kind, target=target, model_sha256=risk.classifier().sha256
    ).exclude(status=Explanation.Status.DONE).update(status=Explanation.Status.FAILED, failure_reason=reason)


@shared_task(
    bind=True,
    acks_late=True,
    reject_on_worker_lost=True,
    soft_time_limit=60,
    time_limit=90,
    max_retries=5,
    ignore_result=True,
)
def rescore_examination_task(self, examination_id: int) -> None:
    """Scores one analysed examination with the model on disk, without switching versions
    (`manage.py rescore`). Idempotent: a prediction of that model already there is kept."""
    try:
        classification.examination_rescore(examination_id=examination_id)
    except classification.BadImage as exc:
        logger.warning("examination %s cannot be re-scored: %s", examination_id, exc)
    except TRANSIENT_ERRORS as exc:
        raise self.retry(exc=exc, countdown=min(60, 2**self.request.retries * 5))


@shared_task(ignore_result=True, soft_time_limit=30, time_limit=60)
def requeue_stale_examinations_task() -> int:
    """The sweep (beat, every 60 s): every kind of work a dead worker can leave behind."""
    ids = classification.requeue_stale_examinations()
    for examination_id in ids:
        classify_examination_task.delay(examination_id)
    explained = classification.requeue_stale_explanations()
    for examination_id in explained:
        explain_examination_task.delay(examination_id)
    return len(ids) + len(explained)


@shared_task(
    bind=True,
    acks_late=True,
    soft_time_limit=30,
    time_limit=60,
    max_retries=3,
    ignore_result=True,
)
def notify_alert_task(self, alert_id: int) -> None:
    try:
        services.alert_notify(alert_id=alert_id)
    except (SMTPException, ConnectionError, TimeoutError) as exc:
        # At most CELERY_TASK_MAX_RETRY_COUNTDOWN: a longer ETA outlives the visibility timeout (a duplicate mail).
        raise self.retry(exc=exc, countdown=min(60, 2**self.request.retries * 15))
