from django.contrib.auth.decorators import login_required
from django.core.exceptions import PermissionDenied
from django.http import Http404
from django.http.multipartparser import MultiPartParserError
from django.shortcuts import redirect, render

from lesions.forms import AlertFilterForm
from lesions.risk import RiskBand, model_info
from lesions.selectors import (
    alert_clinics_for,
    alert_count_key,
    alert_counts_for,
    alert_queue_page_for,
    patient_ids_with_identity_for,
)
from portal.models import Role


@login_required
def home(request):
    user = request.user
    if user.role == Role.PATIENT:
        return redirect("patients:my-record")
    if user.role == Role.DERMATOLOGIST:
        return redirect("portal:triage-queue")
    return redirect("patients:patient-list")


TRIAGE_QUEUE_PAGE_SIZE = 50


@login_required
def triage_queue(request):
    """The triage queue: open high-risk alerts, highest risk and longest waiting first."""
    user = request.user
    if not (user.is_dermatologist or user.is_superuser):
        raise PermissionDenied("The alert queue is for dermatologists.")
    form = AlertFilterForm(request.GET or None, clinics=alert_clinics_for(user=user))
    filters = form.filters()
    counts = alert_counts_for(user=user, clinic_uuid=filters["clinic_uuid"], status=filters["status"])
    total = counts[alert_count_key(status=filters["status"], band=filters["band"])]
    pages = max(1, -(-total // TRIAGE_QUEUE_PAGE_SIZE))
    try:
        page = min(max(1, int(request.GET.get("page", 1))), pages)
    except ValueError:
        page = 1
    start = (page - 1) * TRIAGE_QUEUE_PAGE_SIZE
    alerts = alert_queue_page_for(user=user, start=start, size=TRIAGE_QUEUE_PAGE_SIZE, **filters)
    named = patient_ids_with_identity_for(user=user, patient_ids=[a.lesion.patient_id for a in alerts])
    query = request.GET.copy()
    query.pop("page", None)
    return render(
        request,
        "portal/triage_queue.html",
        {
            "rows": [
                {"alert": a, "band": RiskBand.of(a.priority), "show_name": a.lesion.patient_id in named} for a in alerts
            ],
            "form": form,
            "filters": filters,
            "counts": counts,
            "bands": [(value, label, counts[f"open_{value}"]) for value, label in RiskBand.choices],
            "total": total,
            "page": page,
            "pages": pages,
            "query": query.urlencode(),
            "model": model_info(),
        },
    )


def bad_request(request, exception):
    """handler400. A multipart body Django cannot parse (a file name of ~900+ characters makes a
    part's headers exceed Django's 1 KB limit) fails before any view, in the CSRF check; on the
    upload form it gets the form back with the reason, elsewhere a page that says what to do."""
    unreadable = isinstance(exception, MultiPartParserError)
    match = getattr(request, "resolver_match", None)
    user = getattr(request, "user", None)
    if unreadable and match and match.view_name == "lesions:examination-create" and user and user.is_authenticated:
        from lesions.views import examination_upload_unreadable

        try:
            return examination_upload_unreadable(request, **match.kwargs)
        except (Http404, PermissionDenied):
            pass
    return render(request, "400.html", {"unreadable_upload": unreadable}, status=400)
