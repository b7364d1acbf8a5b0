from django.apps import AppConfig


class PatientsConfig(AppConfig):
    name = "patients"
    default_auto_field = "django.db.models.BigAutoField"

    def ready(self) -> None:
        from patients.search import blind_indexes_refresh
        from portal.crypto import register_blind_index_refresher

        # rotate_keys (portal, below this app) recomputes record-number and search indexes through it.
        register_blind_index_refresher("patients.patient", blind_indexes_refresh)
