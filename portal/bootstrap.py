"""The README's two commands. Standard library only: this runs before any dependency exists.

    python3.11 -m portal.bootstrap run     # environment, migrations, demo data, web server + Celery worker
    python3.11 -m portal.bootstrap test    # environment, lint, import layers, mypy, format, migrations, tests

With nothing set they use SQLite and a file-based Celery broker; DATABASE_URL and
CELERY_BROKER_URL switch to PostgreSQL and Redis.
"""

from __future__ import annotations

import contextlib
import hashlib
import os
import signal
import subprocess
import sys
import time
import venv
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
VENV = Path(os.environ.get("DERMATRACK_VENV", ROOT / ".venv"))
BIN = VENV / "bin"
PY = BIN / "python"


def _say(message: str) -> None:
    line = f"==> {message}"
    print(f"\033[1m{line}\033[0m" if sys.stdout.isatty() else line, flush=True)


def _run(*args: str | Path, env: dict[str, str] | None = None, check: bool = True) -> int:
    return subprocess.run([str(a) for a in args], cwd=ROOT, env=env, check=check).returncode


def _with_includes(names: list[str]) -> set[str]:
    """The requirement files named and those they pull in with `-r` (dev.txt includes base.txt)."""
    seen: set[str] = set()
    todo = list(names)
    while todo:
        name = todo.pop()
        if name in seen:
            continue
        seen.add(name)
        for line in (ROOT / "requirements" / name).read_text().splitlines():
            if line.startswith("-r "):
                todo.append(line[3:].strip())
    return seen


def ensure_environment(requirement_files: list[str]) -> None:
    """Installs the requirement files unless this environment already has them at their current
    contents (one stamp for all, so `run` after `test` installs nothing: dev.txt includes base.txt)."""
    if sys.version_info[:2] != (3, 11):
        print(f"warning: Dermatrack targets Python 3.11; this is {sys.version.split()[0]}", file=sys.stderr)
    if not PY.exists():
        _say(f"creating virtual environment in {VENV}")
        venv.EnvBuilder(with_pip=True, clear=False).create(VENV)
    digest = hashlib.sha256()
    for path in sorted((ROOT / "requirements").glob("*.txt")):
        digest.update(path.name.encode() + b"\0" + path.read_bytes())
    stamp = VENV / ".dermatrack-installed"
    installed: set[str] = set()
    if stamp.exists():
        recorded, _, names = stamp.read_text().partition("\n")
        if recorded == digest.hexdigest():
            installed = set(names.split())
    needed = _with_includes(requirement_files)
    if needed <= installed:
        return
    _say(f"installing {', '.join(requirement_files)}")
    _run(PY, "-m", "pip", "install", "--quiet", "--upgrade", "pip")
    args: list[str] = []
    for name in requirement_files:
        args += ["-r", str(ROOT / "requirements" / name)]
    _run(PY, "-m", "pip", "install", "--quiet", *args)
    stamp.write_text(digest.hexdigest() + "\n" + " ".join(sorted(installed | needed)))


# WeasyPrint (the PDF reports, lesions/reports.py) loads Pango, its FreeType backend and HarfBuzz
# through ctypes; the reports use the DejaVu Sans font through fontconfig. Debian bookworm's names.
SYSTEM_LIBRARIES = {
    "pango-1.0": "libpango-1.0-0",
    "pangoft2-1.0": "libpangoft2-1.0-0",
    "harfbuzz-subset": "libharfbuzz-subset0",
    # OpenCV (opencv-python, which rapidocr-onnxruntime, the OCR of uploads in lesions/ocr.py,
    # depends on) links libGL and GLib.
    "GL": "libgl1",
    "glib-2.0": "libglib2.0-0",
}
REPORT_FONT = Path("/usr/share/fonts/truetype/dejavu/DejaVuSans.ttf")
REPORT_FONT_PACKAGE = "fonts-dejavu-core"
# The OCR test set (inference/ocr_testset.py) renders text in these fonts besides DejaVu.
OCR_FONTS = {
    Path("/usr/share/fonts/truetype/liberation/LiberationSans-Regular.ttf"): "fonts-liberation",
    Path("/usr/share/fonts/truetype/freefont/FreeSans.ttf"): "fonts-freefont-ttf",
}
APT_GET = Path("/usr/bin/apt-get")


def _missing_system_packages() -> list[str]:
    import ctypes.util

    missing = [package for library, package in SYSTEM_LIBRARIES.items() if ctypes.util.find_library(library) is None]
    if not REPORT_FONT.exists():
        missing.append(REPORT_FONT_PACKAGE)
    missing += [package for path, package in OCR_FONTS.items() if not path.exists()]
    return missing


def ensure_system_libraries() -> None:
    """Installs the system libraries and fonts of the PDF reports and the OCR (OpenCV's libGL,
    the test set's fonts) with apt-get when they are missing and this runs as root on Debian;
    otherwise says which packages to install."""
    missing = _missing_system_packages()
    if not missing:
        return
    apt = APT_GET
    if hasattr(os, "geteuid") and os.geteuid() == 0 and apt.exists():
        _say(f"installing system packages for the PDF reports and the OCR: {' '.join(missing)}")
        env = {**os.environ, "DEBIAN_FRONTEND": "noninteractive"}
        if _run(apt, "update", "-qq", env=env, check=False) == 0:
            _run(apt, "install", "-y", "-qq", "--no-install-recommends", *missing, env=env, check=False)
        missing = _missing_system_packages()
    if missing:
        print(
            "warning: the PDF reports and the OCR need these system packages, which are missing: "
            f"{' '.join(missing)}\n  install them with: sudo apt-get install {' '.join(missing)}"
            " (other systems: Pango >= 1.44 and the DejaVu fonts; see WeasyPrint's installation notes)",
            file=sys.stderr,
        )


def _env(settings_module: str) -> dict[str, str]:
    env = dict(os.environ)
    env.setdefault("DJANGO_SETTINGS_MODULE", settings_module)
    env["PYTHONUNBUFFERED"] = "1"
    return env


def _die_with_parent() -> None:
    """Runs in each child before exec: on Linux the kernel sends it SIGTERM if this process dies
    without cleaning up (SIGKILL), so no web server or worker is left behind even then."""
    if sys.platform.startswith("linux"):
        import ctypes

        pr_set_pdeathsig = 1
        ctypes.CDLL(None, use_errno=True).prctl(pr_set_pdeathsig, signal.SIGTERM)


def _stop(processes: list[subprocess.Popen], grace: float = 15.0) -> None:
    """SIGTERM to each child (the worker then stops its own pool, finishing the task in hand),
    then SIGKILL to each child's whole process group, so nothing it started outlives it."""
    for process in processes:
        if process.poll() is None:
            process.send_signal(signal.SIGTERM)
    deadline = time.monotonic() + grace
    for process in processes:
        with contextlib.suppress(subprocess.TimeoutExpired):
            process.wait(timeout=max(0.1, deadline - time.monotonic()))
        with contextlib.suppress(ProcessLookupError, PermissionError):
            os.killpg(process.pid, signal.SIGKILL)
        process.wait()


def serve(commands: dict[str, list[str]], env: dict[str, str]) -> int:
    """Starts each command in a process group of its own and waits. Ctrl-C (SIGINT), SIGTERM
    or SIGHUP to this process, or any one command ending, stops them all together. The children
    are kept out of the terminal's process group so that a Ctrl-C reaches them once, from here,
    rather than racing this process's own shutdown."""
    received: list[int] = []

    def on_signal(signum: int, _frame: object) -> None:
        received.append(signum)

    handled = (signal.SIGINT, signal.SIGTERM, signal.SIGHUP)
    previous = {signum: signal.signal(signum, on_signal) for signum in handled}
    processes: dict[str, subprocess.Popen] = {}
    try:
        for name, command in commands.items():
            if received:
                break
            processes[name] = subprocess.Popen(
                command, cwd=ROOT, env=env, start_new_session=True, preexec_fn=_die_with_parent
            )
        while not received:
            ended = [name for name, process in processes.items() if process.poll() is not None]
            if ended:
                print(f"{ended[0]} exited with status {processes[ended[0]].returncode}; stopping", file=sys.stderr)
                return processes[ended[0]].returncode or 1
            time.sleep(0.2)
        _say("stopping web server and worker")
        return 0
    finally:
        _stop(list(processes.values()))
        for signum, handler in previous.items():
            signal.signal(signum, handler)


def run_portal() -> int:
    ensure_system_libraries()
    ensure_environment(["base.txt"])
    env = _env("portal.settings.dev")
    host = os.environ.get("DERMATRACK_HOST", "127.0.0.1")
    port = os.environ.get("DERMATRACK_PORT", "8000")
    var_dir = Path(os.environ.get("DERMATRACK_VAR_DIR", ROOT / "var"))
    var_dir.mkdir(parents=True, exist_ok=True)
    _say("applying migrations")
    _run(PY, "manage.py", "migrate", "--noinput", "--verbosity", "0", env=env)
    _say("loading demo data")
    _run(PY, "manage.py", "seed_demo", env=env)
    _say(f"starting web server and Celery worker: http://{host}:{port}/  (Ctrl-C stops both)")
    return serve(
        {
            "Celery worker": [
                str(BIN / "celery"),
                "-A",
                "portal.celery",
                "worker",
                "--beat",  # with the stale-claim sweep
                "--loglevel=INFO",
                "--concurrency=1",
                "--schedule",
                str(var_dir / "celerybeat-schedule"),
            ],
            "web server": [str(PY), "manage.py", "runserver", f"{host}:{port}", "--noreload"],
        },
        env,
    )


def run_tests(extra: list[str]) -> int:
    in_ci = os.environ.get("CI", "").lower() in ("1", "true", "yes")
    files = ["dev.txt"] + (["train.txt"] if in_ci or os.environ.get("DERMATRACK_TEST_TORCH") else [])
    ensure_system_libraries()
    ensure_environment(files)
    env = _env("portal.settings.test")
    _say("ruff")
    if _run(BIN / "ruff", "check", ".", env=env, check=False):
        return 1
    _say("import layers (lint-imports: docs/architecture.md)")
    if _run(BIN / "lint-imports", env=env, check=False):
        return 1
    _say("types (mypy: pyproject.toml [tool.mypy])")
    if _run(BIN / "mypy", env=env, check=False):
        return 1
    _say("formatting (ruff format --check)")
    if _run(BIN / "ruff", "format", "--check", ".", env=env, check=False):
        return 1
    _say("migrations up to date")
    if _run(PY, "manage.py", "makemigrations", "--check", "--dry-run", env=env, check=False):
        return 1
    backend = "PostgreSQL + Redis" if os.environ.get("DATABASE_URL") else "SQLite + file broker"
    _say(f"tests ({backend})")
    return _run(PY, "-m", "pytest", *extra, env=env, check=False)


def main(argv: list[str]) -> int:
    if not argv or argv[0] not in ("run", "test"):
        print(__doc__)
        return 2
    os.chdir(ROOT)
    return run_portal() if argv[0] == "run" else run_tests(argv[1:])


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
