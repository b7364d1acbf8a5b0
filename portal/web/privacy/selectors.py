"""Reads of the audit trail (administrators only)."""

from __future__ import annotations

import contextlib
import datetime as dt
import uuid
from typing import Any

from django.db.models import Q, QuerySet
from django.utils import timezone

from portal import permissions
from portal.audit import audit_record
from portal.models import AuditEntry, User


def audit_entry_list_for(*, user: User, filters: dict[str, Any], action: str = "audit.view") -> QuerySet[AuditEntry]:
    """Entries matching the filters (user, patient UUID, date range, flagged); the read is itself audited."""
    permissions.require_can_view_audit_trail(user)
    qs = AuditEntry.objects.select_related("actor")
    if filters.get("user"):
        qs = qs.filter(actor=filters["user"])
    if filters.get("patient"):
        # The record's own reads and writes, and every list page that showed it (a substring
        # match inside the JSON list, so only for a whole UUID).
        wanted = str(filters["patient"]).strip().lower()
        condition = Q(patient_uuid=wanted)
        with contextlib.suppress(ValueError):
            condition |= Q(shown__patient__icontains=str(uuid.UUID(wanted)))
        qs = qs.filter(condition)
    tz = timezone.get_current_timezone()
    if filters.get("date_from"):
        qs = qs.filter(at__gte=dt.datetime.combine(filters["date_from"], dt.time.min, tzinfo=tz))
    if filters.get("date_to"):
        qs = qs.filter(at__lt=dt.datetime.combine(filters["date_to"] + dt.timedelta(days=1), dt.time.min, tzinfo=tz))
    if filters.get("flagged"):
        qs = qs.filter(flagged=True)
    audit_record(actor=user, action=action)
    return qs.order_by("-at", "-id")
