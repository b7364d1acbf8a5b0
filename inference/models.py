from __future__ import annotations

import uuid

from django.db import models

from lesions.models import Examination
from portal.crypto import EncryptedJSONField


def _explanation_name(instance: Explanation, filename: str) -> str:
    return f"explanations/{uuid.uuid4().hex}.png.enc"


class Explanation(models.Model):
    """A visual explanation of one examination's prediction by one model file.

    The image is an overlay at display size, encrypted on disk like the examination image.
    `summary` (LIME weights, explained class) is encrypted; `params` holds only settings.
    """

    class Kind(models.TextChoices):
        CAM = "cam", "Class-activation heatmap"
        LIME = "lime", "LIME superpixels"

    class Status(models.TextChoices):
        PENDING = "pending", "Pending"
        DONE = "done", "Done"
        FAILED = "failed", "Failed"

    uuid = models.UUIDField(default=uuid.uuid4, unique=True, editable=False)
    examination = models.ForeignKey(Examination, on_delete=models.PROTECT, related_name="explanations")
    kind = models.CharField(max_length=8, choices=Kind.choices)
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
        ordering = ["kind"]
        constraints = [
            models.UniqueConstraint(
                fields=["examination", "kind", "model_sha256"], name="one_explanation_per_kind_and_model"
            )
        ]

    def __str__(self) -> str:
        return f"Explanation {self.uuid} ({self.kind})"
