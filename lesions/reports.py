"""PDF reports: the clinician's examination report, the referral letter and the patient's
plain-language summary. HTML templates (templates/reports/) rendered by WeasyPrint.

Each report has one function that gathers what it shows, for the acting user (404 for a record
they may not see, audited as `report.<kind>`), and `render_pdf` turns a template and that context
into PDF bytes. Nothing is fetched while rendering: images are data: URIs made from the
decrypted files, the stylesheet is inline and the font (DejaVu Sans, Debian's fonts-dejavu-core)
comes from fontconfig; `LocalOnlyFetcher` refuses every other URL.
"""

from __future__ import annotations

import base64
import io
from dataclasses import dataclass
from typing import Any

from django.http import Http404
from django.template.loader import render_to_string
from django.utils import timezone
from PIL import Image, ImageFile
from weasyprint import HTML
from weasyprint.urls import URLFetcher

from lesions import guidance
from lesions.models import Examination, Explanation, Lesion, ModelVersion, Prediction, TriageDecision
from lesions.risk import alert_threshold, model_info, visit_risk
from lesions.selectors import (
    active_model_sha,
    alert_threshold_of,
    examination_get_for,
    examination_list_for,
    latest_prediction,
    lesion_alerts_by_prediction,
    lesion_list_for,
    visit_examinations_for,
)
from patients.models import ReferralCentre
from portal import permissions
from portal.audit import audit_record
from portal.models import Role, User

# Importing WeasyPrint sets Pillow's process-wide LOAD_TRUNCATED_IMAGES (weasyprint/images.py),
# which would make upload validation (lesions.imaging) accept truncated JPEGs in every process
# that ever loaded this module. Our reports embed only images we decoded ourselves, so the
# strict default is restored.
ImageFile.LOAD_TRUNCATED_IMAGES = False

TRIAGE_AID = "a triage aid, not a diagnosis"
REPORT_IMAGE_LONG_SIDE = 640  # px; about 200 dpi at the 8 cm the report prints each image at
HEATMAP_OPACITY = 0.6  # as the examination page's overlay slider starts


class LocalOnlyFetcher(URLFetcher):
    """Serves only the data: URIs the report embeds; any other URL (http, file, ...) is refused,
    so a report can never call out or read a file it was not given."""

    def __init__(self) -> None:
        super().__init__(allowed_protocols={"data"}, allow_redirects=False, fail_on_errors=True)


def render_pdf(template: str, context: dict[str, Any]) -> bytes:
    html = render_to_string(template, context)
    pdf = HTML(string=html, base_url=None, url_fetcher=LocalOnlyFetcher()).write_pdf()
    if not isinstance(pdf, bytes):  # write_pdf returns the bytes when given no target
        raise TypeError("WeasyPrint returned no PDF")
    return pdf


def filename(kind: str, record: Any) -> str:
    """e.g. examination-report-1a2b3c4d.pdf: the record's random UUID, shortened; never a name."""
    return f"{kind}-{record.uuid.hex[:8]}.pdf"


# --- Images --------------------------------------------------------------------------------


def _read(field) -> bytes | None:
    if not field:
        return None
    try:
        with field.open("rb") as fh:
            return fh.read()
    except (FileNotFoundError, OSError, ValueError):
        return None


def _open(data: bytes | None) -> Image.Image | None:
    if not data:
        return None
    try:
        image = Image.open(io.BytesIO(data))
        image.load()
    except (OSError, ValueError, Image.DecompressionBombError):
        return None
    return image


def _data_uri(image: Image.Image) -> str:
    """A JPEG data: URI (WeasyPrint embeds JPEG as it is, without re-encoding)."""
    out = io.BytesIO()
    image.convert("RGB").save(out, format="JPEG", quality=90)
    return "data:image/jpeg;base64," + base64.b64encode(out.getvalue()).decode("ascii")


def _with_heatmap(base: Image.Image, overlay: Image.Image) -> Image.Image:
    """The heatmap (an RGBA layer at display size) over the photograph, as the page stacks it."""
    layer = overlay.convert("RGBA").resize(base.size, Image.Resampling.BILINEAR)
    alpha = layer.getchannel("A").point(lambda a: round(a * HEATMAP_OPACITY))
    layer.putalpha(alpha)
    return Image.alpha_composite(base.convert("RGBA"), layer)


@dataclass(frozen=True)
class ReportImages:
    image: str | None  # data: URI of the examination image
    heatmap: str | None  # data: URI of the image with the CAM heatmap over it
    heatmap_missing: str  # why there is no heatmap ("" when there is one)


def _cam_explanation(exam: Examination, prediction: Prediction | None) -> Explanation | None:
    """The CAM of the malignancy risk by the model that made the prediction shown (as the page)."""
    if prediction is None:
        return None
    for explanation in exam.explanations.all():
        if (
            explanation.kind == Explanation.Kind.CAM
            and explanation.target == Explanation.Target.RISK
            and explanation.model_sha256 == prediction.model_sha256
        ):
            return explanation
    return None


def _report_size(image: Image.Image | None) -> Image.Image | None:
    """The image at the size the report prints it (before compositing: a camera-size original
    would make the heatmap's resize and blend cost hundreds of milliseconds)."""
    if image is None:
        return None
    image = image.convert("RGB")
    image.thumbnail((REPORT_IMAGE_LONG_SIDE, REPORT_IMAGE_LONG_SIDE), Image.Resampling.LANCZOS)
    return image


def _images(exam: Examination, prediction: Prediction | None) -> ReportImages:
    base = _report_size(_open(_read(exam.image)))
    cam = _cam_explanation(exam, prediction)
    missing = ""
    heatmap = None
    if base is None:
        missing = "the examination image could not be read"
    elif cam is None:
        missing = "no heatmap was computed for this result"
    elif cam.status == Explanation.Status.PENDING:
        missing = "the heatmap was still being computed"
    elif cam.status == Explanation.Status.FAILED:
        missing = "the heatmap could not be computed"
    else:
        overlay = _open(_read(cam.image))
        if overlay is None:
            missing = "the heatmap image could not be read"
        else:
            heatmap = _data_uri(_with_heatmap(base, overlay))
    return ReportImages(image=_data_uri(base) if base is not None else None, heatmap=heatmap, heatmap_missing=missing)


# --- What the reports show -------------------------------------------------------------------


def _performance(prediction: Prediction | None) -> dict[str, Any]:
    """The measured (validation) figures of the version that made the prediction: its registry
    row, else the model on disk when that is the same name and version."""
    if prediction is None:
        return {}
    version = ModelVersion.objects.filter(sha256=prediction.model_sha256).first()
    figures: dict[str, Any] = dict(version.validation) if version is not None and version.validation else {}
    if not figures:
        info = model_info() or {}
        if info.get("name") == prediction.model_name and str(info.get("version")) == prediction.model_version:
            figures = {k: v for k, v in info.items() if k not in ("name", "version", "classes", "alert_threshold")}
    keys = ("balanced_accuracy", "malignant_auc", "melanoma_sensitivity", "melanoma_specificity", "n")
    return {k: figures[k] for k in keys if figures.get(k) is not None}


def _decision(prediction: Prediction | None) -> tuple[Any, TriageDecision | None]:
    """The alert the prediction opened or joined (one alert per lesion: its trigger) and that
    alert's triage decision, if any."""
    trigger = getattr(prediction, "alert_trigger", None) if prediction is not None else None  # reverse one-to-one
    alert = trigger.alert if trigger is not None else None
    return alert, getattr(alert, "decision", None) if alert is not None else None


def _not_a_patient_account(user: User, exam: Examination) -> None:
    """Clinical reports (risk figures, heatmaps) are for clinicians: the patient's own account
    gets a 404, as for the heatmap images (their summary is `patient_summary_for`)."""
    if exam.lesion.patient.account_id == user.pk or getattr(user, "role", None) == Role.PATIENT:
        raise Http404("No such report.")


def examination_report_data(*, user: User, examination_uuid: object, images: bool = True) -> dict[str, Any]:
    """Everything an examination report or referral letter shows of one examination, for a
    clinician who may see it (404 otherwise). The one place that reads the examination's
    result, alert and decision: adapt it here when the examination model changes. Not audited
    (the callers audit the report they make)."""
    exam = examination_get_for(user=user, examination_uuid=examination_uuid, audit=False)
    _not_a_patient_account(user, exam)
    lesion = exam.lesion
    active = active_model_sha()
    prediction = latest_prediction(exam, active)
    alert, decision = _decision(prediction)
    threshold = alert_threshold_of(prediction)
    visit_predictions = [latest_prediction(image, active) for image in visit_examinations_for(exam=exam)]
    visit_result = visit_risk(None if p is None or p.not_assessable else p.risk for p in visit_predictions)
    return {
        "visit_size": len(visit_predictions),
        "visit_result": visit_result,
        "exam": exam,
        "lesion": lesion,
        "patient": lesion.patient,
        "clinic": lesion.patient.clinic,
        "prediction": prediction,
        "assessable": prediction is not None and not prediction.not_assessable,
        "prediction_is_active": prediction is not None and prediction.model_sha256 == active,
        "threshold": threshold,
        "above_threshold": prediction is not None and threshold is not None and prediction.risk >= threshold,
        "performance": _performance(prediction),
        "alert": alert,
        "decision": decision,
        "images": _images(exam, prediction) if images else None,
        "author": user,
        "generated_at": timezone.now(),
        "triage_aid": TRIAGE_AID,
    }


def examination_report_for(*, user: User, examination_uuid: object) -> tuple[bytes, Examination]:
    data = examination_report_data(user=user, examination_uuid=examination_uuid)
    exam = data["exam"]
    audit_record(actor=user, action="report.examination", target=exam, patient=exam.lesion.patient)
    return render_pdf("reports/examination.html", data), exam


def referral_letter_form_for(*, user: User, examination_uuid: object, audit: bool = True) -> Examination:
    """The examination a referral letter is about, for the letter's form: 404 unless the user
    may see it, 403 unless they may triage (a letter carries a dermatologist's decision and
    signature). Audited as a read of the examination (the letter itself as `report.referral`)."""
    exam = examination_get_for(user=user, examination_uuid=examination_uuid, audit=False)
    _not_a_patient_account(user, exam)
    permissions.require_patient_perm(user, permissions.TRIAGE, exam.lesion.patient)
    if audit:
        audit_record(actor=user, action="examination.view", target=exam, patient=exam.lesion.patient)
    return exam


def referral_letter_for(
    *,
    user: User,
    examination_uuid: object,
    reason: str,
    centre: ReferralCentre | None = None,
    recipient: str = "",
) -> tuple[bytes, Examination]:
    data = examination_report_data(user=user, examination_uuid=examination_uuid, images=False)
    exam = data["exam"]
    permissions.require_patient_perm(user, permissions.TRIAGE, exam.lesion.patient)
    audit_record(actor=user, action="report.referral", target=exam, patient=exam.lesion.patient)
    data.update(
        {
            "centre": centre,
            "recipient_lines": [line.strip() for line in recipient.splitlines() if line.strip()],
            "reason": reason,
            "author_name": user.get_full_name() or user.username,
            "author_role": user.get_role_display(),
        }
    )
    return render_pdf("reports/referral_letter.html", data), exam


def patient_summary_for(*, user: User, lesion_uuid: object) -> tuple[bytes, Lesion]:
    """The plain-language summary of one lesion: what each result means, the dermatologist's
    decisions, the next check, the ABCDE rule. No class probabilities and no heatmaps. For the
    patient's own lesion (and the clinicians who may see it, to hand out); 404 otherwise."""
    lesion = permissions.get_visible_or_404(
        lesion_list_for(user=user).select_related("patient__clinic"), uuid=lesion_uuid
    )
    audit_record(actor=user, action="report.patient_summary", target=lesion, patient=lesion.patient)
    active = active_model_sha()
    exams = list(examination_list_for(user=user, lesion=lesion).order_by("captured_at", "id"))
    threshold = alert_threshold()  # as the patient's lesion page
    alerts = lesion_alerts_by_prediction(lesion=lesion)  # one query, not three per examination
    rows: list[dict[str, Any]] = []
    for exam in exams:
        prediction = latest_prediction(exam, active)
        alert = alerts.get(prediction.pk) if prediction is not None else None
        decision = getattr(alert, "decision", None) if alert is not None else None
        rows.append(
            {
                "exam": exam,
                "guidance": guidance.for_risk(
                    prediction.risk if prediction else None,
                    threshold,
                    status=exam.status,
                    assessable=prediction.assessable if prediction else None,
                ),
                "decision": decision,
                "decision_text": guidance.decision_text(decision, lesion.next_follow_up),
            }
        )
    latest = rows[-1] if rows else None
    image = _report_size(_open(_read(latest["exam"].image))) if latest else None
    context = {
        "lesion": lesion,
        "patient": lesion.patient,
        "clinic": lesion.patient.clinic,
        "latest": latest,
        "timeline": list(reversed(rows)),
        "image": _data_uri(image) if image is not None else None,
        "abcde": guidance.ABCDE,
        "generated_at": timezone.now(),
        "triage_aid": TRIAGE_AID,
    }
    return render_pdf("reports/patient_summary.html", context), lesion
