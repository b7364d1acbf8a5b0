"""The body map: front and back outlines as plain SVG shapes, one or more per body site,
and where each site's lesion markers go. Drawn by templates/lesions/partials/body_map.html;
no JavaScript. In the front view the patient's left is on the viewer's right, in the back
view on the viewer's left, as when facing or following the patient.
"""

from __future__ import annotations

from dataclasses import dataclass

from lesions.models import BodySite, Prediction, TriageDecision

WIDTH = 200  # one figure; the back view is drawn WIDTH + GAP to the right
GAP = 20
TOP = 16  # room for the "Front" and "Back" captions
HEIGHT = 420 + TOP


@dataclass(frozen=True)
class Shape:
    site: str
    view: str  # "front" or "back"
    kind: str  # "rect" or "ellipse"
    x: float  # rect: top-left; ellipse: centre
    y: float
    w: float  # rect: width and height; ellipse: radii
    h: float

    @property
    def centre(self) -> tuple[float, float]:
        if self.kind == "ellipse":
            return self.x, self.y
        return self.x + self.w / 2, self.y + self.h / 2

    @property
    def label(self) -> str:
        return BodySite(self.site).label


def _pair(left: str, right: str, kind: str, x_right_side: float, y: float, w: float, h: float) -> list[Shape]:
    """A left/right pair drawn on both views. `x_right_side` is where the part lies on the
    viewer's right (the patient's left in the front view)."""
    mirror = (WIDTH - x_right_side) if kind == "ellipse" else (WIDTH - x_right_side - w)
    return [
        Shape(left, "front", kind, x_right_side, y, w, h),
        Shape(right, "front", kind, mirror, y, w, h),
        Shape(left, "back", kind, mirror, y, w, h),
        Shape(right, "back", kind, x_right_side, y, w, h),
    ]


SHAPES: list[Shape] = [
    Shape(BodySite.SCALP, "back", "ellipse", 100, 40, 24, 28),
    Shape(BodySite.FACE, "front", "ellipse", 100, 46, 20, 21),
    Shape(BodySite.EAR, "front", "ellipse", 74, 44, 5, 9),
    Shape(BodySite.EAR, "front", "ellipse", 126, 44, 5, 9),
    Shape(BodySite.EAR, "back", "ellipse", 74, 44, 5, 9),
    Shape(BodySite.EAR, "back", "ellipse", 126, 44, 5, 9),
    Shape(BodySite.NECK, "front", "rect", 89, 68, 22, 15),
    Shape(BodySite.NECK, "back", "rect", 89, 68, 22, 15),
    Shape(BodySite.CHEST, "front", "rect", 66, 83, 68, 58),
    Shape(BodySite.ABDOMEN, "front", "rect", 68, 141, 64, 50),
    Shape(BodySite.GENITAL, "front", "rect", 84, 191, 32, 24),
    Shape(BodySite.UPPER_BACK, "back", "rect", 66, 83, 68, 58),
    Shape(BodySite.LOWER_BACK, "back", "rect", 68, 141, 64, 46),
    Shape(BodySite.BUTTOCKS, "back", "rect", 68, 187, 64, 30),
    *_pair(BodySite.LEFT_UPPER_ARM, BodySite.RIGHT_UPPER_ARM, "rect", 136, 86, 18, 70),
    *_pair(BodySite.LEFT_FOREARM, BodySite.RIGHT_FOREARM, "rect", 140, 158, 16, 62),
    *_pair(BodySite.LEFT_HAND, BodySite.RIGHT_HAND, "ellipse", 149, 235, 10, 14),
    *_pair(BodySite.LEFT_THIGH, BodySite.RIGHT_THIGH, "rect", 102, 217, 28, 88),
    *_pair(BodySite.LEFT_LOWER_LEG, BodySite.RIGHT_LOWER_LEG, "rect", 104, 307, 24, 78),
    *_pair(BodySite.LEFT_FOOT, BodySite.RIGHT_FOOT, "ellipse", 117, 397, 14, 9),
]

# Where a site's markers go: the first shape of the site in this view order.
_MARKER_VIEW: dict[str, str] = {
    BodySite.SCALP: "back",
    BodySite.UPPER_BACK: "back",
    BodySite.LOWER_BACK: "back",
    BodySite.BUTTOCKS: "back",
}


def _offset(view: str) -> float:
    return 0 if view == "front" else WIDTH + GAP


def shapes() -> list[dict]:
    out = []
    for s in SHAPES:
        dx = _offset(s.view)
        out.append(
            {
                "site": s.site,
                "label": s.label,
                "view": s.view,
                "kind": s.kind,
                "x": s.x + dx,
                "y": s.y + TOP,
                "w": s.w,
                "h": s.h,
                "cx": s.x + dx,  # ellipses
                "cy": s.y + TOP,
            }
        )
    return out


def marker_anchor(site: str) -> tuple[float, float]:
    view = _MARKER_VIEW.get(site, "front")
    shape = next((s for s in SHAPES if s.site == site and s.view == view), None)
    shape = shape or next(s for s in SHAPES if s.site == site)
    cx, cy = shape.centre
    if shape.site == BodySite.EAR:  # the patient's ears: draw on the first one
        cx = shape.x
    return cx + _offset(shape.view), cy + TOP


def markers(items: list[dict]) -> list[dict]:
    """items: dicts with at least `site`; returns them with x, y, spread when a site has several."""
    per_site: dict[str, int] = {}
    out = []
    for item in items:
        n = per_site.get(item["site"], 0)
        per_site[item["site"]] = n + 1
        x, y = marker_anchor(item["site"])
        # several lesions on one site: a small zig-zag so none hides another
        out.append({**item, "x": round(x + (0, 10, -10)[n % 3], 1), "y": round(y + (n // 3) * 10, 1)})
    return out


# After a dermatologist's decision a marker shows what was decided, no longer the risk that
# raised the alert: a dismissed lesion is not "flagged" any more (issue 12).
DECIDED_STATES: dict[str, tuple[str, str]] = {
    TriageDecision.Decision.DISMISS: ("reviewed", "reviewed, dismissed"),
    TriageDecision.Decision.FOLLOW_UP: ("reviewed", "reviewed, follow-up"),
    TriageDecision.Decision.BIOPSY: ("action", "reviewed, biopsy or excision ordered"),
    TriageDecision.Decision.REFER: ("action", "reviewed, referred"),
}


def decided_state(
    *, decision: TriageDecision | None, latest_prediction: Prediction | None, has_open_alert: bool
) -> tuple[str, str] | None:
    """(marker level, words) when a decision settles the lesion's latest result, else None (the
    marker shows the risk). It does when it was made after the latest prediction and no alert
    is waiting on the lesion: a later examination, or one still awaiting triage, shows its risk."""
    if decision is None or has_open_alert:
        return None
    if latest_prediction is not None and decision.decided_at < latest_prediction.created_at:
        return None
    return DECIDED_STATES.get(decision.decision)
