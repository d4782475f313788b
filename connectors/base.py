"""The one protocol every connector implements, and the values that cross it.

Connectors speak each system's own fields (``short_description``, ``fields.priority.name``,
``impact``); they know nothing of the canonical incident, which is mapping's job. Values that
cross the boundary are frozen dataclasses.
"""

from __future__ import annotations

import datetime as dt
from collections.abc import Callable, Iterator, Mapping, Sequence
from dataclasses import dataclass, field
from enum import StrEnum
from typing import Any, Protocol, runtime_checkable


class Visibility(StrEnum):
    PUBLIC = "public"  # ServiceNow comments, Jira unrestricted comments, Statuspage updates
    INTERNAL = "internal"  # ServiceNow work_notes, Jira restricted comments; never public


class Capability(StrEnum):
    CREATE = "create"
    UPDATE = "update"
    COMMENTS = "comments"
    INTERNAL_COMMENTS = "internal_comments"
    TRANSITIONS = "transitions"
    PEOPLE = "people"
    WEBHOOKS = "webhooks"
    CHANGE_REQUESTS = "change_requests"
    CREATE_IN_STATE = "create_in_state"  # a create may set the state (else: create, transition)
    FIELDS_ON_TRANSITION = "fields_on_transition"  # a transition writes other fields with it
    FIELD_HISTORY = "field_history"  # field_changes() reads who changed which field when
    ISSUE_LINKS = "issue_links"  # links between records of the system (Jira issue links)
    MENTIONS = "mentions"  # text can name a user so the system notifies them (Mentions)
    WORKFLOW = "workflow"  # a transition walks through states; it reports each (on_step)


@dataclass(frozen=True)
class RemoteRef:
    """Where a record lives: system, configured instance name, object type, id and human key."""

    system: str
    instance: str
    object_type: str
    id: str
    key: str = ""  # INC0010001, OPS-12, ... ("" where the system has none)

    def __str__(self) -> str:
        return f"{self.system}:{self.instance}/{self.object_type}/{self.key or self.id}"


@dataclass(frozen=True)
class RemoteRecord:
    """A record as the system holds it. ``version`` orders versions of one record."""

    ref: RemoteRef
    version: tuple[int, ...]  # compares newer > older
    updated_at: dt.datetime
    fields: Mapping[str, Any]
    url: str = ""  # where a person can look at it


@dataclass(frozen=True)
class RemoteComment:
    id: str
    body: str
    visibility: Visibility
    author: str  # email where known, else the system's user id
    created_at: dt.datetime
    origin: str = ""  # set when itsm-sync wrote it: the system the comment came from


# Reserved keys of an observation's fields, set by the connectors' webhook parsers.
JOURNAL_KEY = "_journal"  # comments a delivery says its update added: {"after": version, "entries"}
COMMENT_EVENT_KEY = "_comment_event"  # a comment-only delivery: the comment, not the record
# Field changes a record or a delivery carries (Jira's changelog, ServiceNow's sys_audit rows
# of the update): a list of FieldChange.to_json(), oldest first.
FIELD_CHANGES_KEY = "_field_changes"
MAX_HISTORY = 100  # field changes kept with an observation (the newest)
# On a record a write returned: the updates (FieldChange.update) that this write made.
OUR_UPDATES_KEY = "_our_updates"


@dataclass(frozen=True)
class FieldChange:
    """One change of one field of a record, as the system's own history tells it.

    ``field`` is the record's top-level field (``status``, ``short_description``,
    ``customfield_10012``); ``value`` is the new value shaped as the record holds it at that
    field (``{"name": "In Progress"}`` for a Jira status, ``"2"`` for a ServiceNow state), or
    None with ``known=False`` where the history cannot tell the whole value (a Jira component
    list changes one component at a time). ``at`` is when it changed; ``id`` tells entries
    apart when a record's history is read again.
    """

    id: str
    field: str
    value: Any
    at: dt.datetime
    author: str = ""
    old: Any = None
    known: bool = True
    update: str = ""  # the update it was part of (a Jira history id, a ServiceNow checkpoint)

    @property
    def key(self) -> str:
        """What tells this entry apart from the others of the record's history."""
        return self.id or f"{self.field}@{self.at.isoformat()}"

    def to_json(self) -> dict[str, Any]:
        return {
            "id": self.id, "field": self.field, "value": self.value, "old": self.old,
            "at": self.at.isoformat(), "author": self.author, "known": self.known,
            "update": self.update,
        }  # fmt: skip

    @classmethod
    def from_json(cls, raw: Mapping[str, Any]) -> FieldChange:
        at = dt.datetime.fromisoformat(str(raw["at"]))
        return cls(
            id=str(raw.get("id", "")), field=str(raw["field"]), value=raw.get("value"),
            at=at if at.tzinfo else at.replace(tzinfo=dt.UTC), author=str(raw.get("author", "")),
            old=raw.get("old"), known=bool(raw.get("known", True)),
            update=str(raw.get("update", "")),
        )  # fmt: skip


def field_changes_of(fields: Mapping[str, Any]) -> list[FieldChange]:
    """The field changes an observation's fields carry (malformed entries are left out)."""
    out = []
    for raw in fields.get(FIELD_CHANGES_KEY) or []:
        try:
            out.append(FieldChange.from_json(raw))
        except (KeyError, TypeError, ValueError):
            continue
    return sorted(out, key=lambda c: c.at)


def join_history(*groups: list[FieldChange]) -> list[FieldChange]:
    """Field changes from several observations of one record: each once (by id), oldest
    first, the newest :data:`MAX_HISTORY`."""
    unique: dict[str, FieldChange] = {}
    for group in groups:
        for change in group:
            unique[change.key] = change
    return sorted(unique.values(), key=lambda c: c.at)[-MAX_HISTORY:]


@dataclass(frozen=True)
class Person:
    """Someone on a remote system: its own id, and the email that identifies them everywhere."""

    id: str  # ServiceNow sys_user sys_id, Jira accountId
    email: str
    name: str = ""


@dataclass(frozen=True)
class Observation:
    """What a webhook or a poll told us about one record."""

    ref: RemoteRef
    version: tuple[int, ...]  # compares newer > older
    fields: Mapping[str, Any]
    source: str  # "webhook" | "poll"
    delivery_id: str = ""
    observed_at: dt.datetime = field(default_factory=lambda: dt.datetime.now(dt.UTC))
    # False when the delivery carries only part of the record (a trigger to read it afresh),
    # as Jira's comment events do with their trimmed issue.
    complete: bool = True


@dataclass(frozen=True)
class Changes:
    """One poll's result: records changed since the watermark and the next watermark."""

    records: Sequence[RemoteRecord]
    watermark: dt.datetime | None


@runtime_checkable
class Connector(Protocol):
    system: str
    instance: str
    capabilities: frozenset[Capability]

    def object_types(self) -> Sequence[str]: ...

    def changes_since(
        self, object_type: str, watermark: dt.datetime | None, *, page_size: int = 100
    ) -> Iterator[RemoteRecord]: ...

    def get(self, object_type: str, id_or_key: str) -> RemoteRecord: ...

    def find_by_correlation(
        self, object_type: str, correlation_key: str
    ) -> RemoteRecord | None: ...

    def create(
        self,
        object_type: str,
        fields: Mapping[str, Any],
        *,
        correlation_key: str,
        look_first: bool = True,
    ) -> RemoteRecord:
        """Create the record, or return the one that carries ``correlation_key`` already.

        ``look_first=False``: the caller knows that no earlier attempt was ever made (its
        intent is on record), so the first attempt creates without looking; a retry of it
        (its answer may have been lost) always looks first."""
        ...

    def update(self, ref: RemoteRef, fields: Mapping[str, Any]) -> RemoteRecord: ...

    def comments(self, ref: RemoteRef) -> list[RemoteComment]: ...

    def known_comments(
        self, fields: Mapping[str, Any], through: tuple[int, ...] | None
    ) -> list[RemoteComment] | None:
        """The comments an observation's ``fields`` already tell about, without a call.

        ``through`` is the record version up to which the caller has seen every comment.
        Returns the comments that could be new since then (the caller skips those it knows),
        or None when only :meth:`comments` can tell (then it reads them).
        """
        ...

    def add_comment(
        self, ref: RemoteRef, body: str, *, visibility: Visibility, origin: str = ""
    ) -> RemoteComment: ...

    def transition(
        self,
        ref: RemoteRef,
        target: str,
        fields: Mapping[str, Any] | None = None,
        *,
        known: Mapping[str, Any] | None = None,
        on_step: Callable[[str], None] | None = None,
    ) -> RemoteRecord:
        """Move the record to state ``target`` (writing ``fields`` with it where the system
        can). Idempotent: a record already there is returned as it is. What the move needs
        and ``fields`` lack comes from ``known`` (the incident's values), else the system's
        defaults. A system that gets there through intermediate states (a workflow; it has
        :attr:`Capability.WORKFLOW`) calls ``on_step`` with each state before the call that
        moves the record to it: a walk cut short (a crash between two steps) is then still
        known as ours, not someone's move. Only such connectors are given ``on_step``."""
        ...

    def person_by_email(self, email: str) -> Person: ...

    def person_by_id(self, person_id: str) -> Person: ...

    def field_changes(self, ref: RemoteRef, since: dt.datetime | None) -> list[FieldChange]:
        """Every change of the record's fields at or after ``since``, oldest first, from the
        system's own history (one read): for per-field last-writer-wins when the observation
        did not carry them."""
        ...

    def stamps(self, fields: Mapping[str, Any]) -> list[str]:
        """The correlation keys a record carries (itsm-sync stamped it when it created it)."""
        ...

    def partners(self, ref: RemoteRef, fields: Mapping[str, Any]) -> list[tuple[str, str]]:
        """Records on other systems this record names as its counterpart, linked by hand
        before itsm-sync (a Jira remote link to a ServiceNow incident, a ServiceNow
        ``correlation_id`` holding a Jira key): ``(system, id or key)`` each."""
        ...

    def text_limit(self, path: str) -> int | None:
        """The most characters the system keeps in a text field (None: no limit we know)."""
        ...

    def inert(self, text: str) -> str:
        """``text`` with whatever this system would render live (markup, links, HTML) made
        plain: text from another system is shown, never executed."""
        ...

    def parse_webhook(
        self, headers: Mapping[str, str], body: bytes, query: Mapping[str, str] | None = None
    ) -> list[Observation]: ...


class IssueLinks(Connector, Protocol):
    """What a connector with :attr:`Capability.ISSUE_LINKS` also does (the postmortem tracker
    collects action items through it): links between its records, and links to elsewhere."""

    def linked_issues(self, ref: RemoteRef, link_type: str) -> list[str]:
        """Keys of the records linked to ``ref`` with ``link_type`` (either direction)."""
        ...

    def link_issues(self, link_type: str, inward_key: str, outward_key: str) -> None: ...

    def add_remote_link(self, ref: RemoteRef, *, global_id: str, url: str, title: str) -> None:
        """Create or update (by ``global_id``) a link from the record to a page elsewhere."""
        ...


class Mentions(Connector, Protocol):
    """What a connector with :attr:`Capability.MENTIONS` also does."""

    def mention(self, person: Person) -> str:
        """Text that names ``person`` in a comment so that the system notifies them."""
        ...


# Comments itsm-sync writes show people where they came from (a visible attribution line), and
# carry their origin for itsm-sync in a structured marker people do not type: a comment
# property in Jira, a hidden marker in a ServiceNow journal entry. Only the marker makes a
# comment "ours"; a person who types the attribution text writes a comment like any other.
ATTRIBUTION = "[itsm-sync from {origin}] "


def attributed(body: str, origin: str) -> str:
    """``body`` with the visible attribution line (``[itsm-sync from jira:OPS-12] ...``)."""
    return ATTRIBUTION.format(origin=origin) + body if origin else body


def unattributed(body: str, origin: str) -> str:
    """``body`` without the attribution line of ``origin`` (our own comment read back)."""
    prefix = ATTRIBUTION.format(origin=origin)
    return body[len(prefix) :] if origin and body.startswith(prefix) else body


@dataclass(frozen=True)
class Probe:
    """One preflight check of a system (``itsm-sync check``): what was checked, whether it
    holds, and (when it does not) what to do about it."""

    what: str
    ok: bool
    detail: str = ""


@runtime_checkable
class Preflight(Protocol):
    """A connector that can verify its configuration without writing anything: reachable,
    credentials valid, its container (table, project, page) there, the fields a mapping names
    there, webhooks registered where its API tells."""

    def signin(self) -> Probe:
        """Reachable with valid credentials: one cheap call (``/readyz``)."""
        ...

    def preflight(self, fields: Mapping[str, Sequence[str]]) -> list[Probe]:
        """``fields``: per object type, the remote field names the mappings read or write."""
        ...
