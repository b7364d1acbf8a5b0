"""The add-a-lesion form (issue 12, item 9): "First noted" shows today's date (it rendered
01/12/2026, which a date input shows as blank) and no body site is chosen for you (the select
started on "Scalp", which was saved whenever nobody changed it)."""

from __future__ import annotations

import re

from django.urls import reverse
from django.utils import timezone

from lesions.models import Lesion


def _patient_page(client, patient, **query):
    return client.get(reverse("patients:patient-detail", kwargs={"patient_uuid": patient.uuid}), query).content.decode()


def _select(page: str) -> str:
    return re.search(r'<select name="body_site"[^>]*>.*?</select>', page, re.S).group(0)


def test_first_noted_shows_today_in_the_format_a_date_input_reads(staff_client, patient, settings):
    assert settings.LANGUAGE_CODE == "en-gb"
    page = _patient_page(staff_client, patient)
    today = timezone.localdate()
    assert f'<input type="date" name="first_noted" value="{today:%Y-%m-%d}"' in page
    assert f"{today:%d/%m/%Y}" not in page


def test_the_body_site_starts_empty_and_is_required(staff_client, patient):
    select = _select(_patient_page(staff_client, patient))
    assert " required" in select.split(">", 1)[0]
    assert '<option value="" selected>Choose a body site</option>' in select
    assert '<option value="scalp">Scalp</option>' in select  # offered, not chosen
    assert select.count(" selected") == 1


def test_a_site_picked_on_the_body_map_is_still_preselected(staff_client, patient):
    select = _select(_patient_page(staff_client, patient, site="left_forearm"))
    assert '<option value="left_forearm" selected>' in select
    assert '<option value="" selected>' not in select


def test_adding_a_lesion_without_a_site_is_refused_and_saves_nothing(staff_client, patient):
    url = reverse("lesions:lesion-create", kwargs={"patient_uuid": patient.uuid})
    response = staff_client.post(url, {"body_site": "", "label": "left of the navel", "first_noted": "2026-11-03"})
    assert response.status_code == 400
    assert response.context["form"].errors["body_site"] == ["This field is required."]
    assert not Lesion.objects.filter(patient=patient).exists()
    page = response.content.decode()
    assert 'value="2026-11-03"' in page  # what was typed comes back as typed
    ok = staff_client.post(url, {"body_site": "abdomen", "label": "left of the navel", "first_noted": "2026-11-03"})
    assert ok.status_code == 302
    assert Lesion.objects.get(patient=patient).first_noted.isoformat() == "2026-11-03"
