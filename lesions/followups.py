"""Follow-up dates in words: overdue, due this week, scheduled. Pure functions, no queries."""

from __future__ import annotations

import datetime as dt

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


def group_by_patient(lesions: list, today: dt.date | None = None) -> dict[str, list[dict]]:
    """{'overdue': [...], 'due': [...]}: one entry per patient id, with their lesions due and
    the earliest date, soonest first, for the staff follow-up list."""
    today = today or timezone.localdate()
    groups: dict[str, dict[int, dict]] = {"overdue": {}, "due": {}}
    for lesion in lesions:
        state = follow_up_state(lesion.next_follow_up, today)
        if state not in groups:
            continue
        entry = groups[state].setdefault(
            lesion.patient_id, {"patient_id": lesion.patient_id, "lesions": [], "earliest": lesion.next_follow_up}
        )
        entry["lesions"].append(lesion)
        entry["earliest"] = min(entry["earliest"], lesion.next_follow_up)
    return {
        state: sorted(entries.values(), key=lambda e: (e["earliest"], e["patient_id"]))
        for state, entries in groups.items()
    }
