"""Prediction.top_class is encrypted like the probabilities and the risk (issue #11): the
column becomes text, then every plaintext value is encrypted in place. Reversible."""

from django.db import migrations

import portal.crypto


def _rewrite(apps, schema_editor, transform):
    table = "lesions_prediction"
    with schema_editor.connection.cursor() as cursor:
        cursor.execute(f"SELECT id, top_class FROM {table}")  # noqa: S608 - fixed table name
        rows = cursor.fetchall()
        for pk, value in rows:
            new = transform(value)
            if new is not None:
                cursor.execute(f"UPDATE {table} SET top_class = %s WHERE id = %s", [new, pk])  # noqa: S608


def encrypt(apps, schema_editor):
    def transform(value):
        if not value or value.startswith("gAAAAA"):  # already a Fernet token
            return None
        return portal.crypto.encrypt_bytes(value.encode()).decode()

    _rewrite(apps, schema_editor, transform)


def decrypt(apps, schema_editor):
    def transform(value):
        if not value or not value.startswith("gAAAAA"):
            return None
        return portal.crypto.decrypt_bytes(value.encode()).decode()[:16]

    _rewrite(apps, schema_editor, transform)


class Migration(migrations.Migration):
    dependencies = [("lesions", "0005_examination_synthetic")]

    operations = [
        migrations.AlterField(model_name="prediction", name="top_class", field=portal.crypto.EncryptedCharField()),
        migrations.RunPython(encrypt, decrypt),
    ]
