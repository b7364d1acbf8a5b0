"""python manage.py evaluate_model DATA_DIR [--split NAME] [--json OUT] [--predictions OUT.csv]

A thin wrapper over inference.evaluation (which `python -m inference.evaluation` also runs).
"""

from __future__ import annotations

from django.core.management.base import BaseCommand, CommandError

from inference.classifier import ModelLoadError
from inference.evaluation import EvaluationDataError, add_arguments, run
from lesions import risk


class Command(BaseCommand):
    help = (
        "Evaluate the committed lesion classifier on a folder with images.tar and metadata.csv "
        "(columns image_id, dx, optional split): accuracy, balanced accuracy, per-class precision/recall, "
        "macro F1, malignant ROC AUC, melanoma sensitivity/specificity at the alert threshold, ECE, confusion matrix."
    )
    requires_system_checks: list = []

    def add_arguments(self, parser):
        add_arguments(parser)

    def handle(self, *args, **options):
        try:
            run(
                options["data_dir"],
                options["split"],
                options["json_out"],
                options["predictions"],
                options["batch_size"],
                self.stdout,  # type: ignore[arg-type]  # an OutputWrapper (TextIOBase) is all run() writes to
                classifier=risk.classifier(),  # the model folder the portal is configured with
            )
        except (EvaluationDataError, ModelLoadError) as exc:
            raise CommandError(str(exc)) from exc
