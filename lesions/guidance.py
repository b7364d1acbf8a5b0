"""What a patient reads about a result: plain language, never the model's raw output alone.

A dermatologist's decision, once made, speaks louder than the computer's estimate; before one
exists the patient reads what the estimate means for them, how soon something happens and
what signs to watch for (the ABCDE rule).
"""

from __future__ import annotations

import datetime as dt
from dataclasses import dataclass

from lesions import risk as risk_rules


@dataclass(frozen=True)
class Guidance:
    level: str  # pending, failed, low, elevated, high (anchors on the guidance page)
    short: str  # a few words, e.g. for the body map
    headline: str
    what_to_do: str
    how_soon: str


PENDING = Guidance(
    "pending",
    "being checked",
    "Your image is being checked.",
    "Nothing to do yet. The result appears here once the check has run, usually within minutes.",
    "—",
)
FAILED = Guidance(
    "failed",
    "could not be checked",
    "Your image could not be checked by the computer.",
    "Your clinic has been told and may ask for a new photograph. A dermatologist can still review the spot.",
    "Your clinic will contact you if they need a new image.",
)
RETAKE = Guidance(
    "retake",
    "cannot assess, please retake",
    "Cannot assess: the computer could not judge this image. Please retake it.",
    "Your clinic may ask for a new photograph of this spot. A dermatologist can still review it.",
    "Your clinic will contact you if they need a new image.",
)
LOW = Guidance(
    "low",
    "no warning signs found",
    "The computer check found no warning signs in this image.",
    "Keep checking your skin once a month using the ABCDE rule below, and keep your follow-up appointment.",
    "At your next scheduled follow-up.",
)
ELEVATED = Guidance(
    "elevated",
    "flagged for a dermatologist's review",
    "The computer check asked a dermatologist to take a closer look at this spot.",
    "You do not need to do anything now: a dermatologist reviews every flagged image and decides what happens next. "
    "Many flagged spots turn out to be harmless.",
    "A dermatologist reviews flagged images within a few working days; the clinic contacts you if you need to come in. "
    "If you have heard nothing within two weeks, call your clinic.",
)
HIGH = Guidance(
    "high",
    "flagged for a prompt review",
    "The computer check found features that a dermatologist should review promptly.",
    "A dermatologist has been alerted and will decide what happens next. Do not wait for your routine appointment "
    "if the spot bleeds, itches or changes quickly: call your clinic.",
    "Your clinic aims to contact you within a few working days.",
)


def for_risk(
    risk: float | None, threshold: float | None, status: str = "done", assessable: bool | None = None
) -> Guidance:
    if status == "failed":
        return FAILED
    if assessable is False:
        return RETAKE
    if risk is None:
        return PENDING
    if not risk_rules.is_alert(risk, threshold):
        return LOW
    return ELEVATED if risk_rules.band_of(risk) == risk_rules.RiskBand.MODERATE else HIGH


def decision_text(decision, next_follow_up: dt.date | None = None) -> str:
    """The dermatologist's decision, in words a patient understands."""
    if decision is None:
        return ""
    kind = decision.decision
    if kind == "biopsy":
        return (
            "Your dermatologist recommends removing this spot, or a small sample of it, so that it can be examined "
            "under a microscope. The clinic will arrange an appointment with you."
        )
    if kind == "refer":
        return (
            "Your dermatologist has referred you to a specialist centre for this spot. The centre or your clinic will "
            "contact you with an appointment."
        )
    if kind == "follow_up":
        when = f" (around {next_follow_up:%d %B %Y})" if next_follow_up else ""
        months = decision.follow_up_months
        return (
            f"Your dermatologist reviewed the image and would like to see this spot again in {months} "
            f"month{'s' if months != 1 else ''}{when}. Until then, check it monthly with the ABCDE rule."
        )
    return (
        "Your dermatologist reviewed the image and found no reason for concern at this time. Keep checking your skin "
        "monthly with the ABCDE rule."
    )


ABCDE = [
    ("A", "Asymmetry", "One half of the spot does not match the other half."),
    ("B", "Border", "The edge is ragged, notched, blurred or irregular."),
    ("C", "Colour", "The colour is uneven: several shades of brown or black, or patches of red, white or blue."),
    ("D", "Diameter", "The spot is larger than 6 mm across (about the size of a pencil eraser), or growing."),
    ("E", "Evolving", "The spot changes in size, shape, colour or height, or starts to itch, bleed or crust."),
]
