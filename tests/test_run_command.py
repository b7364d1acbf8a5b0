"""The README's run command as a newcomer meets it: `python -m portal.bootstrap run` in a
subprocess on a free port with its own var dir and the embedded defaults (SQLite, file broker,
no data set, so the demo uses synthetic images), whatever DATABASE_URL / CELERY_BROKER_URL the
suite itself runs on. A demo dermatologist logs in with password and TOTP, every style sheet
and script the pages link is fetched, the worker's results appear in the triage queue, and
SIGTERM leaves no web server or worker behind. Runs in CI (both runs); locally too, as it needs
nothing beyond the project's own environment."""

from __future__ import annotations

import base64
import html
import re
import signal
import time
import urllib.error
import urllib.parse
import urllib.request
from pathlib import Path

import pytest
from django_otp.oath import totp

from tests.running_portal import Portal, alive, descendants, running_portal

pytestmark = pytest.mark.worker
ASSET = re.compile(r'<link[^>]+rel="stylesheet"[^>]+href="([^"]+)"|<script[^>]+src="([^"]+)"')
CONTENT_TYPES = {".css": "text/css", ".js": "text/javascript"}


@pytest.fixture
def portal(tmp_path):
    with running_portal(tmp_path) as running:
        yield running


def _assets(page: bytes) -> set[str]:
    return {html.unescape(a or b) for a, b in ASSET.findall(page.decode())}


def _fetch_assets(portal: Portal, urls: set[str]) -> None:
    for url in sorted(urls):
        status, _, headers, body = portal.get(url)
        suffix = Path(urllib.parse.urlparse(url).path).suffix
        assert status == 200, f"{url}: {status}"
        assert headers.get_content_type() == CONTENT_TYPES[suffix], f"{url}: {headers['Content-Type']}"
        assert body.strip(), f"{url} is empty"


def test_the_readme_run_command_serves_a_styled_portal_and_stops_cleanly(portal):
    status, _, _, login_page = portal.get("/accounts/login/")
    login_assets = _assets(login_page)
    assert any(u.endswith(".css") for u in login_assets), "the login page links no style sheet"
    _fetch_assets(portal, login_assets)

    # The seed says whose record the patient login opens, and the data set is absent here.
    assert re.search(r"^\s+patient\s+\S+\s+\(the demo patient .+\)", portal.output, re.MULTILINE), portal.output
    assert "synthetic" in portal.output

    password = portal.login_key("dermatologist", "Demo logins")
    key = base64.b32decode(portal.login_key("dermatologist", "Two-factor keys"))
    status, url, _, _ = portal.post_form("/accounts/login/", {"username": "dermatologist", "password": password})
    assert "/accounts/2fa/verify/" in url, f"password step ended at {url} ({status})"
    status, url, _, page = portal.post_form(url, {"token": f"{totp(key):06d}"})
    assert status == 200, f"TOTP step: {status}"
    assert "/accounts/" not in url, f"TOTP step ended at {url}"

    # The worker classifies the synthetic images: alerts appear in the triage queue.
    deadline = time.monotonic() + 180
    while b'class="alert-row"' not in page:
        assert time.monotonic() < deadline, f"no alert in the triage queue:\n{page.decode()[-2000:]}"
        time.sleep(2)
        status, _, _, page = portal.get("/triage/")
        assert status == 200
    assert b"Synthetic demo image" in page
    alert = re.search(rb'href="(/alerts/[0-9a-f-]+/)"', page).group(1).decode()
    _, _, _, alert_page = portal.get(alert)
    pages = {"/triage/": page, alert: alert_page}
    for link in re.findall(rb'href="(/(?:lesions|examinations)/[0-9a-f-]+/)"', alert_page):
        status, _, _, pages[link.decode()] = portal.get(link.decode())
        assert status == 200, link
    assets = set().union(*(_assets(p) for p in pages.values()))
    assert any(u.endswith(".js") for u in assets), f"no script on {sorted(pages)}"
    _fetch_assets(portal, assets)

    # SIGTERM to the command: web server and worker stop with it, nothing is left running.
    children = descendants(portal.process.pid)
    assert len(children) >= 3, f"expected web server, worker and its pool: {children}"
    portal.process.send_signal(signal.SIGTERM)
    assert portal.process.wait(timeout=60) == 0, portal.output
    time.sleep(0.5)
    left = sorted(pid for pid in children if alive(pid))
    assert not left, f"left running after SIGTERM: {left}"
    assert "Traceback" not in portal.output, portal.output
