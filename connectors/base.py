"""The one protocol every connector implements, and the values that cross it.

Connectors speak each system's own fields (``short_description``, ``fields.priority.name``,
``impact``); they know nothing of the canonical incident, which is mapping's job. Values that
cross the boundary are frozen dataclasses.
"""

from __future__ import annotations

import datetime as dt
import re
from collections.abc import Iterator, Mapping, Sequence
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
        self, object_type: str, fields: Mapping[str, Any], *, correlation_key: str
    ) -> RemoteRecord: ...

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
        self, ref: RemoteRef, target: str, fields: Mapping[str, Any] | None = None
    ) -> RemoteRecord: ...

    def person_by_email(self, email: str) -> Person: ...

    def person_by_id(self, person_id: str) -> Person: ...

    def parse_webhook(
        self, headers: Mapping[str, str], body: bytes, query: Mapping[str, str] | None = None
    ) -> list[Observation]: ...


# Comments itsm-sync writes carry their origin as a prefix, so a comment synced from Jira to
# ServiceNow is recognised on the way back and never synced again.
_ORIGIN = re.compile(r"^\[itsm-sync from (?P<origin>[^\]]+)\] ?", re.ASCII)


def mark_origin(body: str, origin: str) -> str:
    """``body`` with an origin marker (``[itsm-sync from jira:OPS-12 alice@example.com] ...``)."""
    return f"[itsm-sync from {origin}] {body}" if origin else body


def split_origin(body: str) -> tuple[str, str]:
    """(origin, text) of a comment body; origin is "" for comments a person wrote."""
    match = _ORIGIN.match(body)
    if match is None:
        return "", body
    return match["origin"], body[match.end() :]
