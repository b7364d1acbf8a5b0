from django.contrib import messages
from django.contrib.auth.decorators import login_required
from django.core.exceptions import ValidationError
from django.http import Http404, HttpResponse, JsonResponse
from django.shortcuts import redirect, render
from django.views.decorators.http import require_GET, require_POST

from inference.model_info import current_model_info
from lesions.forms import ExaminationUploadForm, LesionAddForm
from lesions.models import Examination
from lesions.selectors import examination_get_for, examination_list_for, latest_prediction, lesion_get_for
from lesions.services import examination_upload, lesion_add
from patients.selectors import patient_get_for
from portal import permissions
from portal.forms import apply_validation_error


@login_required
@require_POST
def lesion_create(request, patient_uuid):
    patient = patient_get_for(user=request.user, patient_uuid=patient_uuid, audit=False)
    permissions.require_patient_perm(request.user, permissions.MANAGE_LESIONS, patient)
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


def _examination_rows(user, lesion):
    rows = []
    for exam in examination_list_for(user=user, lesion=lesion).order_by("captured_at", "id"):
        rows.append({"exam": exam, "prediction": latest_prediction(exam)})
    return rows


@login_required
def lesion_detail(request, lesion_uuid):
    lesion = lesion_get_for(user=request.user, lesion_uuid=lesion_uuid)
    can_manage = permissions.has_patient_perm(request.user, permissions.MANAGE_LESIONS, lesion.patient)
    return render(
        request,
        "lesions/lesion_detail.html",
        {
            "lesion": lesion,
            "rows": _examination_rows(request.user, lesion),
            "can_manage": can_manage,
            "upload_form": ExaminationUploadForm(),
            "model": current_model_info(),
        },
    )


@login_required
@require_POST
def examination_create(request, lesion_uuid):
    lesion = lesion_get_for(user=request.user, lesion_uuid=lesion_uuid)
    permissions.require_patient_perm(request.user, permissions.MANAGE_LESIONS, lesion.patient)
    form = ExaminationUploadForm(request.POST, request.FILES)
    if form.is_valid():
        upload = form.cleaned_data["image"]
        try:
            exam = examination_upload(
                actor=request.user,
                lesion=lesion,
                image=upload,
                image_size=upload.size,
                diameter_mm=form.cleaned_data.get("diameter_mm"),
                notes=form.cleaned_data.get("notes") or "",
            )
        except ValidationError as exc:
            form.add_error("image" if not hasattr(exc, "error_dict") else None, exc.messages)
        else:
            messages.success(request, "Image uploaded; analysis has started.")
            return redirect("lesions:examination-detail", examination_uuid=exam.uuid)
    return render(
        request,
        "lesions/lesion_detail.html",
        {
            "lesion": lesion,
            "rows": _examination_rows(request.user, lesion),
            "can_manage": True,
            "upload_form": form,
            "model": current_model_info(),
        },
        status=400,
    )


def _current_explanations(exam) -> dict:
    """kind -> Explanation for the model that made the latest prediction."""
    prediction = latest_prediction(exam)
    if prediction is None:
        return {}
    return {e.kind: e for e in exam.explanations.all() if e.model_sha256 == prediction.model_sha256}


@login_required
def examination_detail(request, examination_uuid):
    exam = examination_get_for(user=request.user, examination_uuid=examination_uuid)
    prediction = latest_prediction(exam)
    model = current_model_info()
    probabilities = []
    if prediction is not None:
        probabilities = sorted(prediction.probabilities.items(), key=lambda kv: -kv[1])
    explanations = _current_explanations(exam)
    return render(
        request,
        "lesions/examination_detail.html",
        {
            "exam": exam,
            "lesion": exam.lesion,
            "prediction": prediction,
            "probabilities": [(c, p, round(p * 100, 1)) for c, p in probabilities],
            "model": model,
            "threshold": (model or {}).get("alert_threshold"),
            "cam": explanations.get("cam"),
            "lime": explanations.get("lime"),
            "explanations_pending": prediction is not None
            and any(e.status == "pending" for e in explanations.values()),
        },
    )


@login_required
@require_GET
def examination_status(request, examination_uuid):
    exam = examination_get_for(user=request.user, examination_uuid=examination_uuid, audit=False)
    explanations = {kind: e.status for kind, e in _current_explanations(exam).items()}
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
    explanation = _current_explanations(exam).get(kind)
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
