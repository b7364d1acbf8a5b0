"""Reads of patient records, always for an acting user, always audited."""

from __future__ import annotations

from collections.abc import Callable, Iterable
from dataclasses import dataclass

from django.db.models import Count, QuerySet

from patients import search
from patients.models import EmergencyAccess, Patient, PatientSearchToken, ReferralCentre
from portal import permissions
from portal.audit import audit_record
from portal.crypto import blind_index_candidates
from portal.models import Clinic, User

SEARCH_RESULTS = 50  # shown at most; "refine your search" beyond
SEARCH_CHUNK = 64  # candidates loaded (and decrypted) at a time, newest first
SEARCH_CANDIDATES = 512  # records decrypted and checked at most per query
# What a search decrypts per candidate and the results table shows: nothing else (each
# encrypted column costs a decryption per row).
_SEARCH_FIELDS = (
    "uuid",
    "clinic__name",
    "account",
    "given_name",
    "family_name",
    "date_of_birth",
    "medical_record_number",
    "created_at",
)


def _visible(user: User) -> QuerySet[Patient]:
    return permissions.visible_patients(user).select_related("clinic").order_by("-created_at")


def patient_list_for(*, user: User, paginate: Callable[[QuerySet[Patient]], Iterable[Patient]]) -> list[Patient]:
    """One page of the records the user may see, newest first. `paginate` cuts the page (a
    slice, DRF's paginator); the audit entry names exactly the records on it, by UUID."""
    page = list(paginate(_visible(user)))
    audit_record(actor=user, action="patient.list", shown={"patient": page})
    return page


def patient_get_for(*, user: User, patient_uuid: object, perm: str = permissions.VIEW, audit: bool = True) -> Patient:
    """404 unless the user may see the record; 403 unless they also hold `perm` (a write)."""
    patient = permissions.get_visible_or_404(_visible(user), uuid=patient_uuid)
    if audit:
        audit_record(actor=user, action="patient.view", target=patient, patient=patient)
    if perm != permissions.VIEW:
        permissions.require_patient_perm(user, perm, patient)
    return patient


def own_patient_record(*, user: User) -> Patient | None:
    """The record of a logged-in patient, if they have one."""
    patient = Patient.objects.filter(account=user).select_related("clinic").first()
    if patient is not None and permissions.has_patient_perm(user, permissions.VIEW, patient):
        audit_record(actor=user, action="patient.view", target=patient, patient=patient)
        return patient
    return None


@dataclass
class PatientSearchResult:
    patients: list[Patient]  # the newest matches (a page at most), by family then given name
    more: bool  # more records match than are shown: the user should refine the query


def _search_clinic_uuids(user: User) -> list[object]:
    """The clinics whose search keys a query is hashed under: the clinics the user works in,
    plus those of their active break-the-glass records. Not an access check: the result is
    still cut to `visible_patients`."""
    uuids = list(permissions.clinics_for(user).values_list("uuid", flat=True))
    if getattr(user, "is_authenticated", False) and not user.is_superuser:
        uuids += EmergencyAccess.objects.active().filter(user=user).values_list("patient__clinic__uuid", flat=True)
    return list(dict.fromkeys(uuids))


def patient_search_for(*, user: User, query: str) -> PatientSearchResult:
    """Records the user may see whose name contains every word of the query (case and accents
    ignored), or whose birth date or whole record number is in it (patients.search: the tokens,
    and what they leak). Raises search.SearchQueryError for a query too short to search with.

    Audited as `patient.search` with the records shown, by UUID; the query itself is not
    stored anywhere (not in the trail, not in a log)."""
    parsed = search.parse_query(query)
    clinics = _search_clinic_uuids(user)
    # 1. The ids holding every token (or the record number's), newest first: index-only reads
    #    of the token table, as plain queries so that the database plans them from the token
    #    index (one IN/OR over both made PostgreSQL scan the clinic's records instead).
    ids: set[int] = set()
    pieces = parsed.pieces()
    if pieces and clinics:
        holding_all = (
            PatientSearchToken.objects.filter(token__in=search.query_tokens(pieces, clinics))
            .values("patient_id")
            .annotate(n=Count("id"))
            .filter(n=len(pieces))
            .order_by("-patient_id")
            .values_list("patient_id", flat=True)
        )
        ids.update(holding_all[: SEARCH_CANDIDATES + 1])
    if parsed.record_number and clinics:
        tokens = search.query_tokens([parsed.record_number], clinics)
        ids.update(PatientSearchToken.objects.filter(token__in=tokens).values_list("patient_id", flat=True))
    newest = sorted(ids, reverse=True)
    capped = len(newest) > SEARCH_CANDIDATES
    # 2. A chunk at a time, the records the user may see (a correlated EXISTS on the grant
    #    indexes, one probe per candidate), decrypted and checked exactly, until one more than
    #    a page has passed: every loaded candidate costs four decryptions.
    visible = permissions.visible_patient_condition(user)
    found: list[Patient] = []
    for start in range(0, min(len(newest), SEARCH_CANDIDATES), SEARCH_CHUNK):
        chunk = (
            Patient.objects.filter(pk__in=newest[start : start + SEARCH_CHUNK])
            .filter(visible)
            .select_related("clinic")
            .only(*_SEARCH_FIELDS)
            .order_by("-pk")
        )
        found += [patient for patient in chunk if search.matches(patient, parsed)]
        if len(found) > SEARCH_RESULTS:
            break
    shown = sorted(
        found[:SEARCH_RESULTS],
        key=lambda p: (search.normalise(p.family_name), search.normalise(p.given_name), p.pk),
    )
    audit_record(actor=user, action="patient.search", shown={"patient": shown})
    return PatientSearchResult(patients=shown, more=len(found) > SEARCH_RESULTS or capped)


def patients_by_record_number_for(
    *, user: User, medical_record_number: str, perm: str = permissions.VIEW
) -> list[Patient]:
    """The records with exactly this record number (spaces and case ignored, as the blind index
    is) on which the user holds `perm`: one per clinic at most. Nothing says whether such a record
    exists where the user may not see it. Audited as `patient.view` for each record returned."""
    if not medical_record_number.strip():
        return []
    found = list(
        permissions.visible_patients(user, perm)
        .filter(mrn_index__in=blind_index_candidates(medical_record_number))
        .select_related("clinic")
        .order_by("clinic__name", "pk")
    )
    for patient in found:
        audit_record(actor=user, action="patient.view", target=patient, patient=patient)
    return found


def patient_find_by_mrn(*, clinic: Clinic, medical_record_number: str) -> Patient | None:
    """Not for a user: the uniqueness check at registration and the break-the-glass lookup use it.
    (Under every configured blind-index key, so a key rotation in progress finds every record.)"""
    candidates = blind_index_candidates(medical_record_number)
    return Patient.objects.filter(clinic=clinic, mrn_index__in=candidates).first()


def emergency_access_list_for(*, user: User) -> QuerySet[EmergencyAccess]:
    return EmergencyAccess.objects.active().filter(user=user).select_related("patient")


def referral_centre_list_for(*, user: User) -> QuerySet[ReferralCentre]:
    """The public referral directory: active centres, for any logged-in user."""
    if not getattr(user, "is_authenticated", False):
        return ReferralCentre.objects.none()
    return ReferralCentre.objects.filter(active=True).order_by("name")
