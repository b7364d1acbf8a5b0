"""The README's two commands. Standard library only: this runs before any dependency exists.

    python3.11 -m portal.bootstrap run     # environment, migrations, demo data, web server + Celery worker
    python3.11 -m portal.bootstrap test    # environment, lint, import layers, migration check, the test suite

With nothing set they use SQLite and a file-based Celery broker; DATABASE_URL and
CELERY_BROKER_URL switch to PostgreSQL and Redis.
"""

from __future__ import annotations

import hashlib
import os
import signal
import subprocess
import sys
import venv
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
VENV = Path(os.environ.get("DERMATRACK_VENV", ROOT / ".venv"))
BIN = VENV / "bin"
PY = BIN / "python"


def _say(message: str) -> None:
    print(f"\033[1m==> {message}\033[0m", flush=True)


def _run(*args: str | Path, env: dict[str, str] | None = None, check: bool = True) -> int:
    return subprocess.run([str(a) for a in args], cwd=ROOT, env=env, check=check).returncode


def ensure_environment(requirement_files: list[str]) -> None:
    if sys.version_info[:2] != (3, 11):
        print(f"warning: Dermatrack targets Python 3.11; this is {sys.version.split()[0]}", file=sys.stderr)
    if not PY.exists():
        _say(f"creating virtual environment in {VENV}")
        venv.EnvBuilder(with_pip=True, clear=False).create(VENV)
    digest = hashlib.sha256()
    for name in requirement_files:
        digest.update(name.encode())
        for path in sorted((ROOT / "requirements").glob("*.txt")):
            digest.update(path.read_bytes())
    stamp = VENV / f".dermatrack-{'-'.join(Path(n).stem for n in requirement_files)}"
    if stamp.exists() and stamp.read_text() == digest.hexdigest():
        return
    _say(f"installing {', '.join(requirement_files)}")
    _run(PY, "-m", "pip", "install", "--quiet", "--upgrade", "pip")
    args: list[str] = []
    for name in requirement_files:
        args += ["-r", str(ROOT / "requirements" / name)]
    _run(PY, "-m", "pip", "install", "--quiet", *args)
    stamp.write_text(digest.hexdigest())


def _env(settings_module: str) -> dict[str, str]:
    env = dict(os.environ)
    env.setdefault("DJANGO_SETTINGS_MODULE", settings_module)
    env["PYTHONUNBUFFERED"] = "1"
    return env


def run_portal() -> int:
    ensure_environment(["base.txt"])
    env = _env("portal.settings.dev")
    host = os.environ.get("DERMATRACK_HOST", "127.0.0.1")
    port = os.environ.get("DERMATRACK_PORT", "8000")
    _say("applying migrations")
    _run(PY, "manage.py", "migrate", "--noinput", env=env)
    _say("loading demo data")
    _run(PY, "manage.py", "seed_demo", env=env)
    _say("starting Celery worker (with the stale-claim sweep)")
    worker = subprocess.Popen(
        [
            str(BIN / "celery"),
            "-A",
            "portal.celery",
            "worker",
            "--beat",
            "--loglevel=INFO",
            "--concurrency=1",
            "--schedule",
            str(ROOT / "var" / "celerybeat-schedule"),
        ],
        cwd=ROOT,
        env=env,
    )
    _say(f"portal on http://{host}:{port}/  (Ctrl-C stops web server and worker)")
    try:
        return _run(PY, "manage.py", "runserver", f"{host}:{port}", "--noreload", env=env, check=False)
    except KeyboardInterrupt:
        return 0
    finally:
        worker.send_signal(signal.SIGTERM)
        try:
            worker.wait(timeout=20)
        except subprocess.TimeoutExpired:
            worker.kill()


def run_tests(extra: list[str]) -> int:
    in_ci = os.environ.get("CI", "").lower() in ("1", "true", "yes")
    files = ["dev.txt"] + (["train.txt"] if in_ci or os.environ.get("DERMATRACK_TEST_TORCH") else [])
    ensure_environment(files)
    env = _env("portal.settings.test")
    _say("ruff")
    if _run(BIN / "ruff", "check", ".", env=env, check=False):
        return 1
    _say("import layers (lint-imports: docs/architecture.md)")
    if _run(BIN / "lint-imports", env=env, check=False):
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
