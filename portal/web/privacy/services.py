"""Privacy writes: consent, the patient's data export, erasure and break-the-glass access.

Export and erasure work on the patient's *record graph*: every row that points at the patient
through a chain of foreign keys (lesions, examinations, predictions, alerts, explanations,
consents, emergency grants, and whatever later apps add), found from the model metadata, so a
new model that hangs off a patient is exported and erased without changes here.
"""

from __future__ import annotations

import io
import json
import uuid
import zipfile
from collections import defaultdict
from pathlib import PurePosixPath
from typing import Any

from django.core.serializers.json import DjangoJSONEncoder
from django.db import models, transaction
from django.utils import timezone

from patients.models import Patient
from portal import permissions
from portal.audit import audit_record
from portal.models import AuditEntry, Role, User

EXPORT_FORMAT = "dermatrack-patient-export"
EXPORT_VERSION = 1
# Not part of the patient's record even though they point at it: access-control bookkeeping.
_NOT_EXPORTED = {
    "patients.emergencyaccess",
    "patients.patientuserobjectpermission",
    "patients.patientgroupobjectpermission",
    "patients.patientinvitation",  # hashes of one-time invitation secrets (patients.accounts)
    "patients.patientsearchtoken",  # keyed hashes of the name: derived, meaningless to the patient
}


# --- the record graph ------------------------------------------------------------------------


def patient_record_graph(patient: Patient) -> dict[type[models.Model], list[models.Model]]:
    """Every row that belongs to this patient, by model, the patient first.

    Walks reverse foreign keys (and one-to-ones) breadth first from the patient. Users are never
    walked into: a user row is reached only as the patient's own account (handled separately).
    """
    found: dict[type[models.Model], dict[Any, models.Model]] = defaultdict(dict)
    found[Patient][patient.pk] = patient
    frontier: list[tuple[type[models.Model], list[Any]]] = [(Patient, [patient.pk])]
    while frontier:
        model, pks = frontier.pop(0)
        for relation in model._meta.related_objects:
            if not (relation.one_to_many or relation.one_to_one) or relation.many_to_many:
                continue
            related = relation.related_model
            assert not isinstance(related, str)  # resolved once the app registry is ready
            rows = related._base_manager.filter(**{f"{relation.field.name}__in": pks})
            new = [row for row in rows if row.pk not in found[related]]
            for row in new:
                found[related][row.pk] = row
            if new:
                frontier.append((related, [row.pk for row in new]))
    return {model: list(rows.values()) for model, rows in found.items()}


def _deletion_order(graph_models: list[type[models.Model]]) -> list[type[models.Model]]:
    """Models ordered so that each comes before every model it points at (children first)."""
    remaining = set(graph_models)
    order: list[type[models.Model]] = []
    while remaining:
        ready = [
            m
            for m in remaining
            if not any(
                other is not m
                and any(f.is_relation and f.many_to_one and f.related_model is m for f in other._meta.concrete_fields)
                for other in remaining
            )
        ]
        if not ready:  # a cycle: should not happen with our schema; delete what is left together
            ready = sorted(remaining, key=lambda m: m._meta.label)
        for model in sorted(ready, key=lambda m: m._meta.label):
            order.append(model)
            remaining.discard(model)
    return order


def _file_fields(model: type[models.Model]) -> list[models.FileField]:
    return [f for f in model._meta.concrete_fields if isinstance(f, models.FileField)]


# --- export ----------------------------------------------------------------------------------


def _json_value(row: models.Model, field: models.Field, files: dict[str, tuple[Any, str]]) -> Any:
    value = getattr(row, field.attname)
    if isinstance(field, models.FileField):
        name = getattr(row, field.name).name
        if not name:
            return None
        path = f"files/{row._meta.label_lower}/{PurePosixPath(name).name.removesuffix('.enc')}"
        files[path] = (field.storage, name)
        return path
    if field.is_relation and value is not None:
        target = getattr(row, field.name)
        if isinstance(target, User):
            return target.username if target.role != Role.PATIENT else "the patient"
        return str(getattr(target, "uuid", value))
    return value


def _serialise(row: models.Model, files: dict[str, tuple[Any, str]]) -> dict[str, Any]:
    skip = {"id", "mrn_index"}
    return {field.name: _json_value(row, field, files) for field in row._meta.concrete_fields if field.name not in skip}


def patient_export(*, actor: User, patient: Patient) -> bytes:
    """A ZIP with `record.json` (every row of the patient's record, decrypted) and every stored
    file (examination images, explanation images) decrypted under `files/`."""
    permissions.require_can_export_patient(actor, patient)
    graph = patient_record_graph(patient)
    files: dict[str, tuple[Any, str]] = {}
    records: dict[str, list[dict[str, Any]]] = {}
    for model, rows in graph.items():
        if model is Patient or model._meta.label_lower in _NOT_EXPORTED:
            continue
        records[model._meta.label_lower] = [_serialise(row, files) for row in sorted(rows, key=lambda r: r.pk)]
    account = patient.account
    document = {
        "format": EXPORT_FORMAT,
        "version": EXPORT_VERSION,
        "exported_at": timezone.now(),
        "clinic": {"name": patient.clinic.name, "city": patient.clinic.city},
        "patient": _serialise(patient, files),
        "account": (
            {"username": account.username, "email": account.email, "date_joined": account.date_joined}
            if account
            else None
        ),
        "records": records,
    }
    out = io.BytesIO()
    with zipfile.ZipFile(out, "w", compression=zipfile.ZIP_DEFLATED) as zf:
        zf.writestr("record.json", json.dumps(document, cls=DjangoJSONEncoder, indent=2, sort_keys=True))
        for path, (storage, name) in sorted(files.items()):
            with storage.open(name, "rb") as fh:
                zf.writestr(path, fh.read())
        zf.writestr(
            "README.txt",
            "Your Dermatrack record. record.json holds every entry of your record; files/ holds the\n"
            "images of your examinations and their explanations. Model outputs are triage aids, not diagnoses.\n",
        )
    audit_record(actor=actor, action="patient.export", target=patient, patient=patient)
    return out.getvalue()


# --- erasure ---------------------------------------------------------------------------------


@transaction.atomic
def patient_erase(*, actor: User, patient: Patient) -> dict[str, int]:
    """Deletes the patient's whole record graph, their stored files, their object permissions
    and their own login. The audit trail keeps its entries, which name the patient only by the
    record's random UUID (now pointing at nothing), plus one `patient.erase` entry."""
    permissions.require_can_erase_patient(actor)
    patient = Patient.objects.select_for_update().get(pk=patient.pk)
    graph = patient_record_graph(patient)
    stored_files = [
        (field.storage, getattr(row, field.name).name)
        for model, rows in graph.items()
        for field in _file_fields(model)
        for row in rows
        if getattr(row, field.name).name
    ]
    audit_record(actor=actor, action="patient.erase", target=patient, patient=patient)
    counts: dict[str, int] = {}
    permissions.patient_access_revoke_all(patient)
    account = patient.account
    for model in _deletion_order(list(graph)):
        pks = [row.pk for row in graph[model]]
        deleted, _ = model._base_manager.filter(pk__in=pks).delete()
        counts[model._meta.label_lower] = deleted
    if account is not None and account.role == Role.PATIENT:
        _account_erase(account)
        counts["portal.user"] = 1

    def _delete_files() -> None:
        for storage, name in stored_files:
            storage.delete(name)

    transaction.on_commit(_delete_files)
    return counts


def _account_erase(account: User) -> None:
    """The patient's login, with its sessions, lockout records and OTP devices. Deleted, or, while
    audit entries name it, reduced to a tombstone that identifies nobody."""
    from axes.models import AccessAttempt, AccessFailureLog, AccessLog
    from django.contrib.sessions.models import Session

    for model in (AccessAttempt, AccessLog, AccessFailureLog):
        model.objects.filter(username=account.username).delete()
    for session in Session.objects.all().iterator():
        if str(session.get_decoded().get("_auth_user_id")) == str(account.pk):
            session.delete()
    if AuditEntry.objects.filter(actor=account).exists():
        # The trail's entries keep pointing at this row (actor is PROTECTed); what stays is a
        # tombstone that names nobody: random username, no name, address, password or devices.
        from django_otp.plugins.otp_totp.models import TOTPDevice

        TOTPDevice.objects.filter(user=account).delete()
        account.username = f"erased-{uuid.uuid4().hex}"
        account.first_name = account.last_name = account.email = ""
        account.is_active = False
        account.set_unusable_password()
        account.save()
        return
    account.delete()
