"""The role x URL access matrix. Every URL pattern must appear here with an explicit
decision for every role; a new endpoint without one fails `test_every_url_is_in_the_matrix`.

Codes: 200 ok, 201 created, 302 redirect (login for anonymous, or success), 400 validation
error (the role passed the access check), 401 anonymous API call, 403 may see the record but
not do this, 404 may not know the record exists, 405 wrong method.
"""

from __future__ import annotations

import pytest
from django.urls import URLPattern, URLResolver, get_resolver

from tests.factories import AlertFactory, ExaminationFactory

ROLES = ["anonymous", "patient", "other_patient", "staff", "clinician", "outside_clinician", "administrator"]

# name -> (method, {role: expected status})
MATRIX: dict[str, tuple[str, dict[str, int]]] = {
    "home": (
        "get",
        {
            "anonymous": 302,
            "patient": 302,
            "other_patient": 302,
            "staff": 302,
            "clinician": 302,
            "outside_clinician": 302,
            "administrator": 302,
        },
    ),
    "portal:home": (
        "get",
        {
            "anonymous": 302,
            "patient": 302,
            "other_patient": 302,
            "staff": 302,
            "clinician": 302,
            "outside_clinician": 302,
            "administrator": 302,
        },
    ),
    "portal:dashboard": (
        "get",
        {
            "anonymous": 302,
            "patient": 403,
            "other_patient": 403,
            "staff": 403,
            "clinician": 200,
            "outside_clinician": 200,
            "administrator": 200,
        },
    ),
    "patients:patient-list": (
        "get",
        {
            "anonymous": 302,
            "patient": 403,
            "other_patient": 403,
            "staff": 200,
            "clinician": 200,
            "outside_clinician": 200,
            "administrator": 200,
        },
    ),
    "patients:patient-create": (
        "get",
        {
            "anonymous": 302,
            "patient": 403,
            "other_patient": 403,
            "staff": 200,
            "clinician": 200,
            "outside_clinician": 200,
            "administrator": 200,
        },
    ),
    "patients:patient-detail": (
        "get",
        {
            "anonymous": 302,
            "patient": 200,
            "other_patient": 404,
            "staff": 200,
            "clinician": 200,
            "outside_clinician": 404,
            "administrator": 200,
        },
    ),
    "patients:follow-up-list": (
        "get",
        {
            "anonymous": 302,
            "patient": 403,
            "other_patient": 403,
            "staff": 200,
            "clinician": 200,
            "outside_clinician": 200,
            "administrator": 200,
        },
    ),
    "patients:guidance": (
        "get",
        {
            "anonymous": 302,
            "patient": 200,
            "other_patient": 200,
            "staff": 200,
            "clinician": 200,
            "outside_clinician": 200,
            "administrator": 200,
        },
    ),
    "patients:referral-directory": (
        "get",
        {
            "anonymous": 302,
            "patient": 200,
            "other_patient": 200,
            "staff": 200,
            "clinician": 200,
            "outside_clinician": 200,
            "administrator": 200,
        },
    ),
    "patients:my-record": (
        "get",
        {
            "anonymous": 302,
            "patient": 302,
            "other_patient": 302,
            "staff": 404,
            "clinician": 404,
            "outside_clinician": 404,
            "administrator": 404,
        },
    ),
    "lesions:lesion-create": (
        "post",
        {
            "anonymous": 302,
            "patient": 403,
            "other_patient": 404,
            "staff": 400,
            "clinician": 400,
            "outside_clinician": 404,
            "administrator": 400,
        },
    ),
    "lesions:lesion-detail": (
        "get",
        {
            "anonymous": 302,
            "patient": 200,
            "other_patient": 404,
            "staff": 200,
            "clinician": 200,
            "outside_clinician": 404,
            "administrator": 200,
        },
    ),
    "lesions:examination-create": (
        "post",
        {
            "anonymous": 302,
            "patient": 403,
            "other_patient": 404,
            "staff": 400,
            "clinician": 400,
            "outside_clinician": 404,
            "administrator": 400,
        },
    ),
    "lesions:examination-detail": (
        "get",
        {
            "anonymous": 302,
            "patient": 302,
            "other_patient": 404,
            "staff": 200,
            "clinician": 200,
            "outside_clinician": 404,
            "administrator": 200,
        },
    ),
    "lesions:examination-status": (
        "get",
        {
            "anonymous": 302,
            "patient": 200,
            "other_patient": 404,
            "staff": 200,
            "clinician": 200,
            "outside_clinician": 404,
            "administrator": 200,
        },
    ),
    "lesions:examination-image": (
        "get",
        {
            "anonymous": 302,
            "patient": 200,
            "other_patient": 404,
            "staff": 200,
            "clinician": 200,
            "outside_clinician": 404,
            "administrator": 200,
        },
    ),
    # Visible roles get 404 here only because the fixture's examination has no explanation yet;
    # tests/inference/test_explanation_tasks.py checks who is served a computed one.
    "lesions:explanation-image": (
        "get",
        {
            "anonymous": 302,
            "patient": 404,
            "other_patient": 404,
            "staff": 404,
            "clinician": 404,
            "outside_clinician": 404,
            "administrator": 404,
        },
    ),
    "lesions:examination-thumbnail": (
        "get",
        {
            "anonymous": 302,
            "patient": 200,
            "other_patient": 404,
            "staff": 200,
            "clinician": 200,
            "outside_clinician": 404,
            "administrator": 200,
        },
    ),
    "lesions:lesion-compare": (
        "get",
        {
            "anonymous": 302,
            "patient": 200,
            "other_patient": 404,
            "staff": 200,
            "clinician": 200,
            "outside_clinician": 404,
            "administrator": 200,
        },
    ),
    # The patient and staff may see the record but not triage it: 403, not 404.
    "lesions:alert-triage": (
        "get",
        {
            "anonymous": 302,
            "patient": 403,
            "other_patient": 404,
            "staff": 403,
            "clinician": 200,
            "outside_clinician": 404,
            "administrator": 200,
        },
    ),
    "api:patient-list": (
        "get",
        {
            "anonymous": 401,
            "patient": 200,
            "other_patient": 200,
            "staff": 200,
            "clinician": 200,
            "outside_clinician": 200,
            "administrator": 200,
        },
    ),
    "api:patient-detail": (
        "get",
        {
            "anonymous": 401,
            "patient": 200,
            "other_patient": 404,
            "staff": 200,
            "clinician": 200,
            "outside_clinician": 404,
            "administrator": 200,
        },
    ),
    "api:patient-lesions": (
        "get",
        {
            "anonymous": 401,
            "patient": 200,
            "other_patient": 404,
            "staff": 200,
            "clinician": 200,
            "outside_clinician": 404,
            "administrator": 200,
        },
    ),
    "api:lesion-detail": (
        "get",
        {
            "anonymous": 401,
            "patient": 200,
            "other_patient": 404,
            "staff": 200,
            "clinician": 200,
            "outside_clinician": 404,
            "administrator": 200,
        },
    ),
    "api:lesion-examinations": (
        "get",
        {
            "anonymous": 401,
            "patient": 200,
            "other_patient": 404,
            "staff": 200,
            "clinician": 200,
            "outside_clinician": 404,
            "administrator": 200,
        },
    ),
    "api:examination-detail": (
        "get",
        {
            "anonymous": 401,
            "patient": 200,
            "other_patient": 404,
            "staff": 200,
            "clinician": 200,
            "outside_clinician": 404,
            "administrator": 200,
        },
    ),
    "login": (
        "get",
        {
            "anonymous": 200,
            "patient": 302,
            "other_patient": 302,
            "staff": 302,
            "clinician": 302,
            "outside_clinician": 302,
            "administrator": 302,
        },
    ),
    "logout": (
        "post",
        {
            "anonymous": 302,
            "patient": 302,
            "other_patient": 302,
            "staff": 302,
            "clinician": 302,
            "outside_clinician": 302,
            "administrator": 302,
        },
    ),
    "admin:index": (
        "get",
        {
            "anonymous": 302,
            "patient": 302,
            "other_patient": 302,
            "staff": 302,
            "clinician": 302,
            "outside_clinician": 302,
            "administrator": 200,
        },
    ),
}

# Write endpoints that share a name with a read (same URL, other method): the POST decision.
POST_MATRIX: dict[str, dict[str, int]] = {
    # A search, not a write: an empty one is a 400 for everyone logged in.
    "patients:referral-directory": {
        "anonymous": 302,
        "patient": 400,
        "other_patient": 400,
        "staff": 400,
        "clinician": 400,
        "outside_clinician": 400,
        "administrator": 400,
    },
    "lesions:alert-triage": {
        "anonymous": 302,
        "patient": 403,
        "other_patient": 404,
        "staff": 403,
        "clinician": 400,
        "outside_clinician": 404,
        "administrator": 400,
    },
    "api:patient-list": {
        "anonymous": 401,
        "patient": 403,
        "other_patient": 403,
        "staff": 400,
        "clinician": 400,
        "outside_clinician": 400,
        "administrator": 400,
    },
    "api:patient-lesions": {
        "anonymous": 401,
        "patient": 403,
        "other_patient": 404,
        "staff": 400,
        "clinician": 400,
        "outside_clinician": 404,
        "administrator": 400,
    },
    "api:lesion-examinations": {
        "anonymous": 401,
        "patient": 403,
        "other_patient": 404,
        "staff": 400,
        "clinician": 400,
        "outside_clinician": 404,
        "administrator": 400,
    },
}


# Issue #6 (security and privacy). With 2FA off (test settings), setup shows a page and verify
# sends a user without a device to setup. Export: the patient or an administrator; erasure and
# the audit trail: administrators; break-the-glass: dermatologists.
MATRIX.update(
    {
        "two-factor-setup": (
            "get",
            {
                "anonymous": 302,
                "patient": 200,
                "other_patient": 200,
                "staff": 200,
                "clinician": 200,
                "outside_clinician": 200,
                "administrator": 200,
            },
        ),
        "two-factor-verify": (
            "get",
            {
                "anonymous": 302,
                "patient": 302,
                "other_patient": 302,
                "staff": 302,
                "clinician": 302,
                "outside_clinician": 302,
                "administrator": 302,
            },
        ),
        "password_reset": (
            "get",
            {
                "anonymous": 200,
                "patient": 200,
                "other_patient": 200,
                "staff": 200,
                "clinician": 200,
                "outside_clinician": 200,
                "administrator": 200,
            },
        ),
        "password_reset_done": (
            "get",
            {
                "anonymous": 200,
                "patient": 200,
                "other_patient": 200,
                "staff": 200,
                "clinician": 200,
                "outside_clinician": 200,
                "administrator": 200,
            },
        ),
        "password_reset_complete": (
            "get",
            {
                "anonymous": 200,
                "patient": 200,
                "other_patient": 200,
                "staff": 200,
                "clinician": 200,
                "outside_clinician": 200,
                "administrator": 200,
            },
        ),
        "password_reset_confirm": (
            "get",
            {
                "anonymous": 200,
                "patient": 200,
                "other_patient": 200,
                "staff": 200,
                "clinician": 200,
                "outside_clinician": 200,
                "administrator": 200,
            },
        ),
        "api:schema": (
            "get",
            {
                "anonymous": 401,
                "patient": 200,
                "other_patient": 200,
                "staff": 200,
                "clinician": 200,
                "outside_clinician": 200,
                "administrator": 200,
            },
        ),
        "privacy:patient-export": (
            "get",
            {
                "anonymous": 302,
                "patient": 200,
                "other_patient": 404,
                "staff": 403,
                "clinician": 403,
                "outside_clinician": 404,
                "administrator": 200,
            },
        ),
        "privacy:patient-erase": (
            "get",
            {
                "anonymous": 302,
                "patient": 403,
                "other_patient": 404,
                "staff": 403,
                "clinician": 403,
                "outside_clinician": 404,
                "administrator": 200,
            },
        ),
        "privacy:my-export": (
            "get",
            {
                "anonymous": 302,
                "patient": 200,
                "other_patient": 200,
                "staff": 404,
                "clinician": 404,
                "outside_clinician": 404,
                "administrator": 404,
            },
        ),
        "privacy:emergency-access": (
            "get",
            {
                "anonymous": 302,
                "patient": 403,
                "other_patient": 403,
                "staff": 403,
                "clinician": 200,
                "outside_clinician": 200,
                "administrator": 403,
            },
        ),
        "privacy:audit-list": (
            "get",
            {
                "anonymous": 302,
                "patient": 403,
                "other_patient": 403,
                "staff": 403,
                "clinician": 403,
                "outside_clinician": 403,
                "administrator": 200,
            },
        ),
        "privacy:audit-export": (
            "get",
            {
                "anonymous": 302,
                "patient": 403,
                "other_patient": 403,
                "staff": 403,
                "clinician": 403,
                "outside_clinician": 403,
                "administrator": 200,
            },
        ),
    }
)
POST_MATRIX.update(
    {
        "privacy:patient-erase": {
            "anonymous": 302,
            "patient": 403,
            "other_patient": 404,
            "staff": 403,
            "clinician": 403,
            "outside_clinician": 404,
            "administrator": 400,
        },
        "privacy:emergency-access": {
            "anonymous": 302,
            "patient": 403,
            "other_patient": 403,
            "staff": 403,
            "clinician": 400,
            "outside_clinician": 400,
            "administrator": 403,
        },
    }
)


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
    ):
        try:
            return reverse(name, kwargs=candidate)
        except NoReverseMatch:
            continue
    raise AssertionError(f"cannot reverse {name}")


def _cases():
    for name, (method, expected) in MATRIX.items():
        for role in ROLES:
            yield pytest.param(name, method, role, expected[role], id=f"{method}-{name}-{role}")
    for name, expected in POST_MATRIX.items():
        for role in ROLES:
            yield pytest.param(name, "post", role, expected[role], id=f"post-{name}-{role}")


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
