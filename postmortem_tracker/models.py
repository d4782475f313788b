"""Postmortems, their action items and gate overrides, in the engine's database.

The tables join ``sync.store.metadata`` (one database, one migration chain:
``sync/migrations/versions/0002_postmortem.py``).
"""

from __future__ import annotations

import datetime as dt

from sqlalchemy import Date, Text, UniqueConstraint
from sqlmodel import Field

from sync.store import StoreModel, UTCDateTime, utcnow


def _now() -> dt.datetime:
    return utcnow()


class Postmortem(StoreModel, table=True):
    """The postmortem of one incident (required by the configured rule once it is resolved)."""

    __tablename__ = "postmortem"

    id: int | None = Field(default=None, primary_key=True)
    incident_id: str = Field(unique=True, index=True)
    jira_key: str = ""  # the "Post-incident review" issue, when configured
    jira_id: str = Field(default="", index=True)  # owner_of looks up every new record
    created_at: dt.datetime = Field(default_factory=_now, sa_type=UTCDateTime)
    # Done: its review issue reached a done status, or someone completed it (CLI/API).
    completed_at: dt.datetime | None = Field(default=None, sa_type=UTCDateTime)
    completed_by: str = ""
    problem_id: str = Field(default="", index=True)  # the ServiceNow problem (problem_record)
    problem_number: str = ""


class ActionItem(StoreModel, table=True):
    """A fix the postmortem decided on; it must become a change request with owner and date."""

    __tablename__ = "action_item"
    __table_args__ = (
        UniqueConstraint("key", name="uq_action_item_key"),
        # One item per idempotency key per incident: a retried or concurrent add finds it.
        UniqueConstraint("incident_id", "idem_key", name="uq_action_item_idem"),
    )

    id: int | None = Field(default=None, primary_key=True)
    key: str  # the change request's correlation key: stable, unique
    incident_id: str = Field(index=True)
    # What makes an add idempotent: the client's key ("key:<it>"), else the natural key
    # ("title:<the title, case and spaces folded>"); a Jira item: "jira:<issue id>".
    idem_key: str = ""
    status: str = "open"  # open | done (its change closed successful) | withdrawn
    status_reason: str = Field(default="", sa_type=Text)  # why withdrawn / re-opened
    status_by: str = ""
    status_at: dt.datetime | None = Field(default=None, sa_type=UTCDateTime)
    attempt: int = 0  # change requests it had that failed (each re-open makes a new one)
    title: str
    description: str = Field(default="", sa_type=Text)
    owner: str = ""  # email
    due_date: dt.date | None = Field(default=None, sa_type=Date)
    source: str = ""  # "jira:OPS-31", "cli", "api"
    source_id: str = Field(default="", index=True)  # the Jira issue id, for a source on Jira
    source_url: str = ""
    change_request_id: str = Field(default="", index=True)  # sys_id
    change_request_number: str = ""
    change_request_state: str = ""
    change_request_close_code: str = ""
    blocked: str = Field(default="", sa_type=Text)  # why it has no complete change request
    synced_owner: str = ""  # owner and due date as last agreed by both sides
    synced_due: dt.date | None = Field(default=None, sa_type=Date)
    synced_title: str = ""
    reminded_at: dt.datetime | None = Field(default=None, sa_type=UTCDateTime)
    created_at: dt.datetime = Field(default_factory=_now, sa_type=UTCDateTime)
    updated_at: dt.datetime = Field(default_factory=_now, sa_type=UTCDateTime)


class GateEvent(StoreModel, table=True):
    """A close the gate refused, or an override that let one through."""

    __tablename__ = "gate_event"

    id: int | None = Field(default=None, primary_key=True)
    incident_id: str = Field(index=True)
    kind: str  # "blocked" | "override"
    reason: str = Field(default="", sa_type=Text)
    actor: str = ""
    at: dt.datetime = Field(default_factory=_now, sa_type=UTCDateTime)
    # An override holds for the severity it was given at (the latched highest, SEV1 < SEV2):
    # raised above that later, the gate is shut again.
    severity: str = ""
    revoked_at: dt.datetime | None = Field(default=None, sa_type=UTCDateTime)
    revoked_by: str = ""
    revoke_reason: str = Field(default="", sa_type=Text)


class Requirement(StoreModel, table=True):
    """The latch: once an incident has needed a postmortem, it keeps needing one.

    Written the first time the rule (``postmortem.required_when``) holds, and never removed:
    a later downgrade changes nothing, only an override opens the gate. ``severity`` is the
    highest severity the incident ever had while latched, which the KPIs count it by.
    """

    __tablename__ = "postmortem_requirement"

    incident_id: str = Field(primary_key=True)
    since: dt.datetime = Field(default_factory=_now, sa_type=UTCDateTime)
    severity: str = ""  # SEV1 is the highest
    reason: str = Field(default="", sa_type=Text)
