"""factory_boy factories for every model the tests build."""

from __future__ import annotations

import datetime as dt
import io
from decimal import Decimal

import factory
import numpy as np
from django.core.files.base import ContentFile
from PIL import Image

from lesions.models import Alert, BodySite, Examination, Lesion, Prediction
from patients.models import Patient, ReferralCentre
from portal import permissions
from portal.crypto import blind_index
from portal.models import Clinic, Role, User

PASSWORD = "correct-horse-battery-9"


class ClinicFactory(factory.django.DjangoModelFactory):
    class Meta:
        model = Clinic

    name = factory.Sequence(lambda n: f"Clinic {n}")
    city = "Vienna"


class UserFactory(factory.django.DjangoModelFactory):
    class Meta:
        model = User
        skip_postgeneration_save = True

    username = factory.Sequence(lambda n: f"user{n}")
    role = Role.STAFF
    clinic = factory.SubFactory(ClinicFactory)
    password = factory.PostGenerationMethodCall("set_password", PASSWORD)

    @factory.post_generation
    def join_clinic(self, create, extracted, **kwargs):
        if create:
            self.save()
            permissions.clinic_member_add(self)


class PatientFactory(factory.django.DjangoModelFactory):
    class Meta:
        model = Patient
        skip_postgeneration_save = True

    clinic = factory.SubFactory(ClinicFactory)
    given_name = factory.Faker("first_name")
    family_name = factory.Faker("last_name")
    date_of_birth = factory.LazyFunction(lambda: dt.date(1970, 5, 17))
    medical_record_number = factory.Sequence(lambda n: f"MRN-{100000 + n}")
    mrn_index = factory.LazyAttribute(lambda o: blind_index(o.medical_record_number))
    phone = "+43 1 555 0100"
    email = factory.Faker("email")

    @factory.post_generation
    def grant(self, create, extracted, **kwargs):
        if create:
            permissions.patient_access_grant(self)


class LesionFactory(factory.django.DjangoModelFactory):
    class Meta:
        model = Lesion

    patient = factory.SubFactory(PatientFactory)
    body_site = BodySite.UPPER_BACK
    label = "below left scapula"


def png_bytes(size=(120, 90), colour=(150, 90, 70), seed=0) -> bytes:
    rng = np.random.default_rng(seed)
    pixels = np.clip(np.array(colour) + rng.normal(0, 20, (size[1], size[0], 3)), 0, 255).astype(np.uint8)
    out = io.BytesIO()
    Image.fromarray(pixels).save(out, format="PNG")
    return out.getvalue()


def jpeg_bytes(size=(200, 150), seed=0, **save_kwargs) -> bytes:
    rng = np.random.default_rng(seed)
    pixels = rng.integers(0, 255, (size[1], size[0], 3), dtype=np.uint8)
    out = io.BytesIO()
    Image.fromarray(pixels).save(out, format="JPEG", **save_kwargs)
    return out.getvalue()


def lesion_jpeg_bytes(seed=0, kind="nv", size=(320, 240)) -> bytes:
    """A generated lesion-like image (seed_demo's synthetic one): enough for everything but the
    tests that need real dermoscopy, so that a checkout without ../shared runs the task, sweep
    and worker tests too."""
    from portal.web.management.commands.seed_demo import synthetic_lesion_image

    return synthetic_lesion_image(seed=seed, kind=kind, size=size)


class ExaminationFactory(factory.django.DjangoModelFactory):
    class Meta:
        model = Examination

    lesion = factory.SubFactory(LesionFactory)
    image = factory.LazyFunction(lambda: ContentFile(png_bytes(), name="x.png"))
    image_sha256 = "0" * 64
    image_width = 120
    image_height = 90
    status = Examination.Status.PENDING


class PredictionFactory(factory.django.DjangoModelFactory):
    class Meta:
        model = Prediction

    examination = factory.SubFactory(ExaminationFactory, status=Examination.Status.DONE)
    model_name = "efficientnet_lite0"
    model_version = "1.0.0"
    model_sha256 = factory.Sequence(lambda n: f"{n:064x}")
    probabilities = factory.LazyAttribute(
        lambda o: {"mel": float(o.malignancy_risk), "nv": round(1 - float(o.malignancy_risk), 6)}
    )
    malignancy_risk = "0.600000"
    top_class = "mel"


class AlertFactory(factory.django.DjangoModelFactory):
    class Meta:
        model = Alert

    prediction = factory.SubFactory(PredictionFactory)
    lesion = factory.LazyAttribute(lambda o: o.prediction.examination.lesion)
    clinic = factory.LazyAttribute(lambda o: o.lesion.patient.clinic)
    priority = factory.LazyAttribute(lambda o: min(1000, round(float(o.prediction.malignancy_risk) * 1000)))


class ReferralCentreFactory(factory.django.DjangoModelFactory):
    class Meta:
        model = ReferralCentre

    name = factory.Sequence(lambda n: f"Centre {n}")
    kind = ReferralCentre.Kind.CLINIC
    address = "Demogasse 1"
    postcode = "1090"
    city = "Vienna"
    country = "Austria"
    phone = "+43 1 555 0110"
    latitude = Decimal("48.21900")
    longitude = Decimal("16.35100")
