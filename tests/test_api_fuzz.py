"""Fuzz the REST API against its own OpenAPI schema (drf-spectacular) with schemathesis.

Every operation gets generated valid and invalid requests from a logged-in clinic staff member
(CSRF token included, so writes reach the handlers) through the WSGI app in-process; UUID path
parameters are pointed at real records so handlers run past the lookup. No response may be a 500.
"""

from __future__ import annotations

import uuid

import pytest
import schemathesis
from django.core.handlers.wsgi import WSGIHandler
from django.middleware.csrf import _get_new_csrf_string
from django.test import Client
from drf_spectacular.generators import SchemaGenerator
from hypothesis import HealthCheck, settings
from schemathesis.checks import not_a_server_error

from tests.factories import ExaminationFactory, LesionFactory, PatientFactory, UserFactory


def _raw_schema() -> dict:
    return SchemaGenerator().get_schema(request=None, public=True)


schema = schemathesis.openapi.from_dict(_raw_schema())
schema.app = WSGIHandler()


@pytest.fixture
def keep_db_connection():
    """Like Django's test client: the in-process WSGI app must not close the test's connection."""
    from django.core import signals
    from django.db import close_old_connections

    signals.request_started.disconnect(close_old_connections)
    signals.request_finished.disconnect(close_old_connections)
    yield
    signals.request_started.connect(close_old_connections)
    signals.request_finished.connect(close_old_connections)


@pytest.fixture
def api_world(clinic, keep_db_connection):
    from portal.models import Role

    staff = UserFactory(username="fuzz_staff", role=Role.STAFF, clinic=clinic)
    patient = PatientFactory(clinic=clinic)
    lesion = LesionFactory(patient=patient)
    exam = ExaminationFactory(lesion=lesion)
    client = Client()
    client.force_login(staff)
    csrf = _get_new_csrf_string()
    auth = {
        "headers": {"X-CSRFToken": csrf},
        "cookies": {"sessionid": client.cookies["sessionid"].value, "csrftoken": csrf},
    }
    ids = {"patient_uuid": str(patient.uuid), "lesion_uuid": str(lesion.uuid), "examination_uuid": str(exam.uuid)}
    return auth, ids


def test_schema_describes_every_api_operation():
    paths = _raw_schema()["paths"]
    assert "/api/patients/" in paths
    assert "/api/lesions/{lesion_uuid}/examinations/" in paths
    assert {"get", "post"} <= set(paths["/api/lesions/{lesion_uuid}/examinations/"])
    assert len({op["operationId"] for p in paths.values() for op in p.values()}) == sum(len(p) for p in paths.values())


@pytest.mark.django_db
@schema.parametrize()
@settings(
    max_examples=25,
    deadline=None,
    suppress_health_check=[HealthCheck.function_scoped_fixture, HealthCheck.too_slow, HealthCheck.filter_too_much],
)
def test_api_never_answers_500(case, api_world):
    auth, ids = api_world
    for name in list(case.path_parameters or {}):
        value = case.path_parameters[name]
        try:
            uuid.UUID(str(value))
        except ValueError:
            continue  # keep malformed values: they must give a 404, not a 500
        if name in ids:
            case.path_parameters[name] = ids[name]
    response = case.call_and_validate(**auth, checks=[not_a_server_error])
    assert response.status_code != 401, "the fuzzer's requests must be logged in to reach the handlers"
