"""Indexes for the triage queue and the follow-up list at hospital scale (issue 9 section 4):
the open alerts in queue order and by lesion (partial: open alerts are a small share of all),
a lesion's id by patient, and lesions by follow-up date. Schema only, no data change."""

from django.db import migrations, models


class Migration(migrations.Migration):
    dependencies = [
        ("lesions", "0008_model_versions_image_check_explanation_target"),
    ]

    operations = [
        migrations.AddIndex(
            model_name="alert",
            index=models.Index(
                condition=models.Q(("status", "open")),
                fields=["-priority", "created_at", "id"],
                name="alert_open_queue_idx",
            ),
        ),
        migrations.AddIndex(
            model_name="alert",
            index=models.Index(
                condition=models.Q(("status", "open")), fields=["lesion", "priority"], name="alert_open_lesion_idx"
            ),
        ),
        migrations.AddIndex(
            model_name="lesion",
            index=models.Index(fields=["patient", "id"], name="lesion_patient_idx"),
        ),
        migrations.AddIndex(
            model_name="lesion",
            index=models.Index(
                condition=models.Q(("next_follow_up__isnull", False)),
                fields=["next_follow_up"],
                name="lesion_follow_up_idx",
            ),
        ),
    ]
