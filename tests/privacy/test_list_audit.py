"""List pages audit which records they showed: the page actually shown, by random UUID, never
a name or a record number (issue 11, item 7).

Each test failed before the change: list reads wrote `patient.list` / `alert.list` /
`follow_up.list` with no record named (AuditEntry had no `shown`), and the lesion pages'
thumbnails were audited nowhere.
"""

from __future__ import annotations

import csv
import datetime as dt
import io
import json

import pytest
from django.forms.models import model_to_dict
from django.urls import reverse
from django.utils import timezone

from portal.audit import audit_record
from portal.models import AuditEntry
from tests.factories import AlertFactory, ExaminationFactory, LesionFactory, PatientFactory


def _entry(action: str) -> AuditEntry:
    entries = list(AuditEntry.objects.filter(action=action))
    assert len(entries) == 1, [e.action for e in entries]
    return entries[0]


def _no_phi(entry: AuditEntry, patients) -> None:
    text = json.dumps(model_to_dict(entry), default=str)
    for p in patients:
        for value in (p.given_name, p.family_name, p.medical_record_number, p.email, p.phone):
            assert value not in text


def test_patient_list_page_names_exactly_the_patients_on_it(staff_client, clinic, monkeypatch):
    monkeypatch.setattr("portal.web.patients.views.PATIENT_LIST_SIZE", 2)
    patients = [PatientFactory(clinic=clinic) for _ in range(3)]
    response = staff_client.get(reverse("patients:patient-list"))
    shown = [str(p.uuid) for p in response.context["patients"]]
    assert len(shown) == 2
    entry = _entry("patient.list")
    assert entry.shown == {"patient": shown}
    hidden = {str(p.uuid) for p in patients} - set(shown)
    assert len(hidden) == 1
    assert hidden.pop() not in json.dumps(entry.shown)
    _no_phi(entry, patients)


def test_patient_list_api_names_the_page_after_limit_and_offset(staff_client, clinic):
    patients = [PatientFactory(clinic=clinic) for _ in range(3)]
    body = staff_client.get("/api/patients/?limit=1&offset=1").json()
    assert body["count"] == 3
    assert len(body["results"]) == 1
    entry = _entry("patient.list")
    assert entry.shown == {"patient": [body["results"][0]["uuid"]]}
    _no_phi(entry, patients)


def test_patient_list_names_no_record_of_another_clinic(outside_client, patient):
    assert outside_client.get(reverse("patients:patient-list")).status_code == 200
    assert str(patient.uuid) not in json.dumps(_entry("patient.list").shown)


def _alert(patient, risk: str):
    return AlertFactory(
        prediction__examination__lesion=LesionFactory(patient=patient), prediction__malignancy_risk=risk
    )


def test_triage_queue_page_names_its_alerts_patients_and_thumbnails(
    clinician_client, patient, other_patient, monkeypatch
):
    monkeypatch.setattr("portal.web.views.TRIAGE_QUEUE_PAGE_SIZE", 2)
    first = _alert(patient, "0.950000")
    second = _alert(other_patient, "0.900000")
    third = _alert(patient, "0.700000")  # the only row of page 2
    response = clinician_client.get("/triage/?page=2")
    assert [r["alert"].uuid for r in response.context["rows"]] == [third.uuid]
    entry = _entry("alert.list")
    assert entry.shown == {
        "alert": [str(third.uuid)],
        "patient": [str(patient.uuid)],
        "examination": [str(third.prediction.examination.uuid)],
    }
    text = json.dumps(entry.shown)
    for alert in (first, second):
        assert str(alert.uuid) not in text
        assert str(alert.prediction.examination.uuid) not in text
    assert str(other_patient.uuid) not in text
    _no_phi(entry, [patient, other_patient])


def test_follow_up_list_names_only_the_lesions_and_patients_it_shows(staff_client, clinic, monkeypatch):
    monkeypatch.setattr("portal.web.patients.views.FOLLOW_UP_PAGE_SIZE", 2)
    today = timezone.localdate()
    soonest = LesionFactory(patient=PatientFactory(clinic=clinic), next_follow_up=today - dt.timedelta(days=3))
    due = LesionFactory(patient=PatientFactory(clinic=clinic), next_follow_up=today + dt.timedelta(days=2))
    cut = LesionFactory(patient=PatientFactory(clinic=clinic), next_follow_up=today + dt.timedelta(days=90))
    response = staff_client.get(reverse("patients:follow-up-list"))
    assert response.context["page"].has_next()
    entry = _entry("follow_up.list")
    assert entry.shown == {
        "patient": [str(soonest.patient.uuid), str(due.patient.uuid)],
        "lesion": [str(soonest.uuid), str(due.uuid)],
    }
    assert str(cut.uuid) not in json.dumps(entry.shown)
    assert str(cut.patient.uuid) not in json.dumps(entry.shown)
    _no_phi(entry, [soonest.patient, cut.patient, due.patient])


def test_lesion_page_audits_its_thumbnails_once(clinician_client, lesion):
    exams = [ExaminationFactory(lesion=lesion) for _ in range(2)]
    elsewhere = ExaminationFactory(lesion=LesionFactory(patient=lesion.patient))
    before = AuditEntry.objects.count()  # the factories' own (registration, consent)
    response = clinician_client.get(reverse("lesions:lesion-detail", args=[lesion.uuid]))
    assert response.status_code == 200
    entry = _entry("examination.list")
    assert (entry.target_uuid, entry.patient_uuid) == (str(lesion.uuid), str(lesion.patient.uuid))
    assert entry.shown == {"examination": [str(e.uuid) for e in exams]}
    assert str(elsewhere.uuid) not in json.dumps(entry.shown)
    for exam in exams:  # the thumbnails themselves add nothing to the trail
        clinician_client.get(reverse("lesions:examination-thumbnail", args=[exam.uuid]))
    assert AuditEntry.objects.count() == before + 2  # lesion.view + examination.list


def test_shown_refuses_anything_but_records_with_a_uuid(clinic_staff, patient):
    with pytest.raises(TypeError):
        audit_record(actor=clinic_staff, action="patient.list", shown={"patient": [patient.family_name]})
    assert not AuditEntry.objects.filter(action="patient.list").exists()
    entry = audit_record(actor=clinic_staff, action="patient.list", shown={"patient": [patient, patient], "x": []})
    assert entry.shown == {"patient": [str(patient.uuid)]}  # once each, empty kinds dropped


def test_audit_trail_finds_list_pages_that_showed_a_patient_and_exports_them(
    client, administrator, staff_client, patient, other_patient
):
    staff_client.get(reverse("patients:patient-list"))
    audit_record(actor=administrator, action="patient.list", shown={"patient": [other_patient]})
    client.force_login(administrator)
    page = client.get(reverse("privacy:audit-list"), {"patient": str(patient.uuid)})
    # Besides the record's registration entries (the factory registers it through the service).
    listed = [e for e in page.context["page"] if e.action.endswith(".list")]
    assert [e.action for e in listed] == ["patient.list"]
    assert listed[0].actor_username == "staff_sam"
    export = client.get(reverse("privacy:audit-export"), {"patient": str(patient.uuid)})
    rows = list(csv.DictReader(io.StringIO(b"".join(export.streaming_content).decode())))
    rows = [r for r in rows if r["action"].endswith(".list")]
    assert [r["action"] for r in rows] == ["patient.list"]
    assert str(patient.uuid) in json.loads(rows[0]["shown"])["patient"]
    assert client.get(reverse("privacy:audit-list"), {"patient": "a"}).status_code == 200  # no substring match
