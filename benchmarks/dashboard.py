"""Page-time benchmark of the clinical pages on PostgreSQL at clinic scale.

    python benchmarks/dashboard.py                  # seed once (kept), then 200 timed requests per page
    python benchmarks/dashboard.py --requests 500
    python benchmarks/dashboard.py --fresh          # drop and re-seed the benchmark database

Seeds 10,000 patients (5 clinics of 2,000) with 2 lesions each and 5 examinations per lesion
(100,000 examinations, one prediction each, every risk and name encrypted as in production),
the alerts the predictions raise (most of them already triaged, with encrypted reasons),
follow-up dates, and the object permissions of each clinic's dermatologists and staff. All
examinations share one encrypted image file. Rows go in with bulk_create; encryption happens
as it does for any save.

Then times, through the Django test client (the whole middleware stack, templates, audit
writes; no network), the dermatologist's triage queue (their clinic, and an administrator's
view of all five), a lesion page and a patient page (random records of that clinic each
time), and prints p50/p95/max and the query count per page. Goal: p95 <= 100 ms.

The database is `dermatrack_bench` on postgres://postgres@127.0.0.1:5432/ unless
BENCH_DATABASE_URL says otherwise; it is created if missing and kept for the next run (the
seed is reused when it decrypts with the current keys). Nothing else is touched.
"""

from __future__ import annotations

import argparse
import os
import random
import statistics
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

BENCH_URL = os.environ.get("BENCH_DATABASE_URL", "postgres://postgres@127.0.0.1:5432/dermatrack_bench")
os.environ["DATABASE_URL"] = BENCH_URL
os.environ["DJANGO_SETTINGS_MODULE"] = "portal.settings.test"

CLINICS = 5
PATIENTS = 10_000
LESIONS_PER_PATIENT = 2
EXAMS_PER_LESION = 5
OPEN_ALERT_SHARE = 0.15  # of the alerts raised, how many are still waiting for triage
BATCH = 5_000
GOAL_P95_MS = 100.0


def ensure_database(url: str, fresh: bool) -> None:
    import psycopg
    from dj_database_url import parse

    cfg = parse(url)
    name = cfg["NAME"]
    admin = psycopg.connect(
        host=cfg["HOST"] or "127.0.0.1",
        port=cfg["PORT"] or 5432,
        user=cfg["USER"] or "postgres",
        password=cfg["PASSWORD"] or None,
        dbname="postgres",
        autocommit=True,
    )
    with admin:
        exists = admin.execute("SELECT 1 FROM pg_database WHERE datname = %s", [name]).fetchone()
        if exists and fresh:
            admin.execute(f'DROP DATABASE "{name}" WITH (FORCE)')
            exists = None
        if not exists:
            admin.execute(f'CREATE DATABASE "{name}"')


def _say(message: str) -> None:
    print(f"[{time.strftime('%H:%M:%S')}] {message}", flush=True)


def seeded() -> bool:
    from lesions.models import Examination
    from patients.models import Patient
    from portal.crypto import DecryptionError

    try:
        if Examination.objects.count() < PATIENTS * LESIONS_PER_PATIENT * EXAMS_PER_LESION:
            return False
        Patient.objects.only("given_name").first().given_name  # noqa: B018 - decrypts with today's keys?
    except DecryptionError:
        return False
    return True


def seed(rng: random.Random) -> None:
    import datetime as dt

    from django.contrib.auth.models import Permission
    from django.contrib.contenttypes.models import ContentType
    from django.core.files.base import ContentFile
    from django.core.files.storage import default_storage
    from django.core.management import call_command
    from django.db import connection
    from django.utils import timezone
    from guardian.models import GroupObjectPermission

    from lesions.models import Alert, BodySite, Examination, Lesion, Prediction, TriageDecision
    from lesions.risk import model_info as current_model_info
    from patients.models import Patient
    from portal import permissions
    from portal.crypto import blind_index
    from portal.models import Clinic, Role, User
    from tests.factories import png_bytes

    _say("clearing the benchmark database")
    call_command("flush", interactive=False, verbosity=0)
    threshold = (current_model_info() or {}).get("alert_threshold") or 0.3
    now = timezone.now()
    today = timezone.localdate()

    clinics = [Clinic.objects.create(name=f"Bench clinic {i + 1}", city="Vienna") for i in range(CLINICS)]
    users = {}
    for i, clinic in enumerate(clinics):
        for role in (Role.DERMATOLOGIST, Role.STAFF):
            user = User.objects.create(username=f"{role}{i + 1}", role=role, clinic=clinic)
            permissions.clinic_member_add(user)
            users[(role, i)] = user
    User.objects.create(username="admin", role=Role.ADMINISTRATOR, is_superuser=True, is_staff=True)
    staff = users[(Role.STAFF, 0)]

    _say(f"{PATIENTS:,} patients (6 encrypted fields each)")
    given = ["Anna", "Lukas", "Marie", "Jonas", "Lena", "Felix", "Sophie", "Paul", "Laura", "Maximilian"]
    family = ["Gruber", "Huber", "Wagner", "Müller", "Pichler", "Steiner", "Moser", "Mayer", "Hofer", "Bauer"]
    patients = [
        Patient(
            clinic=clinics[n % CLINICS],
            given_name=rng.choice(given),
            family_name=rng.choice(family),
            date_of_birth=dt.date(1940 + n % 60, 1 + n % 12, 1 + n % 28),
            medical_record_number=f"B-{n:06d}",
            mrn_index=blind_index(f"B-{n:06d}"),
            phone="+43 1 555 0100",
            email=f"p{n}@example.org",
            created_by=staff,
        )
        for n in range(PATIENTS)
    ]
    patients = Patient.objects.bulk_create(patients, batch_size=BATCH)

    _say("object permissions (each clinic's dermatologists and staff, per record)")
    content_type = ContentType.objects.get_for_model(Patient)
    perm_ids = {p.codename: p.pk for p in Permission.objects.filter(content_type=content_type)}
    groups = {
        (c.pk, role): permissions.clinic_group(c, role) for c in clinics for role in permissions.ROLE_PATIENT_PERMS
    }
    rows = []
    for patient in patients:
        for role, codenames in permissions.ROLE_PATIENT_PERMS.items():
            group = groups[(patient.clinic_id, role)]
            for codename in codenames:
                rows.append(
                    GroupObjectPermission(
                        group_id=group.pk,
                        permission_id=perm_ids[codename],
                        content_type_id=content_type.pk,
                        object_pk=str(patient.pk),
                    )
                )
    GroupObjectPermission.objects.bulk_create(rows, batch_size=BATCH)

    _say(f"{PATIENTS * LESIONS_PER_PATIENT:,} lesions")
    sites = list(BodySite.values)
    lesions = []
    for patient in patients:
        for k in range(LESIONS_PER_PATIENT):
            follow = today + dt.timedelta(days=rng.randint(-30, 200)) if rng.random() < 0.6 else None
            lesions.append(
                Lesion(
                    patient=patient,
                    body_site=rng.choice(sites),
                    label=f"lesion {k + 1}",
                    first_noted=today - dt.timedelta(days=800),
                    next_follow_up=follow,
                    created_by=staff,
                )
            )
    lesions = Lesion.objects.bulk_create(lesions, batch_size=BATCH)

    _say(f"{len(lesions) * EXAMS_PER_LESION:,} examinations sharing one encrypted image")
    image_name = default_storage.save("examinations/benchmark.png.enc", ContentFile(png_bytes(size=(600, 450))))
    exams = []
    for lesion in lesions:
        start = now - dt.timedelta(days=720)
        for k in range(EXAMS_PER_LESION):
            exams.append(
                Examination(
                    lesion=lesion,
                    captured_at=start + dt.timedelta(days=140 * k + rng.randint(0, 30)),
                    uploaded_by=staff,
                    image=image_name,
                    image_sha256="0" * 64,
                    image_width=600,
                    image_height=450,
                    diameter_mm=round(3 + k * 0.4 + rng.random(), 1),
                    status=Examination.Status.DONE,
                )
            )
    exams = Examination.objects.bulk_create(exams, batch_size=BATCH)

    _say(f"{len(exams):,} predictions (probabilities and risk encrypted)")
    predictions, risks = [], []
    for exam in exams:
        risk = min(0.99, rng.betavariate(1.2, 6.0))
        risks.append(risk)
        predictions.append(
            Prediction(
                examination=exam,
                model_name="dermatrack-lesion-classifier",
                model_version="1.0.0",
                model_sha256="b" * 64,
                probabilities={"mel": round(risk * 0.7, 6), "bcc": round(risk * 0.3, 6), "nv": round(1 - risk, 6)},
                malignancy_risk=f"{risk:.6f}",
                top_class="mel" if risk > 0.5 else "nv",
            )
        )
    predictions = Prediction.objects.bulk_create(predictions, batch_size=BATCH)

    clinic_of_lesion = {lesion.pk: lesion.patient.clinic_id for lesion in lesions}
    alerts = [
        Alert(
            prediction=p,
            lesion_id=e.lesion_id,
            clinic_id=clinic_of_lesion[e.lesion_id],
            priority=min(1000, round(r * 1000)),
            status=Alert.Status.OPEN if rng.random() < OPEN_ALERT_SHARE else Alert.Status.TRIAGED,
        )
        for p, e, r in zip(predictions, exams, risks, strict=True)
        if r >= threshold
    ]
    _say(f"{len(alerts):,} alerts (threshold {threshold:.3f}), decisions for the triaged ones")
    alerts = Alert.objects.bulk_create(alerts, batch_size=BATCH)
    Alert.objects.filter(pk__in=[a.pk for a in alerts]).update(created_at=now - dt.timedelta(hours=5))
    derm = users[(Role.DERMATOLOGIST, 0)]
    choices = list(TriageDecision.Decision.values)
    decisions = []
    for alert in alerts:
        if alert.status != Alert.Status.TRIAGED:
            continue
        decision = rng.choice(choices)
        decisions.append(
            TriageDecision(
                alert=alert,
                decision=decision,
                reason="Reviewed in the benchmark",
                follow_up_months=6 if decision == "follow_up" else None,
                decided_by=derm,
                decided_at=now - dt.timedelta(days=rng.randint(0, 400)),
            )
        )
    TriageDecision.objects.bulk_create(decisions, batch_size=BATCH)
    with connection.cursor() as cursor:
        cursor.execute("ANALYZE")


def timed(client, url: str, n: int) -> tuple[list[float], int]:
    from django.db import connection
    from django.test.utils import CaptureQueriesContext

    times = []
    queries = 0
    for i in range(n):
        started = time.perf_counter()
        if i == 0:
            with CaptureQueriesContext(connection) as ctx:
                response = client.get(url() if callable(url) else url)
            queries = len(ctx.captured_queries)
        else:
            response = client.get(url() if callable(url) else url)
        times.append((time.perf_counter() - started) * 1000)
        assert response.status_code == 200, (url, response.status_code)
    return times, queries


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--requests", type=int, default=200, help="timed requests per page (default 200)")
    parser.add_argument("--warmup", type=int, default=20)
    parser.add_argument("--fresh", action="store_true", help="drop and re-seed the benchmark database")
    parser.add_argument("--seed", type=int, default=20261122)
    args = parser.parse_args()

    ensure_database(BENCH_URL, args.fresh)
    import django

    django.setup()
    from django.conf import settings
    from django.core.management import call_command
    from django.test import Client
    from django.urls import reverse

    settings.ALLOWED_HOSTS = ["*"]
    started = time.perf_counter()
    _say(f"database {settings.DATABASES['default']['NAME']} on {settings.DATABASES['default']['HOST']}")
    call_command("migrate", verbosity=0)
    rng = random.Random(args.seed)
    if seeded():
        _say("reusing the seeded data (use --fresh to re-seed)")
    else:
        seed(rng)
        _say(f"seeded in {time.perf_counter() - started:.0f} s")

    from lesions.models import Alert, Examination, Lesion
    from patients.models import Patient
    from portal.models import User

    derm = User.objects.get(username="dermatologist1")
    admin = User.objects.get(username="admin")
    clinic_patients = list(Patient.objects.filter(clinic=derm.clinic).values_list("uuid", flat=True))
    clinic_lesions = list(Lesion.objects.filter(patient__clinic=derm.clinic).values_list("uuid", flat=True))
    counts = {
        "patients": Patient.objects.count(),
        "examinations": Examination.objects.count(),
        "alerts": Alert.objects.count(),
        "open alerts": Alert.objects.filter(status=Alert.Status.OPEN).count(),
        "open alerts, clinic 1": Alert.objects.filter(status=Alert.Status.OPEN, clinic=derm.clinic).count(),
    }
    _say(", ".join(f"{k}: {v:,}" for k, v in counts.items()))

    derm_client, admin_client = Client(), Client()
    derm_client.force_login(derm)
    admin_client.force_login(admin)
    pick = random.Random(args.seed + 1)
    pages = [
        ("dashboard (dermatologist, 1 clinic)", derm_client, reverse("portal:dashboard")),
        ("dashboard, very high band", derm_client, reverse("portal:dashboard") + "?band=very_high"),
        ("dashboard (administrator, 5 clinics)", admin_client, reverse("portal:dashboard")),
        (
            "lesion page (5 examinations)",
            derm_client,
            lambda: reverse("lesions:lesion-detail", kwargs={"lesion_uuid": pick.choice(clinic_lesions)}),
        ),
        (
            "patient page (2 lesions)",
            derm_client,
            lambda: reverse("patients:patient-detail", kwargs={"patient_uuid": pick.choice(clinic_patients)}),
        ),
        ("follow-up list (1 clinic)", derm_client, reverse("patients:follow-up-list")),
    ]
    # Round robin over the pages, so that whatever else the machine is doing slows every
    # page alike; the load average is printed with the table.
    load_before = os.getloadavg()[0]
    for _name, client, url in pages:
        timed(client, url, args.warmup)
    samples: dict[str, list[float]] = {name: [] for name, _, _ in pages}
    queries: dict[str, int] = {}
    for name, client, url in pages:
        _, queries[name] = timed(client, url, 1)
    for _ in range(args.requests):
        for name, client, url in pages:
            samples[name] += timed(client, url, 1)[0]
    load_after = os.getloadavg()[0]
    results = []
    for name, _, _ in pages:
        times = sorted(samples[name])
        p50 = statistics.median(times)
        p95 = times[max(0, int(len(times) * 0.95) - 1)]
        results.append((name, p50, p95, times[-1], queries[name]))
        _say(f"{name}: p50 {p50:.1f} ms, p95 {p95:.1f} ms")

    print()
    print(f"PostgreSQL, {counts['patients']:,} patients, {counts['examinations']:,} examinations, ", end="")
    print(f"{counts['alerts']:,} alerts ({counts['open alerts']:,} open); {args.requests} requests per page, ", end="")
    print(f"round robin; load average {load_before:.1f} before, {load_after:.1f} after ({os.cpu_count()} CPUs)")
    print()
    print("| page | p50 ms | p95 ms | max ms | queries | p95 <= 100 ms |")
    print("|---|---:|---:|---:|---:|:---:|")
    ok = True
    for name, p50, p95, worst, queries in results:
        passed = p95 <= GOAL_P95_MS
        ok &= passed
        print(f"| {name} | {p50:.1f} | {p95:.1f} | {worst:.1f} | {queries} | {'yes' if passed else 'NO'} |")
    print()
    print(f"total {time.perf_counter() - started:.0f} s")
    return 0 if ok else 1


if __name__ == "__main__":
    sys.exit(main())
