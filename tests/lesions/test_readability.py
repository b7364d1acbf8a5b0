"""Readable everywhere (issue 12, item 8), the parts a page's HTML shows: classes in words with
their code beside them, and a progress chart drawn for a phone's width. The real-browser checks
at 390 px (label sizes, table headings, zoom) are in tests/browser/test_readability.py.

Before the change the pages showed bare codes (`nv`, `mel`) and the one 640-unit chart scaled
to 5 px labels on a phone."""

from __future__ import annotations

import datetime as dt
import itertools
import re
from decimal import Decimal

import pytest
from django.urls import reverse
from django.utils import timezone

from lesions import classes, trend
from tests.factories import PredictionFactory

MODEL = {"name": "test model", "version": "9.9", "alert_threshold": 0.3}


@pytest.fixture(autouse=True)
def _model_info(monkeypatch):
    monkeypatch.setattr("lesions.risk.model_info", lambda: MODEL)


def _scored(lesion, days_ago=1, top="nv", risk="0.200000", diameter="4.0"):
    return PredictionFactory(
        examination__lesion=lesion,
        examination__captured_at=timezone.now() - dt.timedelta(days=days_ago),
        examination__diameter_mm=Decimal(diameter),
        malignancy_risk=risk,
        top_class=top,
        probabilities={"nv": 0.7, "mel": 0.2, "bkl": 0.1},
    )


def test_class_labels_name_the_class_and_keep_the_code():
    assert classes.class_label("nv") == "Melanocytic nevus (nv)"
    assert classes.class_label("mel") == "Melanoma (mel)"
    assert classes.class_label("akiec") == "Actinic keratosis / intraepithelial carcinoma (Bowen's disease) (akiec)"
    assert classes.class_label("xyz") == "xyz"  # unknown: as it is


def test_the_models_own_names_come_first(monkeypatch):
    monkeypatch.setattr("lesions.risk.model_info", lambda: {**MODEL, "class_names": {"nv": "naevus", "new": "new one"}})
    assert classes.class_label("nv") == "Naevus (nv)"
    assert classes.class_label("new") == "New one (new)"
    assert classes.class_label("mel") == "Melanoma (mel)"


def test_the_committed_models_metadata_names_its_classes():
    from django.conf import settings

    from inference.classifier import model_info

    names = (model_info(settings.DERMATRACK_MODEL_DIR) or {}).get("class_names")
    assert names["nv"] == "melanocytic nevus"


def test_the_examination_page_names_each_class(clinician_client, lesion):
    exam = _scored(lesion).examination
    page = clinician_client.get(reverse("lesions:examination-detail", kwargs={"examination_uuid": exam.uuid}))
    rows = re.findall(r'<th scope="row">([^<]+)</th>', page.content.decode())
    assert rows == ["Melanocytic nevus (nv)", "Melanoma (mel)", "Benign keratosis-like lesion (bkl)"]


def test_the_lesion_and_compare_pages_name_the_top_class(clinician_client, lesion):
    _scored(lesion, days_ago=30, top="mel", risk="0.500000")
    _scored(lesion, days_ago=1, top="nv")
    page = clinician_client.get(reverse("lesions:lesion-detail", kwargs={"lesion_uuid": lesion.uuid})).content.decode()
    assert '<span class="muted">Melanocytic nevus (nv)</span>' in page
    assert '<span class="muted">Melanoma (mel)</span>' in page
    compare = clinician_client.get(reverse("lesions:lesion-compare", kwargs={"lesion_uuid": lesion.uuid}))
    body = compare.content.decode()
    assert "Melanoma (mel)" in body
    assert "Melanocytic nevus (nv)" in body


def _points(days: list[int]) -> list[trend.Point]:
    now = timezone.now()
    return [trend.Point(now - dt.timedelta(days=d), 0.1 + i / 10, 4.0 + i) for i, d in enumerate(days)]


def test_the_chart_has_a_phone_drawing_with_larger_fewer_labels():
    chart = trend.progress_chart(_points([400, 300, 200, 120, 60, 1]), 0.3)
    narrow = chart.narrow
    assert (chart.width, chart.font_size) == (640, 11)
    assert narrow.width == 320
    # Shown 324 px wide at 390 px (main and card padding), 13 units are 13 px or more.
    assert narrow.font_size * 324 / narrow.width >= 11
    assert 2 <= len(narrow.date_ticks) <= 3
    xs = [t["x"] for t in narrow.date_ticks]
    assert all(b - a > narrow.label_gap for a, b in itertools.pairwise(xs))
    for tick in narrow.date_ticks:  # each label inside the drawing (about 0.6 em a character)
        half = len(tick["label"]) * 0.6 * narrow.font_size / 2
        assert tick["x"] - half >= 0
        assert tick["x"] + half <= narrow.width
    assert narrow.summary == chart.summary
    assert len(narrow.risk_dots) == len(chart.risk_dots) == 6


def test_the_lesion_page_draws_both_and_each_has_its_own_title(clinician_client, lesion):
    _scored(lesion, days_ago=90)
    _scored(lesion, days_ago=1)
    body = clinician_client.get(reverse("lesions:lesion-detail", kwargs={"lesion_uuid": lesion.uuid})).content.decode()
    assert body.count('<svg class="chart') == 2
    assert '<svg class="chart chart-narrow" viewBox="0 0 320 240"' in body
    assert 'font-size="13"' in body
    for variant in ("wide", "narrow"):
        assert body.count(f'id="chart-title-{variant}"') == 1
