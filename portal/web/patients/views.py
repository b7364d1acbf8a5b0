from typing import Any
from urllib.parse import urlencode

from django.contrib import messages
from django.contrib.auth.decorators import login_required
from django.core.exceptions import PermissionDenied, ValidationError
from django.core.paginator import Paginator
from django.shortcuts import redirect, render
from django.utils import timezone
from django.views.decorators.http import require_http_methods

from lesions import bodymap, guidance, trend
from lesions.followups import FollowUpOrder, Recall, follow_up_state, month_end, recall_of
from lesions.forms import FollowUpFilterForm, LesionAddForm
from lesions.models import BodySite
from lesions.risk import alert_threshold
from lesions.selectors import (
    follow_up_counts_for,
    follow_up_list_for,
    follow_up_page_for,
    latest_decisions_by_lesion,
    lesion_overview_for,
    open_alerts_by_lesion,
)
from patients import accounts, referrals
from patients.forms import PatientEditForm, PatientRegisterForm, PatientSearchForm, ReferralSearchForm
from patients.search import SearchQueryError
from patients.selectors import (
    own_patient_record,
    patient_get_for,
    patient_list_for,
    patient_search_for,
    referral_centre_list_for,
)
from patients.services import PATIENT_EDITABLE, patient_register, patient_update
from portal import permissions
from portal.forms import apply_validation_error

PATIENT_LIST_SIZE = 200  # the newest records; the page has no pager yet


@login_required
@require_http_methods(["GET", "POST"])
def patient_list(request):
    """The newest records (GET), or the records matching a search (POST).

    Search is a POST, like the referral directory: a name, record number or birth date in a
    query string would be written to the reverse proxy's and the server's access logs, the
    browser history and Referer headers, and the portal keeps PHI out of URLs. The results page
    is not bookmarkable, which for a patient lookup is no loss. The query is not logged or
    audited (the `patient.search` entry names the records shown, by UUID)."""
    if not (request.user.is_clinician or request.user.is_superuser):
        raise PermissionDenied("Patients see their own record under 'My record'.")
    form = PatientSearchForm(request.POST if request.method == "POST" else None)
    result = None
    if request.method == "POST" and form.is_valid():
        try:
            result = patient_search_for(user=request.user, query=form.cleaned_data["q"])
        except SearchQueryError as exc:
            form.add_error("q", str(exc))
    if request.method == "POST":
        status = 400 if form.errors else 200
        return render(request, "patients/patient_list.html", {"form": form, "result": result}, status=status)
    patients = patient_list_for(user=request.user, paginate=lambda qs: qs[:PATIENT_LIST_SIZE])
    return render(request, "patients/patient_list.html", {"form": form, "patients": patients})


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
@require_http_methods(["GET", "POST"])
def patient_edit(request, patient_uuid):
    patient = patient_get_for(user=request.user, patient_uuid=patient_uuid, perm=permissions.CHANGE)
    initial = {name: getattr(patient, name) for name in PATIENT_EDITABLE}
    form = PatientEditForm(request.POST if request.method == "POST" else None, initial=initial)
    if request.method == "POST" and form.is_valid():
        try:
            patient_update(actor=request.user, patient=patient, **form.cleaned_data)
        except ValidationError as exc:
            apply_validation_error(form, exc)
        else:
            messages.success(request, "Record updated.")
            return redirect("patients:patient-detail", patient_uuid=patient.uuid)
    return render(
        request,
        "patients/patient_edit.html",
        {"form": form, "patient": patient},
        status=400 if form.errors else 200,
    )


def _lesion_map(lesions, threshold, *, link_sites: bool, decisions: dict, open_alerts: set[int]) -> dict:
    items = []
    for lesion in lesions:
        risk = lesion.latest_prediction.risk if lesion.latest_prediction else None
        lesion.risk_pct = None if risk is None else round(risk * 100)
        lesion.not_assessable = bool(lesion.latest_prediction and lesion.latest_prediction.not_assessable)
        lesion.level = "unassessable" if lesion.not_assessable else trend.risk_level(risk, threshold)
        # The marker: the risk, or once a dermatologist decided on it, what they decided.
        decided = bodymap.decided_state(
            decision=decisions.get(lesion.pk),
            latest_prediction=lesion.latest_prediction,
            has_open_alert=lesion.pk in open_alerts,
        )
        lesion.marker_level, lesion.decided_label = decided or (lesion.level, "")
        lesion.follow_up_state = follow_up_state(lesion.next_follow_up)
        items.append({"site": lesion.body_site, "lesion": lesion})
    return {
        "shapes": bodymap.shapes(),
        "markers": bodymap.markers(items),
        "link_sites": link_sites,
        "width": 2 * bodymap.WIDTH + bodymap.GAP,
        "height": bodymap.HEIGHT,
        "back_x": bodymap.WIDTH + bodymap.GAP + bodymap.WIDTH / 2,
        "front_x": bodymap.WIDTH / 2,
    }


@login_required
def patient_detail(request, patient_uuid):
    patient = patient_get_for(user=request.user, patient_uuid=patient_uuid)
    perms = permissions.patient_perms(request.user, patient)  # one lookup for every action offered
    can_manage = permissions.MANAGE_LESIONS in perms
    lesions = lesion_overview_for(user=request.user, patient=patient)
    threshold = alert_threshold()
    decisions = latest_decisions_by_lesion(lesions=lesions)
    open_alerts = open_alerts_by_lesion(lesions=lesions)
    body_map = _lesion_map(
        lesions,
        threshold,
        link_sites=can_manage,
        decisions=decisions,
        open_alerts=set(open_alerts),
    )
    follow_ups = sorted(
        (lesion for lesion in lesions if lesion.next_follow_up and lesion.follow_up_state),
        key=lambda lesion: lesion.next_follow_up,
    )
    if patient.account_id == request.user.pk:
        return _own_record(request, patient, lesions, body_map, follow_ups, threshold, decisions)
    for lesion in lesions:
        lesion.open_alert = open_alerts.get(lesion.pk)
        lesion.last_decision = decisions.get(lesion.pk)
    site = request.GET.get("site")
    lesion_form = LesionAddForm(initial={"body_site": site} if site in BodySite.values else None)
    return render(
        request,
        "patients/patient_detail.html",
        {
            "patient": patient,
            "lesions": lesions,
            "body_map": body_map,
            "follow_ups": follow_ups,
            "can_manage": can_manage,
            "can_triage": permissions.TRIAGE in perms,
            "can_change": permissions.CHANGE in perms,
            "lesion_form": lesion_form,
            "picked_site": site if site in BodySite.values else None,
            # Portal login: invited, activated, revoked (staff and administrators, who may change the record).
            "portal_access": accounts.portal_access_for(patient=patient) if accounts.ACCOUNT_PERM in perms else None,
        },
    )


def _own_record(request, patient, lesions, body_map, follow_ups, threshold, decisions):
    """A patient's own record, in plain language: what was found, what was decided, what to do."""
    for lesion in lesions:
        risk = lesion.latest_prediction.risk if lesion.latest_prediction else None
        lesion.guidance = guidance.for_risk(
            risk,
            threshold,
            status=lesion.latest_examination_status or "",
            assessable=lesion.latest_prediction.assessable if lesion.latest_prediction else None,
        )
        if lesion.latest_examination_status in ("pending", "running"):
            lesion.guidance = guidance.PENDING
        lesion.decision = decisions.get(lesion.pk)
        lesion.decision_text = guidance.decision_text(lesion.decision, lesion.next_follow_up)
        lesion.plain_label = "reviewed by your dermatologist" if lesion.decision else lesion.guidance.short
    body_map["plain"] = True
    upcoming = [lesion for lesion in follow_ups if lesion.follow_up_state != "overdue"]
    return render(
        request,
        "patients/my_record.html",
        {
            "patient": patient,
            "lesions": lesions,
            "body_map": body_map,
            "follow_ups": follow_ups,
            "next_follow_up": upcoming[0] if upcoming else None,
            "overdue": [lesion for lesion in follow_ups if lesion.follow_up_state == "overdue"],
            "abcde": guidance.ABCDE,
        },
    )


@login_required
def guidance_page(request):
    """What to do at each risk level and the signs to watch (ABCDE): the same for everyone."""
    return render(
        request,
        "patients/guidance.html",
        {
            "abcde": guidance.ABCDE,
            "levels": [guidance.LOW, guidance.ELEVATED, guidance.HIGH, guidance.PENDING, guidance.FAILED],
        },
    )


@login_required
@require_http_methods(["GET", "POST"])
def referral_directory(request):
    """Clinics and cancer centres, nearest first from a place typed in or the browser's
    location. POST, so a location never ends up in a URL or a server log."""
    centres = list(referral_centre_list_for(user=request.user))
    form = ReferralSearchForm(request.POST if request.method == "POST" else None)
    place = results = None
    not_found = False
    if request.method == "POST" and form.is_valid():
        data = form.cleaned_data
        if data["has_coordinates"]:
            place = referrals.Place(data["latitude"], data["longitude"], "your location")
        else:
            place = referrals.resolve_place(data["place"], centres)
            not_found = place is None
        if place is not None:
            results = referrals.nearest(centres, place, limit=5)
    status = 400 if form.errors else 200
    return render(
        request,
        "patients/referral_directory.html",
        {
            "form": form,
            "place": place,
            "results": results,
            "not_found": not_found,
            "centres": centres if results is None else [],
        },
        status=status,
    )


FOLLOW_UP_PAGE_SIZE = 25


@login_required
def follow_up_list(request):
    """Clinic staff's list of every scheduled recall: overdue, this month, later or all,
    sorted by date or body site, a page at a time."""
    if not (request.user.is_clinician or request.user.is_superuser):
        raise PermissionDenied("Patients see their own follow-up dates under 'My record'.")
    form = FollowUpFilterForm(request.GET)
    filters = form.filters()
    today = timezone.localdate()
    page = follow_up_page_for(
        user=request.user,
        lesions=follow_up_list_for(user=request.user, today=today, **filters),
        paginate=lambda qs: Paginator(qs, FOLLOW_UP_PAGE_SIZE).get_page(request.GET.get("page")),
    )
    counts = follow_up_counts_for(user=request.user, today=today)
    rows: list[Any] = list(page)  # the page's own lesions (with a date: the list holds no others)
    for lesion in rows:
        lesion.recall = recall_of(lesion.next_follow_up, today)
        lesion.days_overdue = (today - lesion.next_follow_up).days
    return render(
        request,
        "patients/follow_up_list.html",
        {
            "page": page,
            "form": form,
            "filters": filters,
            "tabs": [(value, label, counts[value]) for value, label in Recall.choices],
            "orders": FollowUpOrder.choices,
            "today": today,
            "month_end": month_end(today),
            # The filter and order, for the pager's links.
            "query": urlencode(filters),
        },
    )


@login_required
def my_record(request):
    patient = own_patient_record(user=request.user)
    if patient is None:
        return render(request, "patients/no_record.html", status=404)
    return redirect("patients:patient-detail", patient_uuid=patient.uuid)
