"""Authentication hardening: Argon2, lockout, session expiry, TOTP for clinical roles,
password reset that reveals nothing, Content-Security-Policy, and `check --deploy`."""

from __future__ import annotations

import os
import re
import subprocess
import sys
import time
from pathlib import Path

import pytest
from cryptography.fernet import Fernet
from django.contrib.auth.hashers import check_password, make_password
from django.core import mail
from django_otp.oath import totp
from django_otp.plugins.otp_totp.models import TOTPDevice

from portal.authentication import _LAST_SEEN
from tests.factories import PASSWORD

ROOT = Path(__file__).resolve().parents[2]


def _code(device: TOTPDevice, offset_steps: int = 0) -> str:
    device.refresh_from_db()
    code = totp(device.bin_key, device.step, device.t0 - offset_steps * device.step, device.digits, device.drift)
    return f"{code:0{device.digits}d}"


# --- passwords and lockout -------------------------------------------------------------------


def test_production_hashes_passwords_with_argon2(settings):
    from portal.settings import base

    assert base.PASSWORD_HASHERS[0] == "django.contrib.auth.hashers.Argon2PasswordHasher"
    settings.PASSWORD_HASHERS = base.PASSWORD_HASHERS  # the test settings use a fast hasher
    encoded = make_password("correct-horse-battery-9")
    assert encoded.startswith("argon2$argon2id$")
    assert check_password("correct-horse-battery-9", encoded)


def _login(client, username, password):
    return client.post("/accounts/login/", {"username": username, "password": password})


def test_login_works_with_the_right_password(client, clinic_staff):
    response = _login(client, clinic_staff.username, PASSWORD)
    assert response.status_code == 302
    assert client.get("/patients/").status_code == 200


def test_repeated_failures_lock_the_account_out_even_with_the_right_password(client, clinic_staff, settings):
    for _ in range(settings.AXES_FAILURE_LIMIT - 1):
        response = _login(client, clinic_staff.username, "wrong-password-1")
        assert response.status_code == 200  # the form again, with an error
    locked = _login(client, clinic_staff.username, "wrong-password-1")
    assert locked.status_code == 429
    after = _login(client, clinic_staff.username, PASSWORD)
    assert after.status_code == 429
    assert "_auth_user_id" not in client.session
    assert client.get("/patients/").status_code == 302


def test_lockout_looks_the_same_for_an_unknown_username(client, clinic_staff, settings):
    responses = {}
    for username in (clinic_staff.username, "nobody-by-this-name"):
        for _ in range(settings.AXES_FAILURE_LIMIT):
            response = _login(client, username, "wrong-password-1")
        responses[username] = response
    known, unknown = responses.values()
    assert known.status_code == unknown.status_code == 429
    assert known.content == unknown.content


# --- session expiry --------------------------------------------------------------------------


def test_idle_session_expires(staff_client, settings):
    assert staff_client.get("/patients/").status_code == 200
    session = staff_client.session
    session[_LAST_SEEN] = int(time.time()) - settings.DERMATRACK_SESSION_IDLE_SECONDS - 5
    session.save()
    response = staff_client.get("/patients/")
    assert response.status_code == 302
    assert response["Location"].startswith("/accounts/login/")
    assert staff_client.get("/patients/").status_code == 302  # logged out for good


def test_session_cookie_is_bounded_and_httponly(settings):
    assert settings.SESSION_EXPIRE_AT_BROWSER_CLOSE
    assert settings.SESSION_COOKIE_AGE <= 12 * 3600
    assert settings.SESSION_COOKIE_HTTPONLY
    assert settings.DERMATRACK_SESSION_IDLE_SECONDS <= 3600


# --- two-factor authentication ---------------------------------------------------------------


@pytest.fixture
def require_2fa(settings):
    settings.DERMATRACK_REQUIRE_2FA = True
    settings.OTP_TOTP_THROTTLE_FACTOR = 0


def test_administrator_client_is_past_the_second_factor(require_2fa, administrator_client, client, administrator):
    assert administrator_client.get("/admin/").status_code == 200
    assert administrator_client.get("/api/patients/").status_code == 200
    client.force_login(administrator)  # the same account (its device exists) with a password only
    assert client.get("/admin/")["Location"].startswith("/accounts/2fa/verify/")


@pytest.mark.parametrize("role_fixture", ["clinic_staff", "clinician", "administrator"])
def test_clinical_roles_must_enrol_totp_before_anything_else(client, require_2fa, request, role_fixture):
    user = request.getfixturevalue(role_fixture)
    client.force_login(user)
    response = client.get("/patients/")
    assert response.status_code == 302
    assert response["Location"].startswith("/accounts/2fa/setup/")
    api = client.get("/api/patients/")
    assert api.status_code == 403
    assert "Two-factor" in api.json()["detail"]

    setup = client.get(response["Location"])
    assert setup.status_code == 200
    assert b"<svg" in setup.content
    device = TOTPDevice.objects.get(user=user, confirmed=False)
    assert client.post("/accounts/2fa/setup/", {"token": "000000", "next": "/patients/"}).status_code == 400
    done = client.post("/accounts/2fa/setup/", {"token": _code(device), "next": "/patients/"})
    assert done.status_code == 302
    assert done["Location"] == "/patients/"
    assert client.get("/patients/").status_code == 200
    assert TOTPDevice.objects.get(user=user).confirmed


def test_enrolled_user_must_give_a_code_after_the_password(client, clinic_staff, require_2fa):
    device = TOTPDevice.objects.create(user=clinic_staff, name="phone", confirmed=True)
    response = _login(client, clinic_staff.username, PASSWORD)
    assert response.status_code == 302
    page = client.get("/patients/")
    assert page.status_code == 302
    assert page["Location"].startswith("/accounts/2fa/verify/")
    assert client.get("/accounts/2fa/setup/").status_code == 302  # no second device without the first
    wrong = client.post("/accounts/2fa/verify/", {"token": "123456"})
    assert wrong.status_code == 400
    assert client.get("/patients/").status_code == 302
    ok = client.post("/accounts/2fa/verify/", {"token": _code(device), "next": "/patients/"})
    assert ok.status_code == 302
    assert client.get("/patients/").status_code == 200


def test_verify_refuses_an_offsite_next_url(client, clinic_staff, require_2fa):
    device = TOTPDevice.objects.create(user=clinic_staff, name="phone", confirmed=True)
    client.force_login(clinic_staff)
    response = client.post("/accounts/2fa/verify/", {"token": _code(device), "next": "https://evil.example/"})
    assert response["Location"] == "/"


def test_patients_log_in_with_a_password_only(patient_client, require_2fa, patient):
    assert patient_client.get(f"/patients/{patient.uuid}/").status_code == 200


# --- password reset --------------------------------------------------------------------------


def test_password_reset_does_not_reveal_whether_an_account_exists(client, clinic_staff):
    clinic_staff.email = "sam@clinic.example"
    clinic_staff.save()
    known = client.post("/accounts/password/reset/", {"email": "sam@clinic.example"})
    unknown = client.post("/accounts/password/reset/", {"email": "nobody@clinic.example"})
    assert known.status_code == unknown.status_code == 302
    assert known["Location"] == unknown["Location"]
    assert client.get(known["Location"]).content == client.get(unknown["Location"]).content
    assert len(mail.outbox) == 1
    assert mail.outbox[0].to == ["sam@clinic.example"]
    link = re.search(r"http://testserver(/accounts/password/reset/\S+/)", mail.outbox[0].body).group(1)
    form = client.get(link, follow=True)
    assert form.status_code == 200
    done = client.post(
        form.redirect_chain[-1][0], {"new_password1": "a-new-long-pass-77", "new_password2": "a-new-long-pass-77"}
    )
    assert done.status_code == 302
    clinic_staff.refresh_from_db()
    assert clinic_staff.check_password("a-new-long-pass-77")


# --- headers and templates -------------------------------------------------------------------


def test_pages_carry_a_strict_content_security_policy(staff_client):
    policy = staff_client.get("/patients/")["Content-Security-Policy"]
    directives = dict(part.strip().split(" ", 1) for part in policy.split(";") if part.strip())
    assert directives["script-src"] == "'self'"
    assert "unsafe-inline" not in policy
    assert "unsafe-eval" not in policy
    assert directives["frame-ancestors"] == "'none'"
    assert directives["object-src"] == "'none'"


INLINE_SCRIPT = re.compile(r"<script(?![^>]*\bsrc=)[^>]*>", re.IGNORECASE)
INLINE_HANDLER = re.compile(r"\son[a-z]+\s*=", re.IGNORECASE)
JS_URL = re.compile(r"""(href|src|action)\s*=\s*["']\s*javascript:""", re.IGNORECASE)


def test_templates_have_no_inline_scripts():
    offenders = []
    for path in (ROOT / "templates").rglob("*.html"):
        text = path.read_text()
        for pattern in (INLINE_SCRIPT, INLINE_HANDLER, JS_URL):
            for match in pattern.finditer(text):
                if 'type="application/json"' in match.group(0):
                    continue  # data islands (json_script) are not executed
                offenders.append(f"{path.relative_to(ROOT)}: {match.group(0)[:60]}")
    assert not offenders, "inline script is blocked by the CSP:\n" + "\n".join(offenders)


def test_production_settings_pass_check_deploy(tmp_path):
    env = {
        key: value
        for key, value in os.environ.items()
        if not key.startswith(("DJANGO_", "DERMATRACK_", "FIELD_", "BLIND_"))
    }
    env.update(
        DJANGO_SETTINGS_MODULE="portal.settings.prod",
        DJANGO_SECRET_KEY=Fernet.generate_key().decode() + Fernet.generate_key().decode(),
        DJANGO_ALLOWED_HOSTS="dermatrack.example.org",
        DERMATRACK_ALLOW_LOCAL_KEY_FILES="false",
        FIELD_ENCRYPTION_KEY=Fernet.generate_key().decode(),
        BLIND_INDEX_KEY=Fernet.generate_key().decode(),
        DERMATRACK_VAR_DIR=str(tmp_path),
    )
    result = subprocess.run(
        [sys.executable, "manage.py", "check", "--deploy", "--fail-level", "WARNING"],
        cwd=ROOT,
        env=env,
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert result.returncode == 0, result.stdout + result.stderr
    assert "System check identified no issues" in result.stdout, result.stdout + result.stderr


def test_production_settings_refuse_the_default_secret_key(tmp_path):
    env = {key: value for key, value in os.environ.items() if not key.startswith(("DJANGO_", "DERMATRACK_"))}
    env.update(DJANGO_SETTINGS_MODULE="portal.settings.prod", DERMATRACK_VAR_DIR=str(tmp_path))
    result = subprocess.run(
        [sys.executable, "manage.py", "check"], cwd=ROOT, env=env, capture_output=True, text=True, timeout=120
    )
    assert result.returncode != 0
    assert "DJANGO_SECRET_KEY must be set" in result.stderr
