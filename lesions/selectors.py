"""Reads of lesions, examinations, predictions and alerts for an acting user.

Visibility follows the patient: a user sees a lesion exactly when they may view its
patient's record (portal.permissions). Detail reads leave an audit entry.
"""

from __future__ import annotations

from django.db.models import Prefetch, QuerySet

from lesions.models import Alert, Examination, Lesion, Prediction
from patients.models import Patient
from portal import permissions
from portal.audit import audit_record
from portal.models import User


def lesion_list_for(*, user: User, patient: Patient | None = None) -> QuerySet[Lesion]:
    qs = Lesion.objects.filter(patient__in=permissions.visible_patients(user)).select_related("patient")
    if patient is not None:
        qs = qs.filter(patient=patient)
    return qs


def lesion_get_for(*, user: User, lesion_uuid: object) -> Lesion:
    lesion = permissions.get_visible_or_404(
        lesion_list_for(user=user).select_related("patient__clinic"), uuid=lesion_uuid
    )
    audit_record(actor=user, action="lesion.view", target=lesion, patient=lesion.patient)
    return lesion


def examination_list_for(*, user: User, lesion: Lesion | None = None) -> QuerySet[Examination]:
    qs = Examination.objects.filter(lesion__patient__in=permissions.visible_patients(user)).select_related(
        "lesion", "lesion__patient"
    )
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


def latest_prediction(exam: Examination) -> Prediction | None:
    predictions = list(exam.predictions.all())  # prefetched, newest first
    return predictions[0] if predictions else None


def alert_list_for(*, user: User, status: str | None = Alert.Status.OPEN) -> QuerySet[Alert]:
    qs = Alert.objects.filter(lesion__patient__in=permissions.visible_patients(user, permissions.TRIAGE))
    if status:
        qs = qs.filter(status=status)
    return qs.select_related("lesion", "lesion__patient", "prediction", "prediction__examination", "clinic").order_by(
        "-priority", "created_at"
    )
