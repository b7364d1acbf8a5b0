"""Recomputes CAM and LIME explanations (of the malignancy risk and of the top class)
for analysed examinations under the current model.

Idempotent: explanations already computed for the current model file are skipped unless
--force. Run after a model update; safe to stop and start again.
"""

from __future__ import annotations

from django.core.management.base import BaseCommand
from tqdm import tqdm

from lesions import explanation_services, risk
from lesions.models import Examination, Explanation, Prediction
from lesions.tasks import explain_examination_task


class Command(BaseCommand):
    help = __doc__

    def add_arguments(self, parser):
        parser.add_argument("--force", action="store_true", help="recompute even if already done")
        parser.add_argument("--queue", action="store_true", help="send to the Celery worker instead of running here")

    def handle(self, *args, force: bool = False, queue: bool = False, **options):
        sha = risk.classifier().sha256
        # Only examinations whose prediction comes from the current model: an explanation must
        # explain the prediction shown next to it.
        exam_ids = list(
            Examination.objects.filter(
                status=Examination.Status.DONE,
                pk__in=Prediction.objects.filter(model_sha256=sha).values("examination_id"),
            )
            .order_by("pk")
            .values_list("pk", flat=True)
        )
        done_both = set()
        if not force:
            counts: dict[int, int] = {}
            for exam_id in Explanation.objects.filter(
                model_sha256=sha, status=Explanation.Status.DONE, examination_id__in=exam_ids
            ).values_list("examination_id", flat=True):
                counts[exam_id] = counts.get(exam_id, 0) + 1
            done_both = {k for k, v in counts.items() if v >= len(explanation_services.ORDER)}
        todo = [pk for pk in exam_ids if pk not in done_both]
        self.stdout.write(f"{len(exam_ids)} analysed examinations, {len(todo)} to explain")
        for exam_id in tqdm(todo, desc="explanations", unit="exam", disable=None):
            if queue:
                explain_examination_task.delay(exam_id, force=force)
            else:
                explain_examination_task.run(exam_id, force=force)
        self.stdout.write(self.style.SUCCESS(f"done: {len(todo)} examinations {'queued' if queue else 'explained'}"))
