"""Demo data: one clinic, one login per role (passwords printed), patients with lesions and,
when the shared HAM10000 data is present, real dermoscopic images queued for the worker."""

from __future__ import annotations

import csv
import datetime as dt
import io
import secrets
import tarfile
from decimal import Decimal
from pathlib import Path

from django.conf import settings
from django.core.management.base import BaseCommand
from django.db import transaction
from django.utils import timezone

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


def _demo_images(data_dir: Path) -> dict[str, list[bytes]]:
    """Two validation images per class we need, read straight from the tar."""
    if not (data_dir / "images.tar").exists():
        return {}
    with open(data_dir / "metadata.csv") as fh:
        wanted = {r["image_id"]: r["dx"] for r in csv.DictReader(fh) if r["split"] == "val"}
    out: dict[str, list[bytes]] = {"mel": [], "nv": [], "bcc": []}
    with tarfile.open(data_dir / "images.tar") as tar:
        for member in tar:
            dx = wanted.get(Path(member.name).stem)
            if dx in out and len(out[dx]) < 2:
                out[dx].append(tar.extractfile(member).read())  # type: ignore[union-attr]
            if all(len(v) >= 2 for v in out.values()):
                break
    return out


class Command(BaseCommand):
    help = "Creates demo users and patients (idempotent); prints one login per role."

    def handle(self, *args, **options):
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

        images = _demo_images(Path(settings.DERMATRACK_DEMO_DATA_DIR))
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
                )
                for site, label, dx in lesions:
                    lesion = lesion_add(
                        actor=staff,
                        patient=patient,
                        body_site=site,
                        label=label,
                        first_noted=dt.date.today() - dt.timedelta(days=200),
                    )
                    for n, data in enumerate(images.get(dx, [])[:2]):
                        examination_upload(
                            actor=staff,
                            lesion=lesion,
                            image=io.BytesIO(data),
                            image_size=len(data),
                            diameter_mm=Decimal("5.0") + n,
                            captured_at=timezone.now() - dt.timedelta(days=90 * (1 - n)),
                        )
            if index == 0:
                account_password = secrets.token_urlsafe(9)
                patient_account_create(actor=staff, patient=patient, username="patient", password=account_password)
        patient_user = User.objects.filter(username="patient").first()
        if patient_user is not None:
            logins["patient"] = self._reset_password(patient_user)

        if not images:
            self.stdout.write(
                self.style.WARNING(
                    f"No demo images: {settings.DERMATRACK_DEMO_DATA_DIR} not found. Upload images through the UI."
                )
            )
        self.stdout.write(self.style.SUCCESS("Demo logins (passwords are new on every run):"))
        for username, password in logins.items():
            self.stdout.write(f"  {username:<14} {password}")
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
