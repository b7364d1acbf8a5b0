"""Prediction.top_class is encrypted at rest, existing rows by a data migration (issue #11, item 3)."""

from __future__ import annotations

import pytest
from django.db import connection
from django.db.migrations.executor import MigrationExecutor

from lesions.models import Prediction
from tests.factories import PredictionFactory


def _raw_top_class(pk: int) -> str:
    with connection.cursor() as cursor:
        cursor.execute("SELECT top_class FROM lesions_prediction WHERE id = %s", [pk])
        return cursor.fetchone()[0]


def test_top_class_is_stored_encrypted(lesion):
    """Reproduces item 3: the class label was stored in plaintext next to encrypted probabilities."""
    prediction = PredictionFactory(examination__lesion=lesion, top_class="mel")
    raw = _raw_top_class(prediction.pk)
    assert raw.startswith("gAAAAA")
    assert "mel" not in raw
    assert Prediction.objects.get(pk=prediction.pk).top_class == "mel"


@pytest.mark.django_db(transaction=True)
def test_the_migration_encrypts_existing_plaintext_labels(lesion):
    executor = MigrationExecutor(connection)
    executor.migrate([("lesions", "0005_examination_synthetic")])
    try:
        # A row written before the change: its label in plaintext (the examination through
        # the historical model: the table had no visit then).
        prediction = PredictionFactory.build(examination__lesion=lesion)
        old_apps = executor.loader.project_state([("lesions", "0005_examination_synthetic")]).apps
        old_exam = old_apps.get_model("lesions", "Examination").objects.create(
            lesion_id=lesion.pk, image="examinations/x.png.enc", image_sha256="0" * 64, image_width=1, image_height=1
        )
        prediction.examination.pk = old_exam.pk
        with connection.cursor() as cursor:
            cursor.execute(
                "INSERT INTO lesions_prediction (uuid, examination_id, model_name, model_version, model_sha256,"
                " created_at, probabilities, malignancy_risk, top_class)"
                " VALUES (%s, %s, 'm', 'v', %s, %s, %s, %s, 'bcc')",
                [
                    prediction.uuid.hex if connection.vendor == "sqlite" else str(prediction.uuid),
                    prediction.examination.pk,
                    "c" * 64,
                    "2026-01-01 00:00:00",
                    Prediction._meta.get_field("probabilities").get_db_prep_save({"bcc": 1.0}, connection),
                    Prediction._meta.get_field("malignancy_risk").get_db_prep_save("0.1", connection),
                ],
            )
    finally:
        MigrationExecutor(connection).migrate(MigrationExecutor(connection).loader.graph.leaf_nodes())
    row = Prediction.objects.get(model_sha256="c" * 64)
    assert row.top_class == "bcc"
    assert _raw_top_class(row.pk).startswith("gAAAAA")
