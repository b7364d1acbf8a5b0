from django.apps import AppConfig


class WebConfig(AppConfig):
    """The top of the ladder: URL wiring, the triage queue and home pages, seed_demo. No models."""

    name = "portal.web"
    label = "web"
