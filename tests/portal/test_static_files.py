"""Static files come from the application itself (WhiteNoise) in every setting: the run command
runs with DEBUG off, and so does gunicorn in production."""

from __future__ import annotations

import re

import pytest
from django.test import Client, override_settings

WHITENOISE = "whitenoise.middleware.WhiteNoiseMiddleware"


@pytest.mark.parametrize(
    ("path", "content_type"), [("css/base.css", "text/css"), ("js/lesion_detail.js", "text/javascript")]
)
def test_static_files_are_served_with_debug_off(settings, path, content_type):
    assert not settings.DEBUG
    response = Client().get(f"/static/{path}")
    assert response.status_code == 200
    assert response["Content-Type"].split(";")[0] == content_type
    assert b"".join(response.streaming_content).strip()


def test_without_whitenoise_the_same_request_fails(settings):
    """The test above is not vacuous: Django alone serves no static file with DEBUG off."""
    with override_settings(MIDDLEWARE=[m for m in settings.MIDDLEWARE if m != WHITENOISE]):
        assert Client().get("/static/css/base.css").status_code == 404


def test_whitenoise_sits_right_after_the_security_middleware(settings):
    assert settings.MIDDLEWARE[:2] == ["django.middleware.security.SecurityMiddleware", WHITENOISE]
    assert settings.INSTALLED_APPS.index("whitenoise.runserver_nostatic") < settings.INSTALLED_APPS.index(
        "django.contrib.staticfiles"
    )


def test_login_page_links_only_same_origin_assets_the_csp_allows(db, settings):
    page = Client().get("/accounts/login/")
    assert page.status_code == 200
    assert "'self'" in settings.CONTENT_SECURITY_POLICY["DIRECTIVES"]["style-src"]
    for url in re.findall(r'(?:href|src)="([^"]+\.(?:css|js))"', page.content.decode()):
        assert url.startswith("/static/"), url  # same origin, no CDN
