"""The audit trail. Selectors and services call `audit_record`; no view can forget it."""

from __future__ import annotations

import contextvars
import uuid
from collections.abc import Callable, Iterable, Mapping
from typing import Any

from django.http import HttpRequest, HttpResponse

from portal.models import AuditEntry, Role
from portal.permissions import is_emergency_access

_request_context: contextvars.ContextVar[dict[str, str] | None] = contextvars.ContextVar(
    "dermatrack_request_context", default=None
)


class RequestContextMiddleware:
    """Remembers where the current request comes from, for audit entries."""

    def __init__(self, get_response: Callable[[HttpRequest], HttpResponse]) -> None:
        self.get_response = get_response

    def __call__(self, request: HttpRequest) -> HttpResponse:
        token = _request_context.set(
            {
                "ip": request.META.get("REMOTE_ADDR", ""),
                "user_agent": request.META.get("HTTP_USER_AGENT", "")[:200],
            }
        )
        try:
            response = self.get_response(request)
            if response.status_code == 404:
                audit_denied(request)
            return response
        finally:
            _request_context.reset(token)


def audit_actor_name(actor: Any) -> str:
    """Staff are named; a patient's own account only by a pseudonym, so that once the patient
    is erased nothing in the (append-only) trail names them."""
    if actor is None:
        return "system"
    if getattr(actor, "role", None) == Role.PATIENT:
        return f"patient-account-{actor.pk}"
    return actor.username


def _shown_uuids(shown: Mapping[str, Iterable[Any]] | None) -> dict[str, list[str]]:
    """{"patient": [<Patient>, ...]} -> {"patient": ["<uuid>", ...]}: each record by its random
    UUID, once, in page order. Anything without a UUID is refused rather than stored, so that
    no name or record number can reach the trail through this field."""
    out: dict[str, list[str]] = {}
    for kind, records in (shown or {}).items():
        uuids: list[str] = []
        for record in records:
            value = record if isinstance(record, uuid.UUID) else getattr(record, "uuid", None)
            if not isinstance(value, uuid.UUID):
                raise TypeError(f"audit 'shown' takes records with a UUID, got {type(record).__name__}")
            if str(value) not in uuids:
                uuids.append(str(value))
        if uuids:
            out[kind] = uuids
    return out


def audit_record(
    *,
    actor: Any,
    action: str,
    target: Any = None,
    patient: Any = None,
    flagged: bool = False,
    shown: Mapping[str, Iterable[Any]] | None = None,
) -> AuditEntry:
    """One entry. `shown` is for list pages: the records on the page, by kind."""
    context = _request_context.get() or {}
    actor_obj = actor if getattr(actor, "is_authenticated", False) else None
    if patient is not None and actor_obj is not None and not flagged:
        flagged = is_emergency_access(actor_obj, patient)  # break-the-glass reads are flagged
    target_uuid = str(getattr(target, "uuid", "") or "")
    patient_uuid = str(getattr(patient, "uuid", "") or "")
    return AuditEntry.objects.create(
        actor=actor_obj,
        actor_username=audit_actor_name(actor_obj),
        action=action,
        target_type=type(target).__name__.lower() if target is not None else "",
        target_uuid=target_uuid,
        patient_uuid=patient_uuid,
        ip_address=context.get("ip") or None,
        user_agent=context.get("user_agent", ""),
        flagged=flagged,
        shown=_shown_uuids(shown),
    )


def audit_denied(request: HttpRequest) -> AuditEntry | None:
    """A logged-in user asked for a record by UUID and got 404: not theirs to see, or not there
    (the answer is the same on purpose). The trail names what was asked for, by its UUID only."""
    user = getattr(request, "user", None)
    match = getattr(request, "resolver_match", None)
    if not getattr(user, "is_authenticated", False) or match is None:
        return None
    asked = [(name.removesuffix("_uuid"), str(value)) for name, value in match.kwargs.items() if name.endswith("_uuid")]
    if not asked:
        return None
    kind, asked_uuid = asked[-1]  # the innermost: /lesions/<lesion_uuid>/... names the lesion
    context = _request_context.get() or {}
    return AuditEntry.objects.create(
        actor=user,
        actor_username=audit_actor_name(user),
        action=f"{kind}.denied",
        target_type=kind,
        target_uuid=asked_uuid[:36],
        ip_address=context.get("ip") or None,
        user_agent=context.get("user_agent", ""),
        flagged=True,
    )
