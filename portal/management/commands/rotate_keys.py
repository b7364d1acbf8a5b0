"""Re-encrypt every encrypted field and every stored file under the newest key.

Rotation, step by step (README, "Rotating the encryption key"):

1. Put the new key in front: FIELD_ENCRYPTION_KEY=<new>,<old>. Restart web and worker: new
   writes use the new key, old data still decrypts with the old one.
2. python manage.py rotate_keys         # resumable: run again after an interruption
3. python manage.py rotate_keys --check # exits non-zero while anything is under an old key
4. Remove the old key from FIELD_ENCRYPTION_KEY and restart.

BLIND_INDEX_KEY (record-number lookup, patient search tokens) rotates the same way:
BLIND_INDEX_KEY=<new>,<old>, restart (lookups accept hashes under either key), run this
command, which recomputes every blind index under the newest key (through the refreshers the
apps register in portal.crypto; patients: `mrn_index` and the search tokens), check, remove the
old key. Blind indexes are recomputed from the decrypted values, so this step also runs, and
changes nothing, when only the field key changed.

Fernet tokens do not name their key, so a value counts as done when the newest key alone
decrypts it; anything else is re-encrypted with MultiFernet.rotate. That makes the command
idempotent. Progress (the last primary key finished per model and field kind) is kept in a
small state file per newest key, so an interrupted run continues where it stopped. Each
value is written back only if it has not changed since it was read (compare and swap), so
the portal can keep running during a rotation.
"""

from __future__ import annotations

import hashlib
import json
import os
import tempfile
from dataclasses import dataclass, field
from pathlib import Path

from cryptography.fernet import Fernet, InvalidToken
from django.apps import apps
from django.conf import settings
from django.core.management.base import BaseCommand, CommandError
from django.db import connection, models, transaction
from tqdm import tqdm

from portal.crypto import EncryptedFileSystemStorage, StrictDecryptMixin, blind_index_refreshers, crypter


@dataclass
class Unit:
    """One model's encrypted columns, or one model's encrypted file field."""

    model: type[models.Model]
    kind: str  # "fields" or "file:<field name>"
    columns: list[str] = field(default_factory=list)
    storage: EncryptedFileSystemStorage | None = None

    @property
    def key(self) -> str:
        return f"{self.model._meta.label_lower}:{self.kind}"


def rotation_units() -> list[Unit]:
    units = []
    for model in apps.get_models():
        if model._meta.proxy or not model._meta.managed:
            continue
        columns = [f.column for f in model._meta.concrete_fields if isinstance(f, StrictDecryptMixin)]
        if columns:
            units.append(Unit(model=model, kind="fields", columns=columns))
        for f in model._meta.concrete_fields:
            if isinstance(f, models.FileField) and isinstance(f.storage, EncryptedFileSystemStorage):
                units.append(Unit(model=model, kind=f"file:{f.name}", columns=[f.column], storage=f.storage))
    return units


class Rotation:
    def __init__(self, *, batch_size: int, state_path: Path | None, check_only: bool) -> None:
        keys = settings.FIELD_ENCRYPTION_KEY
        keys = [keys] if isinstance(keys, str) else list(keys)
        self.newest = Fernet(keys[0])
        self.multi = crypter()
        self.batch_size = batch_size
        self.check_only = check_only
        fingerprint = hashlib.sha256(keys[0].encode()).hexdigest()[:16]
        self.state_path = state_path or Path(settings.VAR_DIR) / f"key-rotation-{fingerprint}.json"
        self.state: dict[str, int] = {}
        if not check_only and self.state_path.exists():
            self.state = json.loads(self.state_path.read_text())
        self.rotated = 0
        self.already = 0
        self.missing_files = 0
        self.old_values = 0  # --check: values still under an old key

    def _save_state(self) -> None:
        if self.check_only:
            return
        self.state_path.parent.mkdir(parents=True, exist_ok=True)
        tmp = self.state_path.with_suffix(".tmp")
        tmp.write_text(json.dumps(self.state, indent=1, sort_keys=True))
        os.replace(tmp, self.state_path)

    def _under_newest(self, token: bytes) -> bool:
        try:
            self.newest.decrypt(token)
            return True
        except InvalidToken:
            return False

    def _rotate(self, token: bytes, where: str) -> bytes:
        try:
            return self.multi.rotate(token)
        except InvalidToken as exc:
            raise CommandError(f"{where} cannot be decrypted with any configured key; rotation stopped") from exc

    def remaining(self, unit: Unit) -> int:
        return unit.model._base_manager.filter(pk__gt=self.state.get(unit.key, 0)).count()

    def _batch(self, unit: Unit, after: int) -> list[tuple]:
        qn = connection.ops.quote_name
        pk = unit.model._meta.pk.column
        cols = ", ".join(qn(c) for c in unit.columns)
        sql = (
            f"SELECT {qn(pk)}, {cols} FROM {qn(unit.model._meta.db_table)} "  # noqa: S608 - names from the schema
            f"WHERE {qn(pk)} > %s ORDER BY {qn(pk)} LIMIT %s"
        )
        with connection.cursor() as cursor:
            cursor.execute(sql, [after, self.batch_size])
            return cursor.fetchall()

    def _fields_row(self, unit: Unit, row: tuple) -> None:
        qn = connection.ops.quote_name
        pk_value, values = row[0], row[1:]
        for column, value in zip(unit.columns, values, strict=True):
            if value in (None, ""):
                continue
            token = value.encode() if isinstance(value, str) else bytes(value)
            if self._under_newest(token):
                self.already += 1
                continue
            if self.check_only:
                self.old_values += 1
                continue
            new = self._rotate(token, f"{unit.key} pk={pk_value} {column}").decode()
            table = qn(unit.model._meta.db_table)
            with connection.cursor() as cursor:
                cursor.execute(
                    f"UPDATE {table} SET {qn(column)} = %s "  # noqa: S608 - names from the schema
                    f"WHERE {qn(unit.model._meta.pk.column)} = %s AND {qn(column)} = %s",
                    [new, pk_value, value],
                )
            self.rotated += 1

    def _file_row(self, unit: Unit, row: tuple) -> None:
        pk_value, name = row
        if not name:
            return
        assert unit.storage is not None  # file units are built with their storage
        path = Path(unit.storage.path(name))
        if not path.exists():
            self.missing_files += 1
            return
        token = path.read_bytes()
        if self._under_newest(token):
            self.already += 1
            return
        if self.check_only:
            self.old_values += 1
            return
        new = self._rotate(token, f"{unit.key} pk={pk_value} file")
        fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=".rotate-")
        try:
            with os.fdopen(fd, "wb") as fh:
                fh.write(new)
                fh.flush()
                os.fsync(fh.fileno())
            os.chmod(tmp, path.stat().st_mode & 0o777)
            os.replace(tmp, path)  # atomic: a reader sees the old or the new token, never half
        except BaseException:
            Path(tmp).unlink(missing_ok=True)
            raise
        self.rotated += 1

    def run(self, units: list[Unit], *, limit: int | None, progress: tqdm) -> bool:
        """Returns True when every unit is finished, False when `limit` rows stopped it early."""
        done_rows = 0
        for unit in units:
            after = self.state.get(unit.key, 0)
            while True:
                rows = self._batch(unit, after)
                if not rows:
                    break
                if limit is not None:
                    rows = rows[: max(0, limit - done_rows)]
                    if not rows:
                        return False
                with transaction.atomic():
                    for row in rows:
                        if unit.kind == "fields":
                            self._fields_row(unit, row)
                        else:
                            self._file_row(unit, row)
                after = rows[-1][0]
                self.state[unit.key] = after
                self._save_state()
                done_rows += len(rows)
                progress.update(len(rows))
        return True


class Command(BaseCommand):
    help = "Re-encrypts every encrypted field and stored file under the newest FIELD_ENCRYPTION_KEY (resumable)."

    def add_arguments(self, parser):
        parser.add_argument("--batch-size", type=int, default=500)
        parser.add_argument("--limit", type=int, default=None, help="stop after this many rows (run again to resume)")
        parser.add_argument("--check", action="store_true", help="write nothing; fail if anything is under an old key")
        parser.add_argument("--state-file", type=Path, default=None)
        parser.add_argument("--restart", action="store_true", help="forget saved progress and scan everything again")

    def handle(self, *args, batch_size, limit, check, state_file, restart, **options):
        rotation = Rotation(batch_size=batch_size, state_path=state_file, check_only=check)
        if restart:
            rotation.state = {}
        units = rotation_units()
        total = sum(rotation.remaining(u) for u in units)
        with tqdm(total=total, unit="row", desc="check" if check else "rotate", disable=None) as progress:
            finished = rotation.run(units, limit=limit, progress=progress)
        stale_indexes = 0
        if finished:  # blind indexes are computed from decrypted values: after the fields
            for refresh in blind_index_refreshers().values():
                stale_indexes += refresh(check)
        summary = (
            f"re-encrypted {rotation.rotated}, already under the newest key {rotation.already}, "
            f"missing files {rotation.missing_files}, blind indexes recomputed for {stale_indexes} records"
        )
        if check:
            if rotation.old_values:
                raise CommandError(f"{rotation.old_values} values or files are still under an old key")
            if stale_indexes:
                raise CommandError(f"{stale_indexes} records have blind indexes under an old BLIND_INDEX_KEY")
            self.stdout.write(self.style.SUCCESS(f"Everything is under the newest key ({rotation.already} values)."))
            return
        if not finished:
            self.stdout.write(self.style.WARNING(f"Stopped after {limit} rows ({summary}); run again to continue."))
            return
        self.stdout.write(self.style.SUCCESS(f"Rotation complete: {summary}."))
