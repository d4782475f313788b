"""What webhooks and polls told us: observations, watermarks and webhook deliveries."""

from __future__ import annotations

import datetime as dt
from collections.abc import Mapping, Sequence
from typing import Any, cast

from sqlalchemy import LargeBinary, bindparam, case, delete, func
from sqlalchemy import cast as cast_
from sqlmodel import Session, col, select, update

from connectors.base import (
    COMMENT_EVENT_KEY,
    FIELD_CHANGES_KEY,
    JOURNAL_KEY,
    field_changes_of,
    join_history,
)
from sync.store.db import (
    DeliveryStatus,
    ObservationSource,
    _cap,
    _check,
    _fresh,
    dialect_insert,
    insert_for,
    prepared,
    scrub,
    utcnow,
)
from sync.store.tables import Observation, Watermark, WebhookDelivery


def _observation_key() -> Any:
    c = Observation.__table__.c  # type: ignore[attr-defined]
    return (
        (c.system == bindparam("k_system"))
        & (c.instance == bindparam("k_instance"))
        & (c.object_type == bindparam("k_object_type"))
        & (c.remote_id == bindparam("k_remote_id"))
    )


def record_observation(
    session: Session,
    *,
    system: str,
    instance: str,
    object_type: str,
    remote_id: str,
    version: Sequence[int],
    fields: Mapping[str, Any],
    source: ObservationSource,
    remote_updated_at: dt.datetime | None = None,
    observed_at: dt.datetime | None = None,
    join_history: bool = False,
) -> bool:
    """Store the newest known state of a remote record; True when this one is newer.

    ``join_history``: an observation of the stored version whose history holds entries the
    stored one lacks adds them (and True): a write's answer that shows someone's edit.

    An observation whose version is older than or equal to the stored one changes nothing
    (late or duplicated webhooks, overlapping polls). Concurrent writers of one record are
    serialised by a row lock (PostgreSQL) or the write lock (SQLite).
    """
    _check(source, ObservationSource, "source")
    key = {"system": system, "instance": instance, "object_type": object_type}
    where = {f"k_{k}": v for k, v in {**key, "remote_id": remote_id}.items()}
    table = Observation.__table__  # type: ignore[attr-defined]
    connection = session.connection()
    # The stored version first, and only it: most deliveries under load are echoes of our own
    # writes or duplicates, which change nothing, and packing a 9 KB Jira issue to offer it to
    # an INSERT that conflicts (then reading back and unpacking the stored one) was ~1 ms of
    # Python inside the write transaction, which every writer on SQLite waits for.
    stored = stored_observation_version(session, system, instance, object_type, remote_id)
    values: dict[str, Any] = {
        "version": list(version),
        "fields": dict(fields),
        "source": source,
        "observed_at": observed_at or utcnow(),
        "remote_updated_at": remote_updated_at,
    }
    if stored is None:
        insert = prepared(
            session,
            "observation.insert",
            lambda d: insert_for(d, table).on_conflict_do_nothing().returning(table.c.system),
        )
        inserted = connection.execute(insert, {**key, "remote_id": remote_id, **values})
        if inserted.scalar_one_or_none() is not None:
            return True
        # Someone inserted it since (PostgreSQL): weigh ours against theirs, row locked.
        stored = stored_observation_version(session, system, instance, object_type, remote_id)
        assert stored is not None
    if tuple(version) < tuple(stored) or (
        tuple(version) == tuple(stored) and not (join_history and fields.get(FIELD_CHANGES_KEY))
    ):
        return False
    read = prepared(
        session, "observation.fields", lambda d: select(table.c.fields).where(_observation_key())
    )
    stored_fields = connection.execute(read, where).scalar_one()
    if tuple(version) == tuple(stored):
        return _join_history_of(session, where, stored_fields, fields)
    values["fields"] = _carry_comment_events(
        stored_fields, _join_journal(stored, stored_fields, values["fields"])
    )
    write = prepared(
        session,
        "observation.update",
        lambda d: update(table).where(_observation_key()),
    )
    connection.execute(write, {**where, **values})
    return True


def _join_history_of(
    session: Session, where: dict[str, Any], stored: Mapping[str, Any], new: Mapping[str, Any]
) -> bool:
    """The same version of a record again, with history the stored one lacks: keep both.

    A write's answer (Jira's edit with its changelog) can tell of someone's edit made between
    our read and our write, which the executor leaves for the next pass to weigh; but the echo
    of the same write may have been stored first, carrying only its own update's changelog,
    and the answer was then "not newer" and dropped, and that edit with it (a chaos run lost a
    title so). True when history was added (the record is to be weighed again)."""
    have = field_changes_of(stored)
    known = {c.key for c in have}
    more = [c for c in field_changes_of(new) if c.key not in known]
    if not more:
        return False
    joined = {**stored, FIELD_CHANGES_KEY: [c.to_json() for c in join_history(have, more)]}
    table = Observation.__table__  # type: ignore[attr-defined]
    write = prepared(
        session,
        "observation.history",
        lambda d: (
            update(table)
            .where(_observation_key())
            .values(fields=bindparam("b_fields", type_=table.c.fields.type))
        ),
    )
    session.connection().execute(write, {**where, "b_fields": joined})
    return True


def stored_observation_version(
    session: Session, system: str, instance: str, object_type: str, remote_id: str
) -> list[int] | None:
    """The version of the stored observation of a record (None: none stored), row-locked on
    PostgreSQL (in a read-only scope the lock is not taken: no transaction to hold it)."""
    table = Observation.__table__  # type: ignore[attr-defined]
    read = prepared(
        session,
        "observation.version",
        lambda d: select(table.c.version).where(_observation_key()).with_for_update(),
    )
    where = {"k_system": system, "k_instance": instance, "k_object_type": object_type,
             "k_remote_id": remote_id}  # fmt: skip
    stored = session.connection().execute(read, where).scalar_one_or_none()
    return None if stored is None else list(stored)


def _join_journal(
    stored_version: Sequence[int], stored: Mapping[str, Any], new: dict[str, Any]
) -> dict[str, Any]:
    """A delivery that says which comments its update added (``JOURNAL_KEY``, ServiceNow) and
    follows right on the stored one, which said so too, says it for both: otherwise the
    entries of the first would be lost when the second replaces it before a reconcile."""
    later, earlier = new.get(JOURNAL_KEY), stored.get(JOURNAL_KEY)
    if not isinstance(later, Mapping) or not isinstance(earlier, Mapping):
        return new
    if list(later.get("after") or []) != list(stored_version):
        return new  # not consecutive: the reader sees the gap and reads the comments
    entries = [*(earlier.get("entries") or []), *(later.get("entries") or [])]
    return {**new, JOURNAL_KEY: {"after": list(earlier.get("after") or []), "entries": entries}}


MAX_COMMENT_EVENTS = 50


def _comment_events(fields: Mapping[str, Any]) -> list[dict[str, Any]]:
    events = fields.get(COMMENT_EVENT_KEY)
    return [e for e in events if isinstance(e, dict)] if isinstance(events, list) else []


def _carry_comment_events(stored: Mapping[str, Any], new: dict[str, Any]) -> dict[str, Any]:
    """Comments delivered on their own (``COMMENT_EVENT_KEY``, Jira) stay with the record's
    newest observation until a reconcile has seen them: a newer delivery of the record may have
    been sent before the comment was made."""
    events = _comment_events(stored) + _comment_events(new)
    if not events:
        return new
    unique = list({str(e.get("id")): e for e in events}.values())[-MAX_COMMENT_EVENTS:]
    return {**new, COMMENT_EVENT_KEY: unique}


def add_comment_events(
    session: Session,
    *,
    system: str,
    instance: str,
    object_type: str,
    remote_id: str,
    events: Sequence[Mapping[str, Any]],
) -> bool:
    """Add comments delivered on their own to the record's newest observation (its version
    unchanged); False if there is none (then the record has to be read)."""
    table = Observation.__table__  # type: ignore[attr-defined]
    where = {
        "k_system": system, "k_instance": instance, "k_object_type": object_type,
        "k_remote_id": remote_id,
    }  # fmt: skip
    connection = session.connection()
    read = prepared(
        session,
        "observation.fields",
        lambda d: select(table.c.fields).where(_observation_key()).with_for_update(),
    )
    stored = connection.execute(read, where).scalar_one_or_none()
    if stored is None:
        return False
    carried = _carry_comment_events(stored, {COMMENT_EVENT_KEY: [dict(e) for e in events]})
    write = prepared(
        session, "observation.update", lambda d: update(table).where(_observation_key())
    )
    connection.execute(write, {**where, "fields": {**stored, **carried}})
    return True


def latest_observation(
    session: Session, *, system: str, instance: str, object_type: str, remote_id: str
) -> Observation | None:
    return _fresh(session, Observation, system, instance, object_type, remote_id)


def get_watermark(
    session: Session, *, system: str, instance: str, object_type: str
) -> dt.datetime | None:
    row = _fresh(session, Watermark, system, instance, object_type)
    return row.value if row else None


def set_watermark(
    session: Session, *, system: str, instance: str, object_type: str, value: dt.datetime
) -> dt.datetime:
    """Advance the watermark to ``value``; never moves it backwards. Returns the stored value."""
    now = utcnow()
    statement = dialect_insert(session, Watermark).values(
        system=system, instance=instance, object_type=object_type, value=value, updated_at=now
    )
    current = col(Watermark.value)
    newest = case(
        (current.is_(None), statement.excluded.value),
        (statement.excluded.value > current, statement.excluded.value),
        else_=current,
    )
    stored = session.exec(
        statement.on_conflict_do_update(
            index_elements=[
                col(Watermark.system),
                col(Watermark.instance),
                col(Watermark.object_type),
            ],
            set_={"value": newest, "updated_at": now},
        ).returning(col(Watermark.value))
    ).scalar_one()
    return cast(dt.datetime, stored)


def record_delivery(
    session: Session,
    *,
    system: str,
    delivery_id: str,
    status: DeliveryStatus,
    reason: str = "",
    body: str | None = None,
    headers: Mapping[str, Any] | None = None,
    received_at: dt.datetime | None = None,
) -> bool:
    """Remember a webhook delivery; False when that delivery id was already seen (a duplicate).

    Decided by INSERT .. ON CONFLICT DO NOTHING, so two receivers of one redelivery can't both
    get True. The body is kept only for rejected/malformed deliveries (for inspection), capped
    at 1 MiB; headers must already be stripped of secrets.
    """
    _check(status, DeliveryStatus, "status")
    kept = _cap(body) if body is not None and status in ("rejected", "malformed") else None
    table = WebhookDelivery.__table__  # type: ignore[attr-defined]
    insert = prepared(
        session,
        "delivery.insert",
        lambda d: insert_for(d, table).on_conflict_do_nothing().returning(table.c.delivery_id),
    )
    inserted = (
        session.connection()
        .execute(
            insert,
            {
                "system": system,
                "delivery_id": delivery_id,
                "received_at": received_at or utcnow(),
                "status": status,
                "reason": scrub(reason),
                "body": scrub(kept),
                "headers": dict(headers or {}),
            },
        )
        .scalar_one_or_none()
    )
    return inserted is not None


KEPT_FOR_DIAGNOSIS = ("rejected", "malformed")


def cap_rejected(session: Session, *, keep: int, max_bytes: int) -> int:
    """Drop the oldest rejected and malformed deliveries beyond ``keep`` of them or beyond
    ``max_bytes`` of bodies together; returns how many were dropped. Accepted deliveries (the
    duplicate-detection record) are never touched."""
    body = col(WebhookDelivery.body)
    octets = (
        func.octet_length(body)
        if session.get_bind().dialect.name == "postgresql"
        else func.length(cast_(body, LargeBinary))  # SQLite: length of a BLOB is in bytes
    )
    size = func.coalesce(octets, 0)
    rows = session.exec(
        select(col(WebhookDelivery.system), col(WebhookDelivery.delivery_id), size)
        .where(col(WebhookDelivery.status).in_(KEPT_FOR_DIAGNOSIS))
        .order_by(col(WebhookDelivery.received_at).desc(), col(WebhookDelivery.delivery_id).desc())
    ).all()
    total, drop = 0, []
    for n, (system, delivery_id, length) in enumerate(rows):
        total += int(length)
        if n >= keep or total > max_bytes:
            drop.append((system, delivery_id))
    for system, delivery_id in drop:
        session.exec(
            delete(WebhookDelivery).where(
                col(WebhookDelivery.system) == system,
                col(WebhookDelivery.delivery_id) == delivery_id,
            )
        )
    return len(drop)
