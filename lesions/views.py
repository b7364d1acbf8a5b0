from typing import Any

from django.contrib import messages
from django.contrib.auth.decorators import login_required
from django.core.exceptions import ValidationError
from django.http import Http404, HttpResponse, JsonResponse
from django.shortcuts import redirect, render
from django.urls import reverse
from django.views.decorators.http import require_GET, require_http_methods, require_POST

from lesions import dicom, fhir, guidance, ocr, reports, trend
from lesions.forms import (
    ExaminationUploadForm,
    HoldMoveFindForm,
    HoldMoveForm,
    LesionAddForm,
    ReferralLetterForm,
    TriageDecisionForm,
)
from lesions.models import Examination, Explanation
from lesions.risk import RiskBand, alert_threshold, model_info, visit_risk
from lesions.selectors import (
    active_model_sha,
    alert_get_for,
    alert_history,
    alert_threshold_of,
    earlier_examination_exists,
    examination_dicom_for,
    examination_get_for,
    examination_pair_for,
    examination_thumbnail_get_for,
    latest_prediction,
    lesion_alerts_by_prediction,
    lesion_examinations_for,
    lesion_get_for,
    lesion_list_for,
    visit_examinations_for,
)
from lesions.services import examination_thumbnail_render, lesion_add, triage_decide, visit_upload
from patients.selectors import patient_get_for, patients_by_record_number_for, referral_centre_list_for
from portal import permissions
from portal.forms import apply_validation_error


@login_required
@require_POST
def lesion_create(request, patient_uuid):
    patient = patient_get_for(
        user=request.user, patient_uuid=patient_uuid, perm=permissions.MANAGE_LESIONS, audit=False
    )
    form = LesionAddForm(request.POST)
    if form.is_valid():
        try:
            lesion = lesion_add(actor=request.user, patient=patient, **form.cleaned_data)
        except ValidationError as exc:
            apply_validation_error(form, exc)
        else:
            messages.success(request, "Lesion added.")
            return redirect("lesions:lesion-detail", lesion_uuid=lesion.uuid)
    return render(request, "lesions/lesion_form.html", {"form": form, "patient": patient}, status=400)


def _lesion_context(user, lesion, upload_form) -> dict:
    """Timeline, progress chart and change since last time for one lesion (constant queries)."""
    model = model_info()
    threshold = alert_threshold()
    exams = lesion_examinations_for(user=user, lesion=lesion)
    alerts = lesion_alerts_by_prediction(lesion=lesion)
    perms = permissions.patient_perms(user, lesion.patient)
    active = active_model_sha()
    rows: list[dict[str, Any]] = []
    visits: dict[int, list[dict[str, Any]]] = {}  # visit id -> its rows, in capture order
    for exam in exams:
        prediction = latest_prediction(exam, active)
        shown_risk = prediction.risk if prediction else None
        # An unassessable image has no risk to chart or compare; its figure stays on its row.
        risk = None if prediction and prediction.not_assessable else shown_risk
        alert = alerts.get(prediction.pk) if prediction else None
        row = {
            "exam": exam,
            "prediction": prediction,
            "risk": risk,
            "risk_pct": None if shown_risk is None else round(shown_risk * 100),
            "level": "unassessable" if risk is None and shown_risk is not None else trend.risk_level(risk, threshold),
            "alert": alert,
            "decision": getattr(alert, "decision", None) if alert else None,
            "previous": None,
        }
        rows.append(row)
        visits.setdefault(exam.visit_id, []).append(row)
    # One point per visit, at its capture time: the highest risk among its images (the visit
    # rule, `risk.visit_risk`) and the largest diameter measured. "Compare with the previous"
    # pairs an image with the last image of the visit before.
    points = []
    previous_visit_last = None
    for visit_rows in visits.values():
        for position, row in enumerate(visit_rows, start=1):
            row["previous"] = previous_visit_last
            row["visit_position"] = position
            row["visit_size"] = len(visit_rows)
        analysed = [r for r in visit_rows if r["exam"].status == Examination.Status.DONE]
        diameters = [d for d in (trend.as_float(r["exam"].diameter_mm) for r in visit_rows) if d is not None]
        if analysed or diameters:
            points.append(
                trend.Point(
                    visit_rows[0]["exam"].captured_at,
                    visit_risk(r["risk"] for r in analysed),
                    max(diameters) if diameters else None,
                )
            )
        previous_visit_last = visit_rows[-1]["exam"]
    return {
        "lesion": lesion,
        "rows": rows,
        "timeline": list(reversed(rows)),
        "chart": trend.progress_chart(points, threshold),
        "change": trend.change_since_last(points, threshold),
        "threshold": threshold,
        "can_manage": permissions.MANAGE_LESIONS in perms,
        "can_triage": permissions.TRIAGE in perms,
        "upload_form": upload_form,
        "model": model,
        "pending": any(r["exam"].status in (Examination.Status.PENDING, Examination.Status.RUNNING) for r in rows),
    }


@login_required
def lesion_detail(request, lesion_uuid):
    lesion = lesion_get_for(user=request.user, lesion_uuid=lesion_uuid)
    context = _lesion_context(request.user, lesion, ExaminationUploadForm())
    if lesion.patient.account_id == request.user.pk:
        return render(request, "lesions/lesion_detail_patient.html", _in_plain_language(context))
    return render(request, "lesions/lesion_detail.html", context)


def _in_plain_language(context: dict) -> dict:
    """The patient's own lesion: each result framed in words, the dermatologist's decisions,
    no raw model output."""
    lesion, threshold = context["lesion"], context["threshold"]
    for row in context["rows"]:
        prediction = row["prediction"]
        risk = prediction.risk if prediction else None
        row["guidance"] = guidance.for_risk(
            risk, threshold, status=row["exam"].status, assessable=prediction.assessable if prediction else None
        )
        row["decision_text"] = guidance.decision_text(row["decision"], lesion.next_follow_up)
    latest = context["timeline"][0] if context["timeline"] else None
    return {**context, "latest": latest, "abcde": guidance.ABCDE}


@login_required
@require_GET
def lesion_compare(request, lesion_uuid):
    """Any two examinations of one lesion side by side, images and heatmaps at the same scale."""
    lesion = lesion_get_for(user=request.user, lesion_uuid=lesion_uuid)
    exams = lesion_examinations_for(user=request.user, lesion=lesion)
    a, b = examination_pair_for(
        user=request.user, lesion=lesion, examinations=exams, a_uuid=request.GET.get("a"), b_uuid=request.GET.get("b")
    )
    model = model_info()
    threshold = alert_threshold()
    alerts = lesion_alerts_by_prediction(lesion=lesion)
    active = active_model_sha()
    sides: list[dict[str, Any]] = []
    for exam in (a, b):
        if exam is None:
            continue
        prediction = latest_prediction(exam, active)
        risk = prediction.risk if prediction else None
        sides.append(
            {
                "exam": exam,
                "prediction": prediction,
                "risk_pct": None if risk is None else round(risk * 100),
                "level": trend.risk_level(risk, threshold),
                "cam": _current_explanations(exam, prediction).get("cam"),
                "alert": alerts.get(prediction.pk) if prediction else None,
            }
        )
    change = None
    if len(sides) == 2:
        change = trend.change_since_last(
            [
                trend.Point(
                    s["exam"].captured_at,
                    s["prediction"].risk if s["prediction"] and not s["prediction"].not_assessable else None,
                    trend.as_float(s["exam"].diameter_mm),
                )
                for s in sides
            ],
            threshold,
        )
    return render(
        request,
        "lesions/lesion_compare.html",
        {
            "lesion": lesion,
            "exams": exams,
            "a": a,
            "b": b,
            "sides": sides,
            "change": change,
            "threshold": threshold,
            "model": model,
            "open_alert": next((al for al in alerts.values() if al.status == "open"), None),
            # b is the earliest: the examinations it can be compared with.
            "later": [e for e in exams if b is not None and e.pk != b.pk] if a is None else [],
        },
    )


@login_required
@require_POST
def examination_create(request, lesion_uuid):
    lesion = lesion_get_for(user=request.user, lesion_uuid=lesion_uuid, perm=permissions.MANAGE_LESIONS)
    form = ExaminationUploadForm(request.POST, request.FILES)
    if form.is_valid():
        uploads = form.cleaned_data["image"]
        try:
            created, rejected = visit_upload(
                actor=request.user,
                lesion=lesion,
                images=[(upload, upload.size) for upload in uploads],
                captured_at=form.cleaned_data.get("captured_at"),
                diameter_mm=form.cleaned_data.get("diameter_mm"),
                notes=form.cleaned_data.get("notes") or "",
            )
        except ValidationError as exc:
            apply_validation_error(form, exc)
        else:
            if created:
                for problem in rejected:
                    messages.error(request, problem)
                if len(created) == 1 and not rejected:
                    messages.success(request, "Visit recorded: image uploaded; analysis has started.")
                    return redirect("lesions:examination-detail", examination_uuid=created[0].uuid)
                messages.success(request, f"Visit recorded: {len(created)} images uploaded; analysis has started.")
                return redirect(reverse("lesions:lesion-detail", kwargs={"lesion_uuid": lesion.uuid}) + "#examinations")
            form.add_error("image", rejected)
    return render(request, "lesions/lesion_detail.html", _lesion_context(request.user, lesion, form), status=400)


UNREADABLE_UPLOAD = (
    "The upload could not be read. The usual cause is a very long file name: rename the file "
    "to something short and upload it again."
)


def examination_upload_unreadable(request, lesion_uuid):
    """Django could not parse the upload's multipart body (MultiPartParserError: a part's
    headers over 1 KB, i.e. a file name of ~900+ characters) before any view ran. Shows the
    lesion page with the reason on the upload form instead of a bare "Bad Request (400)".
    Writes nothing: the request never passed the CSRF check."""
    lesion = lesion_get_for(user=request.user, lesion_uuid=lesion_uuid)
    form = ExaminationUploadForm(data={})
    form.is_valid()  # bound and empty: "required" on the image, replaced by the real reason
    form.errors["image"] = form.error_class([UNREADABLE_UPLOAD])
    return render(request, "lesions/lesion_detail.html", _lesion_context(request.user, lesion, form), status=400)


def _target(request) -> str:
    """Which explanation target the page shows: the malignancy risk unless the top class is asked for."""
    target = request.GET.get("target", Explanation.Target.RISK)
    return target if target in Explanation.Target.values else Explanation.Target.RISK


def _current_explanations(exam, prediction, target: str = Explanation.Target.RISK) -> dict:
    """kind -> Explanation of `target` by the model that made the prediction shown."""
    if prediction is None:
        return {}
    return {
        e.kind: e for e in exam.explanations.all() if e.model_sha256 == prediction.model_sha256 and e.target == target
    }


@login_required
def examination_detail(request, examination_uuid):
    exam = examination_get_for(user=request.user, examination_uuid=examination_uuid)
    if exam.lesion.patient.account_id == request.user.pk:
        # Patients get results in plain language on their lesion page, never the raw
        # class probabilities and heatmaps meant for clinicians.
        return redirect("lesions:lesion-detail", lesion_uuid=exam.lesion.uuid)
    active = active_model_sha()
    prediction = latest_prediction(exam, active)
    target = _target(request)
    probabilities = []
    if prediction is not None:
        probabilities = sorted(prediction.probabilities.items(), key=lambda kv: -kv[1])
    explanations = _current_explanations(exam, prediction, target)
    others = [p for p in exam.predictions.all() if prediction is not None and p.pk != prediction.pk]
    threshold = alert_threshold_of(prediction)
    visit_images: list[dict[str, Any]] = []
    for image in visit_examinations_for(exam=exam):
        shown = latest_prediction(image, active)
        image_risk = None if shown is None or shown.not_assessable else shown.risk
        visit_images.append(
            {
                "exam": image,
                "risk": image_risk,
                "risk_pct": None if image_risk is None else round(image_risk * 100),
                "level": trend.risk_level(image_risk, threshold),
                "current": image.pk == exam.pk,
            }
        )
    result = visit_risk(v["risk"] for v in visit_images)
    return render(
        request,
        "lesions/examination_detail.html",
        {
            "exam": exam,
            "lesion": exam.lesion,
            "prediction": prediction,
            "prediction_is_active": prediction is not None and prediction.model_sha256 == active,
            "other_predictions": others,
            "probabilities": [(c, p, round(p * 100, 1)) for c, p in probabilities],
            "model": model_info(),
            "threshold": threshold,
            "visit_images": visit_images,
            "visit_result_pct": None if result is None else round(result * 100),
            "visit_result_level": trend.risk_level(result, threshold),
            "target": target,
            "targets": Explanation.Target.choices,
            "cam": explanations.get("cam"),
            "lime": explanations.get("lime"),
            "explanations_pending": prediction is not None
            and any(e.status == "pending" for e in explanations.values()),
            "can_triage": permissions.TRIAGE in permissions.patient_perms(request.user, exam.lesion.patient),
            "can_manage": permissions.MANAGE_LESIONS in permissions.patient_perms(request.user, exam.lesion.patient),
        },
    )


@login_required
@require_POST
def examination_hold_confirm(request, examination_uuid):
    """Staff: the held image belongs to this patient (lesions.ocr); results show, alert rule runs."""
    exam = examination_get_for(user=request.user, examination_uuid=examination_uuid)
    ocr.examination_hold_confirm(actor=request.user, exam=exam)
    messages.success(request, "Confirmed as this patient's image: the result is shown.")
    return redirect("lesions:examination-detail", examination_uuid=exam.uuid)


@login_required
@require_POST
def examination_hold_reject(request, examination_uuid):
    """Staff: the held image is not this patient's; it is deleted with its results."""
    exam = examination_get_for(user=request.user, examination_uuid=examination_uuid)
    lesion_uuid = exam.lesion.uuid
    try:
        ocr.examination_hold_reject(actor=request.user, exam=exam)
    except ocr.NotHeld:
        messages.error(request, "Only a held image can be deleted here.")
        return redirect("lesions:examination-detail", examination_uuid=exam.uuid)
    messages.success(request, "The image was deleted. Upload it on the right patient's lesion.")
    return redirect("lesions:lesion-detail", lesion_uuid=lesion_uuid)


@login_required
@require_http_methods(["GET", "POST"])
def examination_hold_move(request, examination_uuid):
    """Staff: the held image is another patient's. Step 1 finds that patient by record number
    (POST: a record number never goes in a URL), step 2 moves the image onto one of their lesions
    or a new one at the same body site (lesions.ocr.examination_hold_move)."""
    exam = examination_get_for(user=request.user, examination_uuid=examination_uuid)
    permissions.require_patient_perm(request.user, permissions.MANAGE_LESIONS, exam.lesion.patient)
    if not exam.is_held:
        messages.error(request, "Only a held image can be moved to another patient.")
        return redirect("lesions:examination-detail", examination_uuid=exam.uuid)
    find_form, move_form = HoldMoveFindForm(), HoldMoveForm()
    candidates: list[dict[str, Any]] = []
    status = 200
    if request.method == "POST" and "destination" in request.POST:
        move_form = HoldMoveForm(request.POST)
        if move_form.is_valid():
            to_patient = patient_get_for(
                user=request.user, patient_uuid=move_form.cleaned_data["patient"], perm=permissions.MANAGE_LESIONS
            )
            destination = move_form.cleaned_data["destination"]
            to_lesion = None
            if destination != HoldMoveForm.NEW_LESION:
                to_lesion = lesion_get_for(user=request.user, lesion_uuid=destination, perm=permissions.MANAGE_LESIONS)
            try:
                moved = ocr.examination_hold_move(
                    actor=request.user, exam=exam, to_patient=to_patient, to_lesion=to_lesion
                )
            except ocr.CannotMove as exc:
                move_form.add_error(None, str(exc))
            except ValidationError as exc:
                move_form.add_error(None, " ".join(exc.messages))
            else:
                messages.success(
                    request, "The image was moved to the other patient's record; its result is shown there."
                )
                return redirect("lesions:examination-detail", examination_uuid=moved.uuid)
            candidates = _move_candidates([to_patient], request.user)
        status = 400
    elif request.method == "POST":
        find_form = HoldMoveFindForm(request.POST)
        if find_form.is_valid():
            found = patients_by_record_number_for(
                user=request.user,
                medical_record_number=find_form.cleaned_data["record_number"],
                perm=permissions.MANAGE_LESIONS,
            )
            others = [p for p in found if p.pk != exam.lesion.patient_id]
            if found and not others:
                find_form.add_error(
                    "record_number", "That is this patient's own record number: confirm the image instead."
                )
            elif not others:
                find_form.add_error("record_number", "No patient whose lesions you manage has that record number.")
            candidates = _move_candidates(others, request.user)
        status = 200 if candidates else 400
    return render(
        request,
        "lesions/examination_hold_move.html",
        {
            "exam": exam,
            "lesion": exam.lesion,
            "find_form": find_form,
            "move_form": move_form,
            "candidates": candidates,
            "new_lesion": HoldMoveForm.NEW_LESION,
        },
        status=status,
    )


def _move_candidates(patients, user) -> list[dict[str, Any]]:
    return [{"patient": p, "lesions": list(lesion_list_for(user=user, patient=p))} for p in patients]


@login_required
@require_GET
def examination_status(request, examination_uuid):
    exam = examination_get_for(user=request.user, examination_uuid=examination_uuid, audit=False)
    current = _current_explanations(exam, latest_prediction(exam, active_model_sha()), _target(request))
    explanations = {kind: e.status for kind, e in current.items()}
    done = exam.status in (Examination.Status.DONE, Examination.Status.FAILED)
    return JsonResponse(
        {
            "status": exam.status,
            "done": done,
            "explanations": explanations,
            "explanations_done": done and all(v != "pending" for v in explanations.values()),
        }
    )


@login_required
@require_GET
def explanation_image(request, examination_uuid, kind):
    exam = examination_get_for(user=request.user, examination_uuid=examination_uuid)
    if exam.lesion.patient.account_id == request.user.pk:
        raise Http404("No such explanation.")  # heatmaps are for clinicians (as on the pages)
    prediction = latest_prediction(exam, active_model_sha())
    explanation = _current_explanations(exam, prediction, _target(request)).get(kind)
    if explanation is None or explanation.status != "done" or not explanation.image:
        raise Http404("No such explanation.")
    with explanation.image.open("rb") as fh:
        return _private_png(fh.read())


def _private_png(data: bytes) -> HttpResponse:
    response = HttpResponse(data, content_type="image/png")
    response["Cache-Control"] = "private, no-store"
    response["Content-Disposition"] = "inline"
    response["X-Content-Type-Options"] = "nosniff"
    return response


@login_required
@require_GET
def examination_image(request, examination_uuid):
    exam = examination_get_for(user=request.user, examination_uuid=examination_uuid)
    with exam.image.open("rb") as fh:
        return _private_png(fh.read())


@login_required
@require_GET
def examination_thumbnail(request, examination_uuid):
    exam = examination_thumbnail_get_for(user=request.user, examination_uuid=examination_uuid)
    return _private_png(examination_thumbnail_render(exam=exam))


@login_required
@require_http_methods(["GET", "POST"])
def alert_triage(request, alert_uuid):
    alert = alert_get_for(user=request.user, alert_uuid=alert_uuid)
    form = TriageDecisionForm(request.POST if request.method == "POST" else None)
    if request.method == "POST" and form.is_valid():
        try:
            triage_decide(actor=request.user, alert=alert, **form.cleaned_data)
        except ValidationError as exc:
            apply_validation_error(form, exc)
        else:
            messages.success(request, "Decision recorded; the alert has left the queue.")
            return redirect("portal:triage-queue")
    exam = alert.prediction.examination
    return render(
        request,
        "lesions/alert_triage.html",
        {
            "alert": alert,
            "band": RiskBand.of(alert.priority),
            "exam": exam,
            "lesion": alert.lesion,
            "decision": getattr(alert, "decision", None),
            "triggers": alert_history(alert=alert),
            "form": form,
            "compare_url": reverse("lesions:lesion-compare", kwargs={"lesion_uuid": alert.lesion.uuid})
            + f"?b={exam.uuid}",
            "has_earlier": earlier_examination_exists(examination=exam),
            "model": model_info(),
        },
        status=400 if form.errors else 200,
    )


# --- Reports (PDF) -------------------------------------------------------------------------


def _pdf(data: bytes, name: str, *, attachment: bool = False) -> HttpResponse:
    """A report: never cached, named by a short random id only (lesions.reports.filename)."""
    response = HttpResponse(data, content_type="application/pdf")
    response["Content-Disposition"] = f'{"attachment" if attachment else "inline"}; filename="{name}"'
    response["Cache-Control"] = "private, no-store"
    response["X-Content-Type-Options"] = "nosniff"
    return response


@login_required
@require_GET
def examination_report(request, examination_uuid):
    pdf, exam = reports.examination_report_for(user=request.user, examination_uuid=examination_uuid)
    return _pdf(pdf, reports.filename("examination-report", exam))


@login_required
@require_http_methods(["GET", "POST"])
def referral_letter(request, examination_uuid):
    """GET: the letter's form (recipient, reason). POST: the letter as a PDF."""
    # The form's read is audited on GET; a POST is audited as the letter it makes.
    exam = reports.referral_letter_form_for(
        user=request.user, examination_uuid=examination_uuid, audit=request.method == "GET"
    )
    centres = referral_centre_list_for(user=request.user)
    form = ReferralLetterForm(request.POST if request.method == "POST" else None, centres=centres)
    if request.method == "POST" and form.is_valid():
        pdf, exam = reports.referral_letter_for(
            user=request.user,
            examination_uuid=exam.uuid,
            reason=form.cleaned_data["reason"],
            centre=form.cleaned_data["centre"],
            recipient=form.cleaned_data["recipient"],
        )
        return _pdf(pdf, reports.filename("referral-letter", exam), attachment=True)  # to save and send
    return render(
        request,
        "lesions/referral_letter_form.html",
        {"exam": exam, "lesion": exam.lesion, "form": form},
        status=400 if form.errors else 200,
    )


@login_required
@require_GET
def patient_summary(request, lesion_uuid):
    pdf, lesion = reports.patient_summary_for(user=request.user, lesion_uuid=lesion_uuid)
    return _pdf(pdf, reports.filename("summary", lesion), attachment=True)


# --- FHIR export -----------------------------------------------------------------------------


@login_required
@require_GET
def examination_fhir(request, examination_uuid):
    """The examination as a FHIR R4B Bundle (JSON), to download (lesions.fhir)."""
    bundle = fhir.examination_bundle_for(
        user=request.user, examination_uuid=examination_uuid, redact=request.GET.get("redact") == "1"
    )
    return fhir.http_response(bundle, fhir.filename("examination", examination_uuid), attachment=True)


# --- DICOM ---------------------------------------------------------------------------------


@login_required
@require_GET
def examination_dicom(request, examination_uuid):
    """The examination image as a DICOM Dermoscopic Photography file (lesions.dicom): for
    clinicians, never cached, named by a short random id only."""
    data, exam = examination_dicom_for(
        user=request.user, examination_uuid=examination_uuid, redact=request.GET.get("redact") == "1"
    )
    response = HttpResponse(data, content_type=dicom.CONTENT_TYPE)
    response["Content-Disposition"] = f'attachment; filename="{dicom.filename(exam)}"'
    response["Cache-Control"] = "private, no-store"
    response["X-Content-Type-Options"] = "nosniff"
    return response
