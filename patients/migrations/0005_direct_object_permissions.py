"""Guardian's direct foreign-key permission tables for patient records, and the move of every
existing patient grant out of guardian's generic (content type + text id) tables into them.

Reversible: going back copies the rows to the generic tables again before the direct tables
are dropped, so no grant is lost in either direction."""

import django.db.models.deletion
from django.conf import settings
from django.db import migrations, models

_MOVES = (
    ("UserObjectPermission", "PatientUserObjectPermission", "user_id"),
    ("GroupObjectPermission", "PatientGroupObjectPermission", "group_id"),
)
BATCH = 5000


def _patient_content_type(apps):
    ContentType = apps.get_model("contenttypes", "ContentType")
    return ContentType.objects.filter(app_label="patients", model="patient").first()


def generic_to_direct(apps, schema_editor):
    content_type = _patient_content_type(apps)
    if content_type is None:  # a fresh database: nothing granted yet
        return
    Patient = apps.get_model("patients", "Patient")
    for generic_name, direct_name, holder in _MOVES:
        generic = apps.get_model("guardian", generic_name)
        direct = apps.get_model("patients", direct_name)
        rows = generic.objects.filter(content_type=content_type)
        existing = set(Patient.objects.values_list("pk", flat=True)) if rows.exists() else set()
        batch = []
        for row in rows.values("permission_id", "object_pk", holder).iterator(chunk_size=BATCH):
            pk = int(row["object_pk"])
            if pk not in existing:  # a grant on a deleted record: nothing to protect any more
                continue
            batch.append(direct(permission_id=row["permission_id"], content_object_id=pk, **{holder: row[holder]}))
            if len(batch) >= BATCH:
                direct.objects.bulk_create(batch, ignore_conflicts=True)
                batch = []
        direct.objects.bulk_create(batch, ignore_conflicts=True)
        rows.delete()


def direct_to_generic(apps, schema_editor):
    content_type = _patient_content_type(apps)
    if content_type is None:
        return
    for generic_name, direct_name, holder in _MOVES:
        generic = apps.get_model("guardian", generic_name)
        direct = apps.get_model("patients", direct_name)
        batch = []
        for row in direct.objects.values("permission_id", "content_object_id", holder).iterator(chunk_size=BATCH):
            batch.append(
                generic(
                    permission_id=row["permission_id"],
                    content_type=content_type,
                    object_pk=str(row["content_object_id"]),
                    **{holder: row[holder]},
                )
            )
            if len(batch) >= BATCH:
                generic.objects.bulk_create(batch, ignore_conflicts=True)
                batch = []
        generic.objects.bulk_create(batch, ignore_conflicts=True)
        direct.objects.all().delete()


class Migration(migrations.Migration):
    dependencies = [
        ("auth", "0012_alter_user_first_name_max_length"),
        ("patients", "0004_consent_emergencyaccess"),
        ("contenttypes", "0002_remove_content_type_name"),
        ("guardian", "0003_remove_groupobjectpermission_guardian_gr_content_ae6aec_idx_and_more"),
        migrations.swappable_dependency(settings.AUTH_USER_MODEL),
    ]

    operations = [
        migrations.CreateModel(
            name="PatientGroupObjectPermission",
            fields=[
                ("id", models.BigAutoField(auto_created=True, primary_key=True, serialize=False, verbose_name="ID")),
                (
                    "content_object",
                    models.ForeignKey(
                        db_index=False, on_delete=django.db.models.deletion.CASCADE, to="patients.patient"
                    ),
                ),
                ("group", models.ForeignKey(on_delete=django.db.models.deletion.CASCADE, to="auth.group")),
                ("permission", models.ForeignKey(on_delete=django.db.models.deletion.CASCADE, to="auth.permission")),
            ],
            options={
                "abstract": False,
                "indexes": [
                    models.Index(fields=["content_object", "permission", "group"], name="patient_gop_object_idx")
                ],
                "unique_together": {("group", "permission", "content_object")},
            },
        ),
        migrations.CreateModel(
            name="PatientUserObjectPermission",
            fields=[
                ("id", models.BigAutoField(auto_created=True, primary_key=True, serialize=False, verbose_name="ID")),
                (
                    "content_object",
                    models.ForeignKey(
                        db_index=False, on_delete=django.db.models.deletion.CASCADE, to="patients.patient"
                    ),
                ),
                ("permission", models.ForeignKey(on_delete=django.db.models.deletion.CASCADE, to="auth.permission")),
                ("user", models.ForeignKey(on_delete=django.db.models.deletion.CASCADE, to=settings.AUTH_USER_MODEL)),
            ],
            options={
                "abstract": False,
                "indexes": [models.Index(fields=["content_object", "permission"], name="patient_uop_object_idx")],
                "unique_together": {("user", "permission", "content_object")},
            },
        ),
        migrations.RunPython(generic_to_direct, direct_to_generic),
    ]
