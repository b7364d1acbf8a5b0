"""Backfill for 0010: every existing examination becomes a visit of its own (its capture time),
every existing alert gets its prediction as its first trigger, and a lesion's open alerts are
made one: the highest-priority one stays open and takes the others' triggers, which close as
MERGED. 0012 then makes the visit required and adds the one-open-alert constraint."""

from django.db import migrations


def forwards(apps, schema_editor):
    Examination = apps.get_model("lesions", "Examination")
    Visit = apps.get_model("lesions", "Visit")
    Alert = apps.get_model("lesions", "Alert")
    AlertTrigger = apps.get_model("lesions", "AlertTrigger")

    for exam in Examination.objects.filter(visit__isnull=True).iterator(chunk_size=500):
        visit = Visit.objects.create(
            lesion_id=exam.lesion_id, captured_at=exam.captured_at, recorded_by_id=exam.uploaded_by_id
        )
        Examination.objects.filter(pk=exam.pk).update(visit=visit)

    have_trigger = set(AlertTrigger.objects.values_list("prediction_id", flat=True))
    AlertTrigger.objects.bulk_create(
        [
            AlertTrigger(alert_id=a.pk, prediction_id=a.prediction_id, priority=a.priority)
            for a in Alert.objects.exclude(prediction_id__in=have_trigger).iterator(chunk_size=500)
        ],
        batch_size=500,
    )

    open_by_lesion = {}
    for alert in Alert.objects.filter(status="open").order_by("lesion_id", "-priority", "created_at", "id"):
        open_by_lesion.setdefault(alert.lesion_id, []).append(alert)
    for alerts in open_by_lesion.values():
        kept, *others = alerts
        if not others:
            continue
        AlertTrigger.objects.filter(alert_id__in=[a.pk for a in others]).update(alert_id=kept.pk)
        Alert.objects.filter(pk__in=[a.pk for a in others]).update(status="merged")


class Migration(migrations.Migration):
    dependencies = [("lesions", "0010_visits_alert_triggers")]

    operations = [migrations.RunPython(forwards, migrations.RunPython.noop, elidable=True)]
