import csv
import json

from django.contrib import messages
from django.contrib.auth.decorators import login_required
from django.core.exceptions import ValidationError
from django.core.paginator import Paginator
from django.http import Http404, HttpResponse, StreamingHttpResponse
from django.shortcuts import redirect, render
from django.urls import reverse
from django.views.decorators.cache import never_cache
from django.views.decorators.http import require_GET, require_http_methods

from patients.forms import PatientSearchForm
from patients.search import SearchQueryError
from patients.selectors import emergency_access_list_for, own_patient_record, patient_get_for, patient_search_for
from patients.services import emergency_access_grant
from portal import permissions
from portal.forms import apply_validation_error
from portal.web.privacy.forms import AuditFilterForm, EmergencyAccessForm, EraseForm
from portal.web.privacy.selectors import audit_entry_list_for
from portal.web.privacy.services import patient_erase, patient_export

AUDIT_COLUMNS = [
    "at",
    "actor_username",
    "action",
    "target_type",
    "target_uuid",
    "patient_uuid",
    "ip_address",
    "user_agent",
    "flagged",
    "shown",
]


def _zip_response(data: bytes, patient) -> HttpResponse:
    response = HttpResponse(data, content_type="application/zip")
    response["Content-Disposition"] = f'attachment; filename="dermatrack-record-{patient.uuid}.zip"'
    response["Cache-Control"] = "private, no-store"
    return response


@never_cache
@login_required
@require_GET
def patient_export_view(request, patient_uuid):
    patient = patient_get_for(user=request.user, patient_uuid=patient_uuid, audit=False)
    return _zip_response(patient_export(actor=request.user, patient=patient), patient)


@never_cache
@login_required
@require_GET
def my_export(request):
    patient = own_patient_record(user=request.user)
    if patient is None:
        raise Http404("No such record.")
    return _zip_response(patient_export(actor=request.user, patient=patient), patient)


@never_cache
@login_required
@require_http_methods(["GET", "POST"])
def patient_erase_view(request, patient_uuid):
    patient = patient_get_for(user=request.user, patient_uuid=patient_uuid, audit=False)
    permissions.require_can_erase_patient(request.user)
    form = EraseForm(request.POST if request.method == "POST" else None)
    if request.method == "POST" and form.is_valid():
        patient_erase(actor=request.user, patient=patient)
        messages.success(request, "The record was erased.")
        return redirect("patients:patient-list")
    return render(
        request, "privacy/patient_erase.html", {"form": form, "patient": patient}, status=400 if form.errors else 200
    )


@never_cache
@login_required
@require_http_methods(["GET", "POST"])
def emergency_access(request):
    permissions.require_can_break_glass(request.user)
    form = EmergencyAccessForm(request.POST if request.method == "POST" else None)
    if request.method == "POST" and form.is_valid():
        try:
            grant = emergency_access_grant(actor=request.user, **form.cleaned_data)
        except ValidationError as exc:
            apply_validation_error(form, exc)
        else:
            messages.warning(request, "Emergency access granted. Every page you open is recorded and reviewed.")
            return redirect("patients:patient-detail", patient_uuid=grant.patient.uuid)
    grants = emergency_access_list_for(user=request.user)
    return render(
        request, "privacy/emergency_access.html", {"form": form, "grants": grants}, status=400 if form.errors else 200
    )


@never_cache
@login_required
@require_http_methods(["GET", "POST"])
def audit_list(request):
    """The trail, filtered by GET parameters that carry no PHI (a user, a record's UUID, dates).

    To filter by patient, the administrator finds the record with the patient search (a POST,
    as on the patient list, so no name reaches a URL): one match goes straight to its trail
    (`?patient=<uuid>`), several are listed to pick from."""
    permissions.require_can_view_audit_trail(request.user)
    search_form = PatientSearchForm(request.POST if request.method == "POST" else None, prefix="find")
    found = None
    if request.method == "POST" and search_form.is_valid():
        try:
            found = patient_search_for(user=request.user, query=search_form.cleaned_data["q"])
        except SearchQueryError as exc:
            search_form.add_error("q", str(exc))
        else:
            if len(found.patients) == 1:
                return redirect(f"{reverse('privacy:audit-list')}?patient={found.patients[0].uuid}")
    form = AuditFilterForm(request.GET or None)
    filters = form.cleaned_data if form.is_valid() else {}
    page = Paginator(audit_entry_list_for(user=request.user, filters=filters), 100).get_page(request.GET.get("page"))
    query = request.GET.copy()
    query.pop("page", None)
    return render(
        request,
        "privacy/audit_list.html",
        {"form": form, "search_form": search_form, "found": found, "page": page, "query": query.urlencode()},
        status=400 if form.errors or search_form.errors else 200,
    )


class _Echo:
    def write(self, value):
        return value


def _csv_cell(value) -> str:
    if isinstance(value, dict):  # `shown`: the records a list page showed, by UUID
        value = json.dumps(value, separators=(",", ":")) if value else ""
    text = "" if value is None else str(value)
    # A spreadsheet would run a cell that starts with one of these as a formula.
    return "'" + text if text[:1] in ("=", "+", "-", "@", "\t", "\r") else text


@never_cache
@login_required
@require_GET
def audit_export(request):
    permissions.require_can_view_audit_trail(request.user)
    form = AuditFilterForm(request.GET or None)
    if request.GET and not form.is_valid():
        return HttpResponse("Invalid filter.", status=400, content_type="text/plain")
    entries = audit_entry_list_for(
        user=request.user, filters=form.cleaned_data if request.GET else {}, action="audit.export"
    )
    writer = csv.writer(_Echo())

    def rows():
        yield writer.writerow(AUDIT_COLUMNS)
        for entry in entries.iterator(chunk_size=2000):
            yield writer.writerow([_csv_cell(getattr(entry, c)) for c in AUDIT_COLUMNS])

    response = StreamingHttpResponse(rows(), content_type="text/csv; charset=utf-8")
    response["Content-Disposition"] = 'attachment; filename="dermatrack-audit.csv"'
    response["Cache-Control"] = "private, no-store"
    return response
