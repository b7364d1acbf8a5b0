"""Backup and restore of a whole installation: database, encrypted media, manifest. Never the keys.

A backup directory holds
- `database.pgdump` (PostgreSQL: `pg_dump --format=custom`, one consistent snapshot) or
  `database.sqlite3` (SQLite: the online backup API, consistent while the portal runs);
- `media/...`: the stored files exactly as on disk, i.e. still encrypted with the field key;
- `manifest.json`: the SHA-256 and size of every file, and a key check: a constant encrypted
  with the field key and its blind index. A restore verifies both before it writes anything,
  so a wrong or missing key fails loudly instead of producing an installation nobody can read.

Without FIELD_ENCRYPTION_KEY and BLIND_INDEX_KEY a backup is worth nothing: every health field
and every image in it is ciphertext. Keep the keys apart from the backups (README).
"""

from __future__ import annotations

import datetime as dt
import hashlib
import json
import os
import shutil
import sqlite3
import subprocess  # nosec B404 - pg_dump / pg_restore with argument lists, no shell
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from django.conf import settings
from django.db import connection

from portal.crypto import DecryptionError, blind_index, decrypt_bytes, encrypt_bytes

MANIFEST = "manifest.json"
FORMAT_VERSION = 1
_KEY_CHECK = "dermatrack-backup-key-check"


class BackupError(Exception):
    """A backup or restore that cannot go ahead; nothing has been written."""


@dataclass(frozen=True)
class Summary:
    database: str
    files: int
    bytes: int


def _sha256(path: Path) -> str:
    digest = hashlib.sha256()
    with path.open("rb") as fh:
        for block in iter(lambda: fh.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()


def _engine() -> str:
    return "postgresql" if connection.vendor == "postgresql" else "sqlite"


def _pg_args() -> tuple[list[str], dict[str, str]]:
    db = settings.DATABASES["default"]
    args = ["--host", str(db.get("HOST") or "127.0.0.1"), "--port", str(db.get("PORT") or 5432)]
    args += ["--username", str(db.get("USER") or "postgres"), "--dbname", str(db["NAME"])]
    env = dict(os.environ)
    if db.get("PASSWORD"):
        env["PGPASSWORD"] = str(db["PASSWORD"])
    return args, env


def _tool(name: str) -> str:
    path = shutil.which(name)
    if path is None:
        raise BackupError(f"{name} is not installed; it must match the PostgreSQL server's major version.")
    return path


def backup(dest: Path) -> Summary:
    dest = Path(dest)
    if dest.exists() and any(dest.iterdir()):
        raise BackupError(f"{dest} is not empty; give a new directory.")
    dest.mkdir(parents=True, exist_ok=True)
    engine = _engine()
    if engine == "postgresql":
        db_file = dest / "database.pgdump"
        args, env = _pg_args()
        cmd = [_tool("pg_dump"), "--format=custom", "--no-owner", "--no-privileges", *args, "--file", str(db_file)]
        result = subprocess.run(cmd, env=env, capture_output=True, text=True, check=False)  # nosec B603
        if result.returncode != 0:
            raise BackupError(f"pg_dump failed: {result.stderr.strip()[-500:]}")
    else:
        db_file = dest / "database.sqlite3"
        connection.ensure_connection()
        target = sqlite3.connect(db_file)
        try:
            connection.connection.backup(target)  # online backup: one consistent snapshot
        finally:
            target.close()
    # Media after the database: every file the snapshot names was written before its row.
    media_root = Path(settings.MEDIA_ROOT)
    files: dict[str, dict[str, Any]] = {}
    if media_root.exists():
        for source in sorted(p for p in media_root.rglob("*") if p.is_file()):
            relative = source.relative_to(media_root).as_posix()
            copy = dest / "media" / relative
            copy.parent.mkdir(parents=True, exist_ok=True)
            shutil.copy2(source, copy)
            files[relative] = {"sha256": _sha256(copy), "size": copy.stat().st_size}
    manifest = {
        "format": FORMAT_VERSION,
        "created_at": dt.datetime.now(dt.UTC).isoformat(),
        "engine": engine,
        "database": {"file": db_file.name, "sha256": _sha256(db_file), "size": db_file.stat().st_size},
        "media": files,
        # Lets a restore prove it holds the same keys before it writes anything. Not a key.
        "key_check": {
            "field": encrypt_bytes(_KEY_CHECK.encode()).decode(),
            "blind_index": blind_index(_KEY_CHECK),
        },
    }
    (dest / MANIFEST).write_text(json.dumps(manifest, indent=1, sort_keys=True))
    return Summary(database=engine, files=len(files), bytes=sum(f["size"] for f in files.values()))


def _load_manifest(src: Path) -> dict:
    try:
        manifest = json.loads((src / MANIFEST).read_text())
    except (OSError, ValueError) as exc:
        raise BackupError(f"{src} has no readable {MANIFEST}; is it a Dermatrack backup?") from exc
    if manifest.get("format") != FORMAT_VERSION:
        raise BackupError(f"unknown backup format {manifest.get('format')!r}")
    return manifest


def verify(src: Path) -> dict:
    """Checks the keys and every file's hash; raises BackupError on the first problem."""
    src = Path(src)
    manifest = _load_manifest(src)
    check = manifest["key_check"]
    try:
        field_ok = decrypt_bytes(check["field"].encode()) == _KEY_CHECK.encode()
    except DecryptionError:
        field_ok = False
    if not field_ok:
        raise BackupError(
            "FIELD_ENCRYPTION_KEY does not decrypt this backup: it was made with another key. "
            "Set the key the backed-up installation used; nothing was restored."
        )
    if blind_index(_KEY_CHECK) != check["blind_index"]:
        raise BackupError("BLIND_INDEX_KEY differs from the backed-up installation's; nothing was restored.")
    entries = [(manifest["database"]["file"], manifest["database"])]
    entries += [(f"media/{name}", meta) for name, meta in manifest["media"].items()]
    for relative, meta in entries:
        path = src / relative
        if ".." in Path(relative).parts or not path.is_file():
            raise BackupError(f"{relative} is missing from the backup")
        if _sha256(path) != meta["sha256"]:
            raise BackupError(f"{relative} does not match its hash in the manifest: the backup is damaged")
    return manifest


def _installation_is_empty() -> bool:
    with connection.cursor():
        tables = connection.introspection.table_names()
    if tables:
        return False
    media_root = Path(settings.MEDIA_ROOT)
    return not media_root.exists() or not any(media_root.iterdir())


def restore(src: Path) -> Summary:
    """Rebuilds an EMPTY installation (no tables, no media) from a backup."""
    src = Path(src)
    manifest = verify(src)  # keys and hashes first: a refused restore writes nothing
    engine = _engine()
    if manifest["engine"] != engine:
        raise BackupError(f"the backup is of a {manifest['engine']} database; this installation uses {engine}")
    if not _installation_is_empty():
        raise BackupError("this installation is not empty (database tables or media exist); restore needs a new one")
    db_file = src / manifest["database"]["file"]
    if engine == "postgresql":
        args, env = _pg_args()
        cmd = [_tool("pg_restore"), "--no-owner", "--no-privileges", "--exit-on-error", *args, str(db_file)]
        result = subprocess.run(cmd, env=env, capture_output=True, text=True, check=False)  # nosec B603
        if result.returncode != 0:
            raise BackupError(f"pg_restore failed: {result.stderr.strip()[-500:]}")
    else:
        connection.ensure_connection()
        source = sqlite3.connect(db_file)
        try:
            source.backup(connection.connection)
        finally:
            source.close()
    media_root = Path(settings.MEDIA_ROOT)
    for name, meta in manifest["media"].items():
        target = media_root / name
        target.parent.mkdir(parents=True, exist_ok=True)
        shutil.copy2(src / "media" / name, target)
        if _sha256(target) != meta["sha256"]:
            raise BackupError(f"media/{name} changed while it was copied")
    connection.close()  # the next query sees the restored schema
    sizes = sum(m["size"] for m in manifest["media"].values())
    return Summary(database=engine, files=len(manifest["media"]), bytes=sizes)
