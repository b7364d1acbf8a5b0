"""The audit trail: administrator view and CSV export with filters, append-only everywhere,
and break-the-glass emergency access that is time-limited, read-only and flagged."""

from __future__ import annotations

import csv
import datetime as dt
import io

import pytest
from django.utils import timezone

from patients.models import EmergencyAccess
from portal.audit import audit_record
from portal.models import AuditEntry

REASON = "Patient collapsed in our emergency unit; need the lesion history now."


# --- append-only -----------------------------------------------------------------------------


def test_entries_cannot_be_changed_or_deleted_through_the_orm(clinic_staff):
    entry = audit_record(actor=clinic_staff, action="patient.list")
    entry.action = "nothing.happened"
    with pytest.raises(PermissionError):
        entry.save()
    with pytest.raises(PermissionError):
        entry.delete()
    with pytest.raises(PermissionError):
        AuditEntry.objects.filter(pk=entry.pk).update(action="x")
    with pytest.raises(PermissionError):
        AuditEntry.objects.all().delete()
    assert AuditEntry.objects.get(pk=entry.pk).action == "patient.list"


def test_admin_site_shows_entries_but_cannot_add_change_or_delete(client, administrator, clinic_staff):
    entry = audit_record(actor=clinic_staff, action="patient.list")
    client.force_login(administrator)
    assert client.get("/admin/portal/auditentry/").status_code == 200
    assert client.get(f"/admin/portal/auditentry/{entry.pk}/change/").status_code == 200  # read-only view
    assert client.post(f"/admin/portal/auditentry/{entry.pk}/change/", {"action": "x"}).status_code == 403
    assert client.post(f"/admin/portal/auditentry/{entry.pk}/delete/", {"post": "yes"}).status_code == 403
    assert client.get("/admin/portal/auditentry/add/").status_code == 403
    response = client.post(
        "/admin/portal/auditentry/", {"action": "delete_selected", "_selected_action": [entry.pk], "post": "yes"}
    )
    assert response.status_code in (200, 302)
    assert AuditEntry.objects.get(pk=entry.pk).action == "patient.list"


# --- view and CSV with filters ---------------------------------------------------------------


@pytest.fixture
def trail(clinic_staff, clinician, patient, other_patient):
    old = timezone.now() - dt.timedelta(days=10)
    entries = [
        audit_record(actor=clinic_staff, action="patient.view", target=patient, patient=patient),
        audit_record(actor=clinician, action="patient.view", target=other_patient, patient=other_patient),
        audit_record(actor=clinician, action="lesion.view", patient=patient),
    ]
    # An old entry, back-dated behind the application's back (the application cannot do this).
    AuditEntry.objects.bulk_create(
        [AuditEntry(actor=clinic_staff, actor_username=clinic_staff.username, action="patient.list", target_type="")]
    )
    AuditEntry._base_manager.filter(action="patient.list").update(at=old)  # test set-up only
    return entries


def _csv_rows(response):
    text = b"".join(response.streaming_content).decode()
    return list(csv.DictReader(io.StringIO(text)))


def test_audit_view_filters_by_user_patient_and_date(client, administrator, trail, clinician, patient):
    client.force_login(administrator)
    by_user = client.get("/audit/", {"user": clinician.pk})
    assert by_user.status_code == 200
    assert len(by_user.context["page"].object_list) == 2
    by_patient = client.get("/audit/", {"patient": str(patient.uuid)})
    # Also the registration's own entries (patient.create, consent.record: the factory registers).
    assert {e.patient_uuid for e in by_patient.context["page"].object_list} == {str(patient.uuid)}
    assert {"patient.view", "lesion.view"} <= {e.action for e in by_patient.context["page"].object_list}
    today = timezone.localdate()
    recent = client.get("/audit/", {"date_from": (today - dt.timedelta(days=1)).isoformat()})
    assert "patient.list" not in {e.action for e in recent.context["page"].object_list}
    old = client.get("/audit/", {"date_to": (today - dt.timedelta(days=5)).isoformat()})
    assert [e.action for e in old.context["page"].object_list] == ["patient.list"]
    assert AuditEntry.objects.filter(action="audit.view", actor=administrator).count() == 4


def test_audit_csv_export_applies_the_same_filters(client, administrator, trail, clinician, patient):
    client.force_login(administrator)
    response = client.get("/audit/export.csv", {"user": clinician.pk, "patient": str(patient.uuid)})
    assert response.status_code == 200
    assert response["Content-Type"].startswith("text/csv")
    rows = _csv_rows(response)
    assert [(r["actor_username"], r["action"], r["patient_uuid"]) for r in rows] == [
        (clinician.username, "lesion.view", str(patient.uuid))
    ]
    everything = _csv_rows(client.get("/audit/export.csv"))
    assert len(everything) >= 4
    assert AuditEntry.objects.filter(action="audit.export", actor=administrator).count() == 2


def test_csv_cells_cannot_become_spreadsheet_formulas(client, administrator):
    AuditEntry.objects.create(actor_username="=HYPERLINK(1)", action="+cmd", target_type="@x")
    client.force_login(administrator)
    row = next(r for r in _csv_rows(client.get("/audit/export.csv")) if r["action"].endswith("cmd"))
    assert row["actor_username"] == "'=HYPERLINK(1)"
    assert row["action"] == "'+cmd"


@pytest.mark.parametrize("fixture", ["staff_client", "clinician_client", "patient_client"])
def test_only_administrators_see_the_trail(request, fixture):
    c = request.getfixturevalue(fixture)
    assert c.get("/audit/").status_code == 403
    assert c.get("/audit/export.csv").status_code == 403


# --- break the glass -------------------------------------------------------------------------


def _break_glass(client, patient, reason=REASON):
    return client.post(
        "/emergency-access/",
        {"clinic": patient.clinic.pk, "medical_record_number": patient.medical_record_number, "reason": reason},
    )


def test_break_the_glass_needs_a_reason(outside_client, patient):
    response = _break_glass(outside_client, patient, reason="because")
    assert response.status_code == 400
    assert not EmergencyAccess.objects.exists()
    assert outside_client.get(f"/patients/{patient.uuid}/").status_code == 404


def test_break_the_glass_opens_the_record_read_only_and_flags_every_read(
    outside_client, outside_clinician, patient, lesion
):
    assert outside_client.get(f"/patients/{patient.uuid}/").status_code == 404
    response = _break_glass(outside_client, patient)
    assert response.status_code == 302
    assert response["Location"] == f"/patients/{patient.uuid}/"
    grant = EmergencyAccess.objects.get(user=outside_clinician, patient=patient)
    assert grant.reason == REASON
    assert AuditEntry.objects.get(action="emergency_access.grant").flagged

    assert outside_client.get(f"/patients/{patient.uuid}/").status_code == 200
    assert outside_client.get(f"/lesions/{lesion.uuid}/").status_code == 200
    assert outside_client.get(f"/api/patients/{patient.uuid}/").status_code == 200
    reads = AuditEntry.objects.filter(actor=outside_clinician, action__in=["patient.view", "lesion.view"])
    assert reads.count() >= 3
    assert all(e.flagged for e in reads)
    # Read-only: no lesions added under an emergency grant.
    assert outside_client.post(f"/patients/{patient.uuid}/lesions/new/", {"body_site": "face"}).status_code == 403


def test_emergency_access_ends_when_it_expires(outside_client, outside_clinician, patient):
    assert _break_glass(outside_client, patient).status_code == 302
    assert outside_client.get(f"/patients/{patient.uuid}/").status_code == 200
    EmergencyAccess.objects.filter(user=outside_clinician).update(expires_at=timezone.now() - dt.timedelta(seconds=1))
    assert outside_client.get(f"/patients/{patient.uuid}/").status_code == 404
    assert outside_client.get("/api/patients/").json()["results"] == []


def test_own_clinic_reads_are_not_flagged(clinician_client, clinician, patient):
    clinician_client.get(f"/patients/{patient.uuid}/")
    assert not AuditEntry.objects.get(actor=clinician, action="patient.view").flagged


def test_only_dermatologists_break_the_glass(staff_client, patient):
    assert _break_glass(staff_client, patient).status_code == 403
    assert not EmergencyAccess.objects.exists()
