from __future__ import annotations

import uuid

from django.contrib.auth.models import AbstractUser
from django.db import models


class Clinic(models.Model):
    uuid = models.UUIDField(default=uuid.uuid4, unique=True, editable=False)
    name = models.CharField(max_length=200, unique=True)
    city = models.CharField(max_length=120, blank=True)

    def __str__(self) -> str:
        return self.name


class Role(models.TextChoices):
    DERMATOLOGIST = "dermatologist", "Dermatologist"
    STAFF = "staff", "Clinic staff"
    PATIENT = "patient", "Patient"
    ADMINISTRATOR = "administrator", "Administrator"


class User(AbstractUser):
    role = models.CharField(max_length=20, choices=Role.choices, default=Role.PATIENT)
    clinic = models.ForeignKey(
        Clinic,
        null=True,
        blank=True,
        on_delete=models.PROTECT,
        related_name="members",
        help_text="Dermatologists and staff work for one clinic; patients and administrators have none.",
    )

    @property
    def is_clinician(self) -> bool:
        return self.role in (Role.DERMATOLOGIST, Role.STAFF)

    @property
    def is_dermatologist(self) -> bool:
        return self.role == Role.DERMATOLOGIST


class AuditQuerySet(models.QuerySet):
    def update(self, **kwargs):
        raise PermissionError("audit entries are append-only")

    def delete(self):
        raise PermissionError("audit entries are append-only")


class AuditEntry(models.Model):
    """Append-only record of who read or changed what, when and from where.

    Targets are referenced by opaque UUID strings (not foreign keys) so the trail
    survives the erasure of the record it describes.
    """

    at = models.DateTimeField(auto_now_add=True, db_index=True)
    # PROTECT: deleting a user must not rewrite who did what (SET_NULL did, around the
    # append-only guard). Users named here are deactivated instead (portal.services.user_remove).
    actor = models.ForeignKey(User, null=True, on_delete=models.PROTECT, related_name="audit_entries")
    actor_username = models.CharField(max_length=150, blank=True)
    action = models.CharField(max_length=64, db_index=True)
    target_type = models.CharField(max_length=64)
    target_uuid = models.CharField(max_length=36, blank=True, db_index=True)
    patient_uuid = models.CharField(max_length=36, blank=True, db_index=True)
    ip_address = models.GenericIPAddressField(null=True, blank=True)
    user_agent = models.CharField(max_length=200, blank=True)
    flagged = models.BooleanField(default=False)
    # What a list page showed, by kind: {"patient": [uuid, ...], "examination": [...]}, only the
    # page actually shown (after pagination). Random UUIDs only, never names or record numbers
    # (portal.audit.audit_record refuses anything else). Empty for reads of one record.
    shown = models.JSONField(default=dict, blank=True)

    objects = AuditQuerySet.as_manager()

    class Meta:
        ordering = ["-at", "-id"]
        verbose_name_plural = "audit entries"

    def save(self, *args, **kwargs):
        if self.pk is not None:
            raise PermissionError("audit entries are append-only")
        super().save(*args, **kwargs)

    def delete(self, *args, **kwargs):
        raise PermissionError("audit entries are append-only")

    def __str__(self) -> str:
        return f"{self.at:%Y-%m-%d %H:%M} {self.actor_username} {self.action} {self.target_type}"
