"""Real-browser tests: Debian's Chromium driven by Playwright against pytest-django's
live_server, with static files served the way production serves them (WhiteNoise, DEBUG off),
not by the test server's own static handler. Skipped locally when /usr/bin/chromium is missing;
a failure under CI=true. Screenshots go to test-artifacts/ (git-ignored)."""

from __future__ import annotations

import os
import re
from pathlib import Path

import pytest

from tests.conftest import skip_or_fail
from tests.factories import PASSWORD

CHROMIUM = Path(os.environ.get("DERMATRACK_CHROMIUM", "/usr/bin/chromium"))
ARTIFACTS = Path(__file__).resolve().parents[2] / "test-artifacts"
CHROMIUM_ARGS = [
    "--no-sandbox",
    "--disable-gpu",
    "--disable-dev-shm-usage",
    "--disable-background-networking",
    "--disable-component-update",
    "--no-first-run",
]
DESKTOP = {"width": 1280, "height": 900}
PHONE = {"width": 390, "height": 844}


@pytest.fixture(scope="session")
def live_server(request):
    """pytest-django's live server, less the static-file handler it wraps around the site
    (StaticLiveServerTestCase's): /static/ then reaches the WhiteNoise middleware with DEBUG
    off, as under the run command and gunicorn, so a page that needs DEBUG for its CSS or
    JavaScript fails here."""
    from django.conf import settings
    from pytest_django.live_server_helper import LiveServer

    assert not settings.DEBUG
    server = LiveServer(
        request.config.getvalue("liveserver") or os.getenv("DJANGO_LIVE_TEST_SERVER_ADDRESS") or "localhost",
        start=False,
    )
    server.thread.static_handler = _no_static_handler
    server.start()
    yield server
    server.stop()


def _no_static_handler(application):
    return application


@pytest.fixture(scope="module")
def browser(django_db_setup, django_db_blocker):
    """One Chromium per test module. Playwright's sync API keeps an asyncio loop running in
    this thread while it is open, which makes Django refuse ORM calls from the test itself
    (fixtures, assertions), so DJANGO_ALLOW_ASYNC_UNSAFE is set for exactly that long; the
    module scope ends the loop before any other test module runs."""
    if not CHROMIUM.exists():
        skip_or_fail(f"{CHROMIUM} not installed (apt-get install chromium)")
    try:
        from playwright.sync_api import sync_playwright
    except ImportError:
        skip_or_fail("playwright not installed (pip install -r requirements/dev.txt)")
    previous = os.environ.get("DJANGO_ALLOW_ASYNC_UNSAFE")
    os.environ["DJANGO_ALLOW_ASYNC_UNSAFE"] = "true"
    try:
        with sync_playwright() as pw:
            chromium = pw.chromium.launch(executable_path=str(CHROMIUM), args=CHROMIUM_ARGS, headless=True)
            yield chromium
            chromium.close()
    finally:
        if previous is None:
            os.environ.pop("DJANGO_ALLOW_ASYNC_UNSAFE", None)
        else:
            os.environ["DJANGO_ALLOW_ASYNC_UNSAFE"] = previous


@pytest.fixture
def new_page(browser, live_server):
    """new_page(viewport=..., **context options) -> a Page whose relative URLs go to the live server."""
    contexts = []

    def make(viewport=DESKTOP, **options):
        context = browser.new_context(base_url=live_server.url, viewport=viewport, **options)
        context.set_default_timeout(20_000)
        contexts.append(context)
        page = context.new_page()
        errors: list[str] = []
        page.on("pageerror", lambda exc: errors.append(str(exc)))

        def _broken_subresource(response):
            # A page's own status is the test's business; a broken image, script, style sheet or
            # fetch (or a CSP block, which shows up as a failed request) is always an error.
            kind = response.request.resource_type
            if response.status >= 400 and kind != "document" and not response.url.endswith("/favicon.ico"):
                errors.append(f"{response.status} {kind} {response.url}")

        page.on("response", _broken_subresource)
        page.on(
            "requestfailed",
            lambda request: (
                errors.append(f"failed {request.resource_type} {request.url}: {request.failure}")
                if "ERR_ABORTED" not in (request.failure or "")  # navigating away cancels loads
                else None
            ),
        )
        page.on(
            "console",
            lambda msg: (
                errors.append(msg.text) if msg.type == "error" and "Failed to load resource" not in msg.text else None
            ),
        )
        page.js_errors = errors
        return page

    yield make
    for context in contexts:
        context.close()


def shot(page, name: str) -> str:
    """Saves a full-page screenshot as test-artifacts/<name>.png and returns the file name."""
    ARTIFACTS.mkdir(exist_ok=True)
    # Lazy images below the fold would be blank in a full-page picture: load them first.
    page.eval_on_selector_all('img[loading="lazy"]', "els => els.forEach(e => { e.loading = 'eager'; })")
    page.wait_for_function("() => [...document.images].every(e => e.complete)")
    filename = f"{re.sub(r'[^a-z0-9_-]+', '-', name.lower())}.png"
    page.screenshot(path=str(ARTIFACTS / filename), full_page=True)
    return filename


def login(page, username: str, password: str = PASSWORD) -> None:
    page.goto("/accounts/login/")
    page.get_by_label("Username").fill(username)
    page.get_by_label("Password").fill(password)
    page.get_by_role("button", name="Log in").click()
    page.wait_for_load_state()
    assert "/accounts/login/" not in page.url, f"login failed for {username}"


def fits_phone_width(page) -> bool:
    """No horizontal scrolling: the page is usable on a phone-width screen."""
    return page.evaluate("document.documentElement.scrollWidth <= window.innerWidth + 1")


def images_loaded(page, selector: str) -> list[bool]:
    """Whether each matching image decoded (lazy ones are scrolled into view first)."""
    for image in page.locator(selector).all():
        image.scroll_into_view_if_needed()
    script = "sel => [...document.querySelectorAll(sel)].every(e => e.complete)"
    page.wait_for_function(script, arg=selector)
    return page.eval_on_selector_all(selector, "els => els.map(e => e.complete && e.naturalWidth > 0)")
