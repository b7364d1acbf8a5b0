"""Explanations in the background: stored encrypted, idempotent, failures isolated, access-checked."""

from __future__ import annotations

import io

import pytest
from django.core.management import call_command
from PIL import Image

from inference import explanations
from lesions.models import Explanation, Prediction
from lesions.services import examination_upload
from lesions.tasks import classify_examination_task, explain_examination_task
from lesions.templatetags.lesion_text import class_label
from tests.factories import lesion_jpeg_bytes


@pytest.fixture
def classified(lesion, clinic_staff):
    exam = examination_upload(actor=clinic_staff, lesion=lesion, image=io.BytesIO(lesion_jpeg_bytes()))
    classify_examination_task(exam.pk)
    return exam


def test_classification_leaves_pending_explanations_for_the_page(classified):
    assert sorted(Explanation.objects.filter(examination=classified).values_list("kind", "target", "status")) == [
        ("cam", "risk", "pending"),
        ("cam", "top_class", "pending"),
        ("lime", "risk", "pending"),
        ("lime", "top_class", "pending"),
    ]


def test_explain_task_stores_both_overlays_encrypted(classified, settings):
    explain_examination_task(classified.pk)
    rows = {e.kind: e for e in Explanation.objects.filter(examination=classified, target="top_class")}
    assert set(rows) == {"cam", "lime"}
    prediction = Prediction.objects.get(examination=classified)
    for explanation in rows.values():
        assert explanation.status == Explanation.Status.DONE
        assert explanation.model_sha256 == prediction.model_sha256
        raw = (settings.MEDIA_ROOT / explanation.image.name).read_bytes()
        assert raw.startswith(b"gAAAAA")
        with explanation.image.open("rb") as fh:
            overlay = Image.open(io.BytesIO(fh.read()))
            assert overlay.size == (classified.image_width, classified.image_height)
    assert rows["lime"].params["segmentation"] == "slic"
    assert rows["lime"].params["seed"] == 0
    assert rows["cam"].summary["class_name"] == prediction.top_class
    # Reproduces issue #11 item 3 (the class name sat in plaintext params): the explained class is
    # health data, encrypted in the summary, never in the plaintext params.
    for row in rows.values():
        assert not set(row.params) & {"class_name", "class_index"}
    assert len(rows["lime"].summary["weights"]) == rows["lime"].params["n_segments_found"]


def test_explain_task_is_idempotent(classified):
    explain_examination_task(classified.pk)
    first = {(e.kind, e.target): (e.pk, e.image.name) for e in Explanation.objects.all()}
    explain_examination_task(classified.pk)
    assert len(first) == 4
    assert {(e.kind, e.target): (e.pk, e.image.name) for e in Explanation.objects.all()} == first


def test_lime_failure_marks_only_lime_failed_and_keeps_the_prediction(classified, monkeypatch):
    before = Prediction.objects.get(examination=classified)

    def broken(*args, **kwargs):
        raise RuntimeError("segmentation blew up")

    monkeypatch.setattr(explanations, "explain_lime", broken)
    explain_examination_task(classified.pk)
    rows = {(e.kind, e.target): e for e in Explanation.objects.filter(examination=classified)}
    for target in ("risk", "top_class"):
        assert rows["cam", target].status == Explanation.Status.DONE
        assert rows["lime", target].status == Explanation.Status.FAILED
    rows = {e.kind: e for e in Explanation.objects.filter(examination=classified, target="risk")}
    assert "internal error" in rows["lime"].failure_reason
    after = Prediction.objects.get(examination=classified)
    assert (after.pk, after.probabilities, after.malignancy_risk) == (
        before.pk,
        before.probabilities,
        before.malignancy_risk,
    )


def test_explanation_images_are_served_only_to_those_who_may_see_the_exam(
    classified, patient_client, other_patient_client, outside_client, clinician_client
):
    explain_examination_task(classified.pk)
    for kind in ("cam", "lime"):
        url = f"/examinations/{classified.uuid}/explanations/{kind}/"
        response = clinician_client.get(url)
        assert response.status_code == 200
        assert response["Content-Type"] == "image/png"
        assert "no-store" in response["Cache-Control"]
        # Heatmaps are for clinicians; the patient's own pages are in plain language (issue #11).
        assert patient_client.get(url).status_code == 404
        assert other_patient_client.get(url).status_code == 404
        assert outside_client.get(url).status_code == 404
    assert clinician_client.get(f"/examinations/{classified.uuid}/explanations/nonsense/").status_code == 404


def test_examination_page_shows_overlays_and_the_triage_aid_statement(classified, clinician_client):
    page = clinician_client.get(f"/examinations/{classified.uuid}/").content.decode()
    assert "being computed" in page
    explain_examination_task(classified.pk)
    page = clinician_client.get(f"/examinations/{classified.uuid}/").content.decode()
    assert f"/examinations/{classified.uuid}/explanations/cam/" in page
    assert f"/examinations/{classified.uuid}/explanations/lime/" in page
    assert 'id="opacity"' in page
    assert "triage aid" in page
    assert "being computed" not in page


def test_recompute_command_is_idempotent(classified, capsys):
    call_command("recompute_explanations")
    assert "1 to explain" in capsys.readouterr().out
    assert Explanation.objects.filter(status="done").count() == 4
    call_command("recompute_explanations")
    assert "0 to explain" in capsys.readouterr().out


def test_explanations_explain_the_risk_by_default_and_the_top_class_on_request(classified, clinician_client):
    explain_examination_task(classified.pk)
    prediction = Prediction.objects.get(examination=classified)
    risk_cam = Explanation.objects.get(examination=classified, kind="cam", target="risk")
    top_cam = Explanation.objects.get(examination=classified, kind="cam", target="top_class")
    assert risk_cam.summary["class_name"] == explanations.RISK_NAME
    assert top_cam.summary["class_name"] == prediction.top_class
    assert Explanation.objects.get(examination=classified, kind="lime", target="risk").summary["class_name"] == (
        explanations.RISK_NAME
    )
    page = clinician_client.get(f"/examinations/{classified.uuid}/").content.decode()
    assert "explain the malignancy risk" in page
    assert 'aria-current="true">malignancy risk<' in page
    assert "?target=top_class" in page
    assert "explanations/cam/?target=risk" in page
    page = clinician_client.get(f"/examinations/{classified.uuid}/?target=top_class").content.decode()
    assert f"explain the top class “{class_label(prediction.top_class)}”" in page
    assert "explanations/cam/?target=top_class" in page
    risk_png = clinician_client.get(f"/examinations/{classified.uuid}/explanations/cam/?target=risk").content
    top_png = clinician_client.get(f"/examinations/{classified.uuid}/explanations/cam/?target=top_class").content
    assert risk_png != top_png
    # An unknown target falls back to the risk rather than erroring.
    assert clinician_client.get(f"/examinations/{classified.uuid}/?target=bogus").status_code == 200
