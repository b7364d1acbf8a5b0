"""Recovery from a killed worker under the DEFAULT settings (issue #11, item 2)."""

from __future__ import annotations

import datetime as dt
import json
import os
import subprocess
import sys
from pathlib import Path

from django.utils import timezone

from lesions import classification as services
from lesions import tasks
from lesions.models import Explanation
from tests.factories import ExaminationFactory

ROOT = Path(__file__).resolve().parents[2]


def _default_broker_options() -> dict:
    env = {k: v for k, v in os.environ.items() if not k.startswith(("DERMATRACK_BROKER_", "CELERY_"))}
    env["CELERY_BROKER_URL"] = "redis://127.0.0.1:6379/14"
    code = "import json, portal.settings.base as s; print(json.dumps(s.CELERY_BROKER_TRANSPORT_OPTIONS))"
    out = subprocess.run([sys.executable, "-c", code], cwd=ROOT, env=env, capture_output=True, text=True, check=True)
    return json.loads(out.stdout.strip().splitlines()[-1])


def test_default_visibility_timeout_is_minutes_and_outlasts_every_task(settings):
    """Reproduces item 2: the default DERMATRACK_BROKER_VISIBILITY_TIMEOUT=3600 kept a killed
    LIME task unacknowledged, and its explanation pending, for an hour."""
    options = _default_broker_options()
    longest_hold = settings.CELERY_TASK_TIME_LIMIT + settings.CELERY_TASK_MAX_RETRY_COUNTDOWN
    assert longest_hold < options["visibility_timeout"] <= 600
    assert options["unacked_restore_interval"] <= 120
    for task in (
        tasks.classify_examination_task,
        tasks.explain_examination_task,
        tasks.requeue_stale_examinations_task,
    ):
        assert (task.time_limit or settings.CELERY_TASK_TIME_LIMIT) <= settings.CELERY_TASK_TIME_LIMIT


def test_the_sweep_requeues_explanations_a_dead_worker_left_pending(lesion, monkeypatch, settings):
    """Reproduces item 2: the stale-claim sweep re-queued examinations only; an explanation
    whose worker was killed stayed pending."""
    exam = ExaminationFactory(lesion=lesion, status="done")
    pending = Explanation.objects.create(examination=exam, kind="lime", model_sha256="b" * 64)
    Explanation.objects.filter(pk=pending.pk).update(updated_at=timezone.now() - dt.timedelta(minutes=10))
    fresh_exam = ExaminationFactory(lesion=lesion, status="done")
    Explanation.objects.create(examination=fresh_exam, kind="lime", model_sha256="b" * 64)  # may still be queued
    sent = []
    monkeypatch.setattr(tasks.explain_examination_task, "delay", lambda examination_id: sent.append(examination_id))
    monkeypatch.setattr(tasks.classify_examination_task, "delay", lambda examination_id: None)
    assert tasks.requeue_stale_examinations_task() == 1
    assert sent == [exam.pk]
    assert services.requeue_stale_explanations() == []  # sent once per limit, not every minute
