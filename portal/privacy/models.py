from __future__ import annotations

import uuid

from django.conf import settings
from django.db import models
from django.utils import timezone

from patients.models import Patient
from portal.crypto import EncryptedTextField


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
        ordering = ["-granted_at", "-id"]
        verbose_name_plural = "emergency accesses"

    def __str__(self) -> str:
        return f"Emergency access {self.uuid}"
