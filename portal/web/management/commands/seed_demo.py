"""Demo data: one clinic, one login per role (passwords printed), patients with lesions and
three examinations per lesion queued for the worker: real HAM10000 validation images when the
shared data set is present, otherwise procedurally generated lesion-like images, flagged
`synthetic` so that every page showing them says so. No data-set image is in the repository."""

from __future__ import annotations

import csv
import datetime as dt
import io
import secrets
import tarfile
from decimal import Decimal
from pathlib import Path

import numpy as np
from django.conf import settings
from django.core.management.base import BaseCommand
from django.db import transaction
from django.utils import timezone
from PIL import Image, ImageFilter

from lesions.models import BodySite
from lesions.services import examination_upload, lesion_add
from patients.models import Patient, ReferralCentre
from patients.services import patient_account_create, patient_find_by_mrn, patient_register, referral_centre_add
from portal.models import Clinic, Role, User
from portal.services import clinic_create, user_create

# Referral directory: fictional centres at real towns' coordinates (demo only).
DEMO_CENTRES = [
    ("Vienna Skin Clinic (demo)", "clinic", "Demogasse 1", "1090", "Vienna", 48.2190, 16.3510, "+43 1 555 0110"),
    (
        "Vienna Cancer Centre (demo)",
        "cancer_centre",
        "Beispielweg 20",
        "1090",
        "Vienna",
        48.2205,
        16.3470,
        "+43 1 555 0111",
    ),
    (
        "St. Pölten Dermatology (demo)",
        "clinic",
        "Musterstraße 5",
        "3100",
        "St. Pölten",
        48.2050,
        15.6230,
        "+43 2742 555 012",
    ),
    ("Linz Dermatology (demo)", "clinic", "Probeplatz 3", "4020", "Linz", 48.3000, 14.2900, "+43 732 555 013"),
    ("Graz Cancer Centre (demo)", "cancer_centre", "Testallee 7", "8036", "Graz", 47.0810, 15.4690, "+43 316 555 014"),
    ("Salzburg Skin Centre (demo)", "clinic", "Übungsgasse 9", "5020", "Salzburg", 47.8000, 13.0400, "+43 662 555 015"),
    (
        "Innsbruck Oncology (demo)",
        "cancer_centre",
        "Demoufer 11",
        "6020",
        "Innsbruck",
        47.2630,
        11.3950,
        "+43 512 555 016",
    ),
]

DEMO_PATIENTS = [
    (
        "Maria",
        "Gruber",
        dt.date(1961, 3, 14),
        "DT-1001",
        [(BodySite.UPPER_BACK, "below left scapula", "mel"), (BodySite.LEFT_FOREARM, "dorsal forearm", "nv")],
    ),
    ("Jonas", "Huber", dt.date(1978, 9, 2), "DT-1002", [(BodySite.FACE, "left cheek", "bcc")]),
    ("Lena", "Wagner", dt.date(1990, 1, 23), "DT-1003", [(BodySite.CHEST, "sternum", "nv")]),
]


# Melanoma risk factors by record number (fictional, like the patients).
DEMO_RISK_FACTORS = {
    "DT-1001": {
        "sex": "female",
        "fitzpatrick_skin_type": "II",
        "personal_history_of_melanoma": "no",
        "family_history_of_melanoma": "yes",
    },
    "DT-1002": {
        "sex": "male",
        "fitzpatrick_skin_type": "III",
        "personal_history_of_melanoma": "no",
        "family_history_of_melanoma": "unknown",
    },
    "DT-1003": {"sex": "female", "fitzpatrick_skin_type": "I"},
}

EXAMINATIONS_PER_LESION = 3  # enough for a progress chart and a comparison


def _demo_images(data_dir: Path) -> dict[str, list[bytes]]:
    """EXAMINATIONS_PER_LESION validation images per class we need, read straight from the tar;
    {} when the data set is not there."""
    if not (data_dir / "images.tar").exists() or not (data_dir / "metadata.csv").exists():
        return {}
    with open(data_dir / "metadata.csv") as fh:
        wanted = {r["image_id"]: r["dx"] for r in csv.DictReader(fh) if r["split"] == "val"}
    out: dict[str, list[bytes]] = {"mel": [], "nv": [], "bcc": []}
    with tarfile.open(data_dir / "images.tar") as tar:
        for member in tar:
            dx = wanted.get(Path(member.name).stem)
            if dx in out and len(out[dx]) < EXAMINATIONS_PER_LESION:
                out[dx].append(tar.extractfile(member).read())  # type: ignore[union-attr]
            if all(len(v) >= EXAMINATIONS_PER_LESION for v in out.values()):
                break
    return out


SKIN_TONES = [(232, 190, 165), (214, 168, 140), (196, 146, 116), (170, 120, 92)]


def _smooth_noise(rng: np.random.Generator, h: int, w: int, scale: int) -> np.ndarray:
    """Values in [0, 1] that vary over about `scale` pixels."""
    small = rng.random((max(2, h // scale), max(2, w // scale))).astype(np.float32)
    img = Image.fromarray((small * 255).astype(np.uint8)).resize((w, h), Image.Resampling.BICUBIC)
    return np.asarray(img, dtype=np.float32) / 255.0


def synthetic_lesion_image(seed: int, kind: str = "nv", size: tuple[int, int] = (600, 450)) -> bytes:
    """A JPEG that looks roughly like a dermoscopic image: skin-toned background with a dermoscope
    vignette, an irregular pigmented blob with a reticular network. `kind` ("mel", "nv", "bcc")
    sets how irregular and how many-coloured the blob is; the same seed gives the same bytes.
    Made for the demo only: it is no medical image and the model's output on it means nothing."""
    rng = np.random.default_rng(seed)
    w, h = size
    yy, xx = np.mgrid[0:h, 0:w].astype(np.float32)
    tone = np.array(SKIN_TONES[rng.integers(len(SKIN_TONES))], dtype=np.float32)
    shade = 0.9 + 0.2 * _smooth_noise(rng, h, w, 60)
    grain = 0.96 + 0.08 * _smooth_noise(rng, h, w, 3)
    img = tone[None, None, :] * (shade * grain)[..., None]
    # the blob: a radius that wobbles with the angle; melanoma-like ones wobble more
    irregular = {"mel": 0.16, "bcc": 0.10, "nv": 0.05}[kind]
    cx = w / 2 + rng.normal(0, w * 0.04)
    cy = h / 2 + rng.normal(0, h * 0.04)
    radius = min(w, h) * rng.uniform(0.22, 0.32) * (1.2 if kind == "mel" else 1.0)
    theta = np.arctan2(yy - cy, xx - cx)
    dist = np.hypot(xx - cx, yy - cy)
    wobble = np.zeros_like(theta)
    for k in range(2, 9):
        wobble += rng.normal(0, irregular / k**0.5) * np.cos(k * theta + rng.uniform(0, 2 * np.pi))
    edge = radius * (1 + wobble)
    softness = {"mel": 6.0, "bcc": 10.0, "nv": 14.0}[kind]
    mask = 1 / (1 + np.exp((dist - edge) / softness))
    # pigment: a reticular network and, for melanoma-like ones, several colours
    warp = 12 * _smooth_noise(rng, h, w, 30)
    period = rng.uniform(4, 6)
    network = np.abs(np.sin((xx + warp) / period) * np.sin((yy - warp) / period)) ** 0.5
    blotch = _smooth_noise(rng, h, w, 25)
    if kind == "mel":
        dark, brown, grey = (np.array(c, np.float32) for c in ((35, 20, 18), (115, 72, 48), (95, 95, 118)))
        second = _smooth_noise(rng, h, w, 18)[..., None]
        pigment = brown * (1 - blotch[..., None]) + dark * blotch[..., None]
        pigment = pigment * (1 - 0.6 * second) + grey * 0.6 * second
    elif kind == "bcc":
        pigment = np.array((190, 120, 125), np.float32) * (0.85 + 0.3 * blotch)[..., None]
        dots = _smooth_noise(rng, h, w, 8) > 0.86
        pigment[dots] = (70, 75, 95)
    else:
        pigment = np.array((125, 80, 55), np.float32) * (0.85 + 0.3 * blotch)[..., None]
    pigment = pigment * (0.75 + 0.35 * network)[..., None]
    img = img * (1 - mask[..., None]) + pigment * mask[..., None]
    # dermoscope vignette
    vign = np.clip(1.15 - (np.hypot((xx - w / 2) / (w / 2), (yy - h / 2) / (h / 2)) ** 4) * 0.5, 0.3, 1)
    img = img * vign[..., None]
    out = Image.fromarray(np.clip(img, 0, 255).astype(np.uint8)).filter(ImageFilter.GaussianBlur(1.2))
    buf = io.BytesIO()
    out.save(buf, format="JPEG", quality=90)
    return buf.getvalue()


class Command(BaseCommand):
    help = "Creates demo users and patients (idempotent); prints one login per role."

    def add_arguments(self, parser):
        parser.add_argument(
            "--data-dir",
            type=Path,
            default=None,
            help="HAM10000 folder (images.tar, metadata.csv); default DERMATRACK_DEMO_DATA_DIR. "
            "Without it the demo uses synthetic images.",
        )

    def handle(self, *args, **options):
        data_dir = options["data_dir"] or Path(settings.DERMATRACK_DEMO_DATA_DIR)  # type: ignore[arg-type]  # has a default (settings/base.py)
        logins = {}
        with transaction.atomic():
            clinic = Clinic.objects.filter(name="Demo Dermatology Clinic").first() or clinic_create(
                name="Demo Dermatology Clinic", city="Vienna"
            )
            for username, role in (
                ("admin", Role.ADMINISTRATOR),
                ("dermatologist", Role.DERMATOLOGIST),
                ("staff", Role.STAFF),
            ):
                logins[username] = self._user(username, role, clinic if role != Role.ADMINISTRATOR else None)
            staff = User.objects.get(username="staff")
            for name, kind, address, postcode, city, lat, lon, phone in DEMO_CENTRES:
                if not ReferralCentre.objects.filter(name=name).exists():
                    referral_centre_add(
                        name=name,
                        kind=kind,
                        address=address,
                        postcode=postcode,
                        city=city,
                        country="Austria",
                        phone=phone,
                        latitude=Decimal(str(lat)),
                        longitude=Decimal(str(lon)),
                    )

        images = _demo_images(data_dir)
        for index, (given, family, dob, mrn, lesions) in enumerate(DEMO_PATIENTS):
            if patient_find_by_mrn(clinic=clinic, medical_record_number=mrn):
                continue
            with transaction.atomic():
                patient = patient_register(
                    actor=staff,
                    clinic=clinic,
                    given_name=given,
                    family_name=family,
                    date_of_birth=dob,
                    medical_record_number=mrn,
                    phone="+43 1 555 0100",
                    consent_given=True,
                    **DEMO_RISK_FACTORS.get(mrn, {}),
                )
                for lesion_index, (site, label, dx) in enumerate(lesions):
                    lesion = lesion_add(
                        actor=staff,
                        patient=patient,
                        body_site=site,
                        label=label,
                        first_noted=dt.date.today() - dt.timedelta(days=400),
                    )
                    real = images.get(dx)
                    for n in range(EXAMINATIONS_PER_LESION):
                        if real:
                            data = real[n % len(real)]
                        else:
                            data = synthetic_lesion_image(seed=100 * index + 10 * lesion_index + n, kind=dx)
                        examination_upload(
                            actor=staff,
                            lesion=lesion,
                            image=io.BytesIO(data),
                            image_size=len(data),
                            # a lesion that grows a little, photographed every four months
                            diameter_mm=Decimal("5.0") + Decimal("0.5") * n,
                            captured_at=timezone.now() - dt.timedelta(days=120 * (EXAMINATIONS_PER_LESION - 1 - n)),
                            synthetic=not real,
                        )
            if index == 0:
                account_password = secrets.token_urlsafe(9)
                patient_account_create(actor=staff, patient=patient, username="patient", password=account_password)
        patient_user = User.objects.filter(username="patient").first()
        if patient_user is not None:
            logins["patient"] = self._reset_password(patient_user)

        if images:
            self.stdout.write(f"Demo images: HAM10000 validation images from {data_dir}")
        else:
            self.stdout.write(
                f"Demo images: synthetic (no HAM10000 data at {data_dir}); every page showing one says so."
            )
        given, family, _dob, mrn, _lesions = DEMO_PATIENTS[0]
        notes = {"patient": f"(the demo patient {given} {family}, record {mrn})"}
        self.stdout.write(self.style.SUCCESS("Demo logins (passwords are new on every run):"))
        for username, password in logins.items():
            self.stdout.write(f"  {username:<14} {password}  {notes.get(username, '')}".rstrip())
        self.stdout.write(f"Patients in demo clinic: {Patient.objects.filter(clinic=clinic).count()}")
        if settings.DERMATRACK_REQUIRE_2FA:
            self.stdout.write(
                self.style.SUCCESS("Two-factor keys (TOTP; add to an authenticator app, or `oathtool --totp -b KEY`):")
            )
            for username in ("admin", "dermatologist", "staff"):
                self.stdout.write(f"  {username:<14} {self._totp_key(User.objects.get(username=username))}")

    def _user(self, username: str, role: str, clinic) -> str:
        user = User.objects.filter(username=username).first()
        if user is None:
            user = user_create(
                username=username, password=secrets.token_urlsafe(12), role=role, clinic=clinic, check_password=False
            )
        return self._reset_password(user)

    @staticmethod
    def _totp_key(user: User) -> str:
        """A fresh confirmed TOTP device for a demo login (new on every run, like the passwords)."""
        from base64 import b32encode

        from django_otp.plugins.otp_totp.models import TOTPDevice

        TOTPDevice.objects.filter(user=user).delete()
        device = TOTPDevice.objects.create(user=user, name="demo", confirmed=True)
        return b32encode(device.bin_key).decode()

    @staticmethod
    def _reset_password(user: User) -> str:
        password = secrets.token_urlsafe(9)
        user.set_password(password)
        user.save(update_fields=["password"])
        return password
