"""Deleting a user never rewrites the audit trail (issue #11, item 5)."""

from __future__ import annotations

import pytest
from django.db.models import ProtectedError

from portal.audit import audit_record
from portal.models import AuditEntry, User
from portal.services import user_remove
from tests.factories import PASSWORD, UserFactory


def test_admin_delete_of_an_audited_user_deactivates_and_keeps_the_actor(client, administrator, clinic_staff):
    """Reproduces item 5: the admin's user delete used to set `actor` to NULL on every entry
    of that user (on_delete=SET_NULL), around the append-only guard."""
    entry = audit_record(actor=clinic_staff, action="patient.list")
    client.force_login(administrator)
    page = client.get(f"/admin/portal/user/{clinic_staff.pk}/delete/")
    assert page.status_code == 200
    assert "protected" not in page.content.decode().lower()
    response = client.post(f"/admin/portal/user/{clinic_staff.pk}/delete/", {"post": "yes"})
    assert response.status_code == 302
    clinic_staff.refresh_from_db()
    assert not clinic_staff.is_active
    assert not clinic_staff.has_usable_password()
    assert AuditEntry.objects.get(pk=entry.pk).actor_id == clinic_staff.pk
    assert AuditEntry.objects.filter(action="user.deactivate", actor=administrator).exists()
    assert not clinic_staff.check_password(PASSWORD)


def test_admin_bulk_delete_deactivates_too(client, administrator, clinic_staff):
    audit_record(actor=clinic_staff, action="patient.list")
    client.force_login(administrator)
    client.post(
        "/admin/portal/user/", {"action": "delete_selected", "_selected_action": [clinic_staff.pk], "post": "yes"}
    )
    clinic_staff.refresh_from_db()
    assert not clinic_staff.is_active
    assert AuditEntry.objects.filter(actor=clinic_staff).exists()


def test_a_user_nobody_audited_is_really_deleted(administrator):
    stranger = UserFactory()
    assert user_remove(actor=administrator, user=stranger) == "deleted"
    assert not User.objects.filter(pk=stranger.pk).exists()


def test_the_database_refuses_to_null_an_audit_actor(clinic_staff):
    audit_record(actor=clinic_staff, action="patient.list")
    with pytest.raises(ProtectedError):
        clinic_staff.delete()
