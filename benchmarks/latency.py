"""Upload -> result latency through the real worker, as the user waits for it.

    python benchmarks/latency.py                       # 50 uploads on the file broker, then 50 on Redis
    python benchmarks/latency.py --uploads 20 --broker redis

One upload at a time (the one-image case the goal is about): the upload service stores the
examination and enqueues classification after commit, exactly as the upload view does; this
process then watches the database every 10 ms for the prediction and for both explanations
(CAM, LIME) to be stored. Each broker gets a fresh PostgreSQL database (`dermatrack_latency`
unless --database says otherwise; dropped afterwards) and one Celery worker (solo pool, the
real classifier and explainers) with its own broker: a folder for the embedded default, a
private redis-server on a free port for Redis.

Prints p50/p95/max of upload -> prediction stored and upload -> explanations stored per broker,
with the load average and the share of the CPUs that other processes (the worker and
PostgreSQL included) used. Goals: p95 <= 1 s to the prediction, <= 2 s to the heatmaps.
"""

from __future__ import annotations

import argparse
import io
import os
import random
import shutil
import socket
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

GOAL_PREDICTION_S = 1.0
GOAL_EXPLANATIONS_S = 2.0


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _wait_port(port: int, timeout: float = 30) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        try:
            socket.create_connection(("127.0.0.1", port), timeout=0.5).close()
            return
        except OSError:
            time.sleep(0.1)
    raise RuntimeError(f"nothing listening on port {port}")


def _cpu() -> tuple[float, float] | None:
    try:
        with open("/proc/stat") as fh:
            ticks = [int(v) for v in fh.readline().split()[1:9]]
    except (OSError, ValueError):
        return None
    hz = os.sysconf("SC_CLK_TCK")
    return sum(ticks) / hz, (sum(ticks) - ticks[3] - ticks[4]) / hz


def _jpeg(rng: random.Random) -> bytes:
    import numpy as np
    from PIL import Image

    base = np.array([150, 90, 70]) + np.random.default_rng(rng.randrange(1 << 30)).normal(0, 25, (360, 480, 3))
    out = io.BytesIO()
    Image.fromarray(np.clip(base, 0, 255).astype("uint8")).save(out, format="JPEG", quality=90)
    return out.getvalue()


def run_broker(kind: str, args, workdir: Path) -> dict:
    """Runs the worker as a child with the given broker; this process uploads and watches."""
    import psycopg

    database = f"{args.database}_{kind}"
    admin_url = args.postgres.rstrip("/") + "/postgres"
    with psycopg.connect(admin_url, autocommit=True) as conn:
        conn.execute(f'DROP DATABASE IF EXISTS "{database}" WITH (FORCE)')
        conn.execute(f'CREATE DATABASE "{database}"')
    procs: list[subprocess.Popen] = []
    env = dict(os.environ)
    env.update(
        DJANGO_SETTINGS_MODULE="portal.settings.dev",
        DATABASE_URL=args.postgres.rstrip("/") + f"/{database}",
        DERMATRACK_VAR_DIR=str(workdir / kind / "var"),
        DERMATRACK_MEDIA_ROOT=str(workdir / kind / "media"),
        DERMATRACK_LOG_LEVEL="WARNING",
        PYTHONUNBUFFERED="1",
    )
    if kind == "redis":
        port = _free_port()
        (workdir / "redis").mkdir()
        procs.append(
            subprocess.Popen(
                [
                    shutil.which("redis-server"),
                    "--port",
                    str(port),
                    "--bind",
                    "127.0.0.1",
                    "--dir",
                    str(workdir / "redis"),
                    "--save",
                    "",
                    "--appendonly",
                    "no",
                ],
                stdout=subprocess.DEVNULL,
                stderr=subprocess.DEVNULL,
            )
        )
        _wait_port(port)
        env["CELERY_BROKER_URL"] = f"redis://127.0.0.1:{port}/0"
    else:
        env.pop("CELERY_BROKER_URL", None)
        env["DERMATRACK_BROKER_DIR"] = str(workdir / kind / "broker")
    subprocess.run([sys.executable, "manage.py", "migrate", "--noinput", "-v0"], cwd=ROOT, env=env, check=True)
    script = f"""
import json, os, random, sys, time
sys.path.insert(0, {str(ROOT)!r})
import django
django.setup()
from portal.celery import ensure_broker_folders
ensure_broker_folders()
"""
    subprocess.run([sys.executable, "-c", script], cwd=ROOT, env=env, check=True)
    try:
        procs.append(
            subprocess.Popen(
                [
                    str(Path(sys.executable).parent / "celery"),
                    "-A",
                    "portal.celery",
                    "worker",
                    "--pool=solo",
                    "--loglevel=WARNING",
                    "--without-gossip",
                    "--without-mingle",
                ],
                cwd=ROOT,
                env=env,
                stdout=open(workdir / f"worker-{kind}.log", "w"),  # noqa: SIM115 - the child owns it
                stderr=subprocess.STDOUT,
            )
        )
        # The uploads run in a child too, so that each broker gets its own Django settings.
        out = workdir / f"result-{kind}.txt"
        subprocess.run(
            [sys.executable, __file__, "--_measure", str(out), "--uploads", str(args.uploads)],
            cwd=ROOT,
            env=env,
            check=True,
        )
        lines = out.read_text().split()
        pred = [float(v) for v in lines[0].split(",") if v]
        expl = [float(v) for v in lines[1].split(",") if v]
        return {"prediction": pred, "explanations": expl, "busy": float(lines[2]), "load": float(lines[3])}
    finally:
        for proc in reversed(procs):
            proc.terminate()
            try:
                proc.wait(timeout=20)
            except subprocess.TimeoutExpired:
                proc.kill()
        with psycopg.connect(admin_url, autocommit=True) as conn:
            conn.execute(f'DROP DATABASE IF EXISTS "{database}" WITH (FORCE)')


def measure(out: Path, uploads: int) -> None:
    import django

    django.setup()
    import datetime as dt

    from lesions.models import Examination, Explanation, Prediction
    from lesions.services import examination_upload, lesion_add
    from patients.services import patient_register
    from portal.models import Role
    from portal.services import clinic_create, user_create

    clinic = clinic_create(name="Latency clinic", city="Vienna")
    actor = user_create(
        username="latency", password="latency-pass-7741", role=Role.STAFF, clinic=clinic, check_password=False
    )
    patient = patient_register(
        actor=actor,
        clinic=clinic,
        given_name="Lat",
        family_name="Ency",
        date_of_birth=dt.date(1970, 1, 1),
        medical_record_number="LAT-1",
        consent_given=True,
    )
    lesion = lesion_add(actor=actor, patient=patient, body_site="face", label="latency")
    rng = random.Random(7)
    images = [_jpeg(rng) for _ in range(8)]
    # The first upload also loads the model in the worker: not what a user waits for.
    warm = examination_upload(actor=actor, lesion=lesion, image=io.BytesIO(images[0]))
    _wait(lambda: Explanation.objects.filter(examination=warm, status=Explanation.Status.DONE).count() >= 2, 120)
    to_prediction, to_explanations = [], []
    cpu_start, load = _cpu(), os.getloadavg()[0]
    own_start = os.times()
    for n in range(uploads):
        began = time.perf_counter()
        exam = examination_upload(actor=actor, lesion=lesion, image=io.BytesIO(images[n % len(images)]))
        got = _wait(lambda e=exam: Prediction.objects.filter(examination=e).exists() or _failed(e), 60)
        if got and not _failed(exam):
            to_prediction.append(time.perf_counter() - began)
        got = _wait(
            lambda e=exam: (
                Explanation.objects.filter(examination=e).exclude(status=Explanation.Status.PENDING).count() >= 2
            ),
            60,
        )
        if got:
            to_explanations.append(time.perf_counter() - began)
    cpu_end, own_end = _cpu(), os.times()
    busy = 0.0
    if cpu_start and cpu_end and cpu_end[0] > cpu_start[0]:
        own = (own_end.user + own_end.system) - (own_start.user + own_start.system)
        busy = max(0.0, ((cpu_end[1] - cpu_start[1]) - own) / (cpu_end[0] - cpu_start[0]))
    failed = Examination.objects.filter(status=Examination.Status.FAILED).count()
    if failed:
        print(f"{failed} examinations FAILED", file=sys.stderr)
    out.write_text(
        ",".join(f"{v:.4f}" for v in to_prediction)
        + "\n"
        + ",".join(f"{v:.4f}" for v in to_explanations)
        + f"\n{busy:.3f}\n{max(load, os.getloadavg()[0]):.2f}\n"
    )


def _failed(exam) -> bool:
    from lesions.models import Examination

    return Examination.objects.filter(pk=exam.pk, status=Examination.Status.FAILED).exists()


def _wait(condition, timeout: float) -> bool:
    deadline = time.perf_counter() + timeout
    while time.perf_counter() < deadline:
        if condition():
            return True
        time.sleep(0.01)
    return False


def _pct(values: list[float], q: float) -> float:
    ordered = sorted(values)
    return ordered[max(0, min(len(ordered) - 1, round(q * len(ordered)) - 1))] if ordered else float("nan")


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--uploads", type=int, default=50)
    parser.add_argument("--broker", choices=["file", "redis", "both"], default="both")
    parser.add_argument("--postgres", default="postgres://postgres@127.0.0.1:5432")
    parser.add_argument("--database", default="dermatrack_latency")
    parser.add_argument("--_measure", help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args._measure:
        measure(Path(args._measure), args.uploads)
        return 0
    kinds = ["file", "redis"] if args.broker == "both" else [args.broker]
    results = {}
    with tempfile.TemporaryDirectory(prefix="dermatrack-latency-") as tmp:
        for kind in kinds:
            results[kind] = run_broker(kind, args, Path(tmp))
    print()
    print(f"{args.uploads} uploads per broker, one at a time, solo worker; {os.cpu_count()} CPUs")
    print()
    print("| broker | prediction p50 s | p95 s | max s | heatmaps p50 s | p95 s | max s | n | load | other CPU |")
    print("|---|---:|---:|---:|---:|---:|---:|---:|---:|---:|")
    ok = True
    for kind, r in results.items():
        p, e = r["prediction"], r["explanations"]
        ok &= len(p) == args.uploads and len(e) == args.uploads
        ok &= _pct(p, 0.95) <= GOAL_PREDICTION_S and _pct(e, 0.95) <= GOAL_EXPLANATIONS_S
        print(
            f"| {'file (embedded default)' if kind == 'file' else 'redis'} | {statistics.median(p):.2f} | "
            f"{_pct(p, 0.95):.2f} | {max(p):.2f} | {statistics.median(e):.2f} | {_pct(e, 0.95):.2f} | {max(e):.2f} | "
            f"{len(p)}/{len(e)} | {r['load']:.1f} | {100 * r['busy']:.0f} % |"
        )
    print()
    print(
        f"goals: p95 <= {GOAL_PREDICTION_S:.0f} s to the prediction, <= {GOAL_EXPLANATIONS_S:.0f} s to the heatmaps: "
        + ("met" if ok else "NOT met")
    )
    return 0 if ok else 1


if __name__ == "__main__":
    sys.exit(main())
