"""Encryption at rest for model fields and stored files.

django-encrypted-model-fields gives the field types, but 0.6.5 has two habits we cannot
accept for health data: a value that fails to decrypt (wrong key, tampered row) is returned
as the raw ciphertext instead of an error, and its keys are read once at import, which
defeats key rotation. These fields decrypt DB values strictly and take the keys from
settings on every use (cached per key list).
"""

from __future__ import annotations

import functools
import hashlib
import hmac
import io
import json
from collections.abc import Callable
from typing import Any

import encrypted_model_fields.fields as emf
from cryptography.fernet import Fernet, InvalidToken, MultiFernet
from django.conf import settings
from django.core.files.base import ContentFile, File
from django.core.files.storage import FileSystemStorage
from django.db import models


class DecryptionError(Exception):
    """Stored data could not be decrypted with any configured key: never shown as ciphertext."""


@functools.lru_cache(maxsize=4)
def _crypter_for(keys: tuple[str, ...]) -> MultiFernet:
    return MultiFernet([Fernet(k) for k in keys])


def crypter() -> MultiFernet:
    keys = settings.FIELD_ENCRYPTION_KEY
    if isinstance(keys, str):
        keys = [keys]
    return _crypter_for(tuple(keys))


def encrypt_bytes(data: bytes) -> bytes:
    return crypter().encrypt(data)


def decrypt_bytes(token: bytes) -> bytes:
    try:
        return crypter().decrypt(token)
    except InvalidToken as exc:
        raise DecryptionError("stored data could not be decrypted with the configured keys") from exc


def blind_index_keys() -> list[str]:
    """The blind-index keys, newest first: new indexes are written under the first; lookups
    accept any of them until `rotate_keys` has recomputed every index under the newest."""
    return [settings.BLIND_INDEX_KEY, *getattr(settings, "BLIND_INDEX_OLD_KEYS", [])]


def blind_index(value: str, *, key: str | None = None) -> str:
    """Keyed hash for exact-match lookup of an encrypted value (e.g. a record number)."""
    normalised = "".join(value.split()).upper()
    secret = key or settings.BLIND_INDEX_KEY
    return hmac.new(secret.encode(), normalised.encode(), hashlib.sha256).hexdigest()


def blind_index_candidates(value: str) -> list[str]:
    """`blind_index(value)` under every configured key (newest first): for lookups."""
    return [blind_index(value, key=key) for key in blind_index_keys()]


# Blind indexes stored by apps above the core (patients: record numbers, search tokens) are
# recomputed by `rotate_keys` through these: name -> refresh(check_only) -> how many records
# were (or, with check_only, would be) rewritten. Apps register theirs in AppConfig.ready().
BlindIndexRefresher = Callable[[bool], int]
_blind_index_refreshers: dict[str, BlindIndexRefresher] = {}


def register_blind_index_refresher(name: str, refresh: BlindIndexRefresher) -> None:
    _blind_index_refreshers[name] = refresh


def blind_index_refreshers() -> dict[str, BlindIndexRefresher]:
    return dict(_blind_index_refreshers)


class StrictDecryptMixin:
    """DB values must decrypt; form and Python values pass through to the field's parser."""

    def from_db_value(self, value: Any, expression: Any, connection: Any) -> Any:
        if value is None:
            return None
        if isinstance(value, bytes):
            value = value.decode()
        plain = decrypt_bytes(value.encode()).decode()
        return super(emf.EncryptedMixin, self).to_python(plain)  # type: ignore[misc]

    def to_python(self, value: Any) -> Any:
        return super(emf.EncryptedMixin, self).to_python(value)  # type: ignore[misc]

    def get_db_prep_save(self, value: Any, connection: Any) -> Any:
        value = super(emf.EncryptedMixin, self).get_db_prep_save(value, connection)  # type: ignore[misc]
        if value is None:
            return None
        return encrypt_bytes(str(value).encode()).decode()


class EncryptedCharField(StrictDecryptMixin, emf.EncryptedCharField):
    pass


class EncryptedTextField(StrictDecryptMixin, emf.EncryptedTextField):
    pass


class EncryptedDateField(StrictDecryptMixin, emf.EncryptedDateField):
    pass


class EncryptedJSONField(StrictDecryptMixin, emf.EncryptedTextField):
    """JSON stored as one encrypted text value."""

    # What django-stubs reads as the attribute type: any JSON value, not the text field underneath.
    _pyi_private_set_type: Any
    _pyi_private_get_type: Any

    def from_db_value(self, value: Any, expression: Any, connection: Any) -> Any:
        text = super().from_db_value(value, expression, connection)
        return None if text is None else json.loads(text)

    def to_python(self, value: Any) -> Any:
        if isinstance(value, str):
            try:
                return json.loads(value)
            except ValueError:
                return value
        return value

    def get_prep_value(self, value: Any) -> Any:
        return None if value is None else json.dumps(value, sort_keys=True)

    def value_to_string(self, obj: models.Model) -> str:
        return json.dumps(self.value_from_object(obj), sort_keys=True)


class EncryptedFileSystemStorage(FileSystemStorage):
    """Every byte written is a Fernet token; reads decrypt. Files are never served by URL."""

    def _save(self, name: str, content: File) -> str:
        content.seek(0)
        # FileSystemStorage._save/_open are private, so django-stubs does not declare them.
        return super()._save(name, ContentFile(encrypt_bytes(content.read())))  # type: ignore[misc]

    def _open(self, name: str, mode: str = "rb") -> File:
        with super()._open(name, "rb") as fh:  # type: ignore[misc]
            data = decrypt_bytes(fh.read())
        return File(io.BytesIO(data), name=name)

    def read_decrypted(self, name: str) -> bytes:
        with self.open(name) as fh:
            return fh.read()

    def url(self, name: str | None) -> str:
        raise NotImplementedError("encrypted files are served through permission-checked views only")
