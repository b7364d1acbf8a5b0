"""Session expiry and TOTP two-factor authentication (django-otp).

Dermatologists, clinic staff and administrators must confirm a TOTP code after the password
before any page or API call other than the ones listed in `_exempt_paths` answers them. A
user without a confirmed device is sent to enrol one; a user with one is sent to verify.
Patients log in with a password only. `DERMATRACK_REQUIRE_2FA=false` switches this off (the
test settings do, so tests that are not about 2FA can use `force_login`).
"""

from __future__ import annotations

import functools
import io
import time
from collections.abc import Callable
from urllib.parse import urlencode

from django import forms
from django.conf import settings
from django.contrib.auth import logout
from django.contrib.auth.decorators import login_required
from django.http import HttpRequest, HttpResponse, JsonResponse
from django.shortcuts import redirect, render
from django.urls import reverse
from django.utils.http import url_has_allowed_host_and_scheme
from django.views.decorators.cache import never_cache
from django.views.decorators.http import require_http_methods
from django_otp import login as otp_login
from django_otp import match_token, user_has_device
from django_otp.plugins.otp_totp.models import TOTPDevice

from portal.audit import audit_record
from portal.models import Role

ROLES_REQUIRING_2FA = frozenset({Role.DERMATOLOGIST, Role.STAFF, Role.ADMINISTRATOR})
_LAST_SEEN = "dermatrack_last_seen"


def requires_2fa(user) -> bool:
    if not settings.DERMATRACK_REQUIRE_2FA or not getattr(user, "is_authenticated", False):
        return False
    return bool(user.is_superuser or user.role in ROLES_REQUIRING_2FA)


@functools.cache
def _exempt_paths() -> tuple[str, ...]:
    """Pages a half-logged-in user (password but no code yet) may still reach."""
    names = ("two-factor-setup", "two-factor-verify", "logout", "login")
    return (*(reverse(n) for n in names), "/accounts/password/", "/" + settings.STATIC_URL.lstrip("/"))


def _wants_json(request: HttpRequest) -> bool:
    return request.path_info.startswith("/api/")


class SessionIdleTimeoutMiddleware:
    """Ends a session that has been idle longer than DERMATRACK_SESSION_IDLE_SECONDS.

    SESSION_COOKIE_AGE bounds a session's total life; this bounds the time between requests.
    The timestamp is written at most once a minute, so most requests cause no session write.
    """

    def __init__(self, get_response: Callable[[HttpRequest], HttpResponse]) -> None:
        self.get_response = get_response

    def __call__(self, request: HttpRequest) -> HttpResponse:
        if request.user.is_authenticated:
            now = int(time.time())
            last_seen = request.session.get(_LAST_SEEN)
            if last_seen is not None and now - last_seen > settings.DERMATRACK_SESSION_IDLE_SECONDS:
                logout(request)
                if _wants_json(request):
                    return JsonResponse({"detail": "Your session has expired."}, status=401)
                return redirect(f"{reverse('login')}?{urlencode({'next': request.get_full_path()})}")
            if last_seen is None or now - last_seen >= 60:
                request.session[_LAST_SEEN] = now
        return self.get_response(request)


class TwoFactorMiddleware:
    def __init__(self, get_response: Callable[[HttpRequest], HttpResponse]) -> None:
        self.get_response = get_response

    def __call__(self, request: HttpRequest) -> HttpResponse:
        user = request.user
        # django_otp's OTPMiddleware (before this one) gives request.user its is_verified().
        if requires_2fa(user) and not user.is_verified() and not request.path_info.startswith(_exempt_paths()):  # type: ignore[union-attr]
            if _wants_json(request):
                return JsonResponse({"detail": "Two-factor verification required."}, status=403)
            target = "two-factor-verify" if user_has_device(user) else "two-factor-setup"
            return redirect(f"{reverse(target)}?{urlencode({'next': request.get_full_path()})}")
        return self.get_response(request)


class TokenForm(forms.Form):
    token = forms.RegexField(
        regex=r"^\s*\d{6,8}\s*$",
        label="Code from your authenticator app",
        widget=forms.TextInput(attrs={"autocomplete": "one-time-code", "inputmode": "numeric", "autofocus": True}),
    )


def _next_url(request: HttpRequest) -> str:
    target = request.POST.get("next") or request.GET.get("next") or ""
    if target and url_has_allowed_host_and_scheme(target, {request.get_host()}, require_https=request.is_secure()):
        return target
    return reverse("home")


def _qr_svg(data: str) -> str:
    import qrcode
    import qrcode.image.svg

    out = io.BytesIO()
    qrcode.make(data, image_factory=qrcode.image.svg.SvgPathImage, box_size=8).save(out)
    return out.getvalue().decode()


def totp_device_for(user, *, confirmed: bool | None = None) -> TOTPDevice | None:
    qs = TOTPDevice.objects.devices_for_user(user, confirmed=confirmed)
    return qs.order_by("-confirmed", "id").first()


@never_cache
@login_required
@require_http_methods(["GET", "POST"])
def two_factor_setup(request: HttpRequest) -> HttpResponse:
    """Enrol a TOTP device: only while the user has no confirmed one."""
    user = request.user
    if user_has_device(user):
        return redirect(f"{reverse('two-factor-verify')}?{urlencode({'next': _next_url(request)})}")
    device = totp_device_for(user, confirmed=False) or TOTPDevice.objects.create(
        user=user, name="authenticator", confirmed=False
    )
    form = TokenForm(request.POST if request.method == "POST" else None)
    if request.method == "POST" and form.is_valid():
        if device.verify_token(form.cleaned_data["token"].strip()):
            device.confirmed = True
            device.save(update_fields=["confirmed"])
            otp_login(request, device)
            audit_record(actor=user, action="user.2fa_enrol")
            return redirect(_next_url(request))
        form.add_error("token", "That code is not valid. Check the time on your phone and try again.")
    from base64 import b32encode

    context = {
        "form": form,
        "secret": b32encode(device.bin_key).decode(),
        "qr_svg": _qr_svg(device.config_url),
        "next": _next_url(request),
    }
    return render(request, "registration/two_factor_setup.html", context, status=400 if form.errors else 200)


@never_cache
@login_required
@require_http_methods(["GET", "POST"])
def two_factor_verify(request: HttpRequest) -> HttpResponse:
    user = request.user
    if not user_has_device(user):
        return redirect(f"{reverse('two-factor-setup')}?{urlencode({'next': _next_url(request)})}")
    form = TokenForm(request.POST if request.method == "POST" else None)
    if request.method == "POST" and form.is_valid():
        device = match_token(user, form.cleaned_data["token"].strip())
        if device is not None:
            otp_login(request, device)
            audit_record(actor=user, action="user.2fa_verify")
            return redirect(_next_url(request))
        audit_record(actor=user, action="user.2fa_failure", flagged=True)
        form.add_error("token", "That code is not valid.")
    return render(
        request,
        "registration/two_factor_verify.html",
        {"form": form, "next": _next_url(request)},
        status=400 if form.errors else 200,
    )
