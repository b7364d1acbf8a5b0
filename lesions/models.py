from __future__ import annotations

import uuid

from django.conf import settings
from django.core.validators import MaxValueValidator, MinValueValidator
from django.db import models
from django.utils import timezone

from patients.models import Patient
from portal.crypto import EncryptedCharField, EncryptedJSONField, EncryptedTextField
from portal.models import Clinic


class BodySite(models.TextChoices):
    SCALP = "scalp", "Scalp"
    FACE = "face", "Face"
    EAR = "ear", "Ear"
    NECK = "neck", "Neck"
    CHEST = "chest", "Chest"
    ABDOMEN = "abdomen", "Abdomen"
    UPPER_BACK = "upper_back", "Upper back"
    LOWER_BACK = "lower_back", "Lower back"
    LEFT_UPPER_ARM = "left_upper_arm", "Left upper arm"
    RIGHT_UPPER_ARM = "right_upper_arm", "Right upper arm"
    LEFT_FOREARM = "left_forearm", "Left forearm"
    RIGHT_FOREARM = "right_forearm", "Right forearm"
    LEFT_HAND = "left_hand", "Left hand"
    RIGHT_HAND = "right_hand", "Right hand"
    GENITAL = "genital", "Genital area"
    BUTTOCKS = "buttocks", "Buttocks"
    LEFT_THIGH = "left_thigh", "Left thigh"
    RIGHT_THIGH = "right_thigh", "Right thigh"
    LEFT_LOWER_LEG = "left_lower_leg", "Left lower leg"
    RIGHT_LOWER_LEG = "right_lower_leg", "Right lower leg"
    LEFT_FOOT = "left_foot", "Left foot"
    RIGHT_FOOT = "right_foot", "Right foot"


class Lesion(models.Model):
    class Status(models.TextChoices):
        MONITORING = "monitoring", "Monitoring"
        BIOPSY = "biopsy", "Biopsy or excision ordered"
        REFERRED = "referred", "Referred"
        EXCISED = "excised", "Excised"
        RESOLVED = "resolved", "Resolved"

    uuid = models.UUIDField(default=uuid.uuid4, unique=True, editable=False)
    patient = models.ForeignKey(Patient, on_delete=models.PROTECT, related_name="lesions")
    body_site = models.CharField(max_length=32, choices=BodySite.choices)
    label = EncryptedCharField(max_length=120, blank=True, help_text="Free text, e.g. 'mole below left scapula'.")
    status = models.CharField(max_length=16, choices=Status.choices, default=Status.MONITORING)
    first_noted = models.DateField(default=timezone.localdate)
    next_follow_up = models.DateField(null=True, blank=True)
    created_at = models.DateTimeField(auto_now_add=True)
    created_by = models.ForeignKey(
        settings.AUTH_USER_MODEL, null=True, on_delete=models.SET_NULL, related_name="lesions_added"
    )

    class Meta:
        ordering = ["created_at", "id"]
        indexes = [
            # A patient's lesion ids without reading the table: counting the open alerts of
            # every visible patient goes grants -> lesions -> open alerts on indexes only.
            models.Index(fields=["patient", "id"], name="lesion_patient_idx"),
            models.Index(
                fields=["next_follow_up"], condition=models.Q(next_follow_up__isnull=False), name="lesion_follow_up_idx"
            ),
        ]

    def __str__(self) -> str:
        return f"Lesion {self.uuid}"


class Visit(models.Model):
    """One sitting of one lesion: when its photographs were taken. Each photograph is an
    Examination, the unit the model classifies and explains; the visit's result is the
    highest risk among its analysed, assessable images (`lesions.visits`). The timeline, the
    progress chart and "change since last" go by visit and its capture time, which may be in
    the past (a visit entered afterwards) but never in the future."""

    uuid = models.UUIDField(default=uuid.uuid4, unique=True, editable=False)
    lesion = models.ForeignKey(Lesion, on_delete=models.PROTECT, related_name="visits")
    captured_at = models.DateTimeField(default=timezone.now)
    recorded_by = models.ForeignKey(
        settings.AUTH_USER_MODEL, null=True, on_delete=models.SET_NULL, related_name="visits_recorded"
    )
    created_at = models.DateTimeField(auto_now_add=True)

    class Meta:
        ordering = ["captured_at", "id"]
        indexes = [models.Index(fields=["lesion", "captured_at"], name="visit_lesion_captured_idx")]

    def __str__(self) -> str:
        return f"Visit {self.uuid}"


def _image_name(instance: Examination, filename: str) -> str:
    # Never the uploaded name: it may carry a patient's name.
    return f"examinations/{uuid.uuid4().hex}.png.enc"


def _thumbnail_name(instance: Examination, filename: str) -> str:
    return f"thumbnails/{uuid.uuid4().hex}.png.enc"


class OcrStatus(models.TextChoices):
    NOT_RUN = "not_run", "Not run"
    DONE = "done", "Done"
    FAILED = "failed", "Failed"
    TIMEOUT = "timeout", "Timed out"


class Hold(models.TextChoices):
    """An image with another patient's record number in it is held: no prediction shown, no alert
    raised, until staff confirm it belongs to this patient (CONFIRMED) or reject it (deleted)."""

    NONE = "", "Not held"
    HELD = "held", "Held: may belong to another patient"
    CONFIRMED = "confirmed", "Confirmed by staff as this patient's"


class Examination(models.Model):
    class Status(models.TextChoices):
        PENDING = "pending", "Waiting for analysis"
        RUNNING = "running", "Being analysed"
        DONE = "done", "Analysed"
        FAILED = "failed", "Analysis failed"

    uuid = models.UUIDField(default=uuid.uuid4, unique=True, editable=False)
    lesion = models.ForeignKey(Lesion, on_delete=models.PROTECT, related_name="examinations")
    visit = models.ForeignKey(Visit, on_delete=models.PROTECT, related_name="examinations")
    # The visit's capture time, copied so image lists order and filter without a join; set
    # only by the upload service, together with the visit.
    captured_at = models.DateTimeField(default=timezone.now)
    uploaded_by = models.ForeignKey(
        settings.AUTH_USER_MODEL, null=True, on_delete=models.SET_NULL, related_name="examinations_uploaded"
    )
    image = models.FileField(upload_to=_image_name)
    thumbnail = models.FileField(
        upload_to=_thumbnail_name, blank=True, help_text="Small encrypted PNG for lists; made on first use."
    )
    image_sha256 = models.CharField(max_length=64)
    image_width = models.PositiveIntegerField()
    image_height = models.PositiveIntegerField()
    diameter_mm = models.DecimalField(
        max_digits=5,
        decimal_places=1,
        null=True,
        blank=True,
        validators=[MinValueValidator(0), MaxValueValidator(500)],
    )
    notes = EncryptedTextField(blank=True)
    status = models.CharField(max_length=16, choices=Status.choices, default=Status.PENDING, db_index=True)
    failure_reason = models.CharField(max_length=300, blank=True)
    claimed_at = models.DateTimeField(null=True, blank=True)
    attempts = models.PositiveSmallIntegerField(default=0)
    created_at = models.DateTimeField(auto_now_add=True)
    synthetic = models.BooleanField(
        default=False,
        help_text="A generated demo image (seed_demo without the data set), not a photograph: pages label it.",
    )
    # Text in the image (lesions.ocr, before classification). The text and the record numbers
    # read are health data (names, identifiers): encrypted. Status, hold and the boxes (pixel
    # rectangles, the regions masked for the model and for redaction) are plain.
    ocr_status = models.CharField(max_length=16, choices=OcrStatus.choices, default=OcrStatus.NOT_RUN)
    ocr_text = EncryptedTextField(blank=True)
    ocr_record_numbers = EncryptedJSONField(default=list, blank=True)
    ocr_boxes = models.JSONField(default=list, blank=True, help_text="[[x0, y0, x1, y1], ...] of text found.")
    hold = models.CharField(max_length=16, choices=Hold.choices, default=Hold.NONE, blank=True, db_index=True)

    class Meta:
        ordering = ["captured_at", "id"]

    def __str__(self) -> str:
        return f"Examination {self.uuid}"

    @property
    def is_held(self) -> bool:
        return self.hold == Hold.HELD

    @property
    def ocr_could_not_run(self) -> bool:
        return self.ocr_status in (OcrStatus.FAILED, OcrStatus.TIMEOUT)


class Prediction(models.Model):
    """One model's output for one examination. Unique per (examination, model file), so
    a task that runs twice leaves one result."""

    uuid = models.UUIDField(default=uuid.uuid4, unique=True, editable=False)
    examination = models.ForeignKey(Examination, on_delete=models.PROTECT, related_name="predictions")
    model_name = models.CharField(max_length=100)
    model_version = models.CharField(max_length=40)
    model_sha256 = models.CharField(max_length=64)
    created_at = models.DateTimeField(auto_now_add=True)
    probabilities = EncryptedJSONField()
    malignancy_risk = EncryptedCharField(max_length=32)
    top_class = EncryptedCharField(max_length=16)  # a diagnosis-like label is health data (issue #11)
    # The image check (inference.image_check) of the same inference. None: made before the
    # check existed. An unassessable prediction is kept and shown to clinicians, marked as
    # such, but its risk is never presented as a result and raises no alert. The reasons are
    # codes and fixed messages about image quality (no health data), so they stay plain.
    assessable = models.BooleanField(null=True, blank=True)
    check_reasons = models.JSONField(default=list, blank=True, help_text="[{code, message}], clearest first.")
    check_scores = models.JSONField(default=dict, blank=True)

    class Meta:
        ordering = ["-created_at", "-id"]
        constraints = [
            models.UniqueConstraint(fields=["examination", "model_sha256"], name="one_prediction_per_model_file")
        ]

    @property
    def risk(self) -> float:
        return float(self.malignancy_risk)

    @property
    def not_assessable(self) -> bool:
        return self.assessable is False

    @property
    def reason_codes(self) -> list[str]:
        return [r.get("code", "") for r in self.check_reasons or []]

    @property
    def reason_messages(self) -> list[str]:
        return [r.get("message", "") for r in self.check_reasons or []]

    def __str__(self) -> str:
        return f"Prediction {self.uuid}"


class Alert(models.Model):
    """A lesion waiting for a dermatologist: opened when a prediction's malignancy risk passes
    the model's alert threshold, closed by a triage decision.

    At most one open alert per lesion (a database constraint). While it is open, every further
    prediction over the threshold on that lesion joins it (`triggers`): `prediction` follows
    the trigger from the most recently captured examination, `priority` is the highest risk
    among the triggers (a later, lower reading never hides a higher one). After a decision, a
    later examination over the threshold opens a new alert.

    `priority` (risk in thousandths) is stored in clear so the queue can be ordered in SQL;
    it names no one and says nothing without the encrypted record behind it.
    """

    class Status(models.TextChoices):
        OPEN = "open", "Open"
        TRIAGED = "triaged", "Triaged"
        # Closed without a decision when another model version was activated whose
        # prediction for the same examination raises no alert (lesions.model_versions).
        SUPERSEDED = "superseded", "Superseded by a new model version"
        # Closed without a decision when the lesion's open alerts were made one (migration
        # 0011): its triggers moved to the lesion's remaining open alert.
        MERGED = "merged", "Merged into the lesion's open alert"

    uuid = models.UUIDField(default=uuid.uuid4, unique=True, editable=False)
    # The latest trigger's prediction (by capture time): the examination the queue shows.
    prediction = models.OneToOneField(Prediction, on_delete=models.PROTECT, related_name="alert")
    lesion = models.ForeignKey(Lesion, on_delete=models.PROTECT, related_name="alerts")
    clinic = models.ForeignKey(Clinic, on_delete=models.PROTECT, related_name="alerts")
    priority = models.PositiveSmallIntegerField(db_index=True)
    status = models.CharField(max_length=16, choices=Status.choices, default=Status.OPEN, db_index=True)
    created_at = models.DateTimeField(auto_now_add=True)
    updated_at = models.DateTimeField(auto_now=True)

    class Meta:
        ordering = ["-priority", "created_at"]
        constraints = [
            models.UniqueConstraint(
                fields=["lesion"], condition=models.Q(status="open"), name="one_open_alert_per_lesion"
            )
        ]
        indexes = [
            models.Index(fields=["clinic", "status", "-priority", "created_at"], name="alert_queue_idx"),
            # Open alerts are a small share of all ever raised: the queue walks them in its
            # order, the counts read (lesion, priority) from the index alone.
            models.Index(
                fields=["-priority", "created_at", "id"],
                condition=models.Q(status="open"),
                name="alert_open_queue_idx",
            ),
            models.Index(
                fields=["lesion", "priority"], condition=models.Q(status="open"), name="alert_open_lesion_idx"
            ),
        ]

    def __str__(self) -> str:
        return f"Alert {self.uuid}"


class AlertTrigger(models.Model):
    """One prediction that opened or joined an alert: the alert's history. A prediction
    triggers at most once."""

    alert = models.ForeignKey(Alert, on_delete=models.PROTECT, related_name="triggers")
    prediction = models.OneToOneField(Prediction, on_delete=models.PROTECT, related_name="alert_trigger")
    priority = models.PositiveSmallIntegerField()
    created_at = models.DateTimeField(auto_now_add=True)

    class Meta:
        ordering = ["created_at", "id"]

    def __str__(self) -> str:
        return f"Alert trigger {self.pk}"


class TriageDecision(models.Model):
    """A dermatologist's decision on one alert: who, when, what and why. The reason is
    encrypted; the decision itself is plain so the queue and reports can filter on it."""

    class Decision(models.TextChoices):
        BIOPSY = "biopsy", "Biopsy / excise"
        REFER = "refer", "Refer"
        FOLLOW_UP = "follow_up", "Follow up"
        DISMISS = "dismiss", "Dismiss"

    uuid = models.UUIDField(default=uuid.uuid4, unique=True, editable=False)
    alert = models.OneToOneField(Alert, on_delete=models.PROTECT, related_name="decision")
    decision = models.CharField(max_length=16, choices=Decision.choices)
    reason = EncryptedTextField()
    follow_up_months = models.PositiveSmallIntegerField(
        null=True, blank=True, validators=[MinValueValidator(1), MaxValueValidator(36)]
    )
    decided_by = models.ForeignKey(
        settings.AUTH_USER_MODEL, null=True, on_delete=models.SET_NULL, related_name="triage_decisions"
    )
    decided_at = models.DateTimeField(default=timezone.now, db_index=True)

    class Meta:
        ordering = ["-decided_at", "-id"]
        constraints = [
            models.CheckConstraint(
                condition=(
                    models.Q(decision="follow_up", follow_up_months__isnull=False)
                    | (~models.Q(decision="follow_up") & models.Q(follow_up_months__isnull=True))
                ),
                name="follow_up_months_iff_follow_up",
            )
        ]

    def __str__(self) -> str:
        return f"Triage decision {self.uuid}"


def _explanation_name(instance: Explanation, filename: str) -> str:
    return f"explanations/{uuid.uuid4().hex}.png.enc"


class Explanation(models.Model):
    """A visual explanation of one examination's prediction by one model file.

    The image is an overlay at display size, encrypted on disk like the examination image.
    `summary` (LIME weights, explained class) is encrypted; `params` holds only the method's
    settings, never the explained class (a diagnosis-like label is health data).
    """

    class Kind(models.TextChoices):
        CAM = "cam", "Class-activation heatmap"
        LIME = "lime", "LIME superpixels"

    class Status(models.TextChoices):
        PENDING = "pending", "Pending"
        DONE = "done", "Done"
        FAILED = "failed", "Failed"

    class Target(models.TextChoices):
        # What is explained: the malignancy risk P(mel)+P(bcc)+P(akiec) that triage acts on,
        # or the most probable class. Rows made before the choice existed explained the top class.
        RISK = "risk", "Malignancy risk"
        TOP_CLASS = "top_class", "Top class"

    uuid = models.UUIDField(default=uuid.uuid4, unique=True, editable=False)
    examination = models.ForeignKey(Examination, on_delete=models.PROTECT, related_name="explanations")
    kind = models.CharField(max_length=8, choices=Kind.choices)
    target = models.CharField(max_length=16, choices=Target.choices, default=Target.RISK)
    model_sha256 = models.CharField(max_length=64)
    status = models.CharField(max_length=8, choices=Status.choices, default=Status.PENDING)
    failure_reason = models.CharField(max_length=300, blank=True)
    image = models.FileField(upload_to=_explanation_name, blank=True)
    params = models.JSONField(default=dict, blank=True)
    summary = EncryptedJSONField(null=True, blank=True)
    compute_ms = models.PositiveIntegerField(null=True, blank=True)
    created_at = models.DateTimeField(auto_now_add=True)
    updated_at = models.DateTimeField(auto_now=True)

    class Meta:
        # The table kept its name when the model moved here from the inference app (migration 0004).
        db_table = "inference_explanation"
        ordering = ["kind", "target"]
        constraints = [
            models.UniqueConstraint(
                fields=["examination", "kind", "target", "model_sha256"],
                name="one_explanation_per_kind_target_and_model",
            )
        ]

    def __str__(self) -> str:
        return f"Explanation {self.uuid} ({self.kind}, {self.target})"


class ModelVersion(models.Model):
    """A classifier file the portal has loaded, with what it was validated to do.

    Registered the first time a process loads the file (`lesions.model_versions`). Exactly
    one version is ACTIVE: pages show its predictions and only its predictions raise alerts
    on examinations it has scored. Another version's predictions (a re-scored archive, or
    the old results) stay in the database under the version that made them.
    """

    uuid = models.UUIDField(default=uuid.uuid4, unique=True, editable=False)
    name = models.CharField(max_length=100)
    version = models.CharField(max_length=40)
    sha256 = models.CharField(max_length=64, unique=True)
    alert_threshold = models.FloatField(null=True, blank=True)
    validation = models.JSONField(default=dict, blank=True, help_text="Validation figures from the model metadata.")
    registered_at = models.DateTimeField(auto_now_add=True)
    is_active = models.BooleanField(default=False)
    activated_at = models.DateTimeField(null=True, blank=True)
    activated_by = models.ForeignKey(
        settings.AUTH_USER_MODEL, null=True, blank=True, on_delete=models.SET_NULL, related_name="+"
    )

    class Meta:
        ordering = ["-registered_at", "-id"]
        constraints = [
            models.UniqueConstraint(
                fields=["is_active"], condition=models.Q(is_active=True), name="at_most_one_active_model_version"
            )
        ]

    @property
    def label(self) -> str:
        return f"{self.name} v{self.version} ({self.sha256[:12]})"

    def __str__(self) -> str:
        return self.label
