"""Load benchmark: concurrent users against gunicorn + PostgreSQL + Redis + a real Celery worker.

    python benchmarks/load.py                        # 16 users for 60 s
    python benchmarks/load.py --users 24 --duration 90 --gunicorn-workers 3

Everything runs on loopback: a fresh PostgreSQL database (dropped afterwards), a private
redis-server on a free port, gunicorn (gthread) with the portal, one Celery worker with the real
classifier. Virtual users are clinic staff and dermatologists, each with its own account and
TOTP device: they log in (password, then the TOTP code), then loop over the pages of their role
(patient list, patient, lesion, examination, the dermatologists' triage queue), log in again
every 30 s or so, and now and then upload an examination image through the API. The run is
bounded in time; afterwards the worker is given a bounded time to drain and every uploaded
examination must have exactly one prediction.

Prints throughput, p50/p95/p99 per request kind and overall, errors, and the checks against the
goal (>= 100 page views/s with p95 <= 300 ms, 0 errors, 0 lost uploads). Exit status 1 on
errors or lost uploads. The load generator is this one process (threads with keep-alive HTTP
connections, standard library only), so it shares the machine's cores with what it measures.

    python benchmarks/load.py --chaos 15 --duration 60 --users 4

--chaos N also runs `celery beat` (the stale-claim sweep) and SIGKILLs the worker every N seconds
of the run, restarting it a second later as a supervisor would. Recovery is only visible in a short
run if its clocks are short, so chaos mode lowers them (and prints them): visibility timeout 60 s,
unacked restore every 10 s, stale claims after 30 s, a sweep every 15 s (--chaos-visibility,
--chaos-restore, --chaos-stale, --chaos-sweep; the defaults are 300, 60, 300 and 60 s). Afterwards
every upload must have exactly one prediction and exactly one finished explanation of each kind,
and no alert twice; it prints upload -> prediction and upload -> explanations p50/p95 from the
rows' timestamps, how many kills interrupted a task (unacknowledged in Redis) or a claimed
classification, and how many classifications were claimed more than once. Exit status 1 on a lost or duplicated result.
"""

from __future__ import annotations

import argparse
import http.client
import io
import os
import random
import re
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import threading
import time
import uuid
from collections import defaultdict
from pathlib import Path
from urllib.parse import urlencode

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))
PASSWORD = "bench-password-7741"
PAGE_KINDS = ("patient_list", "patient", "lesion", "examination", "triage_queue")


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _wait_port(port: int, timeout: float = 60) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        try:
            socket.create_connection(("127.0.0.1", port), timeout=0.5).close()
            return
        except OSError:
            time.sleep(0.2)
    raise SystemExit(f"nothing listens on port {port}")


# --- environment -----------------------------------------------------------------------------


def prepare_environment(args, workdir: Path) -> dict[str, str]:
    import psycopg

    admin_url = args.postgres.rsplit("/", 1)[0] + "/postgres"
    with psycopg.connect(admin_url, autocommit=True) as conn:
        conn.execute(f'DROP DATABASE IF EXISTS "{args.database}"')
        conn.execute(f'CREATE DATABASE "{args.database}"')
    env = dict(os.environ)
    env.update(
        DJANGO_SETTINGS_MODULE="portal.settings.dev",
        DJANGO_DEBUG="false",
        DATABASE_URL=args.postgres.rsplit("/", 1)[0] + f"/{args.database}",
        CELERY_BROKER_URL=f"redis://127.0.0.1:{args.redis_port}/0",
        DERMATRACK_VAR_DIR=str(workdir / "var"),
        DERMATRACK_MEDIA_ROOT=str(workdir / "media"),
        DERMATRACK_LOG_LEVEL="WARNING",
        PYTHONUNBUFFERED="1",
    )
    if args.chaos:
        env.update(
            DERMATRACK_BROKER_VISIBILITY_TIMEOUT=str(args.chaos_visibility),
            DERMATRACK_BROKER_RESTORE_SECONDS=str(args.chaos_restore),
            DERMATRACK_STALE_CLAIM_SECONDS=str(args.chaos_stale),
            DERMATRACK_SWEEP_SECONDS=str(args.chaos_sweep),
        )
    os.environ.update(env)
    return env


def seed(args) -> dict:
    """Clinic, one account + confirmed TOTP device per virtual user, patients with lesions,
    examinations (with predictions, some with alerts). Written through the ORM, not the
    task queue, so the worker starts idle."""
    import django

    django.setup()
    from django.core.files.base import ContentFile
    from django.core.management import call_command
    from django_otp.plugins.otp_totp.models import TOTPDevice

    from lesions.imaging import validate_and_normalise
    from lesions.models import Examination, Prediction, Visit
    from lesions.services import alert_raise, lesion_add
    from patients.services import patient_register
    from portal.models import Role
    from portal.services import clinic_create, user_create

    call_command("migrate", verbosity=0)
    clinic = clinic_create(name="Load Test Clinic", city="Vienna")
    users = []
    for n in range(args.users):
        role = Role.DERMATOLOGIST if n % 3 == 0 else Role.STAFF
        user = user_create(username=f"load{n}", password=PASSWORD, role=role, clinic=clinic, check_password=False)
        device = TOTPDevice.objects.create(user=user, name="load", confirmed=True)
        users.append({"username": user.username, "role": role, "key": device.bin_key})
    staff = next(u for u in users if u["role"] == Role.STAFF)
    from portal.models import User

    actor = User.objects.get(username=staff["username"])
    rng = random.Random(0)
    image = _jpeg(rng, 480, 360)
    png = validate_and_normalise(io.BytesIO(image))
    patients, lesions, exams = [], [], []
    for p in range(args.patients):
        patient = patient_register(
            actor=actor,
            clinic=clinic,
            given_name=f"Given{p}",
            family_name=f"Family{p}",
            date_of_birth=__import__("datetime").date(1960 + p % 40, 1 + p % 12, 1 + p % 28),
            medical_record_number=f"LOAD-{p:05d}",
            consent_given=True,
        )
        patients.append(str(patient.uuid))
        for site in ("face", "upper_back"):
            lesion = lesion_add(actor=actor, patient=patient, body_site=site, label=f"{site} {p}")
            lesions.append(str(lesion.uuid))
            for e in range(2):
                visit = Visit.objects.create(lesion=lesion, recorded_by=actor)
                exam = Examination(
                    lesion=lesion,
                    visit=visit,
                    captured_at=visit.captured_at,
                    uploaded_by=actor,
                    image_sha256=png.sha256,
                    image_width=png.width,
                    image_height=png.height,
                    status=Examination.Status.DONE,
                )
                exam.image.save("seed", ContentFile(png.png_bytes), save=False)
                exam.save()
                exams.append(str(exam.uuid))
                risk = rng.random()
                prediction = Prediction.objects.create(
                    examination=exam,
                    model_name="seed",
                    model_version=f"seed-{e}",
                    model_sha256=f"{p:032d}{e:032d}"[:64],
                    probabilities={"mel": round(risk, 3), "nv": round(1 - risk, 3)},
                    malignancy_risk=f"{risk:.6f}",
                    top_class="mel" if risk > 0.5 else "nv",
                )
                if risk > 0.7:
                    alert_raise(prediction=prediction, risk=risk)
    from django.db import connections

    connections.close_all()
    return {"users": users, "patients": patients, "lesions": lesions, "exams": exams, "upload": image}


def _jpeg(rng: random.Random, width: int, height: int) -> bytes:
    import numpy as np
    from PIL import Image

    base = np.array([150, 90, 70]) + np.random.default_rng(rng.randrange(1 << 30)).normal(0, 25, (height, width, 3))
    out = io.BytesIO()
    Image.fromarray(np.clip(base, 0, 255).astype("uint8")).save(out, format="JPEG", quality=90)
    return out.getvalue()


def start_services(args, env: dict[str, str], workdir: Path, procs: list[subprocess.Popen]) -> None:
    """Appends each process to `procs` as it starts, so that a failure half-way stops the rest."""
    redis_dir = workdir / "redis"
    redis_dir.mkdir()
    procs.append(
        subprocess.Popen(
            [
                shutil.which("redis-server"),
                "--port",
                str(args.redis_port),
                "--bind",
                "127.0.0.1",
                "--dir",
                str(redis_dir),
                "--save",
                "",
                "--appendonly",
                "no",
            ],
            stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,
        )
    )
    _wait_port(args.redis_port)
    bin_dir = Path(sys.executable).parent
    if args.chaos:
        procs.append(
            subprocess.Popen(
                [
                    str(bin_dir / "celery"),
                    "-A",
                    "portal.celery",
                    "beat",
                    "--loglevel=WARNING",
                    "--schedule",
                    str(workdir / "celerybeat-schedule"),
                ],
                cwd=ROOT,
                env=env,
                stdout=open(workdir / "beat.log", "w"),  # noqa: SIM115 - the child owns it
                stderr=subprocess.STDOUT,
            )
        )
    procs.append(
        subprocess.Popen(
            [
                str(bin_dir / "gunicorn"),
                "portal.wsgi",
                "--bind",
                f"127.0.0.1:{args.port}",
                "--workers",
                str(args.gunicorn_workers),
                "--worker-class",
                "gthread",
                "--threads",
                str(args.threads),
                "--keep-alive",
                "30",
                "--log-level",
                "warning",
            ],
            cwd=ROOT,
            env=env,
            stdout=open(workdir / "gunicorn.log", "w"),  # noqa: SIM115 - the child owns it
            stderr=subprocess.STDOUT,
        )
    )
    _wait_port(args.port)


class Worker:
    """The Celery worker, restartable: what a supervisor (systemd, Kubernetes) does after a crash."""

    def __init__(self, args, env: dict[str, str], workdir: Path) -> None:
        self.command = [
            "nice",
            "-n",
            str(args.worker_nice),
            str(Path(sys.executable).parent / "celery"),
            "-A",
            "portal.celery",
            "worker",
            "--pool=solo",
            "--loglevel=WARNING",
            "--without-gossip",
            "--without-mingle",
        ]
        self.env = env
        self.log = open(workdir / "worker.log", "a")  # noqa: SIM115 - closed in stop()
        self.proc: subprocess.Popen | None = None
        self.kills = 0
        self.start()

    def start(self) -> None:
        # A session of its own, so that SIGKILL reaches the whole group (nice execs celery).
        self.proc = subprocess.Popen(
            self.command, cwd=ROOT, env=self.env, stdout=self.log, stderr=subprocess.STDOUT, start_new_session=True
        )

    def kill_and_restart(self, delay: float) -> None:
        if self.proc.poll() is None:
            os.killpg(self.proc.pid, signal.SIGKILL)
            self.kills += 1
        self.proc.wait(timeout=30)
        time.sleep(delay)
        self.start()

    def stop(self) -> None:
        if self.proc is not None and self.proc.poll() is None:
            os.killpg(self.proc.pid, signal.SIGTERM)
            try:
                self.proc.wait(timeout=20)
            except subprocess.TimeoutExpired:
                os.killpg(self.proc.pid, signal.SIGKILL)
                self.proc.wait(timeout=10)
        self.log.close()


def run_chaos(worker: Worker, args, stop_at: float, kills: dict[str, int]) -> None:
    """SIGKILL the worker every args.chaos seconds until the load stops. Counts the kills that
    interrupted work: a message delivered and not yet acknowledged (Redis's `unacked` hash:
    a task running, or a retry waiting in the worker), and a classification claimed."""
    import redis
    from django.db import connection

    from lesions.models import Examination

    broker = redis.Redis(host="127.0.0.1", port=args.redis_port)
    try:
        while time.monotonic() + args.chaos < stop_at:
            time.sleep(args.chaos)
            kills["in_flight"] += bool(broker.hlen("unacked"))
            kills["classifying"] += Examination.objects.filter(status=Examination.Status.RUNNING).exists()
            worker.kill_and_restart(args.chaos_restart_delay)
    finally:
        connection.close()
        broker.close()


# --- virtual users ---------------------------------------------------------------------------


class Session:
    def __init__(self, port: int) -> None:
        self.port = port
        self.conn = http.client.HTTPConnection("127.0.0.1", port, timeout=30)
        self.cookies: dict[str, str] = {}

    def request(self, method: str, path: str, body: bytes | None = None, headers: dict | None = None):
        headers = dict(headers or {})
        if self.cookies:
            headers["Cookie"] = "; ".join(f"{k}={v}" for k, v in self.cookies.items())
        for attempt in range(2):
            try:
                self.conn.request(method, path, body=body, headers=headers)
                response = self.conn.getresponse()
                data = response.read()
                break
            except (http.client.HTTPException, OSError):
                self.conn.close()
                self.conn = http.client.HTTPConnection("127.0.0.1", self.port, timeout=30)
                if attempt:
                    raise
        for value in response.headers.get_all("Set-Cookie") or []:
            name, _, rest = value.partition("=")
            self.cookies[name.strip()] = rest.split(";", 1)[0]
        return response.status, response.headers, data

    def form(self, path: str, fields: dict) -> tuple:
        body = urlencode(fields).encode()
        return self.request(
            "POST",
            path,
            body,
            {"Content-Type": "application/x-www-form-urlencoded", "X-CSRFToken": self.cookies.get("csrftoken", "")},
        )


CSRF_RE = re.compile(rb'name="csrfmiddlewaretoken" value="([^"]+)"')


class Stats:
    def __init__(self) -> None:
        self.lock = threading.Lock()
        self.latency: dict[str, list[float]] = defaultdict(list)
        self.errors: dict[str, int] = defaultdict(int)
        self.error_samples: list[str] = []
        self.uploads: list[str] = []

    def add(self, kind: str, seconds: float, ok: bool, detail: str = "") -> None:
        with self.lock:
            self.latency[kind].append(seconds)
            if not ok:
                self.errors[kind] += 1
                if len(self.error_samples) < 10:
                    self.error_samples.append(f"{kind}: {detail}")


def run_user(user: dict, data: dict, args, stats: Stats, stop_at: float, seed: int) -> None:
    from django_otp.oath import TOTP

    rng = random.Random(seed)
    s = Session(args.port)
    last_login = 0.0
    last_step = -1

    def timed(kind: str, method: str, path: str, expect: tuple[int, ...], **kw):
        started = time.perf_counter()
        try:
            status, headers, body = s.request(method, path, **kw)
        except Exception as exc:
            stats.add(kind, time.perf_counter() - started, False, repr(exc))
            return None, None, b""
        ok = status in expect
        stats.add(kind, time.perf_counter() - started, ok, f"{method} {path} -> {status}")
        return status, headers, body

    def login() -> bool:
        nonlocal last_login, last_step
        s.cookies.clear()
        status, _h, body = timed("login", "GET", "/accounts/login/", (200,))
        match = CSRF_RE.search(body or b"")
        if not match:
            return False
        started = time.perf_counter()
        fields = {"username": user["username"], "password": PASSWORD, "csrfmiddlewaretoken": match.group(1).decode()}
        status, _headers, _ = s.form("/accounts/login/", fields)
        if status != 302:
            stats.add("login", time.perf_counter() - started, False, f"password step {status}")
            return False
        status, _h, body = s.request("GET", "/accounts/2fa/verify/")
        match = CSRF_RE.search(body)
        otp = TOTP(user["key"], step=30, digits=6)
        while otp.t() <= last_step:  # a code is accepted once: wait for the next one
            time.sleep(0.5)
        last_step = otp.t()
        status, _h, _ = s.form(
            "/accounts/2fa/verify/",
            {"token": f"{otp.token():06d}", "csrfmiddlewaretoken": match.group(1).decode() if match else ""},
        )
        ok = status == 302
        stats.add("login", time.perf_counter() - started, ok, f"totp step {status}")
        last_login = time.monotonic()
        return ok

    if not login():
        return
    dermatologist = user["role"] == "dermatologist"
    while time.monotonic() < stop_at:
        if time.monotonic() - last_login > args.relogin_seconds:
            login()
            continue
        roll = rng.random()
        if roll < args.upload_share and not dermatologist:
            lesion = rng.choice(data["lesions"])
            boundary = uuid.uuid4().hex
            body = (
                (
                    f'--{boundary}\r\nContent-Disposition: form-data; name="image"; filename="scan.jpg"\r\n'
                    f"Content-Type: image/jpeg\r\n\r\n"
                ).encode()
                + data["upload"]
                + f"\r\n--{boundary}--\r\n".encode()
            )
            status, _h, resp = timed(
                "upload",
                "POST",
                f"/api/lesions/{lesion}/examinations/",
                (201,),
                body=body,
                headers={
                    "Content-Type": f"multipart/form-data; boundary={boundary}",
                    "X-CSRFToken": s.cookies.get("csrftoken", ""),
                },
            )
            if status == 201:
                import json

                with stats.lock:
                    stats.uploads.append(json.loads(resp)["uuid"])
            continue
        if dermatologist:
            kind = rng.choice(["triage_queue", "triage_queue", "lesion", "examination", "patient"])
        else:
            kind = rng.choice(["patient_list", "patient", "lesion", "examination"])
        path = {
            "triage_queue": "/triage/",
            "patient_list": "/patients/",
            "patient": f"/patients/{rng.choice(data['patients'])}/",
            "lesion": f"/lesions/{rng.choice(data['lesions'])}/",
            "examination": f"/examinations/{rng.choice(data['exams'])}/",
        }[kind]
        timed(kind, "GET", path, (200,))


# --- report ----------------------------------------------------------------------------------


def _pct(values: list[float], q: float) -> float:
    if not values:
        return float("nan")
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, round(q / 100 * (len(ordered) - 1)))] * 1000


def check_uploads(uploads: list[str], timeout: float) -> tuple[int, int, int]:
    """(with exactly one prediction, with none, with more than one) after waiting for the worker."""
    import django

    django.setup()
    from django.db import connection
    from django.db.models import Count

    from lesions.models import Examination

    deadline = time.monotonic() + timeout
    while True:
        rows = dict(
            Examination.objects.filter(uuid__in=uploads).annotate(n=Count("predictions")).values_list("uuid", "n")
        )
        counts = [rows.get(uuid.UUID(u), 0) for u in uploads]
        missing = sum(1 for c in counts if c == 0)
        if missing == 0 or time.monotonic() > deadline:
            connection.close()
            return sum(1 for c in counts if c == 1), missing, sum(1 for c in counts if c > 1)
        time.sleep(2)


def check_results(uploads: list[str], timeout: float) -> dict:
    """Chaos mode: wait until every upload has its prediction and both explanations are finished
    (done or failed), then count what is missing or doubled and the latencies from the rows."""
    import django

    django.setup()
    from django.db import connection
    from django.db.models import Count

    from lesions.models import Alert, Examination, Explanation, Prediction

    ids = [uuid.UUID(u) for u in uploads]
    exams = Examination.objects.filter(uuid__in=ids)
    deadline = time.monotonic() + timeout
    while True:
        with_prediction = exams.filter(predictions__isnull=False).distinct().count()
        finished = (
            Explanation.objects.filter(examination__in=exams)
            .exclude(status=Explanation.Status.PENDING)
            .values("examination_id")
            .annotate(n=Count("id"))
            .filter(n=2)
            .count()
        )
        if (with_prediction == len(ids) and finished == len(ids)) or time.monotonic() > deadline:
            break
        time.sleep(2)
    created = dict(exams.values_list("pk", "created_at"))
    predictions = defaultdict(list)
    for exam_id, at in Prediction.objects.filter(examination__in=exams).values_list("examination_id", "created_at"):
        predictions[exam_id].append(at)
    done = defaultdict(list)
    for exam_id, kind, at in Explanation.objects.filter(
        examination__in=exams, status=Explanation.Status.DONE
    ).values_list("examination_id", "kind", "updated_at"):
        done[exam_id].append((kind, at))
    alerts_doubled = (
        Alert.objects.filter(prediction__examination__in=exams)
        .values("prediction_id")
        .annotate(n=Count("id"))
        .filter(n__gt=1)
        .count()
    )
    result = {
        "uploads": len(ids),
        "stored": len(created),
        "one_prediction": sum(1 for pk in created if len(predictions[pk]) == 1),
        "no_prediction": sum(1 for pk in created if not predictions[pk]),
        "several_predictions": sum(1 for pk in created if len(predictions[pk]) > 1),
        "explained": sum(1 for pk in created if sorted(k for k, _ in done[pk]) == ["cam", "lime"]),
        # an upload is complete with a prediction and both explanations done (failed is lost too)
        "incomplete": len(ids)
        - sum(1 for pk in created if predictions[pk] and sorted(k for k, _ in done[pk]) == ["cam", "lime"]),
        "explanations_failed": Explanation.objects.filter(
            examination__in=exams, status=Explanation.Status.FAILED
        ).count(),
        "explanations_pending": Explanation.objects.filter(
            examination__in=exams, status=Explanation.Status.PENDING
        ).count(),
        "alerts_doubled": alerts_doubled,
        "claimed_again": exams.filter(attempts__gt=1).count(),
        "to_prediction": [(min(predictions[pk]) - at).total_seconds() for pk, at in created.items() if predictions[pk]],
        "to_explained": [
            (max(t for _, t in done[pk]) - at).total_seconds() for pk, at in created.items() if len(done[pk]) == 2
        ],
    }
    connection.close()
    return result


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--users", type=int, default=16)
    parser.add_argument("--duration", type=float, default=60)
    parser.add_argument("--warmup", type=float, default=5)
    parser.add_argument("--patients", type=int, default=30)
    parser.add_argument("--upload-share", type=float, default=0.01)
    parser.add_argument("--relogin-seconds", type=float, default=30)
    parser.add_argument("--gunicorn-workers", type=int, default=2)
    parser.add_argument("--threads", type=int, default=4)
    parser.add_argument("--worker-nice", type=int, default=10)
    parser.add_argument("--drain-timeout", type=float, default=300)
    parser.add_argument(
        "--postgres", default=os.environ.get("BENCH_POSTGRES_URL", "postgres://postgres@127.0.0.1:5432/postgres")
    )
    parser.add_argument("--database", default="dermatrack_load")
    parser.add_argument("--keep", action="store_true", help="keep the work folder and database")
    parser.add_argument("--chaos", type=float, default=0, help="SIGKILL the worker every N seconds (0: never)")
    parser.add_argument("--chaos-restart-delay", type=float, default=1)
    parser.add_argument("--chaos-visibility", type=int, default=60)
    parser.add_argument("--chaos-restore", type=int, default=10)
    parser.add_argument("--chaos-stale", type=int, default=30)
    parser.add_argument("--chaos-sweep", type=int, default=15)
    args = parser.parse_args()
    if args.chaos < 0 or (args.chaos and args.chaos < 2):
        parser.error("--chaos must be 0 (off) or at least 2 seconds")
    if args.users < 2:
        parser.error("--users must be at least 2 (one dermatologist, one uploader)")
    args.port = _free_port()
    args.redis_port = _free_port()
    # SIGTERM (and SIGINT, which a shell ignores in background jobs) run the cleanup below:
    # without this the scratch database, redis, gunicorn and the worker outlive the run.
    signal.signal(signal.SIGTERM, lambda *_: sys.exit(143))
    signal.signal(signal.SIGINT, lambda *_: sys.exit(130))

    workdir = Path(tempfile.mkdtemp(prefix="dermatrack-load-"))
    procs: list[subprocess.Popen] = []
    worker: Worker | None = None
    try:
        env = prepare_environment(args, workdir)
        print(f"seeding {args.users} users, {args.patients} patients ...", flush=True)
        data = seed(args)
        start_services(args, env, workdir, procs)
        worker = Worker(args, env, workdir)
        stats = Stats()
        stop_at = time.monotonic() + args.warmup + args.duration
        threads = [
            threading.Thread(target=run_user, args=(u, data, args, stats, stop_at, n), daemon=True)
            for n, u in enumerate(data["users"])
        ]
        kills = {"in_flight": 0, "classifying": 0}
        if args.chaos:
            print(
                f"chaos: SIGKILL the worker every {args.chaos:g} s, restart after {args.chaos_restart_delay:g} s; "
                f"LOWERED for a short run: DERMATRACK_BROKER_VISIBILITY_TIMEOUT={args.chaos_visibility} "
                f"DERMATRACK_BROKER_RESTORE_SECONDS={args.chaos_restore} "
                f"DERMATRACK_STALE_CLAIM_SECONDS={args.chaos_stale} DERMATRACK_SWEEP_SECONDS={args.chaos_sweep} "
                "(defaults 300, 60, 300, 60)",
                flush=True,
            )
            threads.append(threading.Thread(target=run_chaos, args=(worker, args, stop_at, kills), daemon=True))
        print(
            f"running {len(data['users'])} users for {args.warmup:.0f}+{args.duration:.0f} s against gunicorn "
            f"({args.gunicorn_workers} workers x {args.threads} threads) ...",
            flush=True,
        )
        for t in threads:
            t.start()
        time.sleep(args.warmup)
        with stats.lock:  # forget the warm-up's timings (first logins, cold caches), not its errors
            for values in stats.latency.values():
                values.clear()
        measured_from = time.monotonic()
        for t in threads:
            t.join(timeout=max(0.0, stop_at - time.monotonic()) + 60)
        elapsed = time.monotonic() - measured_from

        print(
            f"\nwaiting up to {args.drain_timeout:.0f} s for the worker to classify {len(stats.uploads)} uploads ...",
            flush=True,
        )
        drain_started = time.monotonic()
        if args.chaos:
            chaos = check_results(stats.uploads, args.drain_timeout)
            one, missing, several = chaos["one_prediction"], chaos["no_prediction"], chaos["several_predictions"]
            missing += chaos["uploads"] - chaos["stored"]
        else:
            one, missing, several = check_uploads(stats.uploads, args.drain_timeout)
        drained = time.monotonic() - drain_started

        pages = [v for k, vs in stats.latency.items() if k in PAGE_KINDS for v in vs]
        page_errors = sum(n for k, n in stats.errors.items() if k in PAGE_KINDS)
        all_errors = sum(stats.errors.values())
        print(f"\n{'kind':<14}{'count':>8}{'per s':>9}{'p50 ms':>9}{'p95 ms':>9}{'p99 ms':>9}{'errors':>8}")
        for kind in (*PAGE_KINDS, "login", "upload"):
            values = stats.latency.get(kind, [])
            print(
                f"{kind:<14}{len(values):>8}{len(values) / elapsed:>9.1f}{_pct(values, 50):>9.1f}"
                f"{_pct(values, 95):>9.1f}{_pct(values, 99):>9.1f}{stats.errors.get(kind, 0):>8}"
            )
        pv_rate = len(pages) / elapsed
        p95 = _pct(pages, 95)
        print(
            f"{'page views':<14}{len(pages):>8}{pv_rate:>9.1f}{_pct(pages, 50):>9.1f}{p95:>9.1f}"
            f"{_pct(pages, 99):>9.1f}{page_errors:>8}"
        )
        print(
            f"\nmeasured {elapsed:.1f} s; uploads {len(stats.uploads)}: exactly one prediction {one}, "
            f"none {missing}, more than one {several}"
        )
        if stats.error_samples:
            print("error samples:\n  " + "\n  ".join(stats.error_samples))
        goals = [
            (f"page views/s >= 100 ({pv_rate:.1f})", pv_rate >= 100),
            (f"page p95 <= 300 ms ({p95:.0f})", p95 <= 300),
            (f"errors == 0 ({all_errors})", bool(pages) and all_errors == 0),
            (f"lost uploads == 0 ({missing + several})", missing + several == 0),
        ]
        chaos_ok = True
        if args.chaos:
            lost = chaos["incomplete"]
            doubled = several + chaos["alerts_doubled"]
            chaos_ok = lost == 0 and doubled == 0
            print(
                f"\nchaos: {worker.kills} SIGKILLs of the worker ({kills['in_flight']} with a task "
                f"unacknowledged, {kills['classifying']} with a classification claimed); "
                f"{chaos['claimed_again']} classifications claimed more than once; drained in {drained:.0f} s\n"
                f"  uploads {chaos['uploads']}, stored {chaos['stored']}: exactly one prediction {one}, none "
                f"{missing}, more than one {several}; both explanations done {chaos['explained']} "
                f"(failed {chaos['explanations_failed']}, still pending {chaos['explanations_pending']}); "
                f"alerts raised twice {chaos['alerts_doubled']}"
            )
            print(f"  {'latency':<24}{'n':>6}{'p50 s':>9}{'p95 s':>9}{'max s':>9}")
            for label, values in (
                ("upload -> prediction", chaos["to_prediction"]),
                ("upload -> explanations", chaos["to_explained"]),
            ):
                top = max(values) if values else float("nan")
                print(
                    f"  {label:<24}{len(values):>6}{_pct(values, 50) / 1000:>9.1f}{_pct(values, 95) / 1000:>9.1f}"
                    f"{top:>9.1f}"
                )
            goals.append((f"lost results == 0 ({lost}), duplicated == 0 ({doubled})", chaos_ok))
        print("\ngoal (2 cores):")
        for text, ok in goals:
            print(f"  {'PASS' if ok else 'MISS'}  {text}")
        one_min, five_min, fifteen_min = os.getloadavg()
        print(f"  cores: {os.cpu_count()}, load average {one_min:.1f} {five_min:.1f} {fifteen_min:.1f}")
        return 0 if pages and all_errors == 0 and missing + several == 0 and chaos_ok else 1
    finally:
        if worker is not None:
            worker.stop()
        for p in reversed(procs):
            if p.poll() is None:
                p.send_signal(signal.SIGTERM)
        for p in procs:
            try:
                p.wait(timeout=20)
            except subprocess.TimeoutExpired:
                p.kill()
        if not args.keep:
            try:
                import psycopg
                from django.db import connections

                connections.close_all()
                admin_url = args.postgres.rsplit("/", 1)[0] + "/postgres"
                with psycopg.connect(admin_url, autocommit=True) as conn:
                    conn.execute(f'DROP DATABASE IF EXISTS "{args.database}"')
            except Exception as exc:
                print(f"could not drop {args.database}: {exc}")
            shutil.rmtree(workdir, ignore_errors=True)
        else:
            print(f"kept {workdir} and database {args.database}")


if __name__ == "__main__":
    sys.exit(main())
