"""Display values: choice labels, dates in a user's time zone, and their way back in.

A real instance shows (``sysparm_display_value=true|all``) a choice field by its label, a date in
the session user's time zone and date format, and a reference by the referenced record's display
field; with ``sysparm_input_display_value=true`` it reads writes the same way.
"""

from __future__ import annotations

from datetime import UTC, datetime
from zoneinfo import ZoneInfo, ZoneInfoNotFoundError

FMT = "%Y-%m-%d %H:%M:%S"
# The time zone of a user whose time_zone is empty (the system property glide.sys.default.tz);
# a new instance ships with America/Los_Angeles.
SYSTEM_TZ = "America/Los_Angeles"

_IMPACT = {"1": "1 - High", "2": "2 - Medium", "3": "3 - Low"}
_TASK_CHOICES: dict[str, dict[str, str]] = {
    "impact": _IMPACT,
    "urgency": _IMPACT,
    "priority": {
        "1": "1 - Critical",
        "2": "2 - High",
        "3": "3 - Moderate",
        "4": "4 - Low",
        "5": "5 - Planning",
    },
}
_INCIDENT_STATE = {
    "1": "New",
    "2": "In Progress",
    "3": "On Hold",
    "6": "Resolved",
    "7": "Closed",
    "8": "Canceled",
}
CHOICES: dict[str, dict[str, dict[str, str]]] = {
    "incident": {
        **_TASK_CHOICES,
        "state": _INCIDENT_STATE,
        "incident_state": _INCIDENT_STATE,
        "hold_reason": {
            "1": "Awaiting Caller",
            "3": "Awaiting Problem",
            "4": "Awaiting Vendor",
            "5": "Awaiting Change",
        },
    },
    "change_request": {
        **_TASK_CHOICES,
        "state": {
            "-5": "New",
            "-4": "Assess",
            "-3": "Authorize",
            "-2": "Scheduled",
            "-1": "Implement",
            "0": "Review",
            "3": "Closed",
            "4": "Canceled",
        },
        "type": {"standard": "Standard", "normal": "Normal", "emergency": "Emergency"},
    },
    "problem": {
        **_TASK_CHOICES,
        "state": {
            "101": "New",
            "102": "Assess",
            "103": "Root Cause Analysis",
            "104": "Fix in Progress",
            "106": "Resolved",
            "107": "Closed",
        },
        "resolution_code": {
            "fix_applied": "Fix Applied",
            "risk_accepted": "Risk Accepted",
            "canceled": "Canceled",
            "duplicate": "Duplicate",
        },
    },
}
JOURNAL_LABELS = {"comments": "Additional comments", "work_notes": "Work notes"}


def zone(name: str) -> ZoneInfo:
    """The user's zone; an empty or unknown name falls back to the system time zone."""
    try:
        return ZoneInfo(name or SYSTEM_TZ)
    except (ZoneInfoNotFoundError, ValueError):
        return ZoneInfo(SYSTEM_TZ)


def choice_label(table: str, field: str, value: str) -> str:
    return CHOICES.get(table, {}).get(field, {}).get(value, value)


def choice_value(table: str, field: str, given: str) -> str:
    """A label (case-insensitive) back to its value; values and unknown text pass through."""
    choices = CHOICES.get(table, {}).get(field, {})
    if given in choices:
        return given
    for value, label in choices.items():
        if label.lower() == given.strip().lower():
            return value
    return given


def utc_to_local(value: str, tz: str) -> str:
    """``YYYY-MM-DD HH:MM:SS`` in UTC to the same format in ``tz`` (other text unchanged)."""
    try:
        t = datetime.strptime(value, FMT).replace(tzinfo=UTC)
    except ValueError:
        return value
    return t.astimezone(zone(tz)).strftime(FMT)


def local_to_utc(value: str, tz: str) -> str:
    try:
        t = datetime.strptime(value.strip(), FMT).replace(tzinfo=zone(tz))
    except ValueError:
        return value
    return t.astimezone(UTC).strftime(FMT)


def journal_text(entries: list[tuple[str, str, str, str]], tz: str) -> str:
    """A journal field's display text: newest entry first, each as the form shows it.

    ``entries`` are (created_on UTC, author display name, element, value) tuples.
    """
    parts = [
        f"{utc_to_local(on, tz)} - {who} ({JOURNAL_LABELS.get(el, el)})\n{value}\n\n"
        for on, who, el, value in sorted(reversed(entries), key=lambda e: e[0], reverse=True)
    ]
    return "".join(parts)
