"""Celery tasks for lesions: load by primary key, call a service, handle retry or failure."""

from __future__ import annotations

from smtplib import SMTPException

from celery import shared_task

from lesions import services


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
        raise self.retry(exc=exc, countdown=min(300, 2**self.request.retries * 30))
