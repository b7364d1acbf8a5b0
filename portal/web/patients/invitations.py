"""Patient portal accounts (patients.accounts): staff invite and revoke from the patient page;
the patient activates at a public page, from the e-mailed link or with the printed code."""

from __future__ import annotations

from smtplib import SMTPException

from django.contrib import messages
from django.contrib.auth import login
from django.contrib.auth.decorators import login_required
from django.core.exceptions import ValidationError
from django.shortcuts import redirect, render
from django.utils import timezone
from django.views.decorators.cache import never_cache
from django.views.decorators.http import require_http_methods, require_POST

from patients import accounts
from patients.forms import ActivateCodeForm, SetPasswordForm
from patients.selectors import patient_get_for
from portal.forms import apply_validation_error

SESSION_KEY = "dermatrack_invitation"  # the invitation's UUID between the two activation steps

_STATUS = {"unknown": 400, "session": 400, "limited": 429}  # else (expired, used, revoked): 410 Gone


def _patient_page(patient):
    return redirect("patients:patient-detail", patient_uuid=patient.uuid)


def _staff_patient(request, patient_uuid):
    # The service audits what it does; 404 unless visible, 403 unless the user may change it.
    return patient_get_for(user=request.user, patient_uuid=patient_uuid, perm=accounts.ACCOUNT_PERM, audit=False)


@login_required
@require_POST
def invite_email(request, patient_uuid):
    patient = _staff_patient(request, patient_uuid)
    try:
        invitation = accounts.invitation_send_email(actor=request.user, patient=patient)
    except ValidationError as exc:
        messages.error(request, " ".join(exc.messages))
    except (SMTPException, OSError):
        messages.error(request, "The invitation e-mail could not be sent; nothing was created. Try again later.")
    else:
        until = timezone.localtime(invitation.expires_at)
        messages.success(request, f"Invitation e-mail sent. The link works once, until {until:%Y-%m-%d %H:%M}.")
    return _patient_page(patient)


@never_cache
@login_required
@require_POST
def invite_code(request, patient_uuid):
    """Shows the new code once, as a slip to print or hand over (POST: a reload asks first)."""
    patient = _staff_patient(request, patient_uuid)
    try:
        invitation, code = accounts.invitation_create_code(actor=request.user, patient=patient)
    except ValidationError as exc:
        messages.error(request, " ".join(exc.messages))
        return _patient_page(patient)
    context = {
        "patient": patient,
        "invitation": invitation,
        "code": code,
        "activation_url": accounts.activation_page_url(),
    }
    return render(request, "patients/invitation_code.html", context)


@login_required
@require_POST
def access_revoke(request, patient_uuid):
    patient = _staff_patient(request, patient_uuid)
    try:
        accounts.patient_access_revoke(actor=request.user, patient=patient)
    except ValidationError as exc:
        messages.error(request, " ".join(exc.messages))
    else:
        messages.success(request, "Portal access revoked: the patient's login and open invitations no longer work.")
    return _patient_page(patient)


# --- public: activation -------------------------------------------------------------------------


def _invalid(request, reason: str):
    return render(request, "patients/invitation_invalid.html", {"reason": reason}, status=_STATUS.get(reason, 410))


def _limited(request) -> bool:
    return accounts.attempts_exceeded(ip=request.META.get("REMOTE_ADDR"))


@never_cache
@require_http_methods(["GET", "POST"])
def activate(request):
    """Enter the printed code and date of birth."""
    if _limited(request):
        return _invalid(request, "limited")
    form = ActivateCodeForm(request.POST if request.method == "POST" else None)
    if request.method == "POST" and form.is_valid():
        try:
            invitation = accounts.invitation_from_code(
                code=form.cleaned_data["code"], date_of_birth=form.cleaned_data["date_of_birth"]
            )
        except accounts.InvitationInvalid as exc:
            if exc.reason != "unknown":
                return _invalid(request, exc.reason)
            form.add_error(None, "That code and date of birth do not match an invitation. Check both and try again.")
        else:
            request.session[SESSION_KEY] = str(invitation.uuid)
            return redirect("patients:activate-password")
    return render(request, "patients/activate.html", {"form": form}, status=400 if form.errors else 200)


@never_cache
@require_http_methods(["GET"])
def activate_link(request, token):
    """The e-mailed link: remembered in the session, then out of the address bar (and so out
    of the history and of any Referer), as Django's password reset does."""
    if _limited(request):
        return _invalid(request, "limited")
    try:
        invitation = accounts.invitation_from_link(token=token)
    except accounts.InvitationInvalid as exc:
        return _invalid(request, exc.reason)
    request.session[SESSION_KEY] = str(invitation.uuid)
    return redirect("patients:activate-password")


@never_cache
@require_http_methods(["GET", "POST"])
def activate_password(request):
    """Choose a username and password; the login is created, linked, and logged in."""
    invitation_uuid = request.session.get(SESSION_KEY)
    if not invitation_uuid:
        return _invalid(request, "session")
    try:
        accounts.invitation_pending(invitation_uuid=invitation_uuid)
    except accounts.InvitationInvalid as exc:
        request.session.pop(SESSION_KEY, None)
        return _invalid(request, exc.reason)
    form = SetPasswordForm(request.POST if request.method == "POST" else None)
    if request.method == "POST" and form.is_valid():
        try:
            account = accounts.invitation_accept(
                invitation_uuid=invitation_uuid,
                username=form.cleaned_data["username"],
                password=form.cleaned_data["password1"],
            )
        except accounts.InvitationInvalid as exc:
            request.session.pop(SESSION_KEY, None)
            return _invalid(request, exc.reason)
        except ValidationError as exc:
            apply_validation_error(form, exc)
        else:
            request.session.pop(SESSION_KEY, None)
            login(request, account, backend="django.contrib.auth.backends.ModelBackend")
            messages.success(request, "Welcome. Your login is ready; this is your record.")
            return redirect("patients:my-record")
    return render(request, "patients/activate_password.html", {"form": form}, status=400 if form.errors else 200)
