from django.contrib.auth.decorators import login_required
from django.core.exceptions import PermissionDenied
from django.shortcuts import redirect, render

from inference.model_info import current_model_info
from lesions.selectors import alert_list_for
from portal.audit import audit_record
from portal.models import Role


@login_required
def home(request):
    user = request.user
    if user.role == Role.PATIENT:
        return redirect("patients:my-record")
    if user.role == Role.DERMATOLOGIST:
        return redirect("portal:dashboard")
    return redirect("patients:patient-list")


@login_required
def dashboard(request):
    if not (request.user.is_dermatologist or request.user.is_superuser):
        raise PermissionDenied("The alert queue is for dermatologists.")
    alerts = list(alert_list_for(user=request.user)[:100])
    audit_record(actor=request.user, action="alert.list")
    return render(request, "portal/dashboard.html", {"alerts": alerts, "model": current_model_info()})
