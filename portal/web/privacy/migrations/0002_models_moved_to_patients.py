# Consent and EmergencyAccess now belong to the patients app (patients.0004), which keeps their
# tables; the privacy app only forgets them in Django's state.

from django.db import migrations


class Migration(migrations.Migration):

    dependencies = [
        ('privacy', '0001_consent_and_emergency_access'),
        ('patients', '0004_consent_emergencyaccess'),
    ]

    operations = [
        migrations.SeparateDatabaseAndState(
            state_operations=[
                migrations.DeleteModel(name='Consent'),
                migrations.DeleteModel(name='EmergencyAccess'),
            ],
        ),
    ]
