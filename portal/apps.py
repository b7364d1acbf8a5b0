from django.apps import AppConfig

from portal import celery


class PortalConfig(AppConfig):
    name = "portal"
    default_auto_field = "django.db.models.BigAutoField"

    def ready(self) -> None:
        # Importing portal.celery (above) binds shared tasks to our Celery app whenever Django
        # starts (web, worker, tests); not in portal/__init__.py, which the stdlib-only bootstrap imports.
        celery.ensure_broker_folders()
