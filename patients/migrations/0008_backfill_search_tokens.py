"""Search tokens for the patients registered before search existed.

Uses the historical models; the tokens come from patients.search.patient_tokens, a function of
the record's decrypted values only (it runs no query). Tokens are derived data: if the scheme
changes later, the current scheme is the right one to write, and `manage.py
patient_search_reindex` (which `rotate_keys` also runs) rewrites whatever differs."""

from django.db import migrations

from patients.search import patient_tokens


def backfill(apps, schema_editor):
    Patient = apps.get_model("patients", "Patient")
    PatientSearchToken = apps.get_model("patients", "PatientSearchToken")
    done = set(PatientSearchToken.objects.values_list("patient_id", flat=True).distinct())
    rows = []
    for patient in Patient.objects.select_related("clinic").order_by("pk").iterator(chunk_size=500):
        if patient.pk in done:
            continue
        rows.extend(PatientSearchToken(patient_id=patient.pk, token=t) for t in sorted(patient_tokens(patient)))
        if len(rows) >= 5000:
            PatientSearchToken.objects.bulk_create(rows)
            rows = []
    PatientSearchToken.objects.bulk_create(rows)


class Migration(migrations.Migration):
    dependencies = [("patients", "0007_search_tokens_and_risk_factors")]

    operations = [migrations.RunPython(backfill, migrations.RunPython.noop, elidable=True)]
