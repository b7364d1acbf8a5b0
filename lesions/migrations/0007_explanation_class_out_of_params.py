"""The explained class moves from the plaintext Explanation.params into the encrypted summary
(issue #11 item 3: a diagnosis-like label is health data). Reversible."""

from django.db import migrations

KEYS = ("class_index", "class_name")


def forwards(apps, schema_editor):
    Explanation = apps.get_model("lesions", "Explanation")
    for row in Explanation.objects.all().iterator():
        params = dict(row.params or {})
        moved = {k: params.pop(k) for k in KEYS if k in params}
        if not moved:
            continue
        summary = dict(row.summary or {})
        for k, v in moved.items():
            summary.setdefault(k, v)
        if isinstance(summary.get("params"), dict):
            summary["params"] = {k: v for k, v in summary["params"].items() if k not in KEYS}
        row.params, row.summary = params, summary
        row.save(update_fields=["params", "summary"])


def backwards(apps, schema_editor):
    Explanation = apps.get_model("lesions", "Explanation")
    for row in Explanation.objects.all().iterator():
        summary = row.summary or {}
        params = dict(row.params or {})
        for k in KEYS:
            if k in summary:
                params[k] = summary[k]
        row.params = params
        row.save(update_fields=["params"])


class Migration(migrations.Migration):
    dependencies = [("lesions", "0006_encrypt_top_class")]

    operations = [migrations.RunPython(forwards, backwards)]
