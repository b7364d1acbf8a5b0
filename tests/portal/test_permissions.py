"""The role x URL access matrix: one row per URL name, with the status every role gets for a
GET and, where the URL takes one, a POST (None: that method is not checked here). Every URL
pattern must have a row; a new endpoint without one fails `test_every_url_is_in_the_matrix`.

Codes: 200 ok, 201 created, 302 redirect (login for anonymous, or success), 400 validation
error (the role passed the access check), 401 anonymous API call, 403 may see the record but
not do this, 404 may not know the record exists, 405 wrong method.
"""

from __future__ import annotations

import pytest
from django.urls import URLPattern, URLResolver, get_resolver

from tests.factories import AlertFactory, ExaminationFactory

# The columns of every status tuple below, in this order.
ROLES = ("anonymous", "patient", "other_patient", "staff", "clinician", "outside_clinician", "administrator")

Codes = tuple[int, int, int, int, int, int, int]

# fmt: off
ROWS: list[tuple[str, Codes | None, Codes | None]] = [
    # url name                      GET, then POST: one status per role, in the order of ROLES
    ("home",                          (302, 302, 302, 302, 302, 302, 302),  None),
    ("portal:home",                   (302, 302, 302, 302, 302, 302, 302),  None),
    ("portal:triage-queue",           (302, 403, 403, 403, 200, 200, 200),  None),
    # patient-list POST is the search (a POST so no name reaches a URL): an empty one is a 400.
    ("patients:patient-list",         (302, 403, 403, 200, 200, 200, 200),  (302, 403, 403, 400, 400, 400, 400)),
    ("patients:patient-create",       (302, 403, 403, 200, 200, 200, 200),  None),
    ("patients:patient-detail",       (302, 200, 404, 200, 200, 404, 200),  None),
    # patient-edit: staff and administrators change records; the patient and dermatologists see it (403).
    ("patients:patient-edit",         (302, 403, 404, 200, 403, 404, 200),  (302, 403, 404, 400, 403, 404, 400)),
    ("patients:follow-up-list",       (302, 403, 403, 200, 200, 200, 200),  None),
    ("patients:guidance",             (302, 200, 200, 200, 200, 200, 200),  None),
    # referral-directory POST is a search, not a write: an empty one is a 400 for everyone logged in.
    ("patients:referral-directory",   (302, 200, 200, 200, 200, 200, 200),  (302, 400, 400, 400, 400, 400, 400)),
    ("patients:my-record",            (302, 302, 302, 404, 404, 404, 404),  None),
    # Patient accounts (patients.accounts): inviting and revoking need "change patient" (staff,
    # administrators; a dermatologist may see but not change: 403). The world's patient already has a
    # login, so an invitation is refused with a message on the patient page (302); revoking succeeds.
    ("patients:invite-email",         None,                                 (302, 403, 404, 302, 403, 404, 302)),
    ("patients:invite-code",          None,                                 (302, 403, 404, 302, 403, 404, 302)),
    ("patients:access-revoke",        None,                                 (302, 403, 404, 302, 403, 404, 302)),
    # The public activation pages: an empty code form is a 400, an unknown link token a 400, the
    # password step without an invitation in the session a 400, for everyone.
    ("patients:activate",             (200, 200, 200, 200, 200, 200, 200),  (400, 400, 400, 400, 400, 400, 400)),
    ("patients:activate-link",        (400, 400, 400, 400, 400, 400, 400),  None),
    ("patients:activate-password",    (400, 400, 400, 400, 400, 400, 400),  (400, 400, 400, 400, 400, 400, 400)),
    ("lesions:lesion-create",         None,                                 (302, 403, 404, 400, 400, 404, 400)),
    ("lesions:lesion-detail",         (302, 200, 404, 200, 200, 404, 200),  None),
    ("lesions:examination-create",    None,                                 (302, 403, 404, 400, 400, 404, 400)),
    ("lesions:examination-detail",    (302, 302, 404, 200, 200, 404, 200),  None),
    # The OCR hold (lesions.ocr): who may manage lesions confirms, moves or deletes a held image; the
    # fixture's examination is not held, so both are a no-op redirect for them.
    ("lesions:examination-hold-confirm", None,                              (302, 403, 404, 302, 302, 404, 302)),
    ("lesions:examination-hold-reject", None,                               (302, 403, 404, 302, 302, 404, 302)),
    # Moving a held image (two steps, both POST) needs the right to manage lesions on both records.
    ("lesions:examination-hold-move", (302, 403, 404, 302, 302, 404, 302),  (302, 403, 404, 302, 302, 404, 302)),
    ("lesions:examination-status",    (302, 200, 404, 200, 200, 404, 200),  None),
    ("lesions:examination-image",     (302, 200, 404, 200, 200, 404, 200),  None),
    # explanation-image: the visible roles get 404 only because the fixture's examination has no
    # explanation yet; tests/lesions/test_explanation_tasks.py checks who is served a computed one.
    ("lesions:explanation-image",     (302, 404, 404, 404, 404, 404, 404),  None),
    ("lesions:examination-thumbnail", (302, 200, 404, 200, 200, 404, 200),  None),
    ("lesions:lesion-compare",        (302, 200, 404, 200, 200, 404, 200),  None),
    # Reports (PDF): the clinical report and the referral letter are for clinicians (the patient's
    # own account gets a 404, as for heatmaps); only who may triage signs a referral letter; the
    # plain-language summary is for whoever may see the lesion.
    ("lesions:examination-report",    (302, 404, 404, 200, 200, 404, 200),  None),
    ("lesions:examination-dicom",     (302, 404, 404, 200, 200, 404, 200),  None),
    ("lesions:referral-letter",       (302, 404, 404, 403, 200, 404, 200),  (302, 404, 404, 403, 400, 404, 400)),
    ("lesions:patient-summary",       (302, 200, 404, 200, 200, 404, 200),  None),
    # FHIR export (issue 13): for clinicians, as the clinical report (patient logins get a 404).
    ("lesions:examination-fhir",      (302, 404, 404, 200, 200, 404, 200),  None),
    # alert-triage: the patient and staff may see the record but not triage it: 403, not 404.
    ("lesions:alert-triage",          (302, 403, 404, 403, 200, 404, 200),  (302, 403, 404, 403, 400, 404, 400)),
    ("api:patient-list",              (401, 200, 200, 200, 200, 200, 200),  (401, 403, 403, 400, 400, 400, 400)),
    ("api:patient-detail",            (401, 200, 404, 200, 200, 404, 200),  None),
    ("api:patient-lesions",           (401, 200, 404, 200, 200, 404, 200),  (401, 403, 404, 400, 400, 404, 400)),
    ("api:lesion-detail",             (401, 200, 404, 200, 200, 404, 200),  None),
    ("api:lesion-examinations",       (401, 200, 404, 200, 200, 404, 200),  (401, 403, 404, 400, 400, 404, 400)),
    ("api:examination-detail",        (401, 200, 404, 200, 200, 404, 200),  None),
    ("api:examination-fhir",          (401, 404, 404, 200, 200, 404, 200),  None),
    ("api:patient-fhir",              (401, 404, 404, 200, 200, 404, 200),  None),
    ("login",                         (200, 302, 302, 302, 302, 302, 302),  None),
    ("logout",                        None,                                 (302, 302, 302, 302, 302, 302, 302)),
    ("admin:index",                   (302, 302, 302, 302, 302, 302, 200),  None),
    # Issue #6 (security and privacy). With 2FA off (test settings), setup shows a page and verify
    # sends a user without a device to setup. Export: the patient or an administrator; erasure and
    # the audit trail: administrators; break-the-glass: dermatologists.
    ("two-factor-setup",              (302, 200, 200, 200, 200, 200, 200),  None),
    ("two-factor-verify",             (302, 302, 302, 302, 302, 302, 302),  None),
    ("password_reset",                (200, 200, 200, 200, 200, 200, 200),  None),
    ("password_reset_done",           (200, 200, 200, 200, 200, 200, 200),  None),
    ("password_reset_complete",       (200, 200, 200, 200, 200, 200, 200),  None),
    ("password_reset_confirm",        (200, 200, 200, 200, 200, 200, 200),  None),
    ("api:schema",                    (401, 200, 200, 200, 200, 200, 200),  None),
    ("privacy:patient-export",        (302, 200, 404, 403, 403, 404, 200),  None),
    ("privacy:patient-erase",         (302, 403, 404, 403, 403, 404, 200),  (302, 403, 404, 403, 403, 404, 400)),
    ("privacy:my-export",             (302, 200, 200, 404, 404, 404, 404),  None),
    ("privacy:emergency-access",      (302, 403, 403, 403, 200, 200, 403),  (302, 403, 403, 403, 400, 400, 403)),
    ("privacy:audit-list",            (302, 403, 403, 403, 403, 403, 200),  (302, 403, 403, 403, 403, 403, 400)),
    ("privacy:audit-export",          (302, 403, 403, 403, 403, 403, 200),  None),
]
# fmt: on

MATRIX: dict[str, dict[str, Codes]] = {
    name: {method: codes for method, codes in (("get", get), ("post", post)) if codes is not None}
    for name, get, post in ROWS
}


def _all_url_names(resolver=None, prefix="") -> set[str]:
    resolver = resolver or get_resolver()
    names: set[str] = set()
    for entry in resolver.url_patterns:
        if isinstance(entry, URLResolver):
            ns = f"{prefix}{entry.namespace}:" if entry.namespace else prefix
            if entry.namespace == "admin":
                names.add("admin:index")
                continue
            names |= _all_url_names(entry, ns)
        elif isinstance(entry, URLPattern) and entry.name:
            names.add(f"{prefix}{entry.name}")
    return names


def test_every_url_is_in_the_matrix():
    missing = _all_url_names() - set(MATRIX)
    assert not missing, f"URLs without an access decision: {sorted(missing)}"
    assert len(MATRIX) == len(ROWS), "a URL name has two rows"
    assert all(MATRIX.values()), "a row checks neither GET nor POST"


@pytest.fixture
def world(patient, other_patient, clinic_staff, clinician, outside_clinician, administrator, lesion):
    exam = ExaminationFactory(lesion=lesion)
    alert = AlertFactory(prediction__examination=exam)
    users = {
        "anonymous": None,
        "patient": patient.account,
        "other_patient": other_patient.account,
        "staff": clinic_staff,
        "clinician": clinician,
        "outside_clinician": outside_clinician,
        "administrator": administrator,
    }
    kwargs = {
        "patient_uuid": patient.uuid,
        "lesion_uuid": lesion.uuid,
        "examination_uuid": exam.uuid,
        "alert_uuid": alert.uuid,
    }
    return users, kwargs


def _url(name: str, kwargs: dict) -> str:
    from django.urls import NoReverseMatch, reverse

    for candidate in (
        {},
        {"patient_uuid": kwargs["patient_uuid"]},
        {"lesion_uuid": kwargs["lesion_uuid"]},
        {"examination_uuid": kwargs["examination_uuid"]},
        {"examination_uuid": kwargs["examination_uuid"], "kind": "cam"},
        {"alert_uuid": kwargs["alert_uuid"]},
        {"uidb64": "MQ", "token": "set-password"},
        {"token": "not-a-real-invitation-token"},
    ):
        try:
            return reverse(name, kwargs=candidate)
        except NoReverseMatch:
            continue
    raise AssertionError(f"cannot reverse {name}")


def _cases():
    for name, methods in MATRIX.items():
        for method, codes in methods.items():
            for role, expected in zip(ROLES, codes, strict=True):
                yield pytest.param(name, method, role, expected, id=f"{method}-{name}-{role}")


@pytest.mark.parametrize(("name", "method", "role", "expected"), list(_cases()))
def test_access(client, world, name, method, role, expected):
    users, kwargs = world
    if users[role] is not None:
        client.force_login(users[role])
    url = _url(name, kwargs)
    response = getattr(client, method)(url, {}) if method == "post" else client.get(url)
    assert response.status_code == expected, f"{role} {method.upper()} {name}: {response.status_code}"


def test_api_patient_list_shows_only_visible_records(world, client, patient, other_patient):
    users, _ = world
    client.force_login(users["patient"])
    body = client.get("/api/patients/").json()
    assert [row["uuid"] for row in body["results"]] == [str(patient.uuid)]
    client.force_login(users["outside_clinician"])
    assert client.get("/api/patients/").json()["results"] == []


def test_not_found_page_does_not_reveal_the_record(world, client, patient):
    users, _ = world
    client.force_login(users["other_patient"])
    response = client.get(f"/patients/{patient.uuid}/")
    assert response.status_code == 404
    body = response.content.decode()
    assert patient.family_name not in body
    assert str(patient.uuid) not in body


def test_model_wide_permission_reveals_nothing(world, client, patient):
    """A model-level 'view patient' permission must not open every record (guardian's default would)."""
    from django.contrib.auth.models import Permission

    users, _ = world
    outsider = users["outside_clinician"]
    outsider.user_permissions.add(Permission.objects.get(codename="view_patient"))
    client.force_login(outsider)
    assert client.get(f"/patients/{patient.uuid}/").status_code == 404


def test_moving_a_clinician_to_another_clinic_removes_access_to_the_old_one(world, client, patient, other_clinic):
    from portal import permissions

    users, _ = world
    staff = users["staff"]
    client.force_login(staff)
    assert client.get(f"/patients/{patient.uuid}/").status_code == 200
    staff.clinic = other_clinic
    staff.save()
    permissions.clinic_member_add(staff)
    client.force_login(staff)
    assert client.get(f"/patients/{patient.uuid}/").status_code == 404
