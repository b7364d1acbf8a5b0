"""Model versions in a running clinic: the registry, the active version and switching it.

Every classifier file the portal loads is registered (`register`). Exactly one version is
active. The active version decides which prediction pages show (`preferred_prediction`) and,
on an examination it has scored, whether there is an alert. A new model file on disk scores
new uploads and, through `manage.py rescore`, the archive, into its own predictions, without
touching what the active version showed. `activate` switches, opening the alerts the new
version raises and closing (as superseded) the untriaged ones it does not; triaged alerts are
decisions and stay. `alert_changes` says beforehand what `activate` would do.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass, field

from django.db import IntegrityError, transaction
from django.utils import timezone

from lesions import risk, services
from lesions.models import Alert, AlertTrigger, Examination, Hold, ModelVersion, Prediction
from portal.audit import audit_record

logger = logging.getLogger(__name__)


class UnknownModelVersion(ValueError):
    pass


def _validation(classifier) -> dict:
    meta = getattr(classifier, "metadata", {}) or {}
    figures = meta.get("metrics", {}).get("validation", meta.get("validation_metrics", {})) or {}
    return {k: v for k, v in figures.items() if isinstance(v, int | float | str)}


def register(classifier) -> ModelVersion:
    """The registry row of a loaded classifier (created on first load; idempotent). A fresh
    install, with no active version yet, activates the first model it loads."""
    version, created = ModelVersion.objects.get_or_create(
        sha256=classifier.sha256,
        defaults={
            "name": classifier.name,
            "version": classifier.version,
            "alert_threshold": classifier.alert_threshold,
            "validation": _validation(classifier),
        },
    )
    if not created and version.alert_threshold is None:
        # A row that migration 0008 made from old predictions: fill in what the file says.
        version.alert_threshold = classifier.alert_threshold
        version.validation = _validation(classifier)
        version.save(update_fields=["alert_threshold", "validation"])
    if created:
        audit_record(actor=None, action="model_version.register", target=version)
        if not ModelVersion.objects.filter(is_active=True).exists():
            try:
                with transaction.atomic():
                    ModelVersion.objects.filter(pk=version.pk).update(is_active=True, activated_at=timezone.now())
            except IntegrityError:
                pass  # another process activated its first model at the same moment
            else:
                audit_record(actor=None, action="model_version.activate", target=version)
            version.refresh_from_db()
    return version


def active_version() -> ModelVersion | None:
    return ModelVersion.objects.filter(is_active=True).first()


def active_sha() -> str | None:
    return ModelVersion.objects.filter(is_active=True).values_list("sha256", flat=True).first()


def labels() -> dict[str, str]:
    """sha256 -> 'name vX (sha)' of every registered version, for pages that show results."""
    return {v.sha256: v.label for v in ModelVersion.objects.all()}


def preferred_prediction(predictions: list[Prediction], active: str | None) -> Prediction | None:
    """What a page shows of an examination's predictions (newest first): the active
    version's, else the newest (until the archive is re-scored; the page names its version)."""
    for prediction in predictions:
        if prediction.model_sha256 == active:
            return prediction
    return predictions[0] if predictions else None


def threshold_of(prediction: Prediction) -> float | None:
    """The alert threshold of the version that made a prediction (the model on disk's if none)."""
    recorded = (
        ModelVersion.objects.filter(sha256=prediction.model_sha256).values_list("alert_threshold", flat=True).first()
    )
    return recorded if recorded is not None else risk.alert_threshold()


def raises_alert(*, prediction: Prediction, threshold: float | None) -> bool:
    """Whether a new prediction raises an alert: it must be assessable and at or above its
    model's threshold, and come from the active version, or be the first word on an
    examination the active version has not scored (a new upload is never left unalerted
    because the model on disk has not been activated yet). Never a second live alert on one
    examination (re-scoring by the active version keeps the alert an older one raised, and a
    decision on it stands). Whether it opens an alert or joins the lesion's open one is
    `services.alert_raise`'s business."""
    if prediction.assessable is False or not risk.is_alert(prediction.risk, threshold):
        return False
    if Examination.objects.filter(pk=prediction.examination_id, hold=Hold.HELD).exists():
        return False  # may be another patient's image (lesions.ocr): staff confirm first
    if AlertTrigger.objects.filter(
        prediction__examination_id=prediction.examination_id,
        alert__status__in=(Alert.Status.OPEN, Alert.Status.TRIAGED),
    ).exists():
        return False  # the examination already counts in an open alert, or in a decided one
    active = active_sha()
    if active is None or prediction.model_sha256 == active:
        return True
    return not Prediction.objects.filter(examination_id=prediction.examination_id, model_sha256=active).exists()


@dataclass
class AlertChanges:
    """What activating a version would do to the alerts."""

    sha256: str
    scored: int = 0  # analysed examinations with a prediction of this version
    unscored: int = 0  # analysed examinations still lacking one (run `manage.py rescore`)
    to_open: list[int] = field(default_factory=list)  # predictions of this version that would raise an alert
    to_close: list[int] = field(default_factory=list)  # open alerts that would be superseded

    def summary(self) -> str:
        return (
            f"{len(self.to_open)} alerts would open, {len(self.to_close)} would close; "
            f"{self.scored} examinations scored by this version, {self.unscored} not yet"
        )


def alert_changes(*, sha256: str) -> AlertChanges:
    """Compares, per analysed examination, the alerts today with those the version would raise.

    Opens: the version's prediction alerts and the examination counts in no alert (open or
    triaged); `activate` then opens one or joins the lesion's open alert. Closes: an open alert
    every one of whose triggering examinations this version has scored without alerting. An
    alert with an examination the version has not scored stays open.
    """
    try:
        version = ModelVersion.objects.get(sha256=sha256)
    except ModelVersion.DoesNotExist as exc:
        raise UnknownModelVersion(f"no registered model version with sha256 {sha256[:12]}") from exc
    changes = AlertChanges(sha256=sha256)
    done = Examination.objects.filter(status=Examination.Status.DONE)
    new = {
        p.examination_id: p
        for p in Prediction.objects.filter(model_sha256=sha256, examination__in=done).only(
            "pk", "examination_id", "malignancy_risk", "assessable", "model_sha256"
        )
    }
    changes.scored = len(new)
    changes.unscored = done.exclude(pk__in=list(new)).count()
    live_exams = set(
        AlertTrigger.objects.filter(
            prediction__examination_id__in=list(new), alert__status__in=(Alert.Status.OPEN, Alert.Status.TRIAGED)
        ).values_list("prediction__examination_id", flat=True)
    )
    held = set(done.filter(hold=Hold.HELD).values_list("pk", flat=True))
    alerting: set[int] = set()
    for exam_id, prediction in sorted(new.items()):
        if exam_id in held:
            continue
        if prediction.assessable is not False and risk.is_alert(prediction.risk, version.alert_threshold):
            alerting.add(exam_id)
            if exam_id not in live_exams:
                changes.to_open.append(prediction.pk)
    exams_by_open_alert: dict[int, set[int]] = {}
    for alert_id, exam_id in AlertTrigger.objects.filter(alert__status=Alert.Status.OPEN).values_list(
        "alert_id", "prediction__examination_id"
    ):
        exams_by_open_alert.setdefault(alert_id, set()).add(exam_id)
    for alert_id, exam_ids in sorted(exams_by_open_alert.items()):
        if all(e in new and e not in alerting for e in exam_ids):
            changes.to_close.append(alert_id)
    return changes


@transaction.atomic
def activate(*, sha256: str, actor=None) -> AlertChanges:
    """Makes the version active and applies its alert changes. Audited."""
    try:
        version = ModelVersion.objects.select_for_update().get(sha256=sha256)
    except ModelVersion.DoesNotExist as exc:
        raise UnknownModelVersion(f"no registered model version with sha256 {sha256[:12]}") from exc
    previous = ModelVersion.objects.filter(is_active=True).exclude(pk=version.pk).first()
    ModelVersion.objects.filter(is_active=True).exclude(pk=version.pk).update(is_active=False)
    ModelVersion.objects.filter(pk=version.pk).update(is_active=True, activated_at=timezone.now(), activated_by=actor)
    changes = alert_changes(sha256=sha256)
    Alert.objects.filter(pk__in=changes.to_close, status=Alert.Status.OPEN).update(status=Alert.Status.SUPERSEDED)
    for prediction in Prediction.objects.filter(pk__in=changes.to_open).select_related("examination__lesion"):
        services.alert_raise(prediction=prediction, risk=prediction.risk)
    audit_record(actor=actor, action="model_version.activate", target=version)
    logger.info(
        "model version %s activated (was %s): %s",
        version.label,
        previous.label if previous else "none",
        changes.summary(),
    )
    return changes
