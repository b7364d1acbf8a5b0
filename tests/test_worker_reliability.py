"""Reliability against a real Redis and real worker processes.

- A worker SIGKILLed in the middle of classification (or explanation): the unacknowledged task
  is delivered again after the broker's visibility timeout, the expired claim is taken over, and
  the examination ends with exactly one prediction (and one explanation of each kind).
- A RUNNING row whose message is gone: the periodic sweep puts it back on the queue.
- The broker restarts while a task runs: the worker reconnects, the task's work is kept once, and
  new tasks still flow.

Each test starts its own redis-server (append-only file, so a restart keeps the queue) on a free
loopback port. They run when the suite runs with CELERY_BROKER_URL=redis://... (CI's second run);
without redis-server they skip, except under CI=true.
"""

from __future__ import annotations

import datetime as dt
import io
import os
import shutil
import signal
import socket
import subprocess
import sys
import time
from pathlib import Path

import pytest
from django.utils import timezone

from lesions.models import Examination, Explanation, Prediction
from tests.conftest import skip_or_fail
from tests.factories import ExaminationFactory, jpeg_bytes
from tests.test_worker import _database_url

pytestmark = [pytest.mark.services, pytest.mark.worker, pytest.mark.django_db(transaction=True)]

ROOT = Path(__file__).resolve().parents[1]
VISIBILITY_TIMEOUT = 6
STALE_CLAIM_SECONDS = 3


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


class Redis:
    def __init__(self, directory: Path) -> None:
        self.binary = shutil.which("redis-server")
        self.port = _free_port()
        self.directory = directory
        self.process: subprocess.Popen | None = None

    @property
    def url(self) -> str:
        return f"redis://127.0.0.1:{self.port}/0"

    def start(self) -> None:
        self.process = subprocess.Popen(
            [
                self.binary,
                "--port",
                str(self.port),
                "--bind",
                "127.0.0.1",
                "--dir",
                str(self.directory),
                "--appendonly",
                "yes",
                "--appendfsync",
                "always",
                "--save",
                "",
            ],
            stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,
        )
        deadline = time.monotonic() + 20
        while time.monotonic() < deadline:
            try:
                socket.create_connection(("127.0.0.1", self.port), timeout=0.5).close()
                return
            except OSError:
                time.sleep(0.1)
        raise AssertionError("redis-server did not start")

    def stop(self) -> None:
        if self.process and self.process.poll() is None:
            self.process.terminate()  # SIGTERM: redis flushes the append-only file and exits
            self.process.wait(timeout=20)


@pytest.fixture
def redis(tmp_path, settings):
    if not settings.CELERY_BROKER_URL.startswith("redis://"):
        # Several minutes of real worker runs: once per CI, in the PostgreSQL + Redis run.
        pytest.skip("runs with the Redis configuration (CELERY_BROKER_URL=redis://...)")
    if shutil.which("redis-server") is None:
        skip_or_fail("redis-server not installed")
    server = Redis(tmp_path / "redis")
    server.directory.mkdir()
    server.start()
    yield server
    server.stop()


@pytest.fixture
def model_available():
    from lesions.risk import model_info as current_model_info

    if current_model_info() is None:
        skip_or_fail("no classifier model available")


@pytest.fixture
def workers(tmp_path, settings, redis):
    started: list[tuple[subprocess.Popen, object]] = []

    def start(name: str, **extra_env: str) -> subprocess.Popen:
        env = dict(os.environ)
        env.update(
            DJANGO_SETTINGS_MODULE="portal.settings.test",
            DATABASE_URL=_database_url(),
            DERMATRACK_MEDIA_ROOT=str(settings.MEDIA_ROOT),
            CELERY_BROKER_URL=redis.url,
            DERMATRACK_BROKER_VISIBILITY_TIMEOUT=str(VISIBILITY_TIMEOUT),
            DERMATRACK_BROKER_RESTORE_SECONDS="2",
            DERMATRACK_STALE_CLAIM_SECONDS=str(STALE_CLAIM_SECONDS),
            PYTHONUNBUFFERED="1",
            **extra_env,
        )
        log = open(tmp_path / f"{name}.log", "w")  # noqa: SIM115 - closed at teardown
        process = subprocess.Popen(
            [
                sys.executable,
                "-m",
                "tests.worker_shim",
                "-A",
                "portal.celery",
                "worker",
                "--pool=solo",
                "--loglevel=INFO",
                "--without-gossip",
                "--without-mingle",
                "--without-heartbeat",
                "-n",
                f"{name}@%h",
            ],
            cwd=ROOT,
            env=env,
            stdout=log,
            stderr=subprocess.STDOUT,
        )
        started.append((process, log))
        return process

    yield start
    for process, log in started:
        if process.poll() is None:
            process.send_signal(signal.SIGTERM)
            try:
                process.wait(timeout=20)
            except subprocess.TimeoutExpired:
                process.kill()
                process.wait(timeout=10)
        log.close()


def _logs(tmp_path: Path) -> str:
    return "\n".join(f"--- {p.name}\n{p.read_text()[-2500:]}" for p in sorted(tmp_path.glob("*.log")))


def _send(redis: Redis, task_name: str, *args) -> None:
    """Publish a task straight to the test's Redis (the app's own producer points elsewhere)."""
    from portal.celery import app

    with app.connection_for_write(redis.url) as conn:
        app.send_task(task_name, args=list(args), connection=conn)


def _wait(predicate, timeout: float, tmp_path: Path, what: str):
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        value = predicate()
        if value:
            return value
        time.sleep(0.5)
    raise AssertionError(f"timed out waiting for {what}\n{_logs(tmp_path)}")


def _exam():
    from django.core.files.base import ContentFile

    from lesions.imaging import validate_and_normalise

    normalised = validate_and_normalise(io.BytesIO(jpeg_bytes(size=(320, 240))))
    return ExaminationFactory(
        image=ContentFile(normalised.png_bytes, name="x.png"),
        image_width=normalised.width,
        image_height=normalised.height,
    )


def _done(exam_pk: int) -> bool:
    return Examination.objects.get(pk=exam_pk).status in (Examination.Status.DONE, Examination.Status.FAILED)


def _explained(exam_pk: int) -> bool:
    return Explanation.objects.filter(examination_id=exam_pk, status=Explanation.Status.DONE).count() == 2


@pytest.mark.parametrize("stage", ["classification", "explanation"])
def test_worker_killed_mid_task_the_task_is_redelivered_and_completes_once(
    stage, redis, workers, tmp_path, model_available
):
    exam = _exam()
    marker = tmp_path / "marker"
    doomed = workers("doomed", SHIM_SLOW_STAGE=stage, SHIM_SLOW_SECONDS="120", SHIM_MARKER=str(marker))
    _send(redis, "lesions.tasks.classify_examination_task", exam.pk)
    _wait(marker.exists, 120, tmp_path, f"the {stage} to start")
    if stage == "classification":
        assert Examination.objects.get(pk=exam.pk).status == Examination.Status.RUNNING
        assert not Prediction.objects.filter(examination=exam).exists()
    doomed.send_signal(signal.SIGKILL)
    doomed.wait(timeout=10)

    workers("rescuer")
    _wait(lambda: _done(exam.pk), 180, tmp_path, "the redelivered classification")
    exam.refresh_from_db()
    assert exam.status == Examination.Status.DONE, exam.failure_reason
    _wait(lambda: _explained(exam.pk), 240, tmp_path, "the explanations")
    time.sleep(VISIBILITY_TIMEOUT + 2)  # any further redelivery has had its chance to add a row
    assert Prediction.objects.filter(examination=exam).count() == 1
    for kind in ("cam", "lime"):
        for target in ("risk", "top_class"):  # exactly one of each, however often the task ran
            assert Explanation.objects.filter(examination=exam, kind=kind, target=target).count() == 1
    if stage == "classification":
        assert exam.attempts == 2  # the killed claim, then the redelivered one


def test_sweep_requeues_a_running_row_whose_message_was_lost(redis, workers, tmp_path, model_available):
    exam = _exam()
    Examination.objects.filter(pk=exam.pk).update(
        status=Examination.Status.RUNNING, claimed_at=timezone.now() - dt.timedelta(hours=1), attempts=1
    )
    workers("sweeper")
    _send(redis, "lesions.tasks.requeue_stale_examinations_task")  # what celery beat sends every minute
    _wait(lambda: _done(exam.pk), 180, tmp_path, "the swept examination")
    exam.refresh_from_db()
    assert exam.status == Examination.Status.DONE
    assert Prediction.objects.filter(examination=exam).count() == 1


def test_broker_restart_mid_task_keeps_one_result_and_new_tasks_still_flow(redis, workers, tmp_path, model_available):
    exam = _exam()
    marker = tmp_path / "marker"
    workers("survivor", SHIM_SLOW_STAGE="classification", SHIM_SLOW_SECONDS="8", SHIM_MARKER=str(marker))
    _send(redis, "lesions.tasks.classify_examination_task", exam.pk)
    _wait(marker.exists, 120, tmp_path, "the classification to start")
    redis.stop()
    time.sleep(2)
    redis.start()
    _wait(lambda: _done(exam.pk), 180, tmp_path, "the classification across the restart")
    marker.unlink()

    second = _exam()
    _send(redis, "lesions.tasks.classify_examination_task", second.pk)
    _wait(lambda: _done(second.pk), 180, tmp_path, "a task sent after the restart")
    time.sleep(VISIBILITY_TIMEOUT + 2)
    for e in (exam, second):
        e.refresh_from_db()
        assert e.status == Examination.Status.DONE, e.failure_reason
        assert Prediction.objects.filter(examination=e).count() == 1
