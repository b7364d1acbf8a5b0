"""Celery tasks: load by primary key, call a service, handle retry or failure."""

from __future__ import annotations

import logging

from celery import shared_task
from celery.exceptions import SoftTimeLimitExceeded
from django.db import DatabaseError, transaction

from inference import explaining, services
from inference.models import Explanation

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
    if not services.examination_claim(examination_id=examination_id):
        logger.info("examination %s already claimed or finished; nothing to do", examination_id)
        return
    try:
        services.examination_classify(examination_id=examination_id)
    except services.BadImage as exc:
        services.examination_mark_failed(examination_id=examination_id, reason=str(exc))
    except SoftTimeLimitExceeded:
        services.examination_mark_failed(
            examination_id=examination_id, reason="Analysis took too long and was stopped."
        )
        raise
    except TRANSIENT_ERRORS as exc:
        services.examination_release(examination_id=examination_id)
        raise self.retry(exc=exc, countdown=min(60, 2**self.request.retries * 5))
    except Exception:
        logger.exception("classification of examination %s failed", examination_id)
        services.examination_mark_failed(
            examination_id=examination_id,
            reason="Analysis failed because of an internal error; staff have been notified.",
        )
        raise
    else:
        explaining.explanations_pending(examination_id=examination_id)
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
    """CAM then LIME. A failure marks that explanation FAILED and never touches the prediction."""
    for kind in (Explanation.Kind.CAM, Explanation.Kind.LIME):
        try:
            explaining.explanation_compute(examination_id=examination_id, kind=kind, force=force)
        except SoftTimeLimitExceeded:
            _mark_failed(examination_id, kind, "Explanation took too long and was stopped.")
            raise
        except TRANSIENT_ERRORS as exc:
            raise self.retry(exc=exc, countdown=min(60, 2**self.request.retries * 5))
        except Exception:
            logger.exception("%s explanation of examination %s failed", kind, examination_id)
            _mark_failed(examination_id, kind, "Explanation failed because of an internal error.")


def _mark_failed(examination_id: int, kind: str, reason: str) -> None:
    from inference.classifier import get_classifier

    Explanation.objects.filter(examination_id=examination_id, kind=kind, model_sha256=get_classifier().sha256).exclude(
        status=Explanation.Status.DONE
    ).update(status=Explanation.Status.FAILED, failure_reason=reason)


@shared_task(ignore_result=True, soft_time_limit=30, time_limit=60)
def requeue_stale_examinations_task() -> int:
    ids = services.requeue_stale_examinations()
    for examination_id in ids:
        classify_examination_task.delay(examination_id)
    return len(ids)
