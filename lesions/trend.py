"""A lesion's trend across its examinations, as numbers and drawings: the progress chart
(server-rendered SVG, no JavaScript, no chart library), the change since the last
examination, and risk colours.

Pure functions over already-loaded rows: no queries here.
"""

from __future__ import annotations

import datetime as dt
import math
from dataclasses import dataclass, field
from decimal import Decimal

from django.utils import timezone

from lesions import risk as risk_rules


@dataclass
class Point:
    when: dt.datetime
    risk: float | None  # 0..1
    diameter: float | None  # mm


@dataclass
class Change:
    since: dt.datetime
    days: int
    risk_from: float | None = None
    risk_to: float | None = None
    diameter_from: float | None = None
    diameter_to: float | None = None
    crossed_threshold: str = ""  # "up", "down" or ""

    @property
    def risk_points(self) -> int | None:
        if self.risk_from is None or self.risk_to is None:
            return None
        return round((self.risk_to - self.risk_from) * 100)

    @property
    def risk_points_abs(self) -> int | None:
        return None if self.risk_points is None else abs(self.risk_points)

    @property
    def diameter_delta(self) -> float | None:
        if self.diameter_from is None or self.diameter_to is None:
            return None
        return round(self.diameter_to - self.diameter_from, 1)

    @property
    def worse(self) -> bool:
        return bool(
            (self.risk_points or 0) >= 10 or (self.diameter_delta or 0) >= 1.0 or self.crossed_threshold == "up"
        )


def risk_level(risk: float | None, threshold: float | None) -> str:
    """CSS class of a risk: none, low (below the alert threshold), moderate, high, very_high."""
    return risk_rules.level(risk, threshold)


def change_since_last(points: list[Point], threshold: float | None) -> Change | None:
    """Latest examination against the one before it (both need a date; either measure may be missing)."""
    if len(points) < 2:
        return None
    before, after = points[-2], points[-1]
    change = Change(
        since=before.when,
        days=(after.when - before.when).days,
        risk_from=before.risk,
        risk_to=after.risk,
        diameter_from=before.diameter,
        diameter_to=after.diameter,
    )
    if threshold is not None and before.risk is not None and after.risk is not None:
        if before.risk < threshold <= after.risk:
            change.crossed_threshold = "up"
        elif after.risk < threshold <= before.risk:
            change.crossed_threshold = "down"
    return change


@dataclass
class Chart:
    """One drawing of the progress chart in its own coordinates (the SVG's viewBox). Pages draw
    two: the wide one, and `narrow` for phones, whose viewBox is about as wide as a phone's
    screen so that its labels stay at least 11 CSS px tall there (issue 12, item 8; the wide
    one, scaled to 390 px, drew them 5 px tall)."""

    width: int = 640
    height: int = 260
    left: int = 48
    right: int = 52
    top: int = 28
    bottom: int = 36
    font_size: int = 11  # labels, in viewBox units
    label_gap: int = 70  # the least distance between two date labels' centres
    variant: str = "wide"
    risk_path: str = ""
    diameter_path: str = ""
    risk_dots: list[dict] = field(default_factory=list)
    diameter_dots: list[dict] = field(default_factory=list)
    risk_ticks: list[dict] = field(default_factory=list)
    diameter_ticks: list[dict] = field(default_factory=list)
    date_ticks: list[dict] = field(default_factory=list)
    threshold_y: float | None = None
    threshold_label: str = ""
    summary: str = ""
    narrow: Chart | None = None

    @property
    def plot_right(self) -> int:
        return self.width - self.right

    @property
    def plot_bottom(self) -> int:
        return self.height - self.bottom


def _nice_ceiling(value: float) -> float:
    if value <= 0:
        return 10.0
    magnitude = 10 ** math.floor(math.log10(value))
    for step in (1, 2, 2.5, 5, 10):
        if value <= step * magnitude:
            return step * magnitude
    return 10 * magnitude


def _narrow() -> Chart:
    """The phone drawing: a 320-unit viewBox shown 300 to 340 px wide on a 360 to 412 px
    screen, so 13-unit labels are 12 to 14 px there; at most three date labels."""
    return Chart(
        width=320, height=240, left=54, right=40, top=26, bottom=34, font_size=13, label_gap=90, variant="narrow"
    )


def progress_chart(points: list[Point], threshold: float | None) -> Chart | None:
    """Risk (left axis, 0 to 100 %) and diameter (right axis, mm) over time, with the alert
    threshold; the wide drawing, with the phone one as its `narrow`."""
    chart = _draw(points, threshold, Chart())
    if chart is not None:
        chart.narrow = _draw(points, threshold, _narrow())
    return chart


def _draw(points: list[Point], threshold: float | None, chart: Chart) -> Chart | None:
    points = [p for p in points if p.risk is not None or p.diameter is not None]
    if not points:
        return None
    x0, x1, y0, y1 = chart.left, chart.plot_right, chart.top, chart.plot_bottom
    start, end = points[0].when, points[-1].when
    span = (end - start).total_seconds()

    def x_of(when: dt.datetime) -> float:
        if span <= 0:
            return (x0 + x1) / 2
        return round(x0 + (when - start).total_seconds() / span * (x1 - x0), 1)

    def y_risk(risk: float) -> float:
        return round(y1 - max(0.0, min(1.0, risk)) * (y1 - y0), 1)

    diameters = [p.diameter for p in points if p.diameter is not None]
    d_max = _nice_ceiling(max(diameters) * 1.15) if diameters else 10.0

    def y_diam(d: float) -> float:
        return round(y1 - max(0.0, d) / d_max * (y1 - y0), 1)

    risk_xy = [(x_of(p.when), y_risk(p.risk), p) for p in points if p.risk is not None]
    diam_xy = [(x_of(p.when), y_diam(p.diameter), p) for p in points if p.diameter is not None]
    chart.risk_path = " ".join(f"{'M' if i == 0 else 'L'}{x},{y}" for i, (x, y, _) in enumerate(risk_xy))
    chart.diameter_path = " ".join(f"{'M' if i == 0 else 'L'}{x},{y}" for i, (x, y, _) in enumerate(diam_xy))
    chart.risk_dots = [
        {
            "x": x,
            "y": y,
            "label": f"{p.when:%Y-%m-%d}: risk {round(p.risk * 100)} %",  # type: ignore[operator]  # risk_xy: only points with a risk
            "level": risk_level(p.risk, threshold),
        }
        for x, y, p in risk_xy
    ]
    chart.diameter_dots = [
        {"x": x - 4, "y": y - 4, "label": f"{p.when:%Y-%m-%d}: diameter {p.diameter:g} mm"} for x, y, p in diam_xy
    ]
    chart.risk_ticks = [{"y": y_risk(v / 100), "label": f"{v} %"} for v in (0, 25, 50, 75, 100)]
    chart.diameter_ticks = [{"y": y_diam(d_max * f), "label": f"{d_max * f:g}"} for f in (0, 0.25, 0.5, 0.75, 1)]
    if threshold is not None:
        chart.threshold_y = y_risk(threshold)
        chart.threshold_label = f"alert threshold {round(threshold * 100)} %"
    # Date ticks: first, last and up to three between, never two labels on top of each other.
    candidates = [points[0].when] + [start + (end - start) * f / 4 for f in (1, 2, 3)] + [points[-1].when]
    used: list[float] = []
    labels: set[str] = set()
    fmt = "%Y-%m-%d" if span >= 3 * 86400 else "%m-%d %H:%M"
    for when in candidates if span > 0 else [start]:
        x, label = x_of(when), timezone.localtime(when).strftime(fmt)
        if label not in labels and all(abs(x - u) > chart.label_gap for u in used):
            used.append(x)
            labels.add(label)
            chart.date_ticks.append({"x": x, "label": label})
    last = points[-1]
    bits = [f"{len(points)} visit{'' if len(points) == 1 else 's'} from {start:%Y-%m-%d} to {end:%Y-%m-%d}."]
    if last.risk is not None:
        bits.append(f"Latest risk {round(last.risk * 100)} %.")
    if last.diameter is not None:
        bits.append(f"Latest diameter {last.diameter:g} mm.")
    if threshold is not None:
        bits.append(f"Alert threshold {round(threshold * 100)} %.")
    chart.summary = " ".join(bits)
    return chart


def as_float(value: Decimal | float | None) -> float | None:
    return None if value is None else float(value)
