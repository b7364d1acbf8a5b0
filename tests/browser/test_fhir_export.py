"""The FHIR export from the examination page, in headless Chromium: a dermatologist clicks
"Export FHIR (JSON)", gets a file named by a short random id, and the file parses back with
fhir.resources as a collection Bundle whose references all resolve inside it. Screenshot:
test-artifacts/fhir-examination-page-export-link.png; the file: test-artifacts/fhir/."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from django.core.files.base import ContentFile
from django.urls import reverse
from fhir.resources.R4B.bundle import Bundle

from lesions.models import BodySite, Examination
from lesions.services import triage_decide
from tests.browser.conftest import ARTIFACTS, login, shot
from tests.factories import AlertFactory, ExaminationFactory, LesionFactory, PredictionFactory, png_bytes

pytestmark = [pytest.mark.browser, pytest.mark.django_db(transaction=True)]


def test_dermatologist_downloads_the_fhir_bundle(new_page, patient, clinician):
    lesion = LesionFactory(patient=patient, body_site=BodySite.RIGHT_THIGH)
    exam = ExaminationFactory(
        lesion=lesion, image=ContentFile(png_bytes(size=(400, 300)), name="a.png"), status=Examination.Status.DONE
    )
    prediction = PredictionFactory(examination=exam, malignancy_risk="0.710000", assessable=True)
    triage_decide(actor=clinician, alert=AlertFactory(prediction=prediction), decision="biopsy", reason="Growing")

    page = new_page(accept_downloads=True)
    login(page, clinician.username)
    page.goto(reverse("lesions:examination-detail", kwargs={"examination_uuid": exam.uuid}))
    shot(page, "fhir-examination-page-export-link")
    with page.expect_download() as download:
        page.get_by_role("link", name="Export FHIR (JSON)").click()
    assert download.value.suggested_filename == f"examination-{exam.uuid.hex[:8]}.fhir.json"
    data = Path(download.value.path()).read_bytes()
    (ARTIFACTS / "fhir").mkdir(parents=True, exist_ok=True)
    (ARTIFACTS / "fhir" / "browser-examination.fhir.json").write_bytes(data)

    bundle = Bundle.model_validate_json(data)
    assert bundle.type == "collection"
    urls = {entry.fullUrl for entry in bundle.entry}
    kinds = {entry.resource.get_resource_type(): entry.resource for entry in bundle.entry}
    assert kinds["DiagnosticReport"].status == "final"
    assert kinds["Observation"].status == "preliminary"
    assert kinds["BodyStructure"].location.coding[0].code == "68367000"
    raw = json.dumps(json.loads(data))
    refs = [part.split('"')[0] for part in raw.split('"reference": "')[1:]]
    assert refs
    assert set(refs) <= urls
    assert not page.js_errors, page.js_errors
