"""The one home of the risk rule: alert threshold, bands, the level every page colours by."""

from __future__ import annotations

import pytest
from django.test import override_settings

from lesions import guidance, risk, trend


@pytest.mark.parametrize(
    ("value", "threshold", "level"),
    [
        (None, 0.3, "none"),
        (0.29, 0.3, "low"),
        (0.3, 0.3, "moderate"),
        (0.49, 0.3, "moderate"),
        (0.5, 0.3, "high"),
        (0.79, 0.3, "high"),
        (0.8, 0.3, "very_high"),
        (0.1, None, "moderate"),  # no model metadata: no "low" claim
    ],
)
def test_level_bands_and_threshold(value, threshold, level):
    assert risk.level(value, threshold) == level
    assert trend.risk_level(value, threshold) == level


def test_alert_priority_bands_agree_with_risk_bands():
    for priority in range(0, 1001):
        band = risk.RiskBand.of(priority)
        low, high = risk.RiskBand.bounds(band)
        assert low <= priority < high
        assert band == risk.band_of(priority / 1000)


@pytest.mark.parametrize(
    ("value", "threshold", "expected"),
    [(0.2, 0.3, guidance.LOW), (0.4, 0.3, guidance.ELEVATED), (0.6, 0.3, guidance.HIGH), (0.9, None, guidance.LOW)],
)
def test_patient_guidance_follows_the_same_rule(value, threshold, expected):
    assert guidance.for_risk(value, threshold) is expected
    assert risk.is_alert(value, threshold) == (expected is not guidance.LOW)


def test_threshold_comes_from_the_configured_model_folder(tmp_path):
    with override_settings(DERMATRACK_MODEL_DIR=tmp_path):
        assert risk.model_info() is None
        assert risk.alert_threshold() is None
    threshold = risk.alert_threshold()
    assert threshold is not None
    assert threshold == risk.classifier().alert_threshold
