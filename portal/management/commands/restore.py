from pathlib import Path

from django.core.management.base import BaseCommand, CommandError

from portal.backup import BackupError, restore, verify


class Command(BaseCommand):
    help = (
        "Rebuilds an empty installation from a backup made by `backup`. Checks the keys and every "
        "file's hash first; refuses a database or media folder that is not empty."
    )

    def add_arguments(self, parser):
        parser.add_argument("src", type=Path)
        parser.add_argument("--check", action="store_true", help="only verify keys and hashes; write nothing")

    def handle(self, *args, src: Path, check: bool = False, **options):
        try:
            if check:
                verify(src)
                self.stdout.write("backup verified: keys match, every hash matches")
                return
            summary = restore(src)
        except BackupError as exc:
            raise CommandError(str(exc)) from exc
        self.stdout.write(f"restored {summary.database} database and {summary.files} files from {src}")
