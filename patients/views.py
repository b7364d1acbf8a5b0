from django.contrib import messages
from django.contrib.auth.decorators import login_required
from django.core.exceptions import PermissionDenied, ValidationError
from django.shortcuts import redirect, render
from django.views.decorators.http import require_http_methods

from lesions.forms import LesionAddForm
from lesions.selectors import lesion_list_for
from patients.forms import PatientRegisterForm
from patients.selectors import own_patient_record, patient_get_for, patient_list_for
from patients.services import patient_register
from portal import permissions
from portal.audit import audit_record
from portal.forms import apply_validation_error


@login_required
def patient_list(request):
    if not (request.user.is_clinician or request.user.is_superuser):
        raise PermissionDenied("Patients see their own record under 'My record'.")
    patients = list(patient_list_for(user=request.user)[:200])
    audit_record(actor=request.user, action="patient.list")
    return render(request, "patients/patient_list.html", {"patients": patients})


@login_required
@require_http_methods(["GET", "POST"])
def patient_create(request):
    user = request.user
    permissions.require_can_register_patients(user)
    form = PatientRegisterForm(request.POST or None, user=user)
    if request.method == "POST" and form.is_valid():
        data = dict(form.cleaned_data)
        clinic = data.pop("clinic", None) or user.clinic
        try:
            patient = patient_register(actor=user, clinic=clinic, **data)
        except ValidationError as exc:
            apply_validation_error(form, exc)
        else:
            messages.success(request, "Patient registered.")
            return redirect("patients:patient-detail", patient_uuid=patient.uuid)
    return render(request, "patients/patient_form.html", {"form": form}, status=400 if form.errors else 200)


@login_required
def patient_detail(request, patient_uuid):
    patient = patient_get_for(user=request.user, patient_uuid=patient_uuid)
    lesions = lesion_list_for(user=request.user, patient=patient)
    can_manage = permissions.has_patient_perm(request.user, permissions.MANAGE_LESIONS, patient)
    return render(
        request,
        "patients/patient_detail.html",
        {"patient": patient, "lesions": lesions, "can_manage": can_manage, "lesion_form": LesionAddForm()},
    )


@login_required
def my_record(request):
    patient = own_patient_record(user=request.user)
    if patient is None:
        return render(request, "patients/no_record.html", status=404)
    return redirect("patients:patient-detail", patient_uuid=patient.uuid)
