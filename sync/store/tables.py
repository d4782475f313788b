"""The engine's tables (SQLModel), on the one metadata of :mod:`sync.store.db`."""

from __future__ import annotations

import datetime as dt
import uuid
from typing import Any

from sqlalchemy import Column, ForeignKey, Index, Text, UniqueConstraint, text
from sqlmodel import Field

from sync.store.db import JSONValue, StoreModel, UTCDateTime, _now_field, utcnow
from sync.store.packed import (
    Coded,
    CodedText,
    HexId,
    IncidentJSON,
    PackedJSON,
    UTCMicros,
)


class IncidentRow(StoreModel, table=True):
    """The canonical incident (``mapping.model.Incident`` dumped with ``mode="json"``)."""

    __tablename__ = "incident"

    id: str = Field(default_factory=lambda: uuid.uuid4().hex, primary_key=True)
    # ~1.4 KB of JSON: packed on SQLite (sync.store.packed), so what a query looks for in it
    # is a column of its own, kept in step by every write (sync.store.incidents).
    data: dict[str, Any] = Field(default_factory=dict, sa_type=IncidentJSON)
    state: str | None = Field(default=None, index=True)  # data["state"]: open incidents
    parent: str | None = Field(default=None, index=True)  # data["parent"]: duplicates
    created_at: dt.datetime = _now_field()
    updated_at: dt.datetime = _now_field()
    version: int = 1


class Link(StoreModel, table=True):
    """One remote record that represents an incident; the local link store is the truth."""

    __tablename__ = "link"
    __table_args__ = (
        UniqueConstraint("system", "instance", "object_type", "remote_id", name="uq_link_remote"),
        UniqueConstraint("incident_id", "system", "instance", "object_type", name="uq_link_target"),
    )

    id: int | None = Field(default=None, primary_key=True)
    incident_id: str = Field(foreign_key="incident.id", ondelete="CASCADE", index=True)
    system: str
    instance: str
    object_type: str
    remote_id: str
    remote_key: str = ""
    url: str = ""
    created_at: dt.datetime = _now_field()


class Shadow(StoreModel, table=True):
    """What each mapped field of a linked record held when we last saw or wrote it."""

    __tablename__ = "shadow"

    link_id: int = Field(
        sa_column=Column(ForeignKey("link.id", ondelete="CASCADE"), primary_key=True)
    )
    # Every read field of the record (~1 KB of JSON): compressed on SQLite (sync.store.packed).
    fields: dict[str, Any] = Field(default_factory=dict, sa_type=PackedJSON)
    version: list[int] = Field(default_factory=list, sa_type=JSONValue)
    updated_at: dt.datetime = _now_field()


class Observation(StoreModel, table=True):
    """The newest known state of a remote record, from a webhook or a poll."""

    __tablename__ = "observation"

    system: str = Field(primary_key=True)
    instance: str = Field(primary_key=True)
    object_type: str = Field(primary_key=True)
    remote_id: str = Field(primary_key=True)
    version: list[int] = Field(default_factory=list, sa_type=JSONValue)
    # The whole record (a Jira issue is ~9 KB of JSON): compressed on SQLite (sync.store.packed).
    fields: dict[str, Any] = Field(default_factory=dict, sa_type=PackedJSON)
    source: str = "poll"
    observed_at: dt.datetime = _now_field()
    # The remote's own modification time, for the ``latest`` conflict policy (webhooks can
    # arrive late, so observed_at says nothing about which edit was newer).
    remote_updated_at: dt.datetime | None = Field(default=None, sa_type=UTCDateTime)


class Dirty(StoreModel, table=True):
    """One queue entry: "look at this incident (or unlinked remote record)". See sync.queue."""

    __tablename__ = "dirty"

    key: str = Field(primary_key=True)
    due_at: dt.datetime = Field(default_factory=utcnow, sa_type=UTCDateTime, index=True)
    generation: int = 1
    claimed_by: str | None = None
    claimed_until: dt.datetime | None = Field(default=None, sa_type=UTCDateTime)
    # When the waiting burst began: a debounced key is due at most max_wait after it.
    first_marked_at: dt.datetime | None = Field(default=None, sa_type=UTCDateTime)
    attempts: int = 0
    last_error: str = Field(default="", sa_type=Text)
    reason: str = Field(default="", sa_type=Text)


class Watermark(StoreModel, table=True):
    """How far polling of one (system, instance, object type) has safely read."""

    __tablename__ = "watermark"

    system: str = Field(primary_key=True)
    instance: str = Field(primary_key=True)
    object_type: str = Field(primary_key=True)
    value: dt.datetime | None = Field(default=None, sa_type=UTCDateTime)
    updated_at: dt.datetime = _now_field()


class WebhookDelivery(StoreModel, table=True):
    """Every delivery id seen, so a redelivered webhook is recognised (and bad ones kept)."""

    __tablename__ = "webhook_delivery"

    system: str = Field(primary_key=True)
    delivery_id: str = Field(primary_key=True)
    received_at: dt.datetime = _now_field()
    status: str
    reason: str = Field(default="", sa_type=Text)
    body: str | None = Field(default=None, sa_type=Text)
    headers: dict[str, Any] = Field(default_factory=dict, sa_type=JSONValue)


class AuditEntry(StoreModel, table=True):
    """One thing the engine did (or refused to do), with before/after values."""

    __tablename__ = "audit"

    id: int | None = Field(default=None, primary_key=True)
    # Microseconds since 1970 on SQLite (8 bytes, not 26 of text; sync.store.packed).
    at: dt.datetime = Field(default_factory=utcnow, sa_type=UTCMicros)
    # On SQLite hex ids as their 16 bytes and the repetitive strings as small integers
    # (sync.store.packed: HexId, Coded); the same str values come back.
    incident_id: str | None = Field(default=None, index=True, sa_type=HexId)
    system: str = Field(default="", sa_type=Coded)
    instance: str = Field(default="", sa_type=Coded)
    remote_id: str = Field(default="", sa_type=HexId)
    action: str = Field(sa_type=Coded)
    field: str | None = Field(default=None, sa_type=Coded)
    before: Any | None = Field(default=None, sa_type=JSONValue)
    after: Any | None = Field(default=None, sa_type=JSONValue)
    actor: str = Field(default="itsm-sync", sa_type=Coded)
    reason: str = Field(default="", sa_type=CodedText)


class Parked(StoreModel, table=True):
    """An (incident, target) pair that failed fatally; waits for an admin, then a replay."""

    __tablename__ = "parked"
    __table_args__ = (
        # At most one *open* item per pair; resolved ones stay as history.
        Index(
            "uq_parked_open",
            "incident_id",
            "target",
            unique=True,
            postgresql_where=text("resolved_at IS NULL"),
            sqlite_where=text("resolved_at IS NULL"),
        ),
    )

    id: int | None = Field(default=None, primary_key=True)
    incident_id: str = Field(index=True)
    target: str
    error: str = Field(default="", sa_type=Text)
    remote_message: str = Field(default="", sa_type=Text)
    status: int | None = None
    parked_at: dt.datetime = _now_field()
    attempts: int = 1
    resolved_at: dt.datetime | None = Field(default=None, sa_type=UTCDateTime)


class TargetBackoff(StoreModel, table=True):
    """Retriable failures of one (incident, target): the target waits, the incident goes on."""

    __tablename__ = "target_backoff"

    incident_id: str = Field(primary_key=True)
    target: str = Field(primary_key=True)
    attempts: int = 0
    next_attempt_at: dt.datetime = _now_field()
    last_error: str = Field(default="", sa_type=Text)


class CommentLink(StoreModel, table=True):
    """A comment copied between systems: a remote comment is synced exactly once."""

    __tablename__ = "comment_link"
    __table_args__ = (
        UniqueConstraint("system", "instance", "remote_id", name="uq_comment_link_remote"),
    )

    id: int | None = Field(default=None, primary_key=True)
    incident_id: str = Field(index=True)
    canonical_id: str
    system: str
    instance: str
    remote_id: str
    direction: str


class MappingVersion(StoreModel, table=True):
    """An accepted mapping file, kept with its diff so changes are reviewable."""

    __tablename__ = "mapping_version"

    id: int | None = Field(default=None, primary_key=True)
    system: str
    instance: str
    digest: str
    source: str = Field(default="", sa_type=Text)
    diff: str = Field(default="", sa_type=Text)
    accepted_at: dt.datetime = _now_field()
    accepted_by: str = ""


class MaintenanceWindow(StoreModel, table=True):
    """A planned change shown as scheduled maintenance on the status page (sync.maintenance)."""

    __tablename__ = "maintenance_window"

    change_key: str = Field(primary_key=True)  # system:instance:sys_id of the change request
    change_number: str = ""
    page_system: str = ""
    page_instance: str = ""
    page_id: str = ""  # the scheduled incident on the page
    fields: dict[str, Any] = Field(default_factory=dict, sa_type=JSONValue)  # what we wrote
    ended: bool = False  # cancelled on the page (the change was canceled): nothing more to do
    updated_at: dt.datetime = _now_field()
