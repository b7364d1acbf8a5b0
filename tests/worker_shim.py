"""A Celery worker for the reliability tests, with an optional pause inside the work.

    python -m tests.worker_shim -A portal.celery worker --pool=solo ...

With SHIM_SLOW_STAGE=classification (or explanation) it writes SHIM_MARKER when that stage
starts and then sleeps SHIM_SLOW_SECONDS, so a test can SIGKILL it mid-task or restart the
broker under it. Nothing of this is in the production code paths.
"""

from __future__ import annotations

import os
import sys
import time
from pathlib import Path

from celery.signals import worker_ready


@worker_ready.connect
def _slow_down(**_kwargs) -> None:
    stage = os.environ.get("SHIM_SLOW_STAGE")
    if not stage:
        return
    delay = float(os.environ.get("SHIM_SLOW_SECONDS", "60"))
    marker = Path(os.environ["SHIM_MARKER"])

    def pause(what: str) -> None:
        marker.write_text(what)
        time.sleep(delay)

    if stage == "classification":
        from lesions import classification

        original = classification.examination_classify

        def slow_classify(*, examination_id: int):
            pause(f"classification {examination_id}")
            return original(examination_id=examination_id)

        classification.examination_classify = slow_classify
    elif stage == "explanation":
        from lesions import explanation_services

        original_compute = explanation_services._compute

        def slow_compute(kind, target, classifier, image):
            if kind == "lime":
                pause("explanation lime")
            return original_compute(kind, target, classifier, image)

        explanation_services._compute = slow_compute


if __name__ == "__main__":
    from celery.bin.celery import main

    sys.argv[0] = "celery"
    sys.exit(main())
