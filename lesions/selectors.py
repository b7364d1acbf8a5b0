"""Reads of lesions, examinations, predictions and alerts for an acting user.

Visibility follows the patient: a user sees a lesion exactly when they may view its
patient's record (portal.permissions). Reads leave an audit entry, lists included.
"""

from __future__ import annotations

import datetime as dt
from collections.abc import Callable, Iterable
from typing import Any, TypeVar
from uuid import UUID

from django.db.models import (
    Case,
    Count,
    IntegerField,
    OuterRef,
    Prefetch,
    Q,
    QuerySet,
    Subquery,
    Value,
    When,
)
from django.http import Http404
from django.utils import timezone

from lesions import dicom, model_versions
from lesions import risk as risk_rules
from lesions.followups import FollowUpOrder, Recall, recall_bounds
from lesions.models import (
    Alert,
    AlertTrigger,
    BodySite,
    Examination,
    Hold,
    Lesion,
    ModelVersion,
    Prediction,
    TriageDecision,
)
from lesions.risk import RiskBand
from patients.models import Patient
from portal import permissions
from portal.audit import audit_record
from portal.models import Clinic, Role, User

P = TypeVar("P", bound=Iterable[Lesion])


def _via_lesion(user: User, perm: str = permissions.VIEW) -> Q:
    """Rows (examinations, alerts) whose lesion's patient the user holds `perm` on."""
    return permissions.visible_patient_filter(user, perm, patient_field="lesion__patient_id")


def lesion_list_for(*, user: User, patient: Patient | None = None) -> QuerySet[Lesion]:
    qs = Lesion.objects.filter(permissions.visible_patient_filter(user, patient_field="patient_id")).select_related(
        "patient"
    )
    if patient is not None:
        qs = qs.filter(patient=patient)
    return qs


def lesion_get_for(*, user: User, lesion_uuid: object, perm: str = permissions.VIEW) -> Lesion:
    """404 unless the user may see the lesion's patient; 403 unless they also hold `perm`. Audited."""
    lesion = permissions.get_visible_or_404(
        lesion_list_for(user=user).select_related("patient__clinic"), uuid=lesion_uuid
    )
    audit_record(actor=user, action="lesion.view", target=lesion, patient=lesion.patient)
    if perm != permissions.VIEW:
        permissions.require_patient_perm(user, perm, lesion.patient)
    return lesion


def examination_list_for(*, user: User, lesion: Lesion | None = None) -> QuerySet[Examination]:
    qs = Examination.objects.filter(_via_lesion(user)).select_related("lesion", "lesion__patient")
    if lesion is not None:
        qs = qs.filter(lesion=lesion)
    return qs.prefetch_related(Prefetch("predictions", queryset=Prediction.objects.order_by("-created_at", "-id")))


def examination_get_for(*, user: User, examination_uuid: object, audit: bool = True) -> Examination:
    exam = permissions.get_visible_or_404(
        examination_list_for(user=user)
        .select_related("lesion__patient__clinic", "uploaded_by")
        .prefetch_related("explanations"),
        uuid=examination_uuid,
    )
    if audit:
        audit_record(actor=user, action="examination.view", target=exam, patient=exam.lesion.patient)
    return exam


def visit_examinations_for(*, exam: Examination) -> list[Examination]:
    """The images of an examination's visit (itself included), in upload order, with their
    predictions. For an examination fetched through `examination_get_for`: the others are of
    the same lesion, so of the same patient, and the page's audit entry covers them."""
    return list(
        Examination.objects.filter(visit_id=exam.visit_id).prefetch_related("predictions").order_by("created_at", "id")
    )


def examination_dicom_for(*, user: User, examination_uuid: object, redact: bool = False) -> tuple[bytes, Examination]:
    """The examination image as a DICOM file (lesions.dicom), for a clinician who may see it:
    404 for a hidden record and for the patient's own account, as for the clinical reports.
    Audited as `dicom.export`."""
    exam = examination_get_for(user=user, examination_uuid=examination_uuid, audit=False)
    if exam.lesion.patient.account_id == user.pk or user.role == Role.PATIENT:
        raise Http404("No such examination.")
    visit = [image.pk for image in visit_examinations_for(exam=exam)]
    number = visit.index(exam.pk) + 1 if exam.pk in visit else 1
    # Text the OCR found in the picture is burnt-in annotation (identifiers, dates, device overlays).
    data = dicom.examination_dicom_bytes(
        exam=exam, instance_number=number, burned_in_annotation=bool(exam.ocr_boxes), redact=redact
    )
    audit_record(actor=user, action="dicom.export", target=exam, patient=exam.lesion.patient)
    return data, exam


def latest_prediction(exam: Examination, active: str | None = None) -> Prediction | None:
    """The prediction a page shows: the active model version's (`active`, its sha256, from
    `active_model_sha()`), else the newest. Predictions are prefetched, newest first. None for
    a held examination (its image may be another patient's: lesions.ocr)."""
    if exam.hold == Hold.HELD:
        return None
    return model_versions.preferred_prediction(list(exam.predictions.all()), active)


def active_model_sha() -> str | None:
    """The sha256 of the active model version (None before any model was loaded)."""
    return model_versions.active_sha()


def alert_threshold_of(prediction: Prediction | None) -> float | None:
    """The alert threshold of the version that made a prediction (the model on disk's when
    that version has none recorded): 'above the threshold' must mean that version's threshold."""
    if prediction is not None:
        recorded = (
            ModelVersion.objects.filter(sha256=prediction.model_sha256)
            .values_list("alert_threshold", flat=True)
            .first()
        )
        if recorded is not None:
            return recorded
    return risk_rules.alert_threshold()


def alert_list_for(*, user: User, status: str | None = Alert.Status.OPEN) -> QuerySet[Alert]:
    qs = Alert.objects.filter(_via_lesion(user, permissions.TRIAGE))
    if status:
        qs = qs.filter(status=status)
    return qs.select_related("lesion", "lesion__patient", "prediction", "prediction__examination", "clinic").order_by(
        "-priority", "created_at"
    )


# --- Triage queue -------------------------------------------------------------------------


def _alert_scope(*, user: User, clinic_uuid: str | UUID | None = None, paged: bool = False) -> QuerySet[Alert]:
    """Alerts the user may triage. `paged` for reading a page in queue order: the EXISTS form
    of the permission check lets the database walk the risk index, probe permissions row by
    row and stop after the page. Counting every alert is faster with the join form (the
    visible set built once from the grants, `permissions.visible_patient_ids`)."""
    if paged:
        visible = permissions.visible_patient_condition(user, permissions.TRIAGE, patient_field="lesion__patient_id")
    else:
        visible = _via_lesion(user, permissions.TRIAGE)
    qs = Alert.objects.filter(visible)
    if clinic_uuid:
        qs = qs.filter(clinic__uuid=clinic_uuid)
    return qs


def alert_queue_for(
    *,
    user: User,
    status: str | None = Alert.Status.OPEN,
    clinic_uuid: str | UUID | None = None,
    band: str | None = None,
) -> QuerySet[Alert]:
    """The triage queue: highest risk first, then the longest waiting. Loads only the columns
    the queue shows, so no patient field but the name is decrypted."""
    qs = _alert_scope(user=user, clinic_uuid=clinic_uuid, paged=True)
    if status:
        qs = qs.filter(status=status)
    if band:
        low, high = RiskBand.bounds(band)
        qs = qs.filter(priority__gte=low, priority__lt=high)
    return (
        qs.select_related(
            "clinic",
            "lesion",
            "lesion__patient",
            "prediction",
            "prediction__examination",
            "decision",
            "decision__decided_by",
        )
        .only(
            "uuid",
            "priority",
            "status",
            "created_at",
            "clinic__name",
            "lesion__uuid",
            "lesion__body_site",
            "lesion__patient__uuid",
            "lesion__patient__given_name",
            "lesion__patient__family_name",
            "prediction__model_version",
            "prediction__examination__uuid",
            "prediction__examination__captured_at",
            "prediction__examination__synthetic",  # the queue labels synthetic demo images
            "decision__decision",
            "decision__follow_up_months",
            "decision__decided_at",
            "decision__decided_by__username",
        )
        .order_by("-priority", "created_at", "id")
    )


def alert_counts_for(
    *, user: User, clinic_uuid: str | UUID | None = None, status: str | None = Alert.Status.OPEN
) -> dict:
    """Counts for the queue's header and filters. Keys: `open` and `open_<band>` for every
    band, `triaged_today` (by this user), and, only when `status` asks for more than the open queue (they
    cost a pass over every alert ever raised), `triaged`, `all` and `<status>_<band>`.
    Two or three queries."""
    scope = _alert_scope(user=user, clinic_uuid=clinic_uuid)
    aggregates: dict[str, Count] = {}
    if status == Alert.Status.OPEN:
        # Only the risk in the filters (priority is never null): the open alerts' partial
        # index (lesion, priority) answers the count without reading the table.
        aggregates[Alert.Status.OPEN] = Count("*")
        for band in RiskBand.values:
            low, high = RiskBand.bounds(band)
            aggregates[f"open_{band}"] = Count("priority", filter=Q(priority__gte=low, priority__lt=high))
    for name in [] if status == Alert.Status.OPEN else list(Alert.Status.values):
        aggregates[name] = Count("id", filter=Q(status=name))
        for band in RiskBand.values:
            low, high = RiskBand.bounds(band)
            aggregates[f"{name}_{band}"] = Count("id", filter=Q(status=name, priority__gte=low, priority__lt=high))
    counts = (scope.filter(status=Alert.Status.OPEN) if status == Alert.Status.OPEN else scope).aggregate(**aggregates)
    if status != Alert.Status.OPEN:
        counts["all"] = sum(counts[name] for name in Alert.Status.values)
        for band in RiskBand.values:
            counts[f"all_{band}"] = sum(counts[f"{name}_{band}"] for name in Alert.Status.values)
    today_start = timezone.localtime().replace(hour=0, minute=0, second=0, microsecond=0)
    # The user's own decisions today: no permission join needed to count them.
    counts["triaged_today"] = TriageDecision.objects.filter(decided_by=user, decided_at__gte=today_start).count()
    return counts


def alert_count_key(*, status: str | None, band: str | None) -> str:
    return (status or "all") + (f"_{band}" if band else "")


def alert_clinics_for(*, user: User) -> QuerySet[Clinic]:
    """The queue's clinic filter choices. The queue itself is checked record by record."""
    return permissions.clinics_for(user).order_by("name")


def patient_ids_with_identity_for(*, user: User, patient_ids: list[int]) -> set[int]:
    """Which of these patients' names the user may see: those whose record they may view."""
    return set(
        Patient.objects.filter(permissions.visible_patient_condition(user), pk__in=patient_ids).values_list(
            "pk", flat=True
        )
    )


def alert_get_for(*, user: User, alert_uuid: object) -> Alert:
    """One alert for its triage page: 404 unless the user may see the patient, 403 unless
    they may also triage. Audited."""
    alert = permissions.get_visible_or_404(
        Alert.objects.filter(_via_lesion(user)).select_related(
            "clinic", "lesion", "lesion__patient", "prediction", "prediction__examination", "decision"
        ),
        uuid=alert_uuid,
    )
    permissions.require_patient_perm(user, permissions.TRIAGE, alert.lesion.patient)
    audit_record(actor=user, action="alert.view", target=alert, patient=alert.lesion.patient)
    return alert


def examination_thumbnail_get_for(*, user: User, examination_uuid: object) -> Examination:
    """Not audited per image: the pages that show thumbnails (the lesion pages, the triage
    queue) audit what they showed, once (65 % of one dermatologist's trail were thumbnails)."""
    return permissions.get_visible_or_404(
        Examination.objects.filter(_via_lesion(user)).select_related("lesion__patient"),
        uuid=examination_uuid,
    )


def alert_queue_page_for(*, user: User, start: int, size: int, **filters) -> list[Alert]:
    """One page of the triage queue; the read of the list is audited here."""
    alerts = list(alert_queue_for(user=user, **filters)[start : start + size])
    # The page's rows, their patients and the examinations whose thumbnails it shows.
    shown: dict[str, list[Any]] = {
        "alert": alerts,
        "patient": [a.lesion.patient for a in alerts],
        "examination": [a.prediction.examination for a in alerts],
    }
    audit_record(actor=user, action="alert.list", shown=shown)
    return alerts


def lesion_examinations_for(*, user: User, lesion: Lesion) -> list[Examination]:
    """A lesion's examinations, oldest first, with their predictions (newest first) and
    explanations, in three queries whatever their number. Audited once with the examinations
    listed (the lesion pages show each one's thumbnail, which is not audited per image)."""
    exams = list(
        examination_list_for(user=user, lesion=lesion).prefetch_related("explanations").order_by("captured_at", "id")
    )
    audit_record(
        actor=user, action="examination.list", target=lesion, patient=lesion.patient, shown={"examination": exams}
    )
    return exams


def _examination_order(exam: Examination) -> tuple:
    return (exam.captured_at, exam.pk)


def earlier_examination_exists(*, examination: Examination) -> bool:
    """Whether the examination's lesion has one captured before it (for "compare with earlier").
    Call for an examination fetched through a selector. One query."""
    return (
        Examination.objects.filter(lesion_id=examination.lesion_id)
        .filter(
            Q(captured_at__lt=examination.captured_at) | Q(captured_at=examination.captured_at, pk__lt=examination.pk)
        )
        .exists()
    )


def examination_pair_for(
    *, user: User, lesion: Lesion, examinations: list[Examination], a_uuid: object = None, b_uuid: object = None
) -> tuple[Examination | None, Examination | None]:
    """Two of a lesion's examinations to compare, the earlier one first: the ones asked for,
    else the latest and the one before it. Unknown ids fall back to those defaults; a pair
    asked for the wrong way round is swapped; an examination is never compared with itself:
    `a` is None when `b` is the lesion's earliest examination. Both reads are audited."""
    by_uuid = {str(e.uuid): e for e in examinations}
    b = by_uuid.get(str(b_uuid)) if b_uuid else None
    b = b or (examinations[-1] if examinations else None)
    a = by_uuid.get(str(a_uuid)) if a_uuid else None
    if a is not None and b is not None and _examination_order(b) < _examination_order(a):
        a, b = b, a
    if b is not None and (a is None or a.pk == b.pk):
        earlier = [e for e in examinations if _examination_order(e) < _examination_order(b)]
        # The last image of an earlier visit, else an earlier image of the same visit.
        other_visits = [e for e in earlier if e.visit_id != b.visit_id]
        earlier = other_visits or earlier
        a = earlier[-1] if earlier else None
    for exam in (a, b):
        if exam is not None:
            audit_record(actor=user, action="examination.compare", target=exam, patient=lesion.patient)
    return a, b


def lesion_alerts_by_prediction(*, lesion: Lesion) -> dict[int, Alert]:
    """The lesion's alerts (with any decision), keyed by the id of each prediction that
    opened or joined one. Call only for a lesion already fetched through `lesion_get_for`."""
    triggers = AlertTrigger.objects.filter(alert__lesion=lesion).select_related(
        "alert", "alert__decision", "alert__decision__decided_by"
    )
    return {t.prediction_id: t.alert for t in triggers}


def lesion_overview_for(*, user: User, patient: Patient) -> list[Any]:
    """A patient's lesions, each with `latest_prediction` (or None), `examination_count` and
    the latest examination's status and time, in two queries whatever their number. Call for
    a patient fetched through a selector."""
    active = model_versions.active_sha()
    latest = (
        Prediction.objects.filter(examination__lesion=OuterRef("pk"))
        .exclude(examination__hold=Hold.HELD)
        .annotate(by_active=Case(When(model_sha256=active or "", then=1), default=0, output_field=IntegerField()))
        .order_by("-examination__captured_at", "-by_active", "-created_at", "-id")
    )
    exam_count = (
        Examination.objects.filter(lesion=OuterRef("pk"))
        .order_by()
        .values("lesion")
        .annotate(n=Count("pk"))
        .values("n")
    )
    latest_exam = Examination.objects.filter(lesion=OuterRef("pk")).order_by("-captured_at", "-id")
    # Any: lesions carrying the attributes named above, which the model type does not declare.
    lesions: list[Any] = list(
        lesion_list_for(user=user, patient=patient)
        .annotate(
            latest_prediction_id=Subquery(latest.values("pk")[:1]),
            examination_count=Subquery(exam_count),
            latest_examination_status=Subquery(latest_exam.values("status")[:1]),
            latest_examination_at=Subquery(latest_exam.values("captured_at")[:1]),
        )
        .order_by("created_at", "id")
    )
    ids = [lesion.latest_prediction_id for lesion in lesions if lesion.latest_prediction_id]
    predictions = (
        {
            p.pk: p
            for p in Prediction.objects.filter(pk__in=ids).only(
                "pk", "malignancy_risk", "created_at", "assessable", "check_reasons", "model_version"
            )
        }
        if ids
        else {}
    )
    for lesion in lesions:
        lesion.latest_prediction = predictions.get(lesion.latest_prediction_id)
        lesion.examination_count = lesion.examination_count or 0
    return lesions


FOLLOW_UP_STATUSES = (Lesion.Status.MONITORING, Lesion.Status.REFERRED, Lesion.Status.BIOPSY)


def _site_rank() -> Case:
    """Body sites ranked by their name, so the database sorts by what the page shows."""
    ranked = sorted(BodySite.choices, key=lambda choice: choice[1])
    return Case(
        *(When(body_site=value, then=Value(rank)) for rank, (value, _) in enumerate(ranked)),
        default=Value(len(ranked)),
        output_field=IntegerField(),
    )


def _follow_up_scope(user: User) -> QuerySet[Lesion]:
    """Every scheduled recall the user may see: lesions with a follow-up date that are still
    being followed (monitoring, referred, biopsy ordered; not excised or resolved)."""
    return Lesion.objects.filter(permissions.visible_patient_filter(user, patient_field="patient_id")).filter(
        next_follow_up__isnull=False, status__in=FOLLOW_UP_STATUSES
    )


def follow_up_list_for(
    *, user: User, when: str = Recall.ALL, order: str = FollowUpOrder.DATE, today: dt.date | None = None
) -> QuerySet[Lesion]:
    """The follow-up list, filtered (`followups.Recall`) and sorted (`FollowUpOrder`), loading
    no patient field: `follow_up_page_for` cuts a page, fetches the names of only the patients
    on it and audits what it shows."""
    first, last = recall_bounds(when, today or timezone.localdate())
    qs = _follow_up_scope(user).only("uuid", "body_site", "status", "next_follow_up", "patient_id")
    if first is not None:
        qs = qs.filter(next_follow_up__gte=first)
    if last is not None:
        qs = qs.filter(next_follow_up__lte=last)
    if order == FollowUpOrder.DATE_DESC:
        return qs.order_by("-next_follow_up", "-patient_id", "-id")
    if order == FollowUpOrder.SITE:
        return qs.annotate(site_rank=_site_rank()).order_by("site_rank", "next_follow_up", "id")
    return qs.order_by("next_follow_up", "patient_id", "id")


def follow_up_counts_for(*, user: User, today: dt.date | None = None) -> dict[str, int]:
    """How many recalls each filter of the follow-up list holds (`followups.Recall` values). One query."""
    today = today or timezone.localdate()
    aggregates: dict[str, Count] = {Recall.ALL: Count("id")}
    for when in (Recall.OVERDUE, Recall.THIS_MONTH, Recall.LATER):
        first, last = recall_bounds(when, today)
        condition = Q()
        if first is not None:
            condition &= Q(next_follow_up__gte=first)
        if last is not None:
            condition &= Q(next_follow_up__lte=last)
        aggregates[when] = Count("id", filter=condition)
    return _follow_up_scope(user).aggregate(**aggregates)


def follow_up_page_for(*, user: User, lesions: QuerySet[Lesion], paginate: Callable[[QuerySet[Lesion]], P]) -> P:
    """One page of the follow-up list (`lesions` from `follow_up_list_for`; `paginate` cuts it,
    e.g. a Paginator's `get_page`), each lesion with its patient (uuid and name only). One
    query for the patients; the audit entry names exactly the lesions and patients shown."""
    page = paginate(lesions)
    shown = list(page)
    patients = {
        p.pk: p
        for p in Patient.objects.filter(
            permissions.visible_patient_condition(user), pk__in={lesion.patient_id for lesion in shown}
        ).only("uuid", "given_name", "family_name")
    }
    shown = [lesion for lesion in shown if lesion.patient_id in patients]
    for lesion in shown:
        lesion.patient = patients[lesion.patient_id]
    audit_record(
        actor=user,
        action="follow_up.list",
        shown={"patient": [lesion.patient for lesion in shown], "lesion": shown},
    )
    return page


def alert_history(*, alert: Alert) -> list[AlertTrigger]:
    """What raised an alert fetched through `alert_get_for`: its triggers in capture order."""
    return list(
        alert.triggers.select_related("prediction__examination").order_by("prediction__examination__captured_at", "id")
    )


def open_alerts_by_lesion(*, lesions: list[Lesion]) -> dict[int, Alert]:
    """lesion id -> its open alert (at most one: a database constraint), for lesions already
    fetched through a selector. One query."""
    return {
        alert.lesion_id: alert
        for alert in Alert.objects.filter(lesion__in=[lesion.pk for lesion in lesions], status=Alert.Status.OPEN)
    }


def latest_decisions_by_lesion(*, lesions: list[Lesion]) -> dict[int, TriageDecision]:
    """lesion id -> the most recent triage decision on it, for lesions already fetched
    through a selector. One query."""
    decisions: dict[int, TriageDecision] = {}
    for decision in (
        TriageDecision.objects.filter(alert__lesion__in=[lesion.pk for lesion in lesions])
        .select_related("alert")
        .order_by("decided_at", "id")
    ):
        decisions[decision.alert.lesion_id] = decision
    return decisions
