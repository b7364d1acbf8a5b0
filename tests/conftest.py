"""Shared fixtures: one per role, plus a logged-in client for each, and data helpers."""

from __future__ import annotations

import os
from pathlib import Path
from typing import NoReturn

import pytest
from django.test import Client

from portal.models import Role
from tests.factories import ClinicFactory, LesionFactory, PatientFactory, UserFactory

DATA_DIR = Path(__file__).resolve().parent.parent.parent / "shared" / "data" / "ham10000"
IN_CI = os.environ.get("CI", "").lower() in ("1", "true", "yes")


def skip_or_fail(reason: str) -> NoReturn:
    """For a missing data set, model, browser or service: a skip on a developer's machine, a
    failure under CI=true, so that CI can never go green by skipping what it must run."""
    if IN_CI:
        pytest.fail(f"{reason} (required under CI=true)")
    pytest.skip(reason)


def require_data_set() -> Path:
    """The HAM10000 folder (../shared/data/ham10000), for the tests that need real dermoscopy."""
    if not (DATA_DIR / "images.tar").is_file() or not (DATA_DIR / "metadata.csv").is_file():
        skip_or_fail(f"the HAM10000 data set is not at {DATA_DIR}")
    return DATA_DIR


def require_model() -> None:
    """The classifier the portal is configured with (committed under inference/models/)."""
    from inference.classifier import default_metadata_path

    if not default_metadata_path().exists():
        skip_or_fail(f"no classifier model at {default_metadata_path()}")


def pytest_report_header(config):
    import factory.random

    seed = int(os.environ.get("FAKER_SEED", "4321"))
    factory.random.reseed_random(seed)
    return f"faker seed: {seed} (set FAKER_SEED to repeat another run)"


@pytest.fixture(autouse=True)
def _media_root(settings, tmp_path):
    settings.MEDIA_ROOT = tmp_path / "media"


@pytest.fixture
def clinic(db):
    return ClinicFactory(name="Northside Dermatology")


@pytest.fixture
def other_clinic(db):
    return ClinicFactory(name="Southside Skin Centre")


@pytest.fixture
def clinician(clinic):
    return UserFactory(username="dr_who", role=Role.DERMATOLOGIST, clinic=clinic)


@pytest.fixture
def clinic_staff(clinic):
    return UserFactory(username="staff_sam", role=Role.STAFF, clinic=clinic)


@pytest.fixture
def outside_clinician(other_clinic):
    return UserFactory(username="dr_elsewhere", role=Role.DERMATOLOGIST, clinic=other_clinic)


@pytest.fixture
def patient(clinic):
    account = UserFactory(username="pat_own", role=Role.PATIENT, clinic=None)
    return PatientFactory(clinic=clinic, account=account, given_name="Zelda", family_name="Quackenbush")


@pytest.fixture
def patient_user(patient):
    return patient.account


@pytest.fixture
def other_patient(clinic):
    account = UserFactory(username="pat_other", role=Role.PATIENT, clinic=None)
    return PatientFactory(clinic=clinic, account=account, given_name="Xavier", family_name="Oddington")


@pytest.fixture
def other_patient_user(other_patient):
    return other_patient.account


@pytest.fixture
def administrator(db):
    return UserFactory(username="admin_ada", role=Role.ADMINISTRATOR, clinic=None, is_superuser=True, is_staff=True)


@pytest.fixture
def lesion(patient):
    return LesionFactory(patient=patient)


def _client_for(user, *, totp: bool = False) -> Client:
    """A logged-in client. With `totp`, also past the second factor (a confirmed TOTP device,
    verified in the session as django_otp's login does), so it works with
    DERMATRACK_REQUIRE_2FA on. Off by default: the test settings turn the requirement off, and
    django_otp then costs a query per request, which the query-count tests would see."""
    client = Client()
    client.force_login(user)
    if totp:
        from django_otp import DEVICE_ID_SESSION_KEY
        from django_otp.plugins.otp_totp.models import TOTPDevice

        device = TOTPDevice.objects.create(user=user, name="test", confirmed=True)
        session = client.session
        session[DEVICE_ID_SESSION_KEY] = device.persistent_id
        session.save()
    return client


@pytest.fixture
def administrator_client(administrator):
    """The administrator, logged in with the second factor verified (named so as not to
    shadow pytest-django's own `admin_client`, whose superuser has no Dermatrack role)."""
    return _client_for(administrator, totp=True)


@pytest.fixture
def clinician_client(clinician):
    return _client_for(clinician)


@pytest.fixture
def staff_client(clinic_staff):
    return _client_for(clinic_staff)


@pytest.fixture
def patient_client(patient_user):
    return _client_for(patient_user)


@pytest.fixture
def other_patient_client(other_patient_user):
    return _client_for(other_patient_user)


@pytest.fixture
def outside_client(outside_clinician):
    return _client_for(outside_clinician)


def real_dermoscopy(n: int) -> list[bytes]:
    """n validation JPEGs of the shared data set (the image check must pass real dermoscopy)."""
    import csv
    import tarfile

    data_dir = require_data_set()
    with open(data_dir / "metadata.csv") as fh:
        wanted = {r["image_id"] for r in csv.DictReader(fh) if r["split"] == "val" and r["dx"] in ("mel", "nv", "bcc")}
    out: list[bytes] = []
    with tarfile.open(data_dir / "images.tar") as tar:
        for member in tar:
            if Path(member.name).stem in wanted:
                fh = tar.extractfile(member)
                if fh is not None:
                    out.append(fh.read())
            if len(out) >= n:
                break
    return out
