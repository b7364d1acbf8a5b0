"""End to end through a real Celery worker process: upload -> worker -> encrypted prediction
readable by the right user only. Runs on the embedded defaults (SQLite + file broker) and, in
CI, on PostgreSQL + Redis."""

from __future__ import annotations

import os
import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
from django.conf import settings
from django.core.files.uploadedfile import SimpleUploadedFile
from django.db import connection

from lesions.models import Examination, Prediction
from tests.conftest import skip_or_fail
from tests.factories import lesion_jpeg_bytes

pytestmark = [pytest.mark.worker, pytest.mark.django_db(transaction=True)]

ROOT = Path(__file__).resolve().parents[1]


def _database_url() -> str:
    db = connection.settings_dict
    if db["ENGINE"].endswith("sqlite3"):
        return f"sqlite:///{db['NAME']}"
    user = db.get("USER") or ""
    auth = f"{user}:{db['PASSWORD']}@" if db.get("PASSWORD") else (f"{user}@" if user else "")
    return f"postgres://{auth}{db.get('HOST') or '127.0.0.1'}:{db.get('PORT') or 5432}/{db['NAME']}"


def _broker_reachable() -> bool:
    url = settings.CELERY_BROKER_URL
    if url.startswith("filesystem://"):
        return True
    from kombu import Connection

    try:
        with Connection(url, connect_timeout=2) as conn:
            conn.ensure_connection(max_retries=1)
        return True
    except Exception:
        return False


@pytest.fixture
def worker(tmp_path, settings):
    if not _broker_reachable():
        skip_or_fail(f"broker {settings.CELERY_BROKER_URL} not reachable")
    if settings.CELERY_BROKER_URL.startswith("filesystem://"):
        for key in ("data_folder_in", "control_folder"):
            folder = Path(settings.CELERY_BROKER_TRANSPORT_OPTIONS[key])
            shutil.rmtree(folder, ignore_errors=True)
            folder.mkdir(parents=True, exist_ok=True)
    else:
        from portal.celery import app

        app.control.purge()
    env = dict(os.environ)
    env.update(
        DJANGO_SETTINGS_MODULE="portal.settings.test",
        DATABASE_URL=_database_url(),
        DERMATRACK_MEDIA_ROOT=str(settings.MEDIA_ROOT),
        PYTHONUNBUFFERED="1",
    )
    log = open(tmp_path / "worker.log", "w")  # noqa: SIM115 - closed below
    process = subprocess.Popen(
        [
            sys.executable,
            "-m",
            "celery",
            "-A",
            "portal.celery",
            "worker",
            "--pool=solo",
            "--concurrency=1",
            "--loglevel=INFO",
            "--without-gossip",
            "--without-mingle",
            "--without-heartbeat",
        ],
        cwd=ROOT,
        env=env,
        stdout=log,
        stderr=subprocess.STDOUT,
    )
    yield process, tmp_path / "worker.log"
    process.send_signal(signal.SIGTERM)
    try:
        process.wait(timeout=20)
    except subprocess.TimeoutExpired:
        process.kill()
    log.close()


def _wait_for(exam_uuid, log_path: Path, timeout: float = 120) -> Examination:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        exam = Examination.objects.get(uuid=exam_uuid)
        if exam.status in (Examination.Status.DONE, Examination.Status.FAILED):
            return exam
        time.sleep(0.5)
    raise AssertionError(f"worker did not finish in {timeout}s; log:\n{log_path.read_text()[-3000:]}")


def test_upload_is_classified_by_a_real_worker(worker, client, clinic_staff, patient, other_patient_user, lesion):
    _process, log_path = worker
    client.force_login(clinic_staff)
    image = SimpleUploadedFile("scan.jpg", lesion_jpeg_bytes())
    response = client.post(f"/api/lesions/{lesion.uuid}/examinations/", {"image": image})
    assert response.status_code == 201, response.content
    exam_uuid = response.json()["uuid"]

    exam = _wait_for(exam_uuid, log_path)
    assert exam.status == Examination.Status.DONE, exam.failure_reason
    prediction = Prediction.objects.get(examination=exam)

    with connection.cursor() as cursor:
        cursor.execute("SELECT probabilities, malignancy_risk FROM lesions_prediction WHERE id = %s", [prediction.pk])
        raw_probabilities, raw_risk = cursor.fetchone()
    assert "mel" not in raw_probabilities
    assert raw_probabilities.startswith("gAAAAA")
    assert raw_risk.startswith("gAAAAA")

    client.force_login(clinic_staff)
    body = client.get(f"/api/examinations/{exam_uuid}/").json()
    assert body["status"] == "done"
    assert abs(sum(body["prediction"]["probabilities"].values()) - 1) < 1e-3
    assert 0 <= body["prediction"]["malignancy_risk"] <= 1

    # The patient gets the result in plain language, not the model's output (issue #11).
    client.force_login(patient.account)
    body = client.get(f"/api/examinations/{exam_uuid}/").json()
    assert body["prediction"] is None
    assert body["result"]["level"] in ("low", "elevated", "high")

    client.force_login(other_patient_user)
    assert client.get(f"/api/examinations/{exam_uuid}/").status_code == 404
