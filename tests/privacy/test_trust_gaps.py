"""The smaller gaps an outside tester found (issue #11, item 7). Each test failed before its fix."""

from __future__ import annotations

import uuid

from lesions.models import TriageDecision
from portal.models import AuditEntry
from tests.factories import AlertFactory, PredictionFactory

REASON = "Patient collapsed in our emergency unit; need the lesion history now."


def test_a_second_decision_on_a_decided_alert_says_why(clinician_client, lesion):
    """Before: HTTP 400 with no message (the page hid the form and its error)."""
    alert = AlertFactory(prediction__examination__lesion=lesion, prediction__malignancy_risk="0.720000")
    data = {"decision": "dismiss", "reason": "benign on dermoscopy"}
    assert clinician_client.post(f"/alerts/{alert.uuid}/", data).status_code == 302
    again = clinician_client.post(f"/alerts/{alert.uuid}/", {**data, "decision": "biopsy"})
    assert again.status_code == 400
    assert "already been triaged" in again.content.decode()
    assert TriageDecision.objects.filter(alert=alert).count() == 1


def test_emergency_access_for_an_unknown_record_number_is_audited(outside_client, outside_clinician, patient):
    """Before: the refused request left no trace (the entry, if any, rolled back with it)."""
    response = outside_client.post(
        "/emergency-access/", {"clinic": patient.clinic.pk, "medical_record_number": "MRN-NOPE-1", "reason": REASON}
    )
    assert response.status_code == 400
    entry = AuditEntry.objects.get(action="emergency_access.not_found")
    assert entry.actor == outside_clinician
    assert entry.flagged
    assert entry.target_uuid == str(patient.clinic.uuid)
    assert "MRN-NOPE-1" not in str(entry.__dict__)


def test_denied_reads_are_audited(outside_client, outside_clinician, patient, lesion):
    """Before: a 404 for someone else's record left no audit entry at all."""
    for url in (f"/patients/{patient.uuid}/", f"/api/lesions/{lesion.uuid}/", f"/lesions/{lesion.uuid}/"):
        assert outside_client.get(url).status_code == 404
    denied = list(AuditEntry.objects.filter(actor=outside_clinician, action__endswith=".denied").order_by("id"))
    assert [(e.action, e.target_uuid) for e in denied] == [
        ("patient.denied", str(patient.uuid)),
        ("lesion.denied", str(lesion.uuid)),
        ("lesion.denied", str(lesion.uuid)),
    ]
    assert all(e.flagged and e.patient_uuid == "" for e in denied)  # the answer leaks no record either
    outside_client.get(f"/patients/{uuid.uuid4()}/")
    assert AuditEntry.objects.filter(action="patient.denied").count() == 2


def test_patients_get_plain_language_not_model_output_through_the_api(patient_client, clinician_client, lesion):
    """Before: GET /api/examinations/<uuid>/ gave the patient the class probabilities and risk."""
    prediction = PredictionFactory(examination__lesion=lesion, malignancy_risk="0.720000")
    exam = prediction.examination
    own = patient_client.get(f"/api/examinations/{exam.uuid}/").json()
    assert own["prediction"] is None
    assert own["result"]["headline"]
    assert "probabilities" not in str(own)
    assert "0.72" not in str(own)
    listed = patient_client.get(f"/api/lesions/{lesion.uuid}/examinations/").json()
    assert all(row["prediction"] is None for row in listed)
    assert patient_client.get(f"/examinations/{exam.uuid}/explanations/cam/").status_code == 404
    clinical = clinician_client.get(f"/api/examinations/{exam.uuid}/").json()
    assert clinical["prediction"]["malignancy_risk"] == 0.72
    assert clinical["result"] is None
