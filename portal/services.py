"""Writes for accounts and clinics."""

from __future__ import annotations

from django.contrib.auth.password_validation import validate_password
from django.db import transaction

from portal import permissions
from portal.audit import audit_record
from portal.models import AuditEntry, Clinic, Role, User


@transaction.atomic
def clinic_create(*, name: str, city: str = "") -> Clinic:
    clinic = Clinic(name=name, city=city)
    clinic.full_clean()
    clinic.save()
    return clinic


@transaction.atomic
def user_create(
    *,
    username: str,
    password: str,
    role: str,
    clinic: Clinic | None = None,
    email: str = "",
    first_name: str = "",
    last_name: str = "",
    actor: User | None = None,
    check_password: bool = True,
) -> User:
    user = User(username=username, role=role, clinic=clinic, email=email, first_name=first_name, last_name=last_name)
    if role == Role.ADMINISTRATOR:
        user.is_staff = True
        user.is_superuser = True
    if role in (Role.DERMATOLOGIST, Role.STAFF) and clinic is None:
        from django.core.exceptions import ValidationError

        raise ValidationError({"clinic": "Dermatologists and clinic staff belong to a clinic."})
    if check_password:
        validate_password(password, user)
    user.set_password(password)
    user.full_clean()
    user.save()
    permissions.clinic_member_add(user)
    audit_record(actor=actor, action="user.create", target=None)
    return user


@transaction.atomic
def user_remove(*, actor: User | None, user: User) -> str:
    """What "delete" means for an account. While any audit entry names the user, the account is
    deactivated (no login, no password) and kept, so the trail still says who did what; only an
    account no entry names is deleted. Returns "deactivated" or "deleted"."""
    if AuditEntry.objects.filter(actor=user).exists():
        user.is_active = False
        user.set_unusable_password()
        user.save(update_fields=["is_active", "password"])
        audit_record(actor=actor, action="user.deactivate", target=None)
        return "deactivated"
    user.delete()
    audit_record(actor=actor, action="user.delete", target=None)
    return "deleted"
