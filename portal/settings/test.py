import os

os.environ.setdefault(
    "DERMATRACK_BROKER_DIR", str(__import__("pathlib").Path(__file__).resolve().parents[2] / "var" / "test-broker")
)

from portal.settings.base import *  # noqa: F403

PASSWORD_HASHERS = ["django.contrib.auth.hashers.MD5PasswordHasher"]  # speed only; prod uses the default
