"""Page-time benchmark of the clinical pages on PostgreSQL at hospital scale.

    python benchmarks/dashboard.py                  # seed once (kept), then 200 timed requests per page
    python benchmarks/dashboard.py --requests 500
    python benchmarks/dashboard.py --fresh          # drop and re-seed the benchmark database

Seeds 100,000 patients (20 clinics of 5,000) with 2 lesions each and 5 examinations per lesion
(1,000,000 examinations, one prediction each, every risk and name encrypted as in production),
the alerts the predictions raise (most of them already triaged, with encrypted reasons),
follow-up dates, and the object permissions of each clinic's dermatologists and staff. All
examinations share one encrypted image file.

Rows go in with PostgreSQL COPY, each value converted by its model field exactly as a save
would (so the pages read real Fernet tokens), but each encrypted field is encrypted once per
distinct value and the token reused: Fernet tokens carry a random IV, so a reused token is a
valid encryption of that value, and generation drops from hours of CPU to a few minutes.
Risks are rounded to 1/1000 for the same reason. The seed time is printed.

Then times, through the Django test client (the whole middleware stack, templates, audit
writes; no network), the dermatologist's triage queue (their clinic, and an administrator's
view of all 20), a lesion page and a patient page (random records of that clinic each time),
the follow-up list, and prints p50/p95/max and the query count per page (counted on two
different records: it must not depend on the data). Goal: p95 <= 100 ms. The load average and
the share of the CPUs other processes used during the timing are printed with the table.

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

CLINICS = 20
PATIENTS = 100_000
LESIONS_PER_PATIENT = 2
EXAMS_PER_LESION = 5
OPEN_ALERT_SHARE = 0.15  # of the alerts raised, how many are still waiting for triage
GOAL_P95_MS = 100.0


def cpu_snapshot() -> tuple[float, float, float] | None:
    """(all-CPU seconds, busy CPU seconds, this process's CPU seconds), from /proc/stat where there is one."""
    try:
        with open("/proc/stat") as fh:
            ticks = [int(v) for v in fh.readline().split()[1:9]]
    except (OSError, ValueError):
        return None
    hz = os.sysconf("SC_CLK_TCK")
    own = os.times()
    return sum(ticks) / hz, (sum(ticks) - ticks[3] - ticks[4]) / hz, own.user + own.system


def other_load(start, end) -> float | None:
    """Share of all CPUs that other processes used between two snapshots (this one's included
    PostgreSQL, which serves it: an upper bound on the outside noise)."""
    if start is None or end is None or end[0] <= start[0]:
        return None
    return max(0.0, ((end[1] - start[1]) - (end[2] - start[2])) / (end[0] - start[0]))


class Copier:
    """Writes rows of one model with COPY. Values are given by attname; missing ones take the
    field's default (auto_now_add: now). Every value goes through field.get_db_prep_save, as a
    save does; encrypted fields are encrypted once per distinct value (see the module doc)."""

    def __init__(self) -> None:
        from django.utils import timezone

        self.now = timezone.now()
        self._tokens: dict[tuple[str, str], object] = {}

    def copy(self, model, rows) -> int:
        import json

        from django.db import connection

        from portal.crypto import StrictDecryptMixin

        fields = list(model._meta.concrete_fields)
        columns = ", ".join(connection.ops.quote_name(f.column) for f in fields)
        encrypted = [isinstance(f, StrictDecryptMixin) for f in fields]
        label = model._meta.label
        n = 0
        with connection.cursor() as cursor:
            with cursor.cursor.copy(f"COPY {model._meta.db_table} ({columns}) FROM STDIN") as copy:
                for row in rows:
                    values = []
                    for field, secret in zip(fields, encrypted, strict=True):
                        if field.attname in row:
                            value = row[field.attname]
                        elif getattr(field, "auto_now_add", False) or getattr(field, "auto_now", False):
                            value = self.now
                        else:  # the default, or "" for a blank text field, or None
                            value = field.get_default()
                        if secret and value is not None:
                            key = (f"{label}.{field.name}", json.dumps(value, sort_keys=True, default=str))
                            token = self._tokens.get(key)
                            if token is None:
                                token = self._tokens[key] = field.get_db_prep_save(value, connection)
                            values.append(token)
                        else:
                            values.append(field.get_db_prep_save(value, connection))
                    copy.write_row(values)
                    n += 1
            table = connection.ops.quote_name(model._meta.db_table)
            pk = model._meta.pk.column
            cursor.execute(
                f"SELECT setval(pg_get_serial_sequence('{model._meta.db_table}', '{pk}'), "
                f"COALESCE((SELECT MAX({pk}) FROM {table}), 1))"
            )
        return n


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
    from django.db import connection, transaction
    from django.utils import timezone

    from lesions.models import Alert, AlertTrigger, BodySite, Examination, Lesion, Prediction, TriageDecision, Visit
    from lesions.risk import model_info as current_model_info
    from patients.models import Patient, PatientGroupObjectPermission
    from portal import permissions
    from portal.crypto import blind_index
    from portal.models import Clinic, Role, User
    from tests.factories import png_bytes

    _say("clearing the benchmark database")
    call_command("flush", interactive=False, verbosity=0)
    threshold = (current_model_info() or {}).get("alert_threshold") or 0.3
    now = timezone.now()
    today = timezone.localdate()
    copier = Copier()

    clinics = [Clinic.objects.create(name=f"Bench clinic {i + 1}", city="Vienna") for i in range(CLINICS)]
    users = {}
    for i, clinic in enumerate(clinics):
        for role in (Role.DERMATOLOGIST, Role.STAFF):
            user = User.objects.create(username=f"{role}{i + 1}", role=role, clinic=clinic)
            permissions.clinic_member_add(user)
            users[(role, i)] = user
    User.objects.create(username="admin", role=Role.ADMINISTRATOR, is_superuser=True, is_staff=True)
    staff = users[(Role.STAFF, 0)]
    derm = users[(Role.DERMATOLOGIST, 0)]

    given = ["Anna", "Lukas", "Marie", "Jonas", "Lena", "Felix", "Sophie", "Paul", "Laura", "Maximilian"]
    family = ["Gruber", "Huber", "Wagner", "Müller", "Pichler", "Steiner", "Moser", "Mayer", "Hofer", "Bauer"]
    clinic_of = [clinics[n % CLINICS].pk for n in range(PATIENTS)]  # patient n has id n + 1

    def patients():
        for n in range(PATIENTS):
            mrn = f"B-{n:07d}"
            yield {
                "id": n + 1,
                "clinic_id": clinic_of[n],
                "given_name": rng.choice(given),
                "family_name": rng.choice(family),
                "date_of_birth": dt.date(1940 + n % 60, 1 + n % 12, 1 + n % 28),
                "medical_record_number": mrn,
                "mrn_index": blind_index(mrn),
                "phone": "+43 1 555 0100",
                "email": f"p{n % 1000}@example.org",
                "created_by_id": staff.pk,
            }

    # Looked up before the COPY starts: no other query may run on the connection during one.
    content_type = ContentType.objects.get_for_model(Patient)
    perm_ids = {p.codename: p.pk for p in Permission.objects.filter(content_type=content_type)}
    groups = {
        (c.pk, role): permissions.clinic_group(c, role).pk for c in clinics for role in permissions.ROLE_PATIENT_PERMS
    }

    def grants():
        n = 0
        for patient in range(PATIENTS):
            for role, codenames in permissions.ROLE_PATIENT_PERMS.items():
                for codename in codenames:
                    n += 1
                    yield {
                        "id": n,
                        "group_id": groups[(clinic_of[patient], role)],
                        "permission_id": perm_ids[codename],
                        "content_object_id": patient + 1,
                    }

    sites = list(BodySite.values)
    lesion_count = PATIENTS * LESIONS_PER_PATIENT

    def lesions():
        for n in range(lesion_count):
            follow = today + dt.timedelta(days=rng.randint(-30, 200)) if rng.random() < 0.6 else None
            yield {
                "id": n + 1,
                "patient_id": n // LESIONS_PER_PATIENT + 1,
                "body_site": rng.choice(sites),
                "label": f"lesion {n % LESIONS_PER_PATIENT + 1}",
                "first_noted": today - dt.timedelta(days=800),
                "next_follow_up": follow,
                "created_by_id": staff.pk,
            }

    image_name = default_storage.save("examinations/benchmark.png.enc", ContentFile(png_bytes(size=(600, 450))))
    exam_count = lesion_count * EXAMS_PER_LESION
    start = now - dt.timedelta(days=720)

    captured = [start + dt.timedelta(days=140 * (n % EXAMS_PER_LESION) + rng.randint(0, 30)) for n in range(exam_count)]

    def visits():  # one image per visit
        for n in range(exam_count):
            yield {
                "id": n + 1,
                "lesion_id": n // EXAMS_PER_LESION + 1,
                "captured_at": captured[n],
                "recorded_by_id": staff.pk,
            }

    def examinations():
        for n in range(exam_count):
            k = n % EXAMS_PER_LESION
            yield {
                "id": n + 1,
                "lesion_id": n // EXAMS_PER_LESION + 1,
                "visit_id": n + 1,
                "captured_at": captured[n],
                "uploaded_by_id": staff.pk,
                "image": image_name,
                "image_sha256": "0" * 64,
                "image_width": 600,
                "image_height": 450,
                "diameter_mm": round(3 + k * 0.4 + rng.random(), 1),
                "status": Examination.Status.DONE,
            }

    risks = [round(min(0.99, rng.betavariate(1.2, 6.0)), 3) for _ in range(exam_count)]

    def predictions():
        for n, risk in enumerate(risks):
            yield {
                "id": n + 1,
                "examination_id": n + 1,
                "model_name": "dermatrack-lesion-classifier",
                "model_version": "1.0.0",
                "model_sha256": "b" * 64,
                "probabilities": {"mel": round(risk * 0.7, 6), "bcc": round(risk * 0.3, 6), "nv": round(1 - risk, 6)},
                "malignancy_risk": f"{risk:.6f}",
                "top_class": "mel" if risk > 0.5 else "nv",
            }

    # At most one open alert per lesion (the database's constraint): a lesion's later alerts
    # are decided ones.
    alert_rows = []
    lesions_with_open: set[int] = set()
    for n, risk in enumerate(risks):
        if risk < threshold:
            continue
        lesion = n // EXAMS_PER_LESION + 1
        is_open = rng.random() < OPEN_ALERT_SHARE and lesion not in lesions_with_open
        if is_open:
            lesions_with_open.add(lesion)
        alert_rows.append((n + 1, Alert.Status.OPEN if is_open else Alert.Status.TRIAGED))

    def triggers():
        for a, (prediction, _status) in enumerate(alert_rows):
            yield {
                "id": a + 1,
                "alert_id": a + 1,
                "prediction_id": prediction,
                "priority": min(1000, round(risks[prediction - 1] * 1000)),
            }

    def alerts():
        for a, (prediction, status) in enumerate(alert_rows):
            lesion = (prediction - 1) // EXAMS_PER_LESION + 1
            yield {
                "id": a + 1,
                "prediction_id": prediction,
                "lesion_id": lesion,
                "clinic_id": clinic_of[(lesion - 1) // LESIONS_PER_PATIENT],
                "priority": min(1000, round(risks[prediction - 1] * 1000)),
                "status": status,
                "created_at": now - dt.timedelta(hours=5),
            }

    choices = list(TriageDecision.Decision.values)

    def decisions():
        n = 0
        for a, (_prediction, status) in enumerate(alert_rows):
            if status != Alert.Status.TRIAGED:
                continue
            n += 1
            decision = rng.choice(choices)
            yield {
                "id": n,
                "alert_id": a + 1,
                "decision": decision,
                "reason": "Reviewed in the benchmark",
                "follow_up_months": 6 if decision == "follow_up" else None,
                "decided_by_id": derm.pk,
                "decided_at": now - dt.timedelta(days=rng.randint(0, 400)),
            }

    steps = [
        (Patient, patients, "patients (6 encrypted fields each)"),
        (PatientGroupObjectPermission, grants, "object permissions (each clinic's role groups, per record)"),
        (Lesion, lesions, "lesions"),
        (Visit, visits, "visits"),
        (Examination, examinations, "examinations sharing one encrypted image"),
        (Prediction, predictions, "predictions (probabilities and risk encrypted)"),
        (Alert, alerts, f"alerts (threshold {threshold:.3f})"),
        (AlertTrigger, triggers, "alert triggers"),
        (TriageDecision, decisions, "triage decisions (encrypted reasons)"),
    ]
    for model, rows, what in steps:
        began = time.perf_counter()
        with transaction.atomic():
            n = copier.copy(model, rows())
        _say(f"{n:,} {what} in {time.perf_counter() - began:.0f} s")
    with connection.cursor() as cursor:
        cursor.execute("VACUUM ANALYZE")


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
    parser.add_argument("--patients", type=int, default=PATIENTS, help="scale (default 100,000: 1M examinations)")
    args = parser.parse_args()
    globals()["PATIENTS"] = args.patients

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
        ("dashboard (dermatologist, 1 clinic)", derm_client, reverse("portal:triage-queue")),
        ("dashboard, very high band", derm_client, reverse("portal:triage-queue") + "?band=very_high"),
        (f"dashboard (administrator, {CLINICS} clinics)", admin_client, reverse("portal:triage-queue")),
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
    # page alike; the load average and the other processes' CPU share are printed with the table.
    for _name, client, url in pages:
        timed(client, url, args.warmup)
    samples: dict[str, list[float]] = {name: [] for name, _, _ in pages}
    queries: dict[str, str] = {}
    for name, client, url in pages:
        # Counted on two different records: the count must not depend on the data.
        counts_seen = sorted({timed(client, url, 1)[1] for _ in range(2)})
        queries[name] = "/".join(str(c) for c in counts_seen)
    load_before = os.getloadavg()[0]
    snapshot = cpu_snapshot()
    for _ in range(args.requests):
        for name, client, url in pages:
            samples[name] += timed(client, url, 1)[0]
    busy = other_load(snapshot, cpu_snapshot())
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
    print(f"round robin; load average {load_before:.1f} before, {load_after:.1f} after ({os.cpu_count()} CPUs)", end="")
    print("" if busy is None else f"; other processes (PostgreSQL included) used {100 * busy:.0f} % of the CPUs")
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
