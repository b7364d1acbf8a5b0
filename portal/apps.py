from django.apps import AppConfig


class PortalConfig(AppConfig):
    name = "portal"
    default_auto_field = "django.db.models.BigAutoField"

    def ready(self) -> None:
        # Bind shared tasks to our Celery app whenever Django starts (web, worker, tests).
        from portal import celery

        celery.ensure_broker_folders()
