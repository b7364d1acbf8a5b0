"""The staff follow-up list (issue 12, item 5): every scheduled recall, not only the next seven
days; filters overdue / this month / later / all, sorted by date either way or by body site,
25 to a page, and the page shown is what the audit entry names.

Before the change the page listed only what was overdue or due within a week, grouped by
patient (a recall in three months was on no list), had no filter, order or pager, and the
`when`, `order` and `page` parameters did nothing."""

from __future__ import annotations

import datetime as dt
import json

import pytest
from django.urls import reverse

from lesions import followups
from lesions.models import BodySite, Lesion
from portal.models import AuditEntry
from tests.factories import LesionFactory, PatientFactory

URL = reverse("patients:follow-up-list")
# A fixed day in the middle of a month, so "this month" holds days on both sides of it.
TODAY = dt.date(2026, 12, 10)


@pytest.fixture(autouse=True)
def _today(monkeypatch):
    monkeypatch.setattr("django.utils.timezone.localdate", lambda *a, **k: TODAY)


def _recall(clinic, days: int, site=BodySite.CHEST, **kwargs) -> Lesion:
    return LesionFactory(
        patient=PatientFactory(clinic=clinic), body_site=site, next_follow_up=TODAY + dt.timedelta(days=days), **kwargs
    )


def _shown(response) -> list[Lesion]:
    return list(response.context["page"])


def test_month_end_and_the_filters_never_overlap():
    assert followups.month_end(dt.date(2026, 12, 10)) == dt.date(2026, 12, 31)
    assert followups.month_end(dt.date(2028, 2, 3)) == dt.date(2028, 2, 29)
    assert followups.recall_of(dt.date(2026, 12, 9), TODAY) == "overdue"
    assert followups.recall_of(TODAY, TODAY) == "month"
    assert followups.recall_of(dt.date(2026, 12, 31), TODAY) == "month"
    assert followups.recall_of(dt.date(2027, 1, 1), TODAY) == "later"


def test_every_scheduled_recall_is_listed_soonest_first(staff_client, clinic):
    overdue = _recall(clinic, -40)
    this_month = _recall(clinic, 5)
    in_three_months = _recall(clinic, 91)  # the recall that was on no list before
    next_year = _recall(clinic, 400)
    _recall(clinic, 3, status=Lesion.Status.RESOLVED)  # closed: not followed any more
    LesionFactory(patient=PatientFactory(clinic=clinic), next_follow_up=None)  # nothing scheduled
    response = staff_client.get(URL)
    assert response.status_code == 200
    assert _shown(response) == [overdue, this_month, in_three_months, next_year]
    assert response.context["tabs"] == [
        ("all", "All", 4),
        ("overdue", "Overdue", 1),
        ("month", "This month", 1),
        ("later", "Later", 2),
    ]
    body = response.content.decode()
    assert "Overdue 40 days" in body
    assert (TODAY + dt.timedelta(days=91)).isoformat() in body
    assert 'aria-current="page">All' in body


@pytest.mark.parametrize(
    ("when", "expected"),
    [("overdue", ["overdue"]), ("month", ["today", "month_end"]), ("later", ["january", "later"])],
)
def test_each_filter_shows_its_recalls_only(staff_client, clinic, when, expected):
    made = {
        "overdue": _recall(clinic, -1),
        "today": _recall(clinic, 0),
        "month_end": _recall(clinic, 21),  # 31 December
        "january": _recall(clinic, 22),  # 1 January
        "later": _recall(clinic, 200),
    }
    response = staff_client.get(URL, {"when": when})
    assert _shown(response) == [made[name] for name in expected]
    assert response.context["filters"]["when"] == when


def test_sorted_by_date_descending_and_by_body_site_name(staff_client, clinic):
    scalp = _recall(clinic, 30, BodySite.SCALP)
    abdomen_late = _recall(clinic, 60, BodySite.ABDOMEN)
    abdomen_soon = _recall(clinic, 10, BodySite.ABDOMEN)
    left_hand = _recall(clinic, -5, BodySite.LEFT_HAND)
    assert _shown(staff_client.get(URL, {"order": "-date"})) == [abdomen_late, scalp, abdomen_soon, left_hand]
    # By the name the page shows (Abdomen, Left hand, Scalp), not the code; then by date.
    assert _shown(staff_client.get(URL, {"order": "site"})) == [abdomen_soon, abdomen_late, left_hand, scalp]
    both = staff_client.get(URL, {"order": "site", "when": "later"})
    assert _shown(both) == [abdomen_late, scalp]  # 9 January and 8 February


def test_a_made_up_filter_or_order_falls_back_to_the_defaults(staff_client, clinic):
    first, second = _recall(clinic, -3), _recall(clinic, 100)
    response = staff_client.get(URL, {"when": "<script>", "order": "patient__family_name"})
    assert response.status_code == 200
    assert response.context["filters"] == {"when": "all", "order": "date"}
    assert _shown(response) == [first, second]
    assert "<script>" not in response.content.decode()


def test_pages_of_25_with_the_filter_and_order_kept_in_the_pager(staff_client, clinic):
    lesions = [_recall(clinic, 40 + i) for i in range(27)]
    first = staff_client.get(URL, {"when": "later"})
    assert _shown(first) == lesions[:25]
    body = first.content.decode()
    assert "Page 1 of 2 (27 follow-ups)" in body
    assert 'href="?when=later&amp;order=date&amp;page=2"' in body
    second = staff_client.get(URL, {"when": "later", "page": "2"})
    assert _shown(second) == lesions[25:]
    assert staff_client.get(URL, {"page": "99"}).context["page"].number == 2  # past the end: the last page
    assert staff_client.get(URL, {"page": "x"}).context["page"].number == 1


def test_the_audit_entry_names_only_the_page_shown(staff_client, clinic, monkeypatch):
    monkeypatch.setattr("portal.web.patients.views.FOLLOW_UP_PAGE_SIZE", 2)
    soonest, second, third = _recall(clinic, -3), _recall(clinic, 1), _recall(clinic, 90)
    staff_client.get(URL, {"page": "2"})
    entry = AuditEntry.objects.get(action="follow_up.list")
    assert entry.shown == {"patient": [str(third.patient.uuid)], "lesion": [str(third.uuid)]}
    text = json.dumps(entry.shown)
    for hidden in (soonest, second):
        assert str(hidden.uuid) not in text
        assert str(hidden.patient.uuid) not in text
        assert hidden.patient.family_name not in json.dumps(entry.shown)


def test_only_the_users_clinic(outside_client, staff_client, patient):
    LesionFactory(patient=patient, next_follow_up=TODAY + dt.timedelta(days=120))
    response = outside_client.get(URL)
    assert _shown(response) == []
    assert response.context["tabs"][0] == ("all", "All", 0)
    assert "Quackenbush" not in response.content.decode()
    assert "No follow-ups scheduled." in response.content.decode()
    assert "Quackenbush, Zelda" in staff_client.get(URL).content.decode()


def test_patients_are_sent_to_their_own_record(patient_client):
    assert patient_client.get(URL).status_code == 403


@pytest.mark.parametrize("n", [3, 30])
def test_query_count_does_not_grow_with_the_list(staff_client, clinic, n, django_assert_num_queries):
    for i in range(n):
        _recall(clinic, i - 1)
    staff_client.get(URL)
    # session, user, the page's count and its rows, their patients, the audit entry, the
    # filters' counts.
    with django_assert_num_queries(7):
        response = staff_client.get(URL, {"order": "site"})
    assert len(_shown(response)) == min(n, 25)


def test_the_table_keeps_its_headings_on_a_phone(staff_client, clinic):
    _recall(clinic, 2)
    body = staff_client.get(URL).content.decode()
    for label in ("Due", "Patient", "Body site", "Lesion status"):
        assert f'<td data-label="{label}">' in body
