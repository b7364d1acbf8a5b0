"""Follow-up dates in words: overdue, due this week, scheduled; the follow-up list's filters
(overdue, this month, later). Pure functions, no queries."""

from __future__ import annotations

import datetime as dt

from django.db import models
from django.utils import timezone

DUE_SOON_DAYS = 7


def follow_up_state(day: dt.date | None, today: dt.date | None = None) -> str:
    """'' (none set), 'overdue', 'due' (within a week) or 'scheduled'."""
    if day is None:
        return ""
    today = today or timezone.localdate()
    if day < today:
        return "overdue"
    return "due" if day <= today + dt.timedelta(days=DUE_SOON_DAYS) else "scheduled"


class Recall(models.TextChoices):
    """The follow-up list's filters: which scheduled recalls it shows."""

    ALL = "all", "All"
    OVERDUE = "overdue", "Overdue"
    THIS_MONTH = "month", "This month"
    LATER = "later", "Later"


class FollowUpOrder(models.TextChoices):
    """How the follow-up list is sorted (values are URL parameters)."""

    DATE = "date", "Date, soonest first"
    DATE_DESC = "-date", "Date, latest first"
    SITE = "site", "Body site (A to Z), then date"


def month_end(today: dt.date) -> dt.date:
    """The last day of today's calendar month."""
    first_of_next = (today.replace(day=1) + dt.timedelta(days=32)).replace(day=1)
    return first_of_next - dt.timedelta(days=1)


def recall_bounds(when: str, today: dt.date) -> tuple[dt.date | None, dt.date | None]:
    """(first, last) day of a filter, None for open-ended: overdue is before today, this month
    from today to the month's last day, later after it. The three never overlap."""
    end = month_end(today)
    bounds: dict[str, tuple[dt.date | None, dt.date | None]] = {
        Recall.ALL: (None, None),
        Recall.OVERDUE: (None, today - dt.timedelta(days=1)),
        Recall.THIS_MONTH: (today, end),
        Recall.LATER: (end + dt.timedelta(days=1), None),
    }
    return bounds[when]


def recall_of(day: dt.date, today: dt.date) -> str:
    """Which filter a follow-up date falls in (never 'all')."""
    if day < today:
        return Recall.OVERDUE
    return Recall.THIS_MONTH if day <= month_end(today) else Recall.LATER
