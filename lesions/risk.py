"""What a malignancy risk means in the portal: the one home for the rule.

The model (its folder comes from settings) gives a calibrated risk between 0 and 1 and a
validated alert threshold. A risk at or above the threshold raises an alert; an alerted risk
is in one of three bands, which the queue filters on and every page colours by.
"""

from __future__ import annotations

from collections.abc import Iterable
from functools import lru_cache

from django.conf import settings
from django.db import models

from inference.classifier import LesionClassifier, get_classifier
from inference.classifier import model_info as _model_info
from inference.image_check import ImageChecker

HIGH_FROM = 0.5  # bands of the risk, 0 to 1
VERY_HIGH_FROM = 0.8


class RiskBand(models.TextChoices):
    """Bands of a risk, for filters and colours (values are CSS classes and URL filter values)."""

    MODERATE = "moderate", "Moderate (below 50 %)"
    HIGH = "high", "High (50 to 79 %)"
    VERY_HIGH = "very_high", "Very high (80 % and above)"

    @classmethod
    def bounds(cls, band: str) -> tuple[int, int]:
        """Inclusive lower, exclusive upper bound in thousandths (`Alert.priority`)."""
        high, very_high = round(HIGH_FROM * 1000), round(VERY_HIGH_FROM * 1000)
        table: dict[str, tuple[int, int]] = {
            cls.MODERATE: (0, high),
            cls.HIGH: (high, very_high),
            cls.VERY_HIGH: (very_high, 1001),
        }
        return table[band]

    @classmethod
    def of(cls, priority: int) -> RiskBand:
        """The band of a risk in thousandths (`Alert.priority`)."""
        return band_of(priority / 1000)


def band_of(risk: float) -> RiskBand:
    if risk >= VERY_HIGH_FROM:
        return RiskBand.VERY_HIGH
    return RiskBand.HIGH if risk >= HIGH_FROM else RiskBand.MODERATE


def is_alert(risk: float, threshold: float | None) -> bool:
    """The alert rule. With no threshold (no model metadata) nothing is an alert."""
    return threshold is not None and risk >= threshold


def level(risk: float | None, threshold: float | None) -> str:
    """CSS class of a risk: none, low (below the alert threshold), or its band."""
    if risk is None:
        return "none"
    if threshold is not None and not is_alert(risk, threshold):
        return "low"
    return band_of(risk).value


def classifier() -> LesionClassifier:
    """The process-wide classifier of the configured model folder (loaded once per process)."""
    return get_classifier(settings.DERMATRACK_MODEL_DIR)


@lru_cache(maxsize=2)
def image_checker(clf: LesionClassifier) -> ImageChecker:
    """The image check of a loaded classifier (its statistics are read once per process)."""
    return ImageChecker(clf)


def model_info() -> dict | None:
    """Name, version, validation figures and threshold of the configured model, for pages."""
    return _model_info(settings.DERMATRACK_MODEL_DIR)


def alert_threshold() -> float | None:
    threshold = (model_info() or {}).get("alert_threshold")
    return None if threshold is None else float(threshold)


def visit_risk(image_risks: Iterable[float | None]) -> float | None:
    """A visit's result from its images' risks: the highest (None for an image not analysed or
    not assessable). The highest, not the mean: one worrying view of a lesion is enough to look
    at it, and averaging would let a blurred or off-centre photograph dilute a clear one."""
    risks = [r for r in image_risks if r is not None]
    return max(risks) if risks else None
