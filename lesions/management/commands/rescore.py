"""Re-scores the archive with the model on disk, into that model's predictions, WITHOUT
switching the active version; then says how many alerts would open or close on activation.

Enqueues, through Celery, only the analysed examinations that lack a prediction of the
model on disk, so it is resumable and idempotent: stop it, run it again, it carries on.
--dry-run enqueues nothing; --wait shows a progress bar until the worker has scored them.
Switch afterwards with `manage.py activate_model SHA256`.
"""

from __future__ import annotations

import time

from django.core.management.base import BaseCommand, CommandError
from tqdm import tqdm

from lesions import model_versions, risk
from lesions.models import Examination, Prediction
from lesions.tasks import rescore_examination_task


def _todo(sha: str) -> list[int]:
    return list(
        Examination.objects.filter(status=Examination.Status.DONE)
        .exclude(pk__in=Prediction.objects.filter(model_sha256=sha).values("examination_id"))
        .order_by("pk")
        .values_list("pk", flat=True)
    )


class Command(BaseCommand):
    help = __doc__

    def add_arguments(self, parser):
        parser.add_argument("--dry-run", action="store_true", help="count and report, enqueue nothing")
        parser.add_argument("--wait", action="store_true", help="wait for the worker, with a progress bar")
        parser.add_argument("--timeout", type=float, default=3600.0, help="seconds --wait waits at most")
        parser.add_argument("--poll", type=float, default=2.0, help="seconds between progress checks")

    def handle(self, *args, dry_run=False, wait=False, timeout=3600.0, poll=2.0, **options):
        classifier = risk.classifier()
        version = model_versions.register(classifier)
        active = model_versions.active_version()
        self.stdout.write(
            f"model on disk: {version.label}{' (active)' if version.is_active else ''}; "
            f"active: {active.label if active else 'none'}"
        )
        todo = _todo(classifier.sha256)
        self.stdout.write(f"{len(todo)} analysed examinations lack a prediction of this model")
        if not dry_run and todo:
            for exam_id in tqdm(todo, desc="enqueue", unit="exam", disable=None):
                rescore_examination_task.delay(exam_id)
            if wait:
                self._wait(classifier.sha256, todo, timeout, poll)
        changes = model_versions.alert_changes(sha256=classifier.sha256)
        self.stdout.write(f"if {version.label} were activated: {changes.summary()}")
        if not version.is_active:
            self.stdout.write(f"to switch: manage.py activate_model {classifier.sha256}")

    def _wait(self, sha: str, todo: list[int], timeout: float, poll: float) -> None:
        wanted = set(todo)
        deadline = time.monotonic() + timeout
        with tqdm(total=len(wanted), desc="re-scored", unit="exam", disable=None) as bar:
            while True:
                left = set(_todo(sha)) & wanted
                bar.update(len(wanted) - len(left) - bar.n)
                if not left:
                    return
                if time.monotonic() > deadline:
                    raise CommandError(f"{len(left)} examinations still not re-scored after {timeout:.0f} s; run again")
                time.sleep(poll)
