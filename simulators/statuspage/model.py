"""Statuspage resources as the v1 API renders them: enumerations, defaults, times, ids and the
Rails-style form bodies the API accepts beside JSON.

Field lists follow the spec's ``Page``, ``Component``, ``Incident`` and ``IncidentUpdate``
schemas plus ``backfilled`` (present in recorded payloads, missing from the spec).
"""

from __future__ import annotations

import re
import secrets
from collections.abc import Iterable
from datetime import UTC, date, datetime
from typing import Any

from simulators.base import SimHTTPError

Record = dict[str, Any]

REALTIME_STATUSES = ("investigating", "identified", "monitoring", "resolved")
SCHEDULED_STATUSES = ("scheduled", "in_progress", "verifying", "completed")
INCIDENT_STATUSES = REALTIME_STATUSES + SCHEDULED_STATUSES
IMPACTS = ("none", "maintenance", "minor", "major", "critical")
COMPONENT_STATUSES = (
    "operational", "under_maintenance", "degraded_performance", "partial_outage", "major_outage",
)  # fmt: skip
# Which impact a component status implies, and how bad each impact is.
IMPACT_OF_STATUS = {
    "operational": "none", "under_maintenance": "maintenance", "degraded_performance": "minor",
    "partial_outage": "major", "major_outage": "critical",
}  # fmt: skip
IMPACT_RANK = {"none": 0, "maintenance": 1, "minor": 2, "major": 3, "critical": 4}
# The page's status indicator (webhook ``page`` block) and its description.
INDICATOR_TEXT = {
    "none": "All Systems Operational",
    "maintenance": "Service Under Maintenance",
    "minor": "Minor Service Outage",
    "major": "Partial System Outage",
    "critical": "Major Service Outage",
}
WEBHOOK_DOCS = "http://doers.statuspage.io/customer-notifications/webhooks/"

PAGE_WRITABLE = (
    "name", "domain", "subdomain", "url", "branding", "css_body_background_color",
    "css_font_color", "css_light_font_color", "css_greens", "css_yellows", "css_oranges",
    "css_reds", "css_blues", "css_border_color", "css_graph_color", "css_link_color",
    "css_no_data", "hidden_from_search", "viewers_must_be_team_members",
    "allow_page_subscribers", "allow_incident_subscribers", "allow_email_subscribers",
    "allow_sms_subscribers", "allow_rss_atom_feeds", "allow_webhook_subscribers",
    "notifications_from_email", "time_zone", "notifications_email_footer",
)  # fmt: skip
COMPONENT_WRITABLE = (
    "name", "description", "status", "group_id", "showcase", "only_show_if_degraded",
    "start_date",
)  # fmt: skip
BOOLEAN_FIELDS = {
    "hidden_from_search", "viewers_must_be_team_members", "allow_page_subscribers",
    "allow_incident_subscribers", "allow_email_subscribers", "allow_sms_subscribers",
    "allow_rss_atom_feeds", "allow_webhook_subscribers", "showcase", "only_show_if_degraded",
    "deliver_notifications", "wants_twitter_update", "backfilled", "scheduled_remind_prior",
    "scheduled_auto_in_progress", "scheduled_auto_completed", "scheduled_auto_transition",
    "auto_transition_to_maintenance_state", "auto_transition_to_operational_state",
    "auto_transition_deliver_notifications_at_start",
    "auto_transition_deliver_notifications_at_end", "auto_tweet_at_beginning",
    "auto_tweet_on_completion", "auto_tweet_on_creation", "auto_tweet_one_hour_before",
}  # fmt: skip
INCIDENT_FLAGS = (
    "scheduled_remind_prior", "scheduled_auto_in_progress", "scheduled_auto_completed",
    "auto_transition_to_maintenance_state", "auto_transition_to_operational_state",
    "auto_transition_deliver_notifications_at_start",
    "auto_transition_deliver_notifications_at_end",
)  # fmt: skip

_ID_ALPHABET = "abcdefghijklmnopqrstuvwxyz0123456789"


def now() -> str:
    """The current time as the API writes it: UTC, milliseconds, ``Z``."""
    return format_time(datetime.now(UTC))


def format_time(value: datetime) -> str:
    value = value.astimezone(UTC)
    return value.strftime("%Y-%m-%dT%H:%M:%S.") + f"{value.microsecond // 1000:03d}Z"


def parse_time(value: Any, field: str) -> str | None:
    """An ISO 8601 date-time from a request (any offset), normalised; None stays None."""
    if value is None or value == "":
        return None
    try:
        parsed = datetime.fromisoformat(str(value))
    except ValueError:
        raise SimHTTPError(422, f"{field} is not a valid date-time: {value!r}") from None
    if parsed.tzinfo is None:
        parsed = parsed.replace(tzinfo=UTC)
    return format_time(parsed)


def parse_date(value: Any, field: str) -> str | None:
    if value is None or value == "":
        return None
    try:
        return date.fromisoformat(str(value)).isoformat()
    except ValueError:
        raise SimHTTPError(422, f"{field} is not a valid date: {value!r}") from None


def new_id(taken: Iterable[str] = (), length: int = 12) -> str:
    """A 12-character lowercase alphanumeric id, like ``p31zjtct2jer``."""
    used = set(taken)
    while True:
        candidate = "".join(secrets.choice(_ID_ALPHABET) for _ in range(length))
        if candidate not in used:
            return candidate


def page_defaults(page_id: str, ts: str) -> Record:
    return {
        "id": page_id, "created_at": ts, "updated_at": ts, "name": "Example Status",
        "page_description": None, "headline": None, "branding": "basic",
        "subdomain": page_id, "domain": None, "url": None, "support_url": None,
        "hidden_from_search": False, "allow_page_subscribers": True,
        "allow_incident_subscribers": True, "allow_email_subscribers": True,
        "allow_sms_subscribers": True, "allow_rss_atom_feeds": True,
        "allow_webhook_subscribers": True, "notifications_from_email": None,
        "notifications_email_footer": None, "activity_score": 0,
        "twitter_username": None, "viewers_must_be_team_members": False,
        "ip_restrictions": None, "city": None, "state": None, "country": None,
        "time_zone": "Etc/UTC", "css_body_background_color": "#ffffff",
        "css_font_color": "#333333", "css_light_font_color": "#757575",
        "css_greens": "#2fcc66", "css_yellows": "#f1c40f", "css_oranges": "#e67e22",
        "css_blues": "#3498db", "css_reds": "#e74c3c", "css_border_color": "#ecf0f1",
        "css_graph_color": "#3498db", "css_link_color": "#3498db", "css_no_data": "#b3bac5",
        "favicon_logo": None, "transactional_logo": None, "hero_cover": None,
        "email_logo": None, "twitter_logo": None,
    }  # fmt: skip


def component_defaults(component_id: str, page_id: str, ts: str, position: int) -> Record:
    return {
        "id": component_id, "page_id": page_id, "group_id": None, "created_at": ts,
        "updated_at": ts, "group": False, "name": "", "description": None,
        "position": position, "status": "operational", "showcase": True,
        "only_show_if_degraded": False,
        "automation_email": f"component+{component_id}@notifications.statuspage.io",
        "start_date": None,
    }  # fmt: skip


def incident_defaults(incident_id: str, page_id: str, ts: str) -> Record:
    """Every public Incident field except ``components`` (rendered from ``component_ids``)."""
    return {
        "id": incident_id, "page_id": page_id, "name": "", "status": "investigating",
        "impact": "none", "impact_override": None, "created_at": ts, "updated_at": ts,
        "monitoring_at": None, "resolved_at": None, "shortlink": shortlink(),
        "postmortem_ignored": False, "postmortem_body": None,
        "postmortem_body_last_updated_at": None, "postmortem_published_at": None,
        "postmortem_notified_subscribers": False, "postmortem_notified_twitter": False,
        "backfilled": False, "scheduled_for": None, "scheduled_until": None,
        "scheduled_remind_prior": False, "scheduled_reminded_at": None,
        "scheduled_auto_in_progress": False, "scheduled_auto_completed": False,
        "auto_transition_to_maintenance_state": False,
        "auto_transition_to_operational_state": False,
        "auto_transition_deliver_notifications_at_start": False,
        "auto_transition_deliver_notifications_at_end": False,
        "reminder_intervals": None, "metadata": {}, "incident_updates": [],
    }  # fmt: skip


def update_defaults(update_id: str, incident_id: str, ts: str) -> Record:
    return {
        "id": update_id, "incident_id": incident_id, "status": "investigating", "body": "",
        "created_at": ts, "updated_at": ts, "display_at": ts, "affected_components": [],
        "deliver_notifications": True, "custom_tweet": None, "tweet_id": None,
        "twitter_updated_at": None, "wants_twitter_update": False,
    }  # fmt: skip


def shortlink() -> str:
    return "http://stspg.io/" + new_id(length=9)


def worst_impact(impacts: Iterable[str]) -> str:
    return max(impacts, key=lambda i: IMPACT_RANK.get(i, 0), default="none")


# ---------------------------------------------------------------------------------------------
# Request bodies


_KEY = re.compile(r"^([^\[\]]+)((?:\[[^\[\]]*\])*)$")


def parse_rails_form(pairs: list[tuple[str, str]]) -> Record:
    """``incident[name]=x&incident[component_ids][]=a&incident[components][a]=major_outage``
    -> ``{"incident": {"name": "x", "component_ids": ["a"], "components": {"a": ...}}}``.

    Booleans arrive as ``true``/``false``/``1``/``0`` and are converted for known boolean fields.
    """
    root: Record = {}
    for key, value in pairs:
        match = _KEY.match(key)
        if not match:
            raise SimHTTPError(400, f"Bad request: cannot parse form key {key!r}")
        names = [match.group(1), *re.findall(r"\[([^\[\]]*)\]", match.group(2))]
        node: Any = root
        for index, name in enumerate(names):
            last = index == len(names) - 1
            if name == "":
                if not last or not isinstance(node, list):
                    raise SimHTTPError(400, f"Bad request: unsupported form key {key!r}")
                node.append(value)
                break
            if not isinstance(node, dict):
                raise SimHTTPError(400, f"Bad request: conflicting form key {key!r}")
            if last:
                node[name] = _form_scalar(name, value)
                break
            want_list = names[index + 1] == ""
            child = node.get(name)
            if not isinstance(child, list if want_list else dict):
                child = [] if want_list else {}
                node[name] = child
            node = child
    return root


def _form_scalar(name: str, value: str) -> Any:
    if name in BOOLEAN_FIELDS and value.lower() in ("true", "false", "1", "0"):
        return value.lower() in ("true", "1")
    return value


def as_bool(value: Any, field: str) -> bool:
    if isinstance(value, bool):
        return value
    raise SimHTTPError(422, f"{field} must be true or false")


def as_str(value: Any, field: str, *, limit: int | None = None, nullable: bool = True) -> Any:
    if value is None and nullable:
        return None
    if not isinstance(value, str):
        raise SimHTTPError(422, f"{field} must be a string")
    if limit is not None and len(value) > limit:
        raise SimHTTPError(422, f"{field} is too long (maximum is {limit} characters)")
    return value


def check_enum(value: Any, allowed: Iterable[str], field: str) -> str:
    options = tuple(allowed)
    if value not in options:
        raise SimHTTPError(
            422, f"{field} {value!r} is not included in the list: {', '.join(options)}"
        )
    return str(value)
