"""No PHI in logs, URLs, page titles, headers, error pages or task arguments.

A patient with a distinctive name, record number and e-mail goes through the main pages of every
role, an upload, classification and explanation; every log record, every URL in every page and
redirect, every <title>, every response header and every task message is searched for them.
(Page *bodies* show the name to people allowed to see it; that is the point of the portal.)
"""

from __future__ import annotations

import logging
import re
from html.parser import HTMLParser

import pytest
from celery.app.task import Task
from django.core.files.uploadedfile import SimpleUploadedFile
from django.test import Client

from lesions.models import Examination, Lesion
from lesions.risk import model_info as current_model_info
from patients.models import Patient
from portal.models import AuditEntry
from tests.factories import jpeg_bytes

GIVEN, FAMILY, MRN, EMAIL = "Philomena", "Wunderlich-Okonkwo", "PHI-7734-XQ", "philomena.w@example.org"
SECRETS = (GIVEN, FAMILY, MRN, EMAIL, "1957-11-02", "Quackenbush", "Zelda")


class _Collector(HTMLParser):
    def __init__(self) -> None:
        super().__init__()
        self.urls: list[str] = []
        self.title = ""
        self._in_title = False

    def handle_starttag(self, tag, attrs):
        self._in_title = tag == "title"
        for name, value in attrs:
            if name in ("href", "src", "action", "formaction", "data-url", "data-src") and value:
                self.urls.append(value)

    def handle_endtag(self, tag):
        self._in_title = False if tag == "title" else self._in_title

    def handle_data(self, data):
        if self._in_title:
            self.title += data


def _leaks(text: str) -> list[str]:
    return [s for s in SECRETS if s.lower() in text.lower()]


@pytest.fixture
def task_messages(monkeypatch):
    """Every task message the code sends: name, args, kwargs (as the broker would store them)."""
    sent: list[tuple] = []

    def record(self, args=None, kwargs=None, **options):
        sent.append((self.name, args, kwargs))

    monkeypatch.setattr(Task, "apply_async", record)
    return sent


def _check_response(response, where: str, problems: list[str]) -> None:
    for header, value in response.headers.items():
        if _leaks(value):
            problems.append(f"{where}: header {header}: {value}")
    if response.get("Location") and _leaks(response["Location"]):
        problems.append(f"{where}: redirect {response['Location']}")
    if "text/html" in response.get("Content-Type", "") and not response.streaming:
        parser = _Collector()
        parser.feed(response.content.decode())
        if _leaks(parser.title):
            problems.append(f"{where}: title {parser.title!r}")
        problems.extend(f"{where}: url {u}" for u in parser.urls if _leaks(u))


def test_no_phi_in_logs_urls_titles_headers_error_pages_or_task_arguments(
    caplog,
    task_messages,
    patient,
    clinic_staff,
    clinician,
    outside_clinician,
    administrator,
    django_capture_on_commit_callbacks,
    monkeypatch,
):
    caplog.set_level(logging.DEBUG)
    problems: list[str] = []
    staff = Client()
    staff.force_login(clinic_staff)

    # Registration and an upload through the web pages, with PHI in the upload's file name.
    with django_capture_on_commit_callbacks(execute=True):
        response = staff.post(
            "/patients/new/",
            {
                "given_name": GIVEN,
                "family_name": FAMILY,
                "date_of_birth": "1957-11-02",
                "medical_record_number": MRN,
                "email": EMAIL,
                "consent_given": "on",
            },
        )
        _check_response(response, "register", problems)
        new = Patient.objects.exclude(pk=patient.pk).get()
        response = staff.post(f"/patients/{new.uuid}/lesions/new/", {"body_site": "face", "label": f"{FAMILY} cheek"})
        _check_response(response, "lesion-create", problems)
        lesion = Lesion.objects.get(patient=new)
        upload = SimpleUploadedFile(f"{FAMILY}_{GIVEN}_{MRN}.jpg", jpeg_bytes(), content_type="image/jpeg")
        response = staff.post(f"/lesions/{lesion.uuid}/examinations/new/", {"image": upload, "notes": GIVEN})
        _check_response(response, "upload", problems)
    exam = Examination.objects.get(lesion=lesion)
    assert not _leaks(exam.image.name)

    # Searches by name, record number and birth date (POST: the query is in no URL), on the
    # patient list and the audit trail's patient finder (its redirect names the record by UUID).
    for query in (FAMILY[:6], MRN, "1957-11-02"):
        response = staff.post("/patients/", {"q": query})
        assert FAMILY in response.content.decode()  # found, and shown to staff in the body only
        _check_response(response, f"search {query!r}", problems)
        admin_search = Client()
        admin_search.force_login(administrator)
        response = admin_search.post("/audit/", {"find-q": query})
        assert response.status_code == 302
        _check_response(response, f"audit finder {query!r}", problems)

    # Classification and explanation run in-process with the real task code (when a model is present).
    if current_model_info() is not None:
        import dataclasses
        import functools

        from inference import explanations
        from lesions.tasks import classify_examination_task, explain_examination_task

        # Fewer LIME samples: this test is about where data flows, not about the explanation.
        fast = dataclasses.replace(explanations.LimeSettings(), num_samples=30)
        monkeypatch.setattr(explanations, "explain_lime", functools.partial(explanations.explain_lime, settings=fast))

        with django_capture_on_commit_callbacks(execute=True):
            classify_examination_task.run(exam.pk)
        explain_examination_task.run(exam.pk)

    pages = {
        "staff": (
            clinic_staff,
            [
                "/patients/",
                f"/patients/{new.uuid}/",
                f"/lesions/{lesion.uuid}/",
                f"/examinations/{exam.uuid}/",
                f"/api/patients/{new.uuid}/",
                "/api/patients/",
            ],
        ),
        "clinician": (
            clinician,
            [
                "/triage/",
                "/patients/",
                f"/patients/{new.uuid}/",
                f"/examinations/{exam.uuid}/",
                f"/api/examinations/{exam.uuid}/",
                # PDF reports: their headers (Content-Disposition names a short UUID only)
                f"/examinations/{exam.uuid}/report/",
                f"/examinations/{exam.uuid}/referral-letter/",
                f"/lesions/{lesion.uuid}/summary/",
            ],
        ),
        "outsider": (
            outside_clinician,
            [
                f"/patients/{new.uuid}/",
                f"/lesions/{lesion.uuid}/",
                "/emergency-access/",
                f"/examinations/{exam.uuid}/report/",
            ],
        ),
        "administrator": (
            administrator,
            [
                "/audit/",
                f"/audit/?patient={new.uuid}",
                "/admin/portal/auditentry/",
                f"/patients/{new.uuid}/erase/",
                "/admin/portal/user/",
            ],
        ),
        "patient": (patient.account, ["/me/", f"/patients/{patient.uuid}/", f"/patients/{new.uuid}/"]),
        "anonymous": (None, [f"/patients/{new.uuid}/", "/accounts/login/", "/nowhere/"]),
    }
    for role, (user, urls) in pages.items():
        c = Client()
        if user is not None:
            c.force_login(user)
        for url in urls:
            response = c.get(url)
            assert response.status_code < 500, (role, url)
            _check_response(response, f"{role} GET {url}", problems)
            if response.status_code in (403, 404):  # error pages say nothing about the record
                assert not _leaks(response.content.decode()), (role, url)

    # A failed login with PHI as the username is not logged either (django-axes masks it).
    Client().post("/accounts/login/", {"username": EMAIL, "password": "wrong-password-1"})

    # The audit CSV names records by UUID only.
    admin = Client()
    admin.force_login(administrator)
    csv_text = b"".join(admin.get("/audit/export.csv").streaming_content).decode()
    assert not _leaks(csv_text)
    assert not any(_leaks(" ".join(str(v) for v in e.__dict__.values())) for e in AuditEntry.objects.all())

    for record in caplog.records:
        text = record.getMessage() + " " + repr(record.args) + (record.exc_text or "")
        if _leaks(text):
            problems.append(f"log {record.name}: {text[:200]}")
    for name, args, kwargs in task_messages:
        if _leaks(repr((args, kwargs))):
            problems.append(f"task {name}: {args} {kwargs}")
        assert all(isinstance(a, int | bool | str | type(None)) for a in (args or ())), (name, args)
    assert task_messages, "the upload should have queued a classification task"
    assert not problems, "PHI leaked:\n" + "\n".join(problems)


def test_server_error_page_names_nothing(client, clinic_staff, patient, monkeypatch, settings):
    """An unexpected exception gives the generic 500 page, not a traceback with record data."""
    import portal.web.patients.views

    def boom(**kwargs):
        raise RuntimeError(f"simulated failure for record {patient.uuid}")

    monkeypatch.setattr(portal.web.patients.views, "patient_list_for", boom)
    client.raise_request_exception = False
    client.force_login(clinic_staff)
    response = client.get("/patients/")
    assert response.status_code == 500
    body = response.content.decode()
    assert "Something went wrong" in body
    assert str(patient.uuid) not in body
    assert not re.search(r"Traceback|RuntimeError", body)
