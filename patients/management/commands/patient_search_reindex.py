"""Compute the search tokens (and record-number index) of every patient that lacks them or has
them under an old BLIND_INDEX_KEY. Idempotent; `rotate_keys` runs the same step.

    python manage.py patient_search_reindex           # rewrite what is missing or stale
    python manage.py patient_search_reindex --check   # exit non-zero if anything would be rewritten
"""

from django.core.management.base import BaseCommand, CommandError

from patients.search import blind_indexes_refresh


class Command(BaseCommand):
    help = "Recompute patient search tokens and record-number indexes under the newest BLIND_INDEX_KEY."

    def add_arguments(self, parser):
        parser.add_argument("--check", action="store_true", help="write nothing; fail if any record is stale")

    def handle(self, *args, check, **options):
        changed = blind_indexes_refresh(check_only=check)
        if check and changed:
            raise CommandError(f"{changed} patient records have missing or stale search indexes")
        verb = "would rewrite" if check else "rewrote"
        self.stdout.write(self.style.SUCCESS(f"Patient search indexes: {verb} {changed} records."))
