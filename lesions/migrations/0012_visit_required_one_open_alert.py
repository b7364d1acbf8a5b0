import django.db.models.deletion
from django.db import migrations, models


class Migration(migrations.Migration):
    dependencies = [("lesions", "0011_backfill_visits_merge_open_alerts")]

    operations = [
        migrations.AlterField(
            model_name="examination",
            name="visit",
            field=models.ForeignKey(
                on_delete=django.db.models.deletion.PROTECT, related_name="examinations", to="lesions.visit"
            ),
        ),
        migrations.AddConstraint(
            model_name="alert",
            constraint=models.UniqueConstraint(
                condition=models.Q(("status", "open")), fields=("lesion",), name="one_open_alert_per_lesion"
            ),
        ),
    ]
