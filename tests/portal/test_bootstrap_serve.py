"""portal.bootstrap.serve: the run command's web server and worker start and stop together.
Stand-in children (sleeping Pythons that fork a grandchild, as the Celery worker forks its pool)
keep it fast; tests/test_run_command.py does the same with the real command."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import textwrap
import time
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]
# A child that forks a grandchild (like a worker's pool), writes both pids, then waits.
CHILD = textwrap.dedent(
    """
    import os, sys, time
    if os.fork() == 0:
        time.sleep(600)
        os._exit(0)
    open(sys.argv[1], "a").write(f"{os.getpid()}\\n")
    time.sleep(float(sys.argv[2]))
    """
)


def _start(tmp_path: Path, *lifetimes: float) -> tuple[subprocess.Popen, Path]:
    pids = tmp_path / "pids"
    commands = {f"child {n}": [sys.executable, "-c", CHILD, str(pids), str(t)] for n, t in enumerate(lifetimes)}
    script = (
        f"import sys; from portal.bootstrap import serve; sys.exit(serve({commands!r}, dict(__import__('os').environ)))"
    )
    process = subprocess.Popen(
        [sys.executable, "-c", script],
        cwd=ROOT,
        start_new_session=True,
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
    )
    deadline = time.monotonic() + 30
    while not (pids.exists() and len(pids.read_text().split()) == len(lifetimes)):
        assert time.monotonic() < deadline, "children did not start"
        time.sleep(0.1)
    return process, pids


def _groups_alive(pids: Path, wait: float = 5.0) -> list[int]:
    """Process groups (one per child, with its grandchild) that still have a live member
    after up to `wait` seconds (a killed process takes a moment to be gone; zombies count as gone)."""
    groups = set(map(int, pids.read_text().split()))
    deadline = time.monotonic() + wait
    while True:
        alive = set()
        for entry in Path("/proc").iterdir():
            try:
                fields = (entry / "stat").read_text().rsplit(")", 1)[1].split()
            except (OSError, IndexError):
                continue
            if fields[0] != "Z" and int(fields[2]) in groups:
                alive.add(int(fields[2]))
        if not alive or time.monotonic() > deadline:
            return sorted(alive)
        time.sleep(0.1)


@pytest.mark.parametrize("signum", [signal.SIGINT, signal.SIGTERM])
def test_a_signal_stops_every_child_and_its_children(tmp_path, signum):
    process, pids = _start(tmp_path, 600, 600)
    assert len(_groups_alive(pids, wait=0)) == 2
    # Ctrl-C in a terminal signals the whole foreground group, which here is just the command.
    os.killpg(process.pid, signum)
    assert process.wait(timeout=30) == 0
    assert "stopping web server and worker" in process.communicate()[0]
    assert _groups_alive(pids) == []


def test_one_child_ending_stops_the_others_with_an_error_status(tmp_path):
    process, pids = _start(tmp_path, 1, 600)  # the "web server" dies after a second
    assert process.wait(timeout=30) != 0
    assert "exited with status" in process.communicate()[0]
    assert _groups_alive(pids) == []
