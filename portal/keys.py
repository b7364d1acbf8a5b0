"""Loading the encryption keys. No key lives in the repository."""

from __future__ import annotations

import os
from pathlib import Path

from cryptography.fernet import Fernet
from django.core.exceptions import ImproperlyConfigured

from portal.env import env_str


def load_or_create_key_list(name: str, key_file: Path, *, allow_create: bool) -> list[str]:
    """Keys from $NAME / $NAME_FILE (comma-separated, newest first), else a local key file.

    The local file is for development on one machine: created once with mode 0600 and
    ignored by git. Production sets DERMATRACK_ALLOW_LOCAL_KEY_FILES=false and passes keys in.
    """
    raw = env_str(name)
    if not raw:
        if not allow_create:
            raise ImproperlyConfigured(f"{name} must be set (or {name}_FILE)")
        if not key_file.exists():
            key_file.parent.mkdir(parents=True, exist_ok=True)
            fd = os.open(key_file, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
            with os.fdopen(fd, "w") as fh:
                fh.write(Fernet.generate_key().decode())
        raw = key_file.read_text().strip()
    keys = [k.strip() for k in raw.split(",") if k.strip()]
    for key in keys:
        try:
            Fernet(key)
        except Exception as exc:
            raise ImproperlyConfigured(f"{name} holds a key that is not a valid Fernet key") from exc
    if not keys:
        raise ImproperlyConfigured(f"{name} is empty")
    return keys
