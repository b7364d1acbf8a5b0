"""Shared fixtures: one per role, plus a logged-in client for each, and data helpers."""

from __future__ import annotations

import os
from pathlib import Path

import pytest
from django.test import Client

from portal.models import Role
from tests.factories import ClinicFactory, LesionFactory, PatientFactory, UserFactory

DATA_DIR = Path(__file__).resolve().parent.parent.parent / "shared" / "data" / "ham10000"
IN_CI = os.environ.get("CI", "").lower() in ("1", "true", "yes")


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


def _client_for(user) -> Client:
    client = Client()
    client.force_login(user)
    return client


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


@pytest.fixture
def ham_images():
    """A few real validation JPEGs (bytes) from the shared data set."""
    if not DATA_DIR.exists():
        if IN_CI:
            pytest.fail(f"the shared data set must exist in CI: {DATA_DIR}")
        pytest.skip("shared data set not available")
    import csv
    import tarfile

    with open(DATA_DIR / "metadata.csv") as fh:
        rows = [r for r in csv.DictReader(fh) if r["split"] == "val"]
    wanted = {r["image_id"]: r["dx"] for r in rows if r["dx"] in ("mel", "nv", "bcc")}
    chosen = {}
    with tarfile.open(DATA_DIR / "images.tar") as tar:
        for member in tar:
            image_id = Path(member.name).stem
            dx = wanted.get(image_id)
            if dx and sum(1 for v in chosen.values() if v[0] == dx) < 2:
                chosen[image_id] = (dx, tar.extractfile(member).read())
            if len(chosen) >= 6:
                break
    return chosen
