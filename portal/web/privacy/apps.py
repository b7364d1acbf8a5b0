from django.apps import AppConfig


class PrivacyConfig(AppConfig):
    default_auto_field = "django.db.models.BigAutoField"
    name = "portal.web.privacy"
    label = "privacy"
    verbose_name = "Privacy: consent, data export, erasure, emergency access, audit trail"
