"""How long one PDF report takes (issue 12 item 6).

    python benchmarks/reports.py              # 20 renders of each report
    python benchmarks/reports.py --renders 50 --json OUT

Builds, in a temporary folder (SQLite, its own keys and media), one patient with one lesion and
one examination of a 600x450 synthetic lesion image (seed_demo's), encrypted on disk as
uploads are, with a prediction, a triaged alert and a CAM heatmap layer at display size
(1024 px, the size the worker stores). Then requests each report through the Django test
client (the whole middleware stack, permission check, audit write, decryption of the images,
template, WeasyPrint), after one warm-up request, and prints p50/p95/max and the PDF size.
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))


def _setup_django(workdir: Path) -> None:
    os.environ.update(
        DJANGO_SETTINGS_MODULE="portal.settings.base",
        DERMATRACK_VAR_DIR=str(workdir / "var"),
        DERMATRACK_MEDIA_ROOT=str(workdir / "media"),
        DATABASE_URL=f"sqlite:///{workdir / 'db.sqlite3'}",
        CELERY_BROKER_URL="memory://",
        DERMATRACK_LOG_LEVEL="WARNING",
        DERMATRACK_REQUIRE_2FA="false",  # the client logs in with force_login
    )
    import django

    django.setup()
    from django.core.management import call_command

    call_command("migrate", verbosity=0)


def _seed():
    import io

    import numpy as np
    from django.core.files.base import ContentFile
    from PIL import Image

    from inference.explanations import heatmap_rgba
    from lesions.models import Explanation, ModelVersion
    from lesions.services import triage_decide
    from portal.models import Role
    from portal.web.management.commands.seed_demo import synthetic_lesion_image
    from tests.factories import AlertFactory, LesionFactory, PatientFactory, PredictionFactory, UserFactory

    clinician = UserFactory(username="bench_dr", role=Role.DERMATOLOGIST, first_name="Bea", last_name="Bench")
    account = UserFactory(username="bench_patient", role=Role.PATIENT, clinic=None)
    patient = PatientFactory(clinic=clinician.clinic, account=account)
    lesion = LesionFactory(patient=patient)
    sha = "be" * 32
    ModelVersion.objects.create(
        name="dermatrack-lesion-classifier",
        version="2.0.0",
        sha256=sha,
        alert_threshold=0.2,
        validation={"n": 1280, "balanced_accuracy": 0.689, "malignant_auc": 0.883, "melanoma_sensitivity": 0.927},
    )
    jpeg = synthetic_lesion_image(seed=3, kind="mel", size=(600, 450))
    prediction = PredictionFactory(
        examination__lesion=lesion,
        examination__image=ContentFile(jpeg, name="x.jpg"),
        examination__image_width=600,
        examination__image_height=450,
        examination__notes="Irregular border, new satellite lesion.",
        model_name="dermatrack-lesion-classifier",
        model_version="2.0.0",
        model_sha256=sha,
        malignancy_risk="0.712000",
    )
    exam = prediction.examination
    yy, xx = np.mgrid[0:7, 0:7]
    heat = np.exp(-((yy - 3.2) ** 2 + (xx - 3.6) ** 2) / 4.0)
    layer = heatmap_rgba(heat / heat.max(), (1024, 768))
    out = io.BytesIO()
    layer.save(out, format="PNG")
    cam = Explanation(examination=exam, kind="cam", target="risk", model_sha256=sha, status="done")
    cam.image.save("overlay", ContentFile(out.getvalue()), save=False)
    cam.save()
    Image.open(io.BytesIO(jpeg)).verify()
    alert = AlertFactory(prediction=prediction)
    triage_decide(actor=clinician, alert=alert, decision="biopsy", reason="Asymmetric, changing")
    return clinician, account, exam


def _time(client, method: str, url: str, data: dict | None, renders: int) -> dict:
    def once():
        response = client.post(url, data) if method == "post" else client.get(url)
        if response.status_code != 200 or not response.content.startswith(b"%PDF-"):
            raise SystemExit(f"{url}: {response.status_code}")
        return response

    once()  # warm-up: template loading, font discovery, Pango
    times, size = [], 0
    for _ in range(renders):
        started = time.perf_counter()
        size = len(once().content)
        times.append((time.perf_counter() - started) * 1000)
    times.sort()
    return {
        "p50_ms": statistics.median(times),
        "p95_ms": times[min(len(times) - 1, round(0.95 * (len(times) - 1)))],
        "max_ms": times[-1],
        "pdf_kb": size / 1024,
        "renders": renders,
    }


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--renders", type=int, default=20)
    parser.add_argument("--json", type=Path, help="also write the results here")
    args = parser.parse_args()
    with tempfile.TemporaryDirectory(prefix="dermatrack-reports-bench-") as tmp:
        _setup_django(Path(tmp))
        from django.test import Client
        from django.urls import reverse

        clinician, account, exam = _seed()
        staff, patient = Client(), Client()
        staff.force_login(clinician)
        patient.force_login(account)
        cases = [
            ("examination report", staff, "get", reverse("lesions:examination-report", args=[exam.uuid]), None),
            (
                "referral letter",
                staff,
                "post",
                reverse("lesions:referral-letter", args=[exam.uuid]),
                {"recipient": "Dr Ada Example\nGartenweg 3\n1010 Vienna", "reason": "Rapid growth"},
            ),
            ("patient summary", patient, "get", reverse("lesions:patient-summary", args=[exam.lesion.uuid]), None),
        ]
        results = {name: _time(client, method, url, data, args.renders) for name, client, method, url, data in cases}
    load = os.getloadavg()[0] if hasattr(os, "getloadavg") else float("nan")
    print(
        f"PDF reports, {args.renders} renders each after one warm-up (load average {load:.1f}, {os.cpu_count()} CPUs)"
    )
    print(f"{'report':<20} {'p50 ms':>8} {'p95 ms':>8} {'max ms':>8} {'PDF KB':>8}")
    for name, r in results.items():
        print(f"{name:<20} {r['p50_ms']:>8.0f} {r['p95_ms']:>8.0f} {r['max_ms']:>8.0f} {r['pdf_kb']:>8.0f}")
    if args.json:
        args.json.write_text(json.dumps({"load_average": load, "results": results}, indent=2))
    return 0


if __name__ == "__main__":
    sys.exit(main())
