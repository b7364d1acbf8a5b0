"""The browser journeys see static files as production serves them (see conftest.live_server)."""

from __future__ import annotations

import pytest

pytestmark = pytest.mark.browser


def test_style_sheets_load_with_debug_off(new_page, live_server, settings):
    assert not settings.DEBUG
    page = new_page()
    page.goto("/accounts/login/")
    rules = page.evaluate("[...document.styleSheets].map(s => s.href && s.cssRules.length)")
    assert rules, "the login page has no style sheet"
    assert all(rules), f"a style sheet did not load: {rules}"
    # Not the test server's static handler: WhiteNoise's headers.
    response = page.request.get(f"{live_server.url}/static/css/base.css")
    assert response.ok
    assert "max-age" in response.headers.get("cache-control", "")
    assert not page.js_errors
