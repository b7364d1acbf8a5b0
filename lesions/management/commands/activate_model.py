"""Makes a registered model version the active one (audited).

Pages then show its predictions; alerts it raises on examinations it has scored open, and
open alerts it does not raise are closed as superseded (triaged alerts stay). Run
`manage.py rescore --wait` first so that every examination has its prediction.
"""

from __future__ import annotations

from django.core.management.base import BaseCommand, CommandError

from lesions import model_versions
from lesions.models import ModelVersion
from portal.models import User


class Command(BaseCommand):
    help = __doc__

    def add_arguments(self, parser):
        parser.add_argument("sha256", help="the model file's sha256 (a unique prefix of 8+ characters will do)")
        parser.add_argument("--by", help="username of the administrator switching, for the audit trail")

    def handle(self, *args, sha256: str, by: str | None = None, **options):
        if len(sha256) < 8:
            raise CommandError("give at least 8 characters of the sha256")
        matches = list(ModelVersion.objects.filter(sha256__startswith=sha256.lower()))
        if len(matches) != 1:
            known = ", ".join(v.label for v in ModelVersion.objects.all()) or "none"
            raise CommandError(f"{len(matches)} registered versions match {sha256!r}; registered: {known}")
        version = matches[0]
        actor = None
        if by:
            actor = User.objects.filter(username=by, is_superuser=True).first()
            if actor is None:
                raise CommandError(f"no superuser named {by!r}")
        if version.is_active:
            self.stdout.write(f"{version.label} is already active")
            return
        changes = model_versions.activate(sha256=version.sha256, actor=actor)
        opened, closed = len(changes.to_open), len(changes.to_close)
        self.stdout.write(self.style.SUCCESS(f"{version.label} is active: {opened} alerts opened, {closed} closed"))
        if changes.unscored:
            self.stdout.write(self.style.WARNING(f"{changes.unscored} examinations are not yet scored by it"))
