"""factory_boy factories for every model the tests build."""

from __future__ import annotations

import datetime as dt
import io
from decimal import Decimal

import factory
import numpy as np
from django.core.files.base import ContentFile
from django.utils import timezone
from PIL import Image

from lesions.models import Alert, AlertTrigger, BodySite, Examination, Lesion, Prediction, Visit
from patients.models import Patient, ReferralCentre
from patients.services import patient_account_link, patient_register
from portal.models import Clinic, Role, User
from portal.services import user_create

PASSWORD = "correct-horse-battery-9"


class ClinicFactory(factory.django.DjangoModelFactory):
    class Meta:
        model = Clinic

    name = factory.Sequence(lambda n: f"Clinic {n}")
    city = "Vienna"


class UserFactory(factory.django.DjangoModelFactory):
    """Accounts made by portal.services.user_create, so a test user gets exactly the clinic
    group (and the administrator flags) a real one does."""

    class Meta:
        model = User

    username = factory.Sequence(lambda n: f"user{n}")
    role = Role.STAFF
    clinic = factory.SubFactory(ClinicFactory)
    password = PASSWORD

    @classmethod
    def _create(cls, model_class, *args, **kwargs):
        fields = {name: kwargs.pop(name) for name in ("email", "first_name", "last_name") if name in kwargs}
        user = user_create(
            username=kwargs.pop("username"),
            password=kwargs.pop("password"),
            role=kwargs.pop("role"),
            clinic=kwargs.pop("clinic"),
            check_password=False,
            **fields,
        )
        changed = [name for name, value in kwargs.items() if getattr(user, name) != value]
        if changed:
            raise TypeError(f"UserFactory sets only what user_create does; not {', '.join(changed)}")
        return user


def _registrar() -> User:
    """Who registers factory patients: an administrator outside every clinic, so that no
    clinic gains a member the test did not ask for."""
    existing = User.objects.filter(username="factory-registrar").first()
    return existing or UserFactory(username="factory-registrar", role=Role.ADMINISTRATOR, clinic=None)


class PatientFactory(factory.django.DjangoModelFactory):
    """Records made by patients.services.patient_register (with consent), and an `account`
    linked by patient_account_link: the grants are the services' own, not the factory's."""

    class Meta:
        model = Patient

    clinic = factory.SubFactory(ClinicFactory)
    given_name = factory.Faker("first_name")
    family_name = factory.Faker("last_name")
    date_of_birth = factory.LazyFunction(lambda: dt.date(1970, 5, 17))
    medical_record_number = factory.Sequence(lambda n: f"MRN-{100000 + n}")
    phone = "+43 1 555 0100"
    email = factory.Faker("email")

    @classmethod
    def _create(cls, model_class, *args, **kwargs):
        account = kwargs.pop("account", None)
        actor = kwargs.pop("created_by", None) or _registrar()
        patient = patient_register(actor=actor, consent_given=True, **kwargs)
        if account is not None:
            patient_account_link(actor=actor, patient=patient, account=account)
        return patient


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


class VisitFactory(factory.django.DjangoModelFactory):
    class Meta:
        model = Visit

    lesion = factory.SubFactory(LesionFactory)
    captured_at = factory.LazyFunction(timezone.now)


class ExaminationFactory(factory.django.DjangoModelFactory):
    """One image; a visit of its own unless `visit` is given (its capture time is the visit's)."""

    class Meta:
        model = Examination

    lesion = factory.SubFactory(LesionFactory)
    captured_at = factory.LazyFunction(timezone.now)
    visit = factory.SubFactory(
        VisitFactory, lesion=factory.SelfAttribute("..lesion"), captured_at=factory.SelfAttribute("..captured_at")
    )
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
        skip_postgeneration_save = True

    prediction = factory.SubFactory(PredictionFactory)
    lesion = factory.LazyAttribute(lambda o: o.prediction.examination.lesion)
    clinic = factory.LazyAttribute(lambda o: o.lesion.patient.clinic)
    priority = factory.LazyAttribute(lambda o: min(1000, round(float(o.prediction.malignancy_risk) * 1000)))

    @factory.post_generation
    def trigger(alert, create, extracted, **kwargs):
        """The alert's history starts with its own prediction, as `alert_raise` writes it."""
        if create:
            AlertTrigger.objects.get_or_create(
                prediction=alert.prediction, defaults={"alert": alert, "priority": alert.priority}
            )


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
