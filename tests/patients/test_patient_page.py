"""The patient page (body map, follow-ups). The staff follow-up list: test_follow_up_list.py."""

from __future__ import annotations

import datetime as dt

import pytest
from django.urls import reverse
from django.utils import timezone

from lesions import bodymap
from lesions.models import BodySite, Lesion
from tests.factories import LesionFactory, PredictionFactory

MODEL = {"name": "test model", "version": "9.9", "alert_threshold": 0.3}


@pytest.fixture(autouse=True)
def _model_info(monkeypatch):
    monkeypatch.setattr("lesions.risk.model_info", lambda: MODEL)


def _detail(patient):
    return reverse("patients:patient-detail", kwargs={"patient_uuid": patient.uuid})


def _risk(lesion, risk: str, days_ago: int):
    return PredictionFactory(
        examination__lesion=lesion,
        examination__captured_at=timezone.now() - dt.timedelta(days=days_ago),
        malignancy_risk=risk,
    )


def test_every_body_site_can_be_drawn():
    assert {s.site for s in bodymap.SHAPES} == set(BodySite.values)
    for site in BodySite.values:
        x, y = bodymap.marker_anchor(site)
        assert 0 <= x <= 2 * bodymap.WIDTH + bodymap.GAP
        assert 0 <= y <= bodymap.HEIGHT


def test_body_map_marks_each_lesion_with_its_latest_risk(clinician_client, patient):
    back = LesionFactory(patient=patient, body_site=BodySite.UPPER_BACK)
    _risk(back, "0.900000", days_ago=100)
    _risk(back, "0.100000", days_ago=1)  # the latest one counts
    hand = LesionFactory(patient=patient, body_site=BodySite.LEFT_HAND)
    _risk(hand, "0.650000", days_ago=3)
    LesionFactory(patient=patient, body_site=BodySite.FACE)  # no examination yet
    response = clinician_client.get(_detail(patient))
    markers = {m["lesion"].body_site: m["lesion"] for m in response.context["body_map"]["markers"]}
    assert markers[BodySite.UPPER_BACK].level == "low"
    assert markers[BodySite.LEFT_HAND].level == "high"
    assert markers[BodySite.FACE].level == "none"
    body = response.content.decode()
    assert body.count('class="marker dot-') == 3
    assert "Upper back, below left scapula: latest risk 10 %" in body
    assert reverse("lesions:lesion-detail", kwargs={"lesion_uuid": hand.uuid}) in body


def test_staff_add_a_lesion_by_choosing_a_body_part(staff_client, patient):
    page = staff_client.get(_detail(patient)).content.decode()
    assert 'href="?site=left_forearm#add-lesion"' in page
    chosen = staff_client.get(_detail(patient), {"site": "left_forearm"})
    assert chosen.context["lesion_form"].initial == {"body_site": "left_forearm"}
    assert '<option value="left_forearm" selected>' in chosen.content.decode()
    response = staff_client.post(
        reverse("lesions:lesion-create", kwargs={"patient_uuid": patient.uuid}),
        {"body_site": "left_forearm", "label": "dorsal"},
    )
    assert response.status_code == 302
    assert Lesion.objects.get(patient=patient).body_site == "left_forearm"


def test_a_made_up_site_is_ignored(staff_client, patient):
    assert staff_client.get(_detail(patient), {"site": "<script>"}).context["lesion_form"].initial == {}


def test_patient_page_lists_due_and_overdue_follow_ups(clinician_client, patient):
    today = timezone.localdate()
    LesionFactory(patient=patient, body_site=BodySite.CHEST, next_follow_up=today - dt.timedelta(days=3))
    LesionFactory(patient=patient, body_site=BodySite.NECK, next_follow_up=today + dt.timedelta(days=4))
    LesionFactory(patient=patient, body_site=BodySite.FACE, next_follow_up=today + dt.timedelta(days=90))
    body = clinician_client.get(_detail(patient)).content.decode()
    assert body.index("Overdue") < body.index("Due this week") < body.index("Scheduled")


@pytest.mark.parametrize("n_lesions", [1, 8])
def test_patient_page_query_count_does_not_grow_with_lesions(
    clinician_client, patient, n_lesions, django_assert_num_queries
):
    for i in range(n_lesions):
        lesion = LesionFactory(patient=patient, body_site=BodySite.values[i % len(BodySite.values)])
        _risk(lesion, "0.400000", days_ago=5)
        _risk(lesion, "0.200000", days_ago=1)
    url = _detail(patient)
    clinician_client.get(url)
    # session, user, patient (permission join), audit, lesions with their latest prediction
    # and count (subqueries), those predictions, the user's permissions on the record
    # (guardian: 2), the active model version, the lesions' latest decisions and open alerts.
    with django_assert_num_queries(11):
        response = clinician_client.get(url)
    assert len(response.context["lesions"]) == n_lesions
