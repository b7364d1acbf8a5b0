from pathlib import Path

from django.core.management.base import BaseCommand, CommandError

from portal.backup import BackupError, backup


class Command(BaseCommand):
    help = "Writes a consistent backup (database, encrypted media, manifest with hashes; never the keys) to DEST."

    def add_arguments(self, parser):
        parser.add_argument("dest", type=Path, help="a new or empty directory")

    def handle(self, *args, dest: Path, **options):
        try:
            summary = backup(dest)
        except BackupError as exc:
            raise CommandError(str(exc)) from exc
        self.stdout.write(
            f"backup written to {dest}: {summary.database} database, {summary.files} files "
            f"({summary.bytes / 1e6:.1f} MB). It is unreadable without FIELD_ENCRYPTION_KEY and BLIND_INDEX_KEY."
        )
