"""FHIR R4B export (issue 13 part 2, lesions/fhir.py): every bundle the endpoints produce is parsed
back with fhir.resources, every reference must resolve to a fullUrl inside the bundle; the AI
output is preliminary and labelled AIAST with a Provenance; the report is final only once a
dermatologist decided; access follows the selectors and every export is audited."""

from __future__ import annotations

import base64
import json
from typing import Any

import pytest
from django.db import connection
from django.test.utils import CaptureQueriesContext
from django.urls import reverse
from fhir.resources.R4B.bundle import Bundle
from fhir.resources.R4B.resource import Resource

from lesions import fhir
from lesions.models import AlertTrigger, BodySite, ModelVersion
from lesions.services import triage_decide
from portal.models import AuditEntry
from tests.factories import AlertFactory, ExaminationFactory, LesionFactory, PredictionFactory

SHA = "cd" * 32
PROBABILITIES = {"akiec": 0.05, "bcc": 0.08, "bkl": 0.1, "df": 0.02, "mel": 0.5, "nv": 0.2, "vasc": 0.05}


@pytest.fixture
def prediction(lesion):
    ModelVersion.objects.create(
        name="dermatrack-lesion-classifier",
        version="2.0.0",
        sha256=SHA,
        alert_threshold=0.2,
        validation={"balanced_accuracy": 0.69, "malignant_auc": 0.88, "n": 1280},
    )
    return PredictionFactory(
        examination__lesion=lesion,
        model_name="dermatrack-lesion-classifier",
        model_version="2.0.0",
        model_sha256=SHA,
        malignancy_risk="0.630000",
        probabilities=PROBABILITIES,
        assessable=True,
    )


@pytest.fixture
def exam(prediction):
    return prediction.examination


def _get(client, exam, **params):
    response = client.get(reverse("api:examination-fhir", kwargs={"examination_uuid": exam.uuid}), params)
    assert response.status_code == 200, response.content[:300]
    assert response["Content-Type"].startswith("application/fhir+json")
    return response


def _parse(response) -> tuple[Bundle, dict[str, Any]]:
    """The bundle parsed back with fhir.resources (validates every resource), plus fullUrl -> resource."""
    text = response.content.decode()
    bundle = Bundle.model_validate_json(text)
    assert bundle.type == "collection"
    by_url: dict[str, Any] = {}
    for entry in bundle.entry or []:
        assert entry.fullUrl.startswith("urn:uuid:")
        assert entry.fullUrl not in by_url, "a fullUrl appears twice"
        assert isinstance(entry.resource, Resource)
        # each resource parses on its own too, from its own JSON
        type(entry.resource).model_validate_json(entry.resource.model_dump_json())
        by_url[entry.fullUrl] = entry.resource
    _check_references(json.loads(text), set(by_url))
    return bundle, by_url


def _references(node: Any) -> list[str]:
    found: list[str] = []
    if isinstance(node, dict):
        for key, value in node.items():
            if key == "reference" and isinstance(value, str):
                found.append(value)
            else:
                found += _references(value)
    elif isinstance(node, list):
        for item in node:
            found += _references(item)
    return found


def _check_references(raw: dict, urls: set[str]) -> None:
    refs = _references(raw)
    assert refs, "the bundle has no references at all"
    unresolved = [r for r in refs if r not in urls]
    assert not unresolved, f"references outside the bundle: {unresolved}"


def _of(by_url: dict[str, Any], kind: str) -> list[Any]:
    return [r for r in by_url.values() if r.get_resource_type() == kind]


def _labels(resource) -> set[tuple[str, str]]:
    return {(c.system, c.code) for c in (resource.meta.security if resource.meta else None) or []}


AIAST = (fhir.V3_OBSERVATION_VALUE, "AIAST")


def test_examination_bundle_parses_back_and_every_reference_resolves(clinician_client, exam, patient):
    _, by_url = _parse(_get(clinician_client, exam))
    kinds = sorted(r.get_resource_type() for r in by_url.values())
    assert kinds == sorted(
        [
            "Organization",
            "Patient",
            "BodyStructure",
            "Media",
            "Observation",
            "Device",
            "Provenance",
            "DiagnosticReport",
        ]
    )
    (fhir_patient,) = _of(by_url, "Patient")
    assert fhir_patient.identifier[0].value == patient.medical_record_number
    assert fhir_patient.identifier[0].system == fhir.mrn_system(patient.clinic)
    assert fhir_patient.name[0].family == patient.family_name
    assert fhir_patient.birthDate == patient.date_of_birth


def test_ai_observation_is_preliminary_labelled_and_has_a_provenance(clinician_client, exam):
    _, by_url = _parse(_get(clinician_client, exam))
    (observation,) = _of(by_url, "Observation")
    assert observation.status == "preliminary"
    assert AIAST in _labels(observation)
    assert observation.meta.security[0].display == "Artificial Intelligence asserted"
    assert float(observation.valueQuantity.value) == pytest.approx(0.63)
    assert observation.valueQuantity.system == "http://unitsofmeasure.org"
    assert observation.valueQuantity.code == "1"
    assert {c.code.coding[0].code: float(c.valueQuantity.value) for c in observation.component} == PROBABILITIES
    (device,) = _of(by_url, "Device")
    assert by_url[observation.device.reference] is device
    assert device.identifier[0].value == SHA
    assert device.version[0].value == "2.0.0"
    assert "dermatrack-lesion-classifier 2.0.0" in [n.name for n in device.deviceName]
    (provenance,) = _of(by_url, "Provenance")
    assert AIAST in _labels(provenance)
    assert [t.reference for t in provenance.target] == [f"urn:uuid:{exam.predictions.get().uuid}"]
    assert by_url[provenance.agent[0].who.reference] is device
    assert provenance.recorded == exam.predictions.get().created_at


def test_report_is_preliminary_without_a_decision(clinician_client, exam):
    AlertFactory(prediction=exam.predictions.get())  # an open alert, not decided
    _, by_url = _parse(_get(clinician_client, exam))
    (report,) = _of(by_url, "DiagnosticReport")
    assert report.status == "preliminary"
    assert not report.performer
    (observation,) = _of(by_url, "Observation")
    (media,) = _of(by_url, "Media")
    assert [r.reference for r in report.result] == [f"urn:uuid:{observation.id}"]
    assert by_url[report.media[0].link.reference] is media
    assert "not yet reviewed" in report.conclusion.lower()


def test_report_is_final_with_the_dermatologists_decision(clinician_client, clinician, exam):
    alert = AlertFactory(prediction=exam.predictions.get())
    triage_decide(actor=clinician, alert=alert, decision="refer", reason="Atypical network")
    _, by_url = _parse(_get(clinician_client, exam))
    (report,) = _of(by_url, "DiagnosticReport")
    assert report.status == "final"
    assert "Refer" in report.conclusion
    assert "Atypical network" in report.conclusion
    (practitioner,) = _of(by_url, "Practitioner")
    assert by_url[report.performer[0].reference] is practitioner
    assert practitioner.identifier[0].value == clinician.username
    # The AI output itself stays preliminary and AI-asserted.
    (observation,) = _of(by_url, "Observation")
    assert observation.status == "preliminary"
    assert AIAST in _labels(observation)


def test_an_examination_covered_by_a_decided_alert_through_another_trigger(clinician_client, clinician, lesion, exam):
    """Two images of one lesion raised one alert; the decision covers both."""
    other = PredictionFactory(examination__lesion=lesion, model_sha256="ef" * 32, malignancy_risk="0.700000")
    alert = AlertFactory(prediction=other)
    AlertTrigger.objects.create(alert=alert, prediction=exam.predictions.get(), priority=630)
    triage_decide(actor=clinician, alert=alert, decision="biopsy", reason="New since last visit")
    _, by_url = _parse(_get(clinician_client, exam))
    assert _of(by_url, "DiagnosticReport")[0].status == "final"


def test_media_carries_the_image_unless_asked_not_to(clinician_client, exam):
    _, by_url = _parse(_get(clinician_client, exam))
    (media,) = _of(by_url, "Media")
    with exam.image.open("rb") as fh:
        stored = fh.read()
    assert media.content.contentType == "image/png"
    assert media.content.data == stored  # fhir.resources decodes base64Binary
    assert stored.startswith(b"\x89PNG")
    raw = json.loads(_get(clinician_client, exam).content)
    media_json = next(e["resource"] for e in raw["entry"] if e["resource"]["resourceType"] == "Media")
    assert base64.b64decode(media_json["content"]["data"]) == stored
    assert media.createdDateTime == exam.captured_at
    assert media.bodySite.coding[0].system == fhir.SNOMED
    _, without = _parse(_get(clinician_client, exam, images="false"))
    (bare,) = _of(without, "Media")
    assert bare.content.data is None
    assert bare.content.contentType == "image/png"


def test_unassessable_prediction_exports_no_risk(clinician_client, exam):
    prediction = exam.predictions.get()
    prediction.assessable = False
    prediction.check_reasons = [{"code": "blur", "message": "The image is blurred."}]
    prediction.save()
    _, by_url = _parse(_get(clinician_client, exam))
    (observation,) = _of(by_url, "Observation")
    assert observation.valueQuantity is None
    assert not observation.component
    assert "blurred" in observation.dataAbsentReason.text


def test_examination_without_a_prediction(clinician_client, lesion):
    exam = ExaminationFactory(lesion=lesion)
    _, by_url = _parse(_get(clinician_client, exam))
    assert not _of(by_url, "Observation")
    assert not _of(by_url, "Provenance")
    assert _of(by_url, "DiagnosticReport")[0].status == "registered"


@pytest.mark.parametrize("site", BodySite.values)
def test_every_body_site_has_a_snomed_code(site):
    code, display, side = fhir.SNOMED_BODY_SITES[site]
    assert code.isdigit()
    assert 6 <= len(code) <= 18
    assert display
    concept = fhir.body_site_concept(site)
    assert concept["coding"][0]["system"] == "http://snomed.info/sct"
    assert (side is not None) == site.startswith(("left_", "right_"))
    if side is not None:
        assert side[0] == ("7771000" if site.startswith("left_") else "24028007")


def test_laterality_is_a_location_qualifier(clinician_client, patient):
    lesion = LesionFactory(patient=patient, body_site=BodySite.LEFT_FOREARM)
    exam = ExaminationFactory(lesion=lesion)
    _, by_url = _parse(_get(clinician_client, exam))
    (body,) = _of(by_url, "BodyStructure")
    assert body.location.coding[0].code == "14975008"
    assert body.locationQualifier[0].coding[0].code == "7771000"


def test_patient_bundle_has_every_lesion_and_examination(clinician_client, patient, lesion, exam):
    second = LesionFactory(patient=patient, body_site=BodySite.SCALP)
    ExaminationFactory(lesion=second)
    ExaminationFactory(lesion=second)
    LesionFactory(patient=patient, body_site=BodySite.NECK)  # no image yet: still a BodyStructure
    response = clinician_client.get(reverse("api:patient-fhir", kwargs={"patient_uuid": patient.uuid}))
    assert response.status_code == 200
    _, by_url = _parse(response)
    assert len(_of(by_url, "Patient")) == 1
    assert len(_of(by_url, "BodyStructure")) == 3
    assert len(_of(by_url, "Media")) == 3
    assert len(_of(by_url, "DiagnosticReport")) == 3
    entry = AuditEntry.objects.filter(action="fhir.export").get()
    assert entry.patient_uuid == str(patient.uuid)
    assert len(entry.shown["examination"]) == 3


def test_export_is_audited(clinician_client, clinician, exam, patient):
    _get(clinician_client, exam)
    entry = AuditEntry.objects.filter(action="fhir.export").get()
    assert entry.actor == clinician
    assert entry.target_uuid == str(exam.uuid)
    assert entry.patient_uuid == str(patient.uuid)


def test_hidden_record_is_404_and_not_audited_as_export(outside_client, exam):
    for url in (
        reverse("api:examination-fhir", kwargs={"examination_uuid": exam.uuid}),
        reverse("lesions:examination-fhir", kwargs={"examination_uuid": exam.uuid}),
        reverse("api:patient-fhir", kwargs={"patient_uuid": exam.lesion.patient.uuid}),
    ):
        assert outside_client.get(url).status_code == 404
    assert not AuditEntry.objects.filter(action="fhir.export").exists()


def test_patients_get_404_on_the_clinician_export(patient_client, other_patient_client, exam, patient):
    for client in (patient_client, other_patient_client):
        for url in (
            reverse("api:examination-fhir", kwargs={"examination_uuid": exam.uuid}),
            reverse("lesions:examination-fhir", kwargs={"examination_uuid": exam.uuid}),
            reverse("api:patient-fhir", kwargs={"patient_uuid": patient.uuid}),
        ):
            assert client.get(url).status_code == 404
    assert not AuditEntry.objects.filter(action="fhir.export").exists()


def test_download_from_the_examination_page(clinician_client, exam, patient):
    page = clinician_client.get(reverse("lesions:examination-detail", kwargs={"examination_uuid": exam.uuid}))
    url = reverse("lesions:examination-fhir", kwargs={"examination_uuid": exam.uuid})
    assert f'href="{url}"' in page.content.decode()
    assert "Export FHIR (JSON)" in page.content.decode()
    response = clinician_client.get(url)
    assert response.status_code == 200
    assert response["Content-Type"].startswith("application/fhir+json")
    assert response["Cache-Control"] == "private, no-store"
    disposition = response["Content-Disposition"]
    assert disposition == f'attachment; filename="examination-{exam.uuid.hex[:8]}.fhir.json"'
    for phi in (patient.family_name, patient.given_name, patient.medical_record_number):
        assert phi not in disposition
        assert phi not in url
    _parse(response)


def test_api_rejects_a_bad_images_flag(clinician_client, exam):
    url = reverse("api:examination-fhir", kwargs={"examination_uuid": exam.uuid})
    assert clinician_client.get(url, {"images": "maybe"}).status_code == 400


@pytest.mark.parametrize(
    ("sex", "gender"), [(None, "unknown"), ("female", "female"), ("M", "male"), ("other", "other"), ("x", "unknown")]
)
def test_gender_follows_the_recorded_sex(patient, sex, gender):
    """Registration records sex (default unknown); FHIR's administrative gender takes it."""
    if sex is not None:
        patient.sex = sex
    builder = fhir._Builder(include_images=False)
    assert builder.entries[builder.patient(patient)].gender == gender


def test_patient_export_queries_do_not_grow_with_examinations(clinician_client, patient, lesion):
    url = reverse("api:patient-fhir", kwargs={"patient_uuid": patient.uuid})

    def count() -> int:
        with CaptureQueriesContext(connection) as queries:
            assert clinician_client.get(url, {"images": "false"}).status_code == 200
        return len(queries)

    PredictionFactory(examination__lesion=lesion, model_sha256=SHA)
    count()  # warm the per-process caches (content types, the active model version)
    few = count()
    for _ in range(4):
        PredictionFactory(examination__lesion=LesionFactory(patient=patient), model_sha256=SHA)
    assert count() == few


def test_redact_paints_over_the_text_the_ocr_found_in_the_media(clinician_client, exam):
    """`redact=true` exports the image with the OCR's text boxes painted over; the default keeps it."""
    import io

    import numpy as np
    from PIL import Image

    from lesions.models import Examination

    Examination.objects.filter(pk=exam.pk).update(ocr_boxes=[[10, 10, 60, 30]])

    def media_pixels(**params):
        _, by_url = _parse(_get(clinician_client, exam, **params))
        media = next(r for r in by_url.values() if r.get_resource_type() == "Media")
        return np.asarray(Image.open(io.BytesIO(media.content.data)).convert("RGB"))  # decoded by fhir.resources

    original, redacted = media_pixels(), media_pixels(redact="true")
    box = redacted[10:31, 10:61].reshape(-1, 3)
    assert (box == box[0]).all()
    assert not (original[10:31, 10:61].reshape(-1, 3) == box[0]).all()
    assert original.shape == redacted.shape
