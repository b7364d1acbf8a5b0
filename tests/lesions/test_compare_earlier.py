"""Comparing examinations (issue 12, item 9): an examination is only ever compared with an
earlier one. Before the change the oldest examination, opened from its alert ("Compare with
earlier examinations"), came up with the "Earlier" picker on itself, and `a` = `b` compared it
with itself."""

from __future__ import annotations

import datetime as dt

from django.urls import reverse
from django.utils import timezone

from lesions.models import Alert
from tests.factories import AlertFactory, PredictionFactory


def _exam(lesion, days_ago: int):
    return PredictionFactory(
        examination__lesion=lesion, examination__captured_at=timezone.now() - dt.timedelta(days=days_ago)
    ).examination


def _compare(client, lesion, **query):
    return client.get(reverse("lesions:lesion-compare", kwargs={"lesion_uuid": lesion.uuid}), query)


def _sides(response):
    return [s["exam"] for s in response.context["sides"]]


def test_the_oldest_examination_says_there_is_no_earlier_one(clinician_client, lesion):
    oldest, middle, latest = (
        _exam(
            lesion,
            90,
        ),
        _exam(lesion, 30),
        _exam(lesion, 1),
    )
    response = _compare(clinician_client, lesion, b=oldest.uuid)
    assert _sides(response) == [oldest]
    assert response.context["a"] is None
    body = response.content.decode()
    assert "there is no earlier examination to compare it with" in body
    assert '<option value="" selected>Choose an earlier examination</option>' in body
    # ... and offers the later ones, each with the oldest on the left.
    for later in (middle, latest):
        assert f'href="?a={oldest.uuid}&amp;b={later.uuid}"' in body


def test_an_examination_is_never_compared_with_itself(clinician_client, lesion):
    oldest, latest = _exam(lesion, 90), _exam(lesion, 1)
    assert _sides(_compare(clinician_client, lesion, a=latest.uuid, b=latest.uuid)) == [oldest, latest]
    alone = _compare(clinician_client, lesion, a=oldest.uuid, b=oldest.uuid)
    assert _sides(alone) == [oldest]
    assert alone.context["change"] is None


def test_a_pair_asked_the_wrong_way_round_is_put_in_order(clinician_client, lesion):
    oldest, latest = _exam(lesion, 90), _exam(lesion, 1)
    response = _compare(clinician_client, lesion, a=latest.uuid, b=oldest.uuid)
    assert _sides(response) == [oldest, latest]
    assert response.context["change"].days == 89


def test_the_alert_page_offers_a_comparison_only_when_there_is_an_earlier_examination(clinician_client, lesion):
    first = AlertFactory(prediction=_exam(lesion, 60).predictions.get())
    page = clinician_client.get(reverse("lesions:alert-triage", kwargs={"alert_uuid": first.uuid})).content.decode()
    assert "Compare with earlier examinations" not in page
    assert "No earlier examination of this lesion to compare with." in page
    Alert.objects.filter(pk=first.pk).update(status=Alert.Status.TRIAGED)  # one open alert per lesion
    second = AlertFactory(prediction=_exam(lesion, 2).predictions.get())
    page = clinician_client.get(reverse("lesions:alert-triage", kwargs={"alert_uuid": second.uuid})).content.decode()
    assert "Compare with earlier examinations" in page
