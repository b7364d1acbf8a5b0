"""Peak memory of the web process and the worker for the nastiest uploads the portal accepts.

    python benchmarks/upload_memory.py              # every case; ~3 minutes on 2 cores
    python benchmarks/upload_memory.py --case png16-grey-40mp --case jpeg-cmyk-40mp

Each case runs in fresh processes on a scratch SQLite database and media folder:

- web: Django's full request path (multipart parsing, upload handlers, validation and
  normalisation, encrypted storage, the database) through the WSGI test client. After one small
  warm-up upload (every import and decoder loaded), the current RSS is "idle"; the kernel's
  peak counter is reset (/proc/self/clear_refs) and the case's upload is posted; "peak" is
  the new VmHWM. The goal is peak - idle <= 300 MB.
- worker: the classification task and then both explanations (CAM, LIME), called in-process
  on the examination the web step stored, measured the same way after a warm-up examination.

Refused cases report the message; they must stay cheap too. The test client holds the whole
request body in memory (up to the 20 MB upload limit), which gunicorn streams: that is at most
20 MB more than production.
"""

from __future__ import annotations

import argparse
import io
import json
import os
import struct
import subprocess
import sys
import tempfile
import time
import zlib
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))
GOAL_MB = 300


# --- inputs ----------------------------------------------------------------------------------


def _png_chunk(kind: bytes, payload: bytes) -> bytes:
    return struct.pack(">I", len(payload)) + kind + payload + struct.pack(">I", zlib.crc32(kind + payload))


def _png_raw(width: int, height: int, bit_depth: int, colour_type: int, channels: int) -> bytes:
    """A smooth 16-bit PNG written by hand (Pillow cannot write 48-bit RGB); tiny on disk."""
    compressor = zlib.compressobj(9)
    parts = []
    row_bytes = width * channels * bit_depth // 8
    for y in range(height):
        level = (y * 65535 // max(1, height - 1)).to_bytes(2, "big") if bit_depth == 16 else bytes([y % 256])
        parts.append(compressor.compress(b"\x00" + level * (row_bytes // len(level))))
    parts.append(compressor.flush())
    ihdr = struct.pack(">IIBBBBB", width, height, bit_depth, colour_type, 0, 0, 0)
    return (
        b"\x89PNG\r\n\x1a\n"
        + _png_chunk(b"IHDR", ihdr)
        + _png_chunk(b"IDAT", b"".join(parts))
        + _png_chunk(b"IEND", b"")
    )


def _gradient(mode: str, size: tuple[int, int]):
    from PIL import Image

    base = Image.linear_gradient("L").resize(size)
    if mode == "L":
        return base
    bands = {"RGB": 3, "CMYK": 4}[mode]
    return Image.merge(mode, [base.rotate(90 * i) if size[0] == size[1] else base for i in range(bands)])


def _saved(image, fmt: str, **kwargs) -> bytes:
    out = io.BytesIO()
    image.save(out, format=fmt, **kwargs)
    return out.getvalue()


SIDE_40MP = 6324  # 6,324^2 = 39.99 MP, just inside the 40 MP limit


def make_inputs() -> dict[str, bytes]:
    s = SIDE_40MP
    rgb_40 = _gradient("RGB", (s, s))
    cases = {
        "png16-grey-6300": _png_raw(6300, 6300, 16, 0, 1),  # the tester's file: 16-bit grey, 39.7 MP
        "png16-rgb-40mp": _png_raw(s, s, 16, 2, 3),
        "png8-rgb-40mp": _saved(rgb_40, "PNG", compress_level=9),
        "jpeg-rgb-40mp": _saved(rgb_40, "JPEG", quality=90),
        "jpeg-cmyk-40mp": _saved(_gradient("CMYK", (s, s)), "JPEG", quality=90),
        "tiff-cmyk-40mp": _saved(_gradient("CMYK", (s, s)), "TIFF", compression="tiff_adobe_deflate"),
        "webp-rgb-40mp": _saved(rgb_40, "WEBP", quality=80),
        "webp-rgb-10mp": _saved(_gradient("RGB", (3160, 3160)), "WEBP", quality=80),  # largest WebP accepted
        "jpeg-15mb-icc-exif": _saved(
            _gradient("RGB", (4000, 3000)),
            "JPEG",
            quality=90,
            icc_profile=os.urandom(15 * 1024 * 1024),
            exif=b"Exif\x00\x00" + b"MM\x00*\x00\x00\x00\x08\x00\x00" + b"\x00" * 60000,
        ),
    }
    return cases


# --- measuring -------------------------------------------------------------------------------


def _status_kb(field: str) -> int:
    for line in Path("/proc/self/status").read_text().splitlines():
        if line.startswith(field + ":"):
            return int(line.split()[1])
    raise RuntimeError(field)


def _reset_peak() -> None:
    Path("/proc/self/clear_refs").write_text("5")


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


def child_web(workdir: Path, case: str) -> dict:
    _setup_django(workdir)
    from django.core.files.uploadedfile import SimpleUploadedFile
    from django.test import Client

    from lesions.models import Examination
    from patients.models import Patient
    from portal.models import User
    from tests.factories import png_bytes

    user = User.objects.get(username="bench_staff")
    lesion = Patient.objects.get().lesions.get()
    client = Client()
    client.force_login(user)
    url = f"/api/lesions/{lesion.uuid}/examinations/"
    warm = client.post(url, {"image": SimpleUploadedFile("w.png", png_bytes(size=(400, 300)))})
    assert warm.status_code == 201, warm.content
    data = (workdir / f"{case}.bin").read_bytes()
    idle = _status_kb("VmRSS")
    _reset_peak()
    started = time.perf_counter()
    response = client.post(url, {"image": SimpleUploadedFile("case.bin", data)})
    seconds = time.perf_counter() - started
    peak = _status_kb("VmHWM")
    result = {"idle_mb": idle / 1024, "peak_mb": peak / 1024, "seconds": seconds, "status": response.status_code}
    if response.status_code == 201:
        exam = Examination.objects.get(uuid=response.json()["uuid"])
        result |= {"examination_id": exam.pk, "stored": f"{exam.image_width}x{exam.image_height}"}
    else:
        result["message"] = json.dumps(response.json())[:160]
    return result


def child_worker(workdir: Path, examination_id: int) -> dict:
    _setup_django(workdir)
    from lesions.models import Examination
    from lesions.tasks import classify_examination_task, explain_examination_task

    warm = (
        Examination.objects.filter(status=Examination.Status.PENDING).exclude(pk=examination_id).order_by("pk").first()
    )
    if warm is not None:  # a small examination first: model and explainer loaded
        classify_examination_task(warm.pk)
        explain_examination_task(warm.pk)
    idle = _status_kb("VmRSS")
    _reset_peak()
    started = time.perf_counter()
    classify_examination_task(examination_id)
    explain_examination_task(examination_id)
    seconds = time.perf_counter() - started
    peak = _status_kb("VmHWM")
    exam = Examination.objects.get(pk=examination_id)
    kinds = {e.kind: e.status for e in exam.explanations.all()}
    return {"idle_mb": idle / 1024, "peak_mb": peak / 1024, "seconds": seconds, "status": exam.status, **kinds}


def _prepare(workdir: Path) -> None:
    _setup_django(workdir)
    from django.core.management import call_command

    call_command("migrate", verbosity=0)
    from portal.models import Role
    from tests.factories import LesionFactory, PatientFactory, UserFactory

    staff = UserFactory(username="bench_staff", role=Role.STAFF)
    LesionFactory(patient=PatientFactory(clinic=staff.clinic))


def _run_child(*args: str) -> dict:
    proc = subprocess.run([sys.executable, __file__, *args], capture_output=True, text=True, cwd=ROOT, check=False)
    if proc.returncode != 0:
        return {"error": proc.stderr.strip().splitlines()[-1] if proc.stderr.strip() else f"rc {proc.returncode}"}
    return json.loads(proc.stdout.strip().splitlines()[-1])


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--case", action="append", help="run only these cases")
    parser.add_argument("--child", nargs=3, help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.child:
        kind, workdir, what = args.child
        result = child_web(Path(workdir), what) if kind == "web" else child_worker(Path(workdir), int(what))
        print(json.dumps(result))
        return 0

    with tempfile.TemporaryDirectory(prefix="dermatrack-memory-") as tmp:
        workdir = Path(tmp)
        inputs = make_inputs()
        names = args.case or list(inputs)
        for name in names:
            (workdir / f"{name}.bin").write_bytes(inputs[name])
        prep = subprocess.run([sys.executable, __file__, "--child", "prep", tmp, "0"], cwd=ROOT, check=False)
        if prep.returncode != 0:
            return 1
        print(
            f"{'case':22} {'file':>8} {'web idle':>9} {'web +peak':>10} {'s':>5}  {'stored / refused':34} "
            f"{'worker idle':>11} {'worker +peak':>12} {'s':>5}  result"
        )
        worst = 0.0
        for name in names:
            web = _run_child("--child", "web", tmp, name)
            size = f"{len(inputs[name]) / 1e6:.1f}MB"
            if "error" in web:
                print(f"{name:22} {size:>8}  web error: {web['error']}")
                worst = float("inf")
                continue
            web_extra = web["peak_mb"] - web["idle_mb"]
            worst = max(worst, web_extra)
            line = f"{name:22} {size:>8} {web['idle_mb']:8.0f}M {web_extra:+9.0f}M {web['seconds']:5.1f}  "
            if web["status"] != 201:
                print(line + f"refused {web['status']}: {web['message'][:80]}")
                continue
            worker = _run_child("--child", "worker", tmp, str(web["examination_id"]))
            line += f"{'stored ' + web['stored']:34} "
            if "error" in worker:
                print(line + f"worker error: {worker['error']}")
                continue
            print(
                line + f"{worker['idle_mb']:10.0f}M {worker['peak_mb'] - worker['idle_mb']:+11.0f}M "
                f"{worker['seconds']:5.1f}  {worker['status']} cam={worker.get('cam')} lime={worker.get('lime')}"
            )
        print(f"\nworst web peak above idle: {worst:.0f} MB (goal <= {GOAL_MB} MB)")
        return 0 if worst <= GOAL_MB else 1


if __name__ == "__main__":
    if len(sys.argv) > 2 and sys.argv[1:3] == ["--child", "prep"]:
        _prepare(Path(sys.argv[3]))
        sys.exit(0)
    sys.exit(main())
