"""The canonical incident: what every system's record is mapped to and from.

Values that cross boundaries (into the engine, out to connectors, into the store) are frozen
pydantic models, so nobody edits an incident in place by accident; use ``model_copy(update=)``.
"""

from __future__ import annotations

import datetime as dt
from enum import StrEnum

from pydantic import BaseModel, ConfigDict, Field, field_validator


class Severity(StrEnum):
    SEV1 = "SEV1"
    SEV2 = "SEV2"
    SEV3 = "SEV3"
    SEV4 = "SEV4"


class State(StrEnum):
    NEW = "new"
    INVESTIGATING = "investigating"
    IDENTIFIED = "identified"
    MONITORING = "monitoring"
    RESOLVED = "resolved"
    CLOSED = "closed"
    CANCELED = "canceled"


class Impact(StrEnum):
    NONE = "none"
    MINOR = "minor"
    MAJOR = "major"
    CRITICAL = "critical"


class Visibility(StrEnum):
    INTERNAL = "internal"
    PUBLIC = "public"


class Frozen(BaseModel):
    model_config = ConfigDict(frozen=True, extra="forbid")


class Comment(Frozen):
    """A comment on the incident. ``origin`` is the system (and record) it was written in."""

    id: str = ""  # the canonical comment id (stable across systems)
    body: str
    visibility: Visibility = Visibility.INTERNAL  # internal unless someone made it public
    author: str = ""  # email where known
    origin: str = ""  # e.g. "servicenow:INC0010001", "jira:OPS-12"
    created_at: dt.datetime | None = None


class Stamp(Frozen):
    """When a field last changed, and on which system (per-field last-writer-wins)."""

    at: dt.datetime
    system: str = ""


class Resolution(Frozen):
    code: str = ""
    notes: str = ""


class ActionItem(Frozen):
    """A postmortem action item: it becomes a ServiceNow change request."""

    key: str  # the correlation key of its change request
    title: str
    description: str = ""
    owner: str = ""  # email
    due_date: dt.date | None = None
    source: str = ""  # e.g. "jira:OPS-31", "cli"
    change_request: str = ""  # CHG number once it exists


class Incident(Frozen):
    """One real-world incident, as every system should show it."""

    id: str = ""  # canonical id (the store's)
    title: str = ""
    description: str = ""
    severity: Severity | None = None
    state: State = State.NEW
    assignee: str = ""  # email
    team: str = ""
    services: tuple[str, ...] = ()  # service keys (CMDB CI / Jira component / SP component)
    customer_impact: Impact = Impact.NONE
    public: bool = False
    public_message: str = ""
    # Comms published it although it is below the status page's threshold (`public --force`,
    # audited with the reason): the Statuspage mapping's `when` lets it through.
    public_forced: bool = False
    # The stage (the state) the public message was approved at: the status page shows it at
    # that stage, and its own text at the next one until comms approves a new message.
    public_message_stage: str = ""
    labels: tuple[str, ...] = ()
    started_at: dt.datetime | None = None
    resolved_at: dt.datetime | None = None
    closed_at: dt.datetime | None = None
    resolution: Resolution = Field(default_factory=Resolution)
    comments: tuple[Comment, ...] = ()
    parent: str = ""  # canonical id of the master incident this one duplicates
    postmortem: str = ""  # postmortem ref
    # When each canonical field last changed by a person, and where (not a field of its own:
    # what per-field last-writer-wins compares a newly seen change against).
    changed: dict[str, Stamp] = Field(default_factory=dict)

    @field_validator("assignee")
    @classmethod
    def _email(cls, value: str) -> str:
        value = value.strip().lower()
        if value and "@" not in value:
            raise ValueError(f"assignee must be an email address, got {value!r}")
        return value


# Canonical field names a mapping may use, with the values they allow (None: free text).
CANONICAL_FIELDS: dict[str, tuple[str, ...] | None] = {
    "title": None,
    "description": None,
    "severity": tuple(s.value for s in Severity),
    "state": tuple(s.value for s in State),
    "assignee": None,
    "team": None,
    "services": None,
    "customer_impact": tuple(i.value for i in Impact),
    "public": ("true", "false"),
    "public_message": None,
    "public_forced": ("true", "false"),
    "labels": None,
    "started_at": None,
    "resolved_at": None,
    "closed_at": None,
    "resolution.code": None,
    "resolution.notes": None,
    "parent": None,
    "postmortem": None,
}
