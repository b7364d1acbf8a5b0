"""The README's run command, started the way a newcomer starts it, for the tests that drive
it (tests/test_run_command.py over HTTP, tests/browser/test_clinic_day.py in Chromium)."""

from __future__ import annotations

import contextlib
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
from collections.abc import Iterator
from http.cookiejar import CookieJar
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
STARTUP_SECONDS = 240  # migrations + seeding on a busy 2-core machine


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def descendants(pid: int) -> set[int]:
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


def alive(pid: int) -> bool:
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


@contextlib.contextmanager
def running_portal(tmp_path: Path) -> Iterator[Portal]:
    """The README's `python -m portal.bootstrap run` on a free port with its own var dir and the
    embedded defaults; stopped with SIGTERM (then SIGKILL to whatever is left) on exit."""
    port = free_port()
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
            with_children = descendants(process.pid)
            os.kill(process.pid, signal.SIGTERM)
            try:
                process.wait(timeout=60)
            except subprocess.TimeoutExpired:
                os.killpg(process.pid, signal.SIGKILL)
                for pid in with_children:
                    if alive(pid):
                        os.kill(pid, signal.SIGKILL)
                raise
        running.reader.join(timeout=10)
        process.stdout.close()  # type: ignore[union-attr]
