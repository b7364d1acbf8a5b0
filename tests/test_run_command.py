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
import os
import re
import signal
import socket
import subprocess
import sys
import threading
import time
import urllib.error
import urllib.parse
import urllib.request
from http.cookiejar import CookieJar
from pathlib import Path

import pytest
from django_otp.oath import totp

pytestmark = pytest.mark.worker

ROOT = Path(__file__).resolve().parents[1]
STARTUP_SECONDS = 240  # migrations + seeding on a busy 2-core machine
ASSET = re.compile(r'<link[^>]+rel="stylesheet"[^>]+href="([^"]+)"|<script[^>]+src="([^"]+)"')
CONTENT_TYPES = {".css": "text/css", ".js": "text/javascript"}


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def _descendants(pid: int) -> set[int]:
    """Every process below `pid` (from /proc: the children run in sessions of their own)."""
    parents: dict[int, int] = {}
    for entry in Path("/proc").iterdir():
        if entry.name.isdigit():
            try:
                stat = (entry / "stat").read_text()
            except OSError:
                continue
            parents[int(entry.name)] = int(stat.rsplit(")", 1)[1].split()[1])
    found, frontier = set(), {pid}
    while frontier:
        frontier = {child for child, parent in parents.items() if parent in frontier} - found
        found |= frontier
    return found


def _alive(pid: int) -> bool:
    try:
        state = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0]
    except OSError:
        return False
    return state != "Z"


class Portal:
    """The running command: its output so far, and an HTTP client with a cookie jar."""

    def __init__(self, process: subprocess.Popen, base_url: str) -> None:
        self.process = process
        self.base_url = base_url
        self.lines: list[str] = []
        self.opener = urllib.request.build_opener(urllib.request.HTTPCookieProcessor(CookieJar()))
        self.reader = threading.Thread(target=self._read, daemon=True)
        self.reader.start()

    def _read(self) -> None:
        for line in self.process.stdout:  # type: ignore[union-attr]
            self.lines.append(line.rstrip("\n"))

    @property
    def output(self) -> str:
        return "\n".join(self.lines)

    def get(self, path: str, data: dict[str, str] | None = None):
        body = urllib.parse.urlencode(data).encode() if data is not None else None
        request = urllib.request.Request(urllib.parse.urljoin(self.base_url, path), data=body)  # noqa: S310 - http://127.0.0.1 only
        if data is not None:
            request.add_header("Referer", self.base_url)
        try:
            response = self.opener.open(request, timeout=30)
        except urllib.error.HTTPError as error:
            response = error
        with response:
            return response.status, response.geturl(), response.headers, response.read()

    def post_form(self, path: str, fields: dict[str, str]):
        status, url, _, page = self.get(path)
        assert status == 200, f"{path}: {status}"
        token = re.search(rb'name="csrfmiddlewaretoken" value="([^"]+)"', page)
        assert token, f"no CSRF token on {url}"
        return self.get(url, {"csrfmiddlewaretoken": token.group(1).decode(), **fields})

    def login_key(self, username: str, section: str) -> str:
        """The password or TOTP key the seed printed for `username` under `section`."""
        text = self.output.split(section, 1)[1]
        match = re.search(rf"^\s+{username}\s+(\S+)", text, re.MULTILINE)
        assert match, f"no {username} line under {section!r}:\n{self.output}"
        return match.group(1)


@pytest.fixture
def portal(tmp_path):
    port = _free_port()
    env = {k: v for k, v in os.environ.items() if not k.startswith(("DJANGO_", "DERMATRACK_"))}
    for name in ("DATABASE_URL", "CELERY_BROKER_URL", "CELERY_TASK_ALWAYS_EAGER"):
        env.pop(name, None)  # the embedded defaults, as on a fresh clone
    env.update(
        DERMATRACK_PORT=str(port),
        DERMATRACK_HOST="127.0.0.1",
        DERMATRACK_VAR_DIR=str(tmp_path / "var"),
        DERMATRACK_DEMO_DATA_DIR=str(tmp_path / "no-data-set"),  # a bare clone has no ../shared
        DERMATRACK_LOG_LEVEL="INFO",
    )
    process = subprocess.Popen(
        [sys.executable, "-m", "portal.bootstrap", "run"],
        cwd=ROOT,
        env=env,
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
        start_new_session=True,  # like a terminal: the command leads its own process group
    )
    running = Portal(process, f"http://127.0.0.1:{port}/")
    try:
        deadline = time.monotonic() + STARTUP_SECONDS
        while time.monotonic() < deadline:
            assert process.poll() is None, f"the run command exited early:\n{running.output}"
            try:
                status, *_ = running.get("/accounts/login/")
                if status == 200:
                    break
            except OSError:
                pass
            time.sleep(1)
        else:
            pytest.fail(f"no login page within {STARTUP_SECONDS} s:\n{running.output}")
        yield running
    finally:
        if process.poll() is None:
            with_children = _descendants(process.pid)
            os.kill(process.pid, signal.SIGTERM)
            try:
                process.wait(timeout=60)
            except subprocess.TimeoutExpired:
                os.killpg(process.pid, signal.SIGKILL)
                for pid in with_children:
                    if _alive(pid):
                        os.kill(pid, signal.SIGKILL)
                raise
        running.reader.join(timeout=10)
        process.stdout.close()  # type: ignore[union-attr]


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
    children = _descendants(portal.process.pid)
    assert len(children) >= 3, f"expected web server, worker and its pool: {children}"
    portal.process.send_signal(signal.SIGTERM)
    assert portal.process.wait(timeout=60) == 0, portal.output
    time.sleep(0.5)
    left = sorted(pid for pid in children if _alive(pid))
    assert not left, f"left running after SIGTERM: {left}"
    assert "Traceback" not in portal.output, portal.output
