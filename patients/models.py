from __future__ import annotations

import uuid

from django.conf import settings
from django.core.validators import MaxValueValidator, MinValueValidator
from django.db import models
from django.utils import timezone
from guardian.models import GroupObjectPermissionBase, UserObjectPermissionBase

from portal.crypto import EncryptedCharField, EncryptedDateField, EncryptedTextField
from portal.models import Clinic


class Sex(models.TextChoices):
    FEMALE = "female", "Female"
    MALE = "male", "Male"
    OTHER = "other", "Other"
    UNKNOWN = "unknown", "Unknown"


class SkinType(models.TextChoices):
    """Fitzpatrick skin phototype."""

    I = "I", "I: always burns, never tans"  # noqa: E741 - the phototype's name
    II = "II", "II: usually burns, tans minimally"
    III = "III", "III: sometimes burns, tans gradually"
    IV = "IV", "IV: burns minimally, always tans"
    V = "V", "V: very rarely burns, tans darkly"
    VI = "VI", "VI: never burns"


class YesNoUnknown(models.TextChoices):
    YES = "yes", "Yes"
    NO = "no", "No"
    UNKNOWN = "unknown", "Unknown"


class Patient(models.Model):
    """A patient of one clinic. Every identifying field is encrypted; lookups by record
    number go through `mrn_index`, a keyed hash (blind index), and search by name, record
    number or birth date through `PatientSearchToken` rows (patients.search).

    The melanoma risk factors a dermatologist asks about (sex, Fitzpatrick skin type, personal
    and family history of melanoma) are health data and encrypted like the rest; an unrecorded
    skin type is blank, an unrecorded answer "unknown"."""

    uuid = models.UUIDField(default=uuid.uuid4, unique=True, editable=False)
    clinic = models.ForeignKey(Clinic, on_delete=models.PROTECT, related_name="patients")
    account = models.OneToOneField(
        settings.AUTH_USER_MODEL, null=True, blank=True, on_delete=models.SET_NULL, related_name="patient_record"
    )
    given_name = EncryptedCharField(max_length=100)
    family_name = EncryptedCharField(max_length=100)
    date_of_birth = EncryptedDateField()
    medical_record_number = EncryptedCharField(max_length=40)
    mrn_index = models.CharField(max_length=64, editable=False)
    phone = EncryptedCharField(max_length=40, blank=True)
    email = EncryptedCharField(max_length=254, blank=True)
    address = EncryptedTextField(blank=True)
    sex = EncryptedCharField(max_length=10, choices=Sex.choices, default=Sex.UNKNOWN)
    fitzpatrick_skin_type = EncryptedCharField(
        max_length=3, choices=SkinType.choices, blank=True, verbose_name="Fitzpatrick skin type"
    )
    personal_history_of_melanoma = EncryptedCharField(
        max_length=10, choices=YesNoUnknown.choices, default=YesNoUnknown.UNKNOWN
    )
    family_history_of_melanoma = EncryptedCharField(
        max_length=10,
        choices=YesNoUnknown.choices,
        default=YesNoUnknown.UNKNOWN,
        help_text="A first-degree relative (parent, sibling, child) had melanoma.",
    )
    created_at = models.DateTimeField(auto_now_add=True)
    created_by = models.ForeignKey(
        settings.AUTH_USER_MODEL, null=True, on_delete=models.SET_NULL, related_name="patients_registered"
    )

    class Meta:
        constraints = [models.UniqueConstraint(fields=["clinic", "mrn_index"], name="unique_mrn_per_clinic")]
        permissions = [
            ("manage_lesions", "Can add lesions and upload examinations"),
            ("triage_patient", "Can make triage decisions"),
        ]

    @property
    def full_name(self) -> str:
        return f"{self.given_name} {self.family_name}"

    def __str__(self) -> str:
        # Deliberately not the name: __str__ ends up in logs and admin messages.
        return f"Patient {self.uuid}"


class PatientSearchToken(models.Model):
    """One keyed hash of one normalised piece of a patient's name, record number or birth date:
    what name search matches on (patients.search explains the tokens and what they leak).
    Rewritten whenever the patient's name, number or birth date changes; never shown or exported."""

    patient = models.ForeignKey(Patient, on_delete=models.CASCADE, related_name="search_tokens")
    token = models.CharField(max_length=64)

    class Meta:
        constraints = [
            # Also the index every search uses: token first, and the patient id read from the index.
            models.UniqueConstraint(fields=["token", "patient"], name="unique_search_token_per_patient")
        ]

    def __str__(self) -> str:
        return f"Search token of patient {self.patient_id}"


class ReferralCentre(models.Model):
    """A place patients can be referred to: a dermatology clinic or a cancer centre.

    Public directory data, not health data: stored in clear. Managed by administrators in the
    Django admin; patients see the nearest ones (patients.referrals)."""

    class Kind(models.TextChoices):
        CLINIC = "clinic", "Dermatology clinic"
        CANCER_CENTRE = "cancer_centre", "Cancer centre"

    uuid = models.UUIDField(default=uuid.uuid4, unique=True, editable=False)
    name = models.CharField(max_length=200)
    kind = models.CharField(max_length=16, choices=Kind.choices, default=Kind.CLINIC)
    address = models.CharField(max_length=300, help_text="Street and number.")
    postcode = models.CharField(max_length=16, blank=True, db_index=True)
    city = models.CharField(max_length=120, db_index=True)
    country = models.CharField(max_length=80, blank=True)
    phone = models.CharField(max_length=40)
    website = models.URLField(blank=True)
    latitude = models.DecimalField(
        max_digits=8, decimal_places=5, validators=[MinValueValidator(-90), MaxValueValidator(90)]
    )
    longitude = models.DecimalField(
        max_digits=8, decimal_places=5, validators=[MinValueValidator(-180), MaxValueValidator(180)]
    )
    active = models.BooleanField(default=True, help_text="Inactive centres are not shown to patients.")
    updated_at = models.DateTimeField(auto_now=True)

    class Meta:
        ordering = ["name"]
        constraints = [
            models.CheckConstraint(
                condition=models.Q(latitude__gte=-90, latitude__lte=90), name="centre_latitude_range"
            ),
            models.CheckConstraint(
                condition=models.Q(longitude__gte=-180, longitude__lte=180), name="centre_longitude_range"
            ),
        ]

    def __str__(self) -> str:
        return self.name


class Consent(models.Model):
    """The patient's consent to processing, recorded at registration: which text, when, recorded by whom."""

    uuid = models.UUIDField(default=uuid.uuid4, unique=True, editable=False)
    patient = models.ForeignKey(Patient, on_delete=models.PROTECT, related_name="consents")
    version = models.CharField(max_length=20)
    given_at = models.DateTimeField(default=timezone.now)
    recorded_by = models.ForeignKey(
        settings.AUTH_USER_MODEL, null=True, on_delete=models.SET_NULL, related_name="consents_recorded"
    )
    recorded_by_username = models.CharField(max_length=150)

    class Meta:
        db_table = "privacy_consent"  # kept when the model moved here from the privacy app
        ordering = ["-given_at", "-id"]

    def __str__(self) -> str:
        return f"Consent {self.version} {self.uuid}"


class EmergencyAccessQuerySet(models.QuerySet):
    def active(self) -> EmergencyAccessQuerySet:
        return self.filter(expires_at__gt=timezone.now())


class EmergencyAccess(models.Model):
    """Break-the-glass: a dermatologist reads a record outside their clinic, for a stated reason,
    until `expires_at`. Every read under it leaves a flagged audit entry."""

    uuid = models.UUIDField(default=uuid.uuid4, unique=True, editable=False)
    user = models.ForeignKey(settings.AUTH_USER_MODEL, on_delete=models.CASCADE, related_name="emergency_accesses")
    patient = models.ForeignKey(Patient, on_delete=models.PROTECT, related_name="emergency_accesses")
    reason = EncryptedTextField()
    granted_at = models.DateTimeField(default=timezone.now)
    expires_at = models.DateTimeField(db_index=True)

    objects = EmergencyAccessQuerySet.as_manager()

    class Meta:
        db_table = "privacy_emergencyaccess"  # kept when the model moved here from the privacy app
        ordering = ["-granted_at", "-id"]
        verbose_name_plural = "emergency accesses"

    def __str__(self) -> str:
        return f"Emergency access {self.uuid}"


class PatientUserObjectPermission(UserObjectPermissionBase):
    """A grant on one patient record to one account (the patient's own login), with a real
    foreign key: guardian finds this model by the `content_object` FK and then joins on an
    integer instead of casting every record id to text (the generic table's `object_pk`).
    Rows go when the record goes (CASCADE). Written and read only by portal.permissions."""

    content_object = models.ForeignKey(Patient, on_delete=models.CASCADE, db_index=False)  # indexed below

    class Meta(UserObjectPermissionBase.Meta):
        # "Which grants name this record?": the probe behind every visibility filter.
        indexes = [models.Index(fields=["content_object", "permission"], name="patient_uop_object_idx")]


class PatientGroupObjectPermission(GroupObjectPermissionBase):
    """A grant on one patient record to one clinic role group (see PatientUserObjectPermission)."""

    content_object = models.ForeignKey(Patient, on_delete=models.CASCADE, db_index=False)  # indexed below

    class Meta(GroupObjectPermissionBase.Meta):
        indexes = [models.Index(fields=["content_object", "permission", "group"], name="patient_gop_object_idx")]


class InvitationQuerySet(models.QuerySet):
    def live(self) -> InvitationQuerySet:
        """Not used, not revoked (expired ones included: a new invitation revokes those too)."""
        return self.filter(used_at__isnull=True, revoked_at__isnull=True)


class PatientInvitation(models.Model):
    """A one-time invitation for a patient to create their portal login (patients.accounts).

    Only a keyed hash (HMAC-SHA256) of the secret is stored: the e-mailed link's random token
    or the printed code. At most one live invitation per patient (a new one revokes the old)."""

    class Method(models.TextChoices):
        EMAIL = "email", "E-mail link"
        CODE = "code", "Printed code"

    uuid = models.UUIDField(default=uuid.uuid4, unique=True, editable=False)
    patient = models.ForeignKey(Patient, on_delete=models.CASCADE, related_name="invitations")
    method = models.CharField(max_length=8, choices=Method.choices)
    secret_hash = models.CharField(max_length=64, unique=True, editable=False)
    created_at = models.DateTimeField(default=timezone.now)
    created_by = models.ForeignKey(
        settings.AUTH_USER_MODEL, null=True, on_delete=models.SET_NULL, related_name="invitations_created"
    )
    expires_at = models.DateTimeField()
    used_at = models.DateTimeField(null=True, blank=True)
    revoked_at = models.DateTimeField(null=True, blank=True)
    # Wrong dates of birth entered with this invitation's code; revoked at the limit.
    failed_attempts = models.PositiveSmallIntegerField(default=0)

    objects = InvitationQuerySet.as_manager()

    class Meta:
        ordering = ["-created_at", "-id"]
        constraints = [
            models.UniqueConstraint(
                fields=["patient"],
                condition=models.Q(used_at__isnull=True, revoked_at__isnull=True),
                name="one_live_invitation_per_patient",
            ),
            models.CheckConstraint(condition=models.Q(method__in=["email", "code"]), name="invitation_method_valid"),
        ]

    @property
    def expired(self) -> bool:
        return self.expires_at <= timezone.now()

    @property
    def state(self) -> str:
        """One of: used, revoked, expired, live."""
        if self.used_at is not None:
            return "used"
        if self.revoked_at is not None:
            return "revoked"
        return "expired" if self.expired else "live"

    def __str__(self) -> str:
        return f"Invitation {self.uuid}"
