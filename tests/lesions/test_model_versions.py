"""Model versions in a running clinic: registry, re-scoring without switching, activation."""

from __future__ import annotations

import io

import pytest
from django.core.files.base import ContentFile
from django.core.management import CommandError, call_command

from lesions import model_versions
from lesions.models import Alert, AlertTrigger, Examination, ModelVersion, Prediction
from lesions.risk import classifier as get_classifier
from lesions.services import examination_upload
from lesions.tasks import classify_examination_task
from portal.audit import AuditEntry
from portal.celery import app as celery_app
from tests.conftest import real_dermoscopy
from tests.factories import AlertFactory, ExaminationFactory, PredictionFactory

OLD = "a" * 64


@pytest.fixture
def eager():
    """Tasks sent with .delay() run at once, through the real task and service code."""
    before = celery_app.conf.task_always_eager
    celery_app.conf.task_always_eager = True
    yield
    celery_app.conf.task_always_eager = before


@pytest.fixture
def archive(lesion):
    """Three analysed examinations scored by an old, active model version: e1 with an open
    alert, e2 with a triaged one, e3 with none."""
    ModelVersion.objects.create(name="old", version="0.9", sha256=OLD, alert_threshold=0.5, is_active=True)
    images = real_dermoscopy(3)
    exams = []
    for data, risk in zip(images, ("0.900000", "0.800000", "0.100000"), strict=True):
        exam = ExaminationFactory(lesion=lesion, image=ContentFile(data, name="x.jpg"), status=Examination.Status.DONE)
        exams.append((exam, PredictionFactory(examination=exam, model_sha256=OLD, malignancy_risk=risk)))
    AlertFactory(prediction=exams[0][1])
    AlertFactory(prediction=exams[1][1], status=Alert.Status.TRIAGED)
    return [e for e, _ in exams]


def _new_threshold(value: float) -> None:
    ModelVersion.objects.filter(sha256=get_classifier().sha256).update(alert_threshold=value)


def test_fresh_install_activates_the_first_model(lesion, clinic_staff):
    assert not ModelVersion.objects.exists()
    data = real_dermoscopy(1)[0]
    exam = examination_upload(actor=clinic_staff, lesion=lesion, image=io.BytesIO(data))
    classify_examination_task(exam.pk)
    version = ModelVersion.objects.get()
    assert version.sha256 == get_classifier().sha256
    assert version.is_active
    assert version.activated_at is not None
    assert version.alert_threshold == get_classifier().alert_threshold
    assert AuditEntry.objects.filter(action="model_version.activate").exists()


def test_rescore_scores_the_archive_without_switching_and_is_resumable(archive, eager, monkeypatch, capsys):
    monkeypatch.setattr(get_classifier(), "alert_threshold", 0.0)  # the new model would alert on all three
    call_command("rescore", "--dry-run")
    out = capsys.readouterr().out
    assert "3 analysed examinations lack a prediction" in out
    assert Prediction.objects.filter(model_sha256=get_classifier().sha256).count() == 0  # dry run: nothing

    call_command("rescore", "--wait", "--poll", "0")
    out = capsys.readouterr().out
    new = Prediction.objects.filter(model_sha256=get_classifier().sha256)
    assert new.count() == 3
    assert all(p.assessable is not None for p in new)
    # Not switched: the old version stays active, the pages still show its results, no alert was raised.
    assert ModelVersion.objects.get(is_active=True).sha256 == OLD
    assert Alert.objects.count() == 2
    # e3 would gain an alert; e1's open alert stays (the new model alerts too); e2 was triaged.
    assert "1 alerts would open, 0 would close" in out
    assert f"activate_model {get_classifier().sha256}" in out

    call_command("rescore", "--wait", "--poll", "0")  # resumable, idempotent
    assert "0 analysed examinations lack a prediction" in capsys.readouterr().out
    assert Prediction.objects.filter(model_sha256=get_classifier().sha256).count() == 3


def test_alert_changes_and_activation_close_what_the_new_version_does_not_raise(
    archive, eager, administrator, clinician_client
):
    call_command("rescore", "--wait", "--poll", "0")
    e1, e2, _ = archive
    _new_threshold(1.01)  # the new version alerts on nothing
    changes = model_versions.alert_changes(sha256=get_classifier().sha256)
    open_alert = Alert.objects.get(prediction__examination=e1)
    assert (changes.to_open, changes.to_close) == ([], [open_alert.pk])
    assert (changes.scored, changes.unscored) == (3, 0)

    page = clinician_client.get(f"/examinations/{e1.uuid}/").content.decode()
    assert "Model efficientnet_lite0 v1.0.0" in page  # the active (old) version's result

    call_command("activate_model", get_classifier().sha256[:12], "--by", administrator.username)
    active = ModelVersion.objects.get(is_active=True)
    assert active.sha256 == get_classifier().sha256
    assert active.activated_by == administrator
    assert ModelVersion.objects.filter(is_active=True).count() == 1
    open_alert.refresh_from_db()
    assert open_alert.status == Alert.Status.SUPERSEDED
    assert Alert.objects.get(prediction__examination=e2).status == Alert.Status.TRIAGED  # a decision stays
    assert AuditEntry.objects.filter(action="model_version.activate", actor=administrator).exists()
    # Old results are kept under the version that made them; pages now show the new one's.
    assert Prediction.objects.filter(model_sha256=OLD).count() == 3
    page = clinician_client.get(f"/examinations/{e1.uuid}/").content.decode()
    assert f"v{get_classifier().version} ({get_classifier().sha256[:12]})" in page
    assert "Also scored by: efficientnet_lite0 v1.0.0" in page


def test_activation_opens_the_alerts_the_new_version_raises(archive, eager):
    call_command("rescore", "--wait", "--poll", "0")
    _new_threshold(0.0)
    e3 = archive[2]
    changes = model_versions.activate(sha256=get_classifier().sha256)
    assert len(changes.to_open) == 1
    alert = Alert.objects.get(prediction__examination=e3, status=Alert.Status.OPEN)
    assert alert.prediction.model_sha256 == get_classifier().sha256


def test_new_upload_alerts_even_before_the_model_on_disk_is_activated(lesion, clinic_staff, monkeypatch):
    ModelVersion.objects.create(name="old", version="0.9", sha256=OLD, alert_threshold=0.5, is_active=True)
    monkeypatch.setattr(get_classifier(), "alert_threshold", 0.0)
    data = real_dermoscopy(1)[0]
    exam = examination_upload(actor=clinic_staff, lesion=lesion, image=io.BytesIO(data))
    classify_examination_task(exam.pk)
    assert Alert.objects.filter(prediction__examination=exam).exists()  # no active result to defer to


def test_activate_refuses_unknown_or_ambiguous_versions(db):
    with pytest.raises(CommandError, match="0 registered versions"):
        call_command("activate_model", "deadbeefdeadbeef")
    with pytest.raises(CommandError, match="at least 8"):
        call_command("activate_model", "abc")


def test_admin_action_activates_one_version_audited(archive, eager, administrator, client):
    call_command("rescore", "--wait", "--poll", "0")
    new = ModelVersion.objects.get(sha256=get_classifier().sha256)
    client.force_login(administrator)
    response = client.post(
        "/admin/lesions/modelversion/", {"action": "activate", "_selected_action": [new.pk]}, follow=True
    )
    assert response.status_code == 200
    new.refresh_from_db()
    assert new.is_active
    assert new.activated_by == administrator
    assert AuditEntry.objects.filter(action="model_version.activate", actor=administrator).exists()


def test_migration_registers_the_versions_of_existing_predictions(db):
    """Migration 0008 on a running clinic: each model file that made predictions is
    registered, the newest one active, so pages keep showing what they showed."""
    import importlib

    from django.apps import apps

    migration = importlib.import_module("lesions.migrations.0008_model_versions_image_check_explanation_target")
    older = PredictionFactory(model_sha256="b" * 64, model_version="0.1")
    PredictionFactory(model_sha256="c" * 64, model_version="0.2")
    PredictionFactory(examination=older.examination, model_sha256="c" * 64, model_version="0.2")
    migration.register_versions_of_existing_predictions(apps, None)
    assert sorted(ModelVersion.objects.values_list("sha256", "version", "is_active")) == [
        ("b" * 64, "0.1", False),
        ("c" * 64, "0.2", True),
    ]


def test_rescoring_by_the_active_version_keeps_one_live_alert(archive, eager, monkeypatch):
    """The version on disk is active (switched before re-scoring): e1 keeps its one open
    alert, e2's decision stands, e3 (same lesion) joins the lesion's open alert."""
    call_command("rescore", "--dry-run")  # registers the model on disk
    ModelVersion.objects.update(is_active=False)
    ModelVersion.objects.filter(sha256=get_classifier().sha256).update(is_active=True)
    monkeypatch.setattr(get_classifier(), "alert_threshold", 0.0)
    call_command("rescore", "--wait", "--poll", "0")
    e1, e2, e3 = archive
    open_alert = Alert.objects.get(status=Alert.Status.OPEN)
    assert set(open_alert.triggers.values_list("prediction__examination", flat=True)) == {e1.pk, e3.pk}
    assert AlertTrigger.objects.filter(prediction__examination=e2).get().alert.status == Alert.Status.TRIAGED
    # The alert now shows e3, the most recently captured trigger, scored by the model on disk.
    assert open_alert.prediction.examination == e3
    assert open_alert.prediction.model_sha256 == get_classifier().sha256
