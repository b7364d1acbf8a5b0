"""The patient's own view: plain language, decisions, follow-up, guidance; and the referral
directory (nearest centres without any external service)."""

from __future__ import annotations

import datetime as dt
from decimal import Decimal

import pytest
from django.urls import reverse
from django.utils import timezone

from lesions.services import triage_decide
from patients import referrals
from patients.models import ReferralCentre
from tests.factories import AlertFactory, LesionFactory, PredictionFactory, ReferralCentreFactory

MODEL = {"name": "test model", "version": "9.9", "alert_threshold": 0.3}


@pytest.fixture(autouse=True)
def _model_info(monkeypatch):
    monkeypatch.setattr("lesions.risk.model_info", lambda: MODEL)


@pytest.fixture
def flagged(lesion, clinician):
    """A lesion with an old low result and a newer high one that a dermatologist decided on."""
    PredictionFactory(
        examination__lesion=lesion,
        examination__captured_at=timezone.now() - dt.timedelta(days=200),
        malignancy_risk="0.100000",
    )
    prediction = PredictionFactory(
        examination__lesion=lesion,
        examination__captured_at=timezone.now() - dt.timedelta(days=2),
        malignancy_risk="0.620000",
    )
    alert = AlertFactory(prediction=prediction)
    triage_decide(actor=clinician, alert=alert, decision="follow_up", reason="Dr-only note", follow_up_months=3)
    return lesion


def _record(patient):
    return reverse("patients:patient-detail", kwargs={"patient_uuid": patient.uuid})


def test_my_record_leads_to_the_plain_language_page(patient_client, patient):
    response = patient_client.get(reverse("patients:my-record"), follow=True)
    assert response.templates[0].name == "patients/my_record.html"
    assert "Your skin check record" in response.content.decode()


def test_patient_reads_decision_follow_up_and_signs_to_watch(patient_client, patient, flagged):
    body = patient_client.get(_record(patient)).content.decode()
    assert "would like to see this spot again in 3 months" in body
    next_check = flagged.__class__.objects.get(pk=flagged.pk).next_follow_up
    assert next_check.strftime("%-d %B %Y") in body
    assert "Asymmetry" in body
    assert "Evolving" in body
    assert "triage aid, not a diagnosis" in body
    # never the dermatologist's private reason, nor raw model internals
    assert "Dr-only note" not in body
    assert "mel" not in body.replace("melanoma", "")
    assert "62 %" not in body


def test_patient_lesion_page_frames_every_result(patient_client, flagged):
    response = patient_client.get(reverse("lesions:lesion-detail", kwargs={"lesion_uuid": flagged.uuid}))
    assert response.templates[0].name == "lesions/lesion_detail_patient.html"
    body = response.content.decode()
    assert "The computer check found no warning signs in this image." in body  # the older, low result
    assert "Dermatologist," in body
    assert "score of 62 out of 100" in body  # only inside the explained frame
    assert body.index("What the computer check measured") < body.index("score of 62 out of 100")
    assert "Most likely class" not in body
    assert "Dr-only note" not in body


def test_clinicians_still_get_the_clinical_pages(clinician_client, patient, flagged):
    response = clinician_client.get(reverse("lesions:lesion-detail", kwargs={"lesion_uuid": flagged.uuid}))
    assert response.templates[0].name == "lesions/lesion_detail.html"
    assert clinician_client.get(_record(patient)).templates[0].name == "patients/patient_detail.html"


def test_guidance_before_any_decision_depends_on_the_risk(patient_client, patient, lesion):
    PredictionFactory(examination__lesion=lesion, malignancy_risk="0.850000")
    body = patient_client.get(_record(patient)).content.decode()
    assert "should review promptly" in body
    assert "guidance/#high" in body


def test_pending_image_says_it_is_being_checked(patient_client, patient, lesion):
    PredictionFactory(
        examination__lesion=lesion,
        examination__captured_at=timezone.now() - dt.timedelta(days=9),
        malignancy_risk="0.100000",
    )
    from tests.factories import ExaminationFactory

    ExaminationFactory(lesion=lesion)  # newer, still pending
    body = patient_client.get(_record(patient)).content.decode()
    assert "Your image is being checked." in body


def test_guidance_page(patient_client):
    body = patient_client.get(reverse("patients:guidance")).content.decode()
    for anchor in ('id="low"', 'id="elevated"', 'id="high"', 'id="abcde"'):
        assert anchor in body


# --- referral directory -----------------------------------------------------------------


@pytest.fixture
def centres(db):
    return {
        "vienna": ReferralCentreFactory(name="Vienna Skin", postcode="1090", city="Vienna"),
        "graz": ReferralCentreFactory(
            name="Graz Cancer Centre",
            kind=ReferralCentre.Kind.CANCER_CENTRE,
            postcode="8036",
            city="Graz",
            latitude=Decimal("47.08100"),
            longitude=Decimal("15.46900"),
        ),
        "linz": ReferralCentreFactory(
            name="Linz Derm", postcode="4020", city="Linz", latitude=Decimal("48.30000"), longitude=Decimal("14.29000")
        ),
        "closed": ReferralCentreFactory(name="Closed Clinic", postcode="1090", city="Vienna", active=False),
    }


URL = "/referrals/"


def _names(response):
    return [c.name for c, _ in response.context["results"]]


def test_haversine_matches_known_distances():
    assert referrals.haversine_km(48.2082, 16.3738, 47.0707, 15.4395) == pytest.approx(145, abs=2)  # Vienna-Graz
    assert referrals.haversine_km(0, 0, 0, 180) == pytest.approx(20015, abs=5)


def test_nearest_from_the_browsers_location(patient_client, centres):
    response = patient_client.post(URL, {"latitude": "47.07", "longitude": "15.44"})  # Graz
    assert response.status_code == 200
    assert _names(response) == ["Graz Cancer Centre", "Vienna Skin", "Linz Derm"]
    body = response.content.decode()
    assert "Cancer centre" in body
    assert "+43 1 555 0110" in body
    assert "Closed Clinic" not in body


def test_nearest_from_a_centres_postcode_or_city(patient_client, centres):
    assert _names(patient_client.post(URL, {"place": "4020"}))[0] == "Linz Derm"
    assert _names(patient_client.post(URL, {"place": "  graz "}))[0] == "Graz Cancer Centre"


def test_an_unknown_postcode_is_placed_by_its_first_digits(patient_client, centres):
    response = patient_client.post(URL, {"place": "8010"})
    assert _names(response)[0] == "Graz Cancer Centre"
    assert response.context["place"].approximate


def test_a_city_from_the_offline_gazetteer(patient_client, centres):
    # Salzburg has no centre here: the packaged GeoNames table knows where it is.
    response = patient_client.post(URL, {"place": "Salzburg"})
    assert _names(response)[0] == "Linz Derm"


def test_a_place_nobody_knows(patient_client, centres):
    response = patient_client.post(URL, {"place": "Xqzzyville"})
    assert response.status_code == 200
    assert response.context["results"] is None
    assert "could not find" in response.content.decode()


def test_nothing_entered_is_a_form_error(patient_client, centres):
    response = patient_client.post(URL, {})
    assert response.status_code == 400
    assert "Enter a postcode or city" in response.content.decode()


def test_without_a_search_all_active_centres_are_listed(patient_client, centres):
    response = patient_client.get(URL)
    assert [c.name for c in response.context["centres"]] == ["Graz Cancer Centre", "Linz Derm", "Vienna Skin"]
    assert 'id="use-location" hidden' in response.content.decode()  # shown by JavaScript only


def test_administrators_manage_centres_in_the_admin(client, administrator, centres):
    client.force_login(administrator)
    assert client.get("/admin/patients/referralcentre/").status_code == 200
    response = client.get(f"/admin/patients/referralcentre/{centres['graz'].pk}/change/")
    assert response.status_code == 200


def test_invalid_coordinates_are_rejected(patient_client, centres):
    assert patient_client.post(URL, {"latitude": "123", "longitude": "15"}).status_code == 400


def test_a_lesion_with_no_examination_reads_no_images(patient_client, patient):
    LesionFactory(patient=patient)
    assert "No images yet." in patient_client.get(_record(patient)).content.decode()
