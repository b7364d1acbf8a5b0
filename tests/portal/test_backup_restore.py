"""`manage.py backup` / `restore`: a full round trip into a fresh database and media folder, on
the backend this run uses (CI runs the suite on SQLite and on PostgreSQL; the PostgreSQL round
trip restores into a scratch database next to the test database)."""

from __future__ import annotations

import io
import json
import os
import subprocess
import sys
import uuid
from pathlib import Path

import pytest
from cryptography.fernet import Fernet
from django.conf import settings
from django.core.files.base import ContentFile
from django.core.management import call_command
from django.core.management.base import CommandError
from django.db import connection

from lesions.models import Alert, Explanation, Prediction
from lesions.services import examination_upload, lesion_add, triage_decide
from portal.audit import audit_record
from tests.factories import PatientFactory, png_bytes

ROOT = Path(__file__).resolve().parents[2]

# Run inside the restored installation: every encrypted field must decrypt (strict fields raise
# otherwise) and every stored file must decrypt to the hash recorded for it.
VERIFY = """
import hashlib, json
from django.apps import apps
from django.db.models import FileField
out = {"rows": {}, "files": {}}
for model in apps.get_models():
    rows = list(model._base_manager.all())
    out["rows"][model._meta.label_lower] = len(rows)
    for field in [f for f in model._meta.fields if isinstance(f, FileField)]:
        for row in rows:
            value = getattr(row, field.name)
            if value.name:
                with value.open("rb") as fh:
                    out["files"][value.name] = hashlib.sha256(fh.read()).hexdigest()
from lesions.models import Examination
out["image_hashes_match"] = all(out["files"][e.image.name] == e.image_sha256 for e in Examination.objects.all())
out["names"] = sorted(p.family_name for p in apps.get_model("patients", "Patient").objects.all())
print("RESULT " + json.dumps(out))
"""


@pytest.fixture
def fresh(tmp_path):
    """Environment for a second, empty installation: its own database and media folder."""
    db = settings.DATABASES["default"]
    env = {
        **os.environ,
        "DJANGO_SETTINGS_MODULE": "portal.settings.test",
        "DERMATRACK_MEDIA_ROOT": str(tmp_path / "restored-media"),
        "FIELD_ENCRYPTION_KEY": ",".join(settings.FIELD_ENCRYPTION_KEY),
        "BLIND_INDEX_KEY": settings.BLIND_INDEX_KEY,
    }
    if connection.vendor == "postgresql":
        name = f"{db['NAME']}_restore_{uuid.uuid4().hex[:6]}"
        with connection.cursor() as cursor:
            cursor.execute(f'CREATE DATABASE "{name}"')
        user, host, port = db.get("USER") or "postgres", db.get("HOST") or "127.0.0.1", db.get("PORT") or 5432
        password = f":{db['PASSWORD']}" if db.get("PASSWORD") else ""
        env["DATABASE_URL"] = f"postgres://{user}{password}@{host}:{port}/{name}"
        yield env
        with connection.cursor() as cursor:
            cursor.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')
    else:
        env["DATABASE_URL"] = f"sqlite:///{tmp_path / 'restored.sqlite3'}"
        yield env


def _manage(env, *args):
    return subprocess.run(
        [sys.executable, "manage.py", *args], cwd=ROOT, env=env, capture_output=True, text=True, check=False
    )


def _portal(clinic, clinician, clinic_staff, monkeypatch):
    monkeypatch.setattr("lesions.classification.enqueue_classification", lambda examination_id: True)
    names = []
    for n in range(2):
        patient = PatientFactory(clinic=clinic, family_name=f"Quackenbush{n}")
        names.append(patient.family_name)
        lesion = lesion_add(actor=clinic_staff, patient=patient, body_site="face", label="left cheek")
        exam = examination_upload(actor=clinic_staff, lesion=lesion, image=io.BytesIO(png_bytes(seed=n)), notes="x")
        prediction = Prediction.objects.create(
            examination=exam, model_name="m", model_version="t", model_sha256="a" * 64,
            probabilities={"mel": 0.7, "nv": 0.3}, malignancy_risk="0.700000", top_class="mel",
        )  # fmt: skip
        alert = Alert.objects.create(prediction=prediction, lesion=lesion, clinic=clinic, priority=700)
        explanation = Explanation(examination=exam, kind="cam", model_sha256="a" * 64, status="done")
        explanation.image.save("cam", ContentFile(png_bytes(seed=50 + n)), save=True)
        triage_decide(actor=clinician, alert=alert, decision="dismiss", reason="benign on dermoscopy")
        audit_record(actor=clinician, action="patient.view", target=patient, patient=patient)
    return sorted(names)


@pytest.mark.django_db(transaction=True)
def test_backup_restores_into_a_fresh_installation_that_decrypts(
    tmp_path, fresh, clinic, clinician, clinic_staff, monkeypatch
):
    names = _portal(clinic, clinician, clinic_staff, monkeypatch)
    dest = tmp_path / "backup"
    call_command("backup", str(dest))
    manifest = json.loads((dest / "manifest.json").read_text())
    assert len(manifest["media"]) == 4  # two images, two explanation images
    text = "".join(p.read_bytes().decode("latin-1") for p in dest.rglob("*") if p.is_file())
    for key in settings.FIELD_ENCRYPTION_KEY:
        assert key not in text  # never the keys
    assert "Quackenbush0" not in text  # names are encrypted in the dump too

    # The source installation is not empty: restore refuses it.
    with pytest.raises(CommandError, match="not empty"):
        call_command("restore", str(dest))

    # The wrong key fails loudly, before anything is written.
    wrong = {**fresh, "FIELD_ENCRYPTION_KEY": Fernet.generate_key().decode()}
    refused = _manage(wrong, "restore", str(dest))
    assert refused.returncode != 0
    assert "FIELD_ENCRYPTION_KEY does not decrypt this backup" in refused.stderr
    assert not Path(fresh["DERMATRACK_MEDIA_ROOT"]).exists()
    tables = _manage(
        fresh, "shell", "-c", "from django.db import connection; print(connection.introspection.table_names())"
    )
    assert tables.stdout.strip().splitlines()[-1] == "[]", tables.stderr

    # A damaged file is caught by its hash.
    damaged = tmp_path / "damaged"
    subprocess.run(["cp", "-r", str(dest), str(damaged)], check=True)
    first = next((damaged / "media").rglob("*.*"))
    first.write_bytes(first.read_bytes()[:-1] + b"!")
    assert "does not match its hash" in _manage(fresh, "restore", str(damaged)).stderr

    restored = _manage(fresh, "restore", str(dest))
    assert restored.returncode == 0, restored.stderr
    checked = _manage(fresh, "shell", "-c", VERIFY)
    assert checked.returncode == 0, checked.stderr
    result = json.loads(checked.stdout.split("RESULT ", 1)[1])
    assert result["names"] == names
    assert result["image_hashes_match"]
    assert len(result["files"]) == 4
    for label in ("patients.patient", "lesions.examination", "lesions.prediction", "lesions.explanation",
                  "lesions.alert", "lesions.triagedecision", "portal.auditentry", "portal.user"):  # fmt: skip
        model = __import__("django.apps", fromlist=["apps"]).apps.get_model(label)
        assert result["rows"][label] == model._base_manager.count(), label
