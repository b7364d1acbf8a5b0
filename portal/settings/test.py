import os

os.environ.setdefault(
    "DERMATRACK_BROKER_DIR", str(__import__("pathlib").Path(__file__).resolve().parents[2] / "var" / "test-broker")
)

from portal.settings.base import *  # noqa: F403

PASSWORD_HASHERS = ["django.contrib.auth.hashers.MD5PasswordHasher"]  # speed only; prod uses the default
# Tests log in with force_login; the two-factor tests (tests/portal/test_security.py) switch it on.
DERMATRACK_REQUIRE_2FA = False
