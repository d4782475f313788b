"""Webhooks and polls in: observations stored, the dirty queue marked, nothing else.

A webhook is a trigger: verify it, store the delivery and what it says durably, and only then
answer 2xx; the work happens later, from the newest state. A delivery id seen before changes
nothing (Jira redelivers, sometimes 30 minutes late); a bad signature stores nothing but the
rejected delivery for inspection; a malformed body is kept for inspection too. What is kept of
refused deliveries is capped (:class:`RejectedLimits`): an unauthenticated caller cannot fill
the database.
"""

from __future__ import annotations

import datetime as dt
import logging
from collections.abc import Iterable, Mapping
from dataclasses import dataclass

from sqlalchemy.engine import Engine
from sqlalchemy.exc import SQLAlchemyError
from sqlmodel import Session

from connectors.base import COMMENT_EVENT_KEY, Connector, Observation, RemoteRecord
from connectors.errors import AuthFailed, ConnectorError
from sync import store
from sync.planner import REF_KEY
from sync.queue import incident_key, mark_dirty, remote_key

log = logging.getLogger("itsm_sync.ingest")
MAX_BODY = 1024 * 1024
SECRET_HEADERS = {"authorization", "x-servicenow-secret", "x-hub-signature", "cookie"}


@dataclass(frozen=True)
class Ack:
    status: int  # the HTTP status to answer
    message: str
    delivery_id: str = ""
    rejected: bool = False  # refused (bad signature, malformed, too big): kept for diagnosis
    dropped: int = 0  # older refused deliveries dropped to keep within the caps


def _safe_headers(headers: Mapping[str, str]) -> dict[str, str]:
    return {k: ("***" if k.lower() in SECRET_HEADERS else v) for k, v in headers.items()}


def mark_for(
    session: Session, system: str, instance: str, object_type: str, remote_id: str,
    *, delay: float, reason: str, refresh: bool = False,
) -> None:  # fmt: skip
    """Queue the incident a record belongs to (or the record itself, if not linked yet, or if
    it must be read afresh)."""
    incident = store.linked_incident(
        session, system=system, instance=instance, object_type=object_type, remote_id=remote_id
    )
    key = (
        incident_key(incident)
        if incident is not None and not refresh
        else remote_key(system, instance, object_type, remote_id, stored=not refresh)
    )
    mark_dirty(session, key, debounce=delay or None, reason=reason)


@dataclass(frozen=True)
class RejectedLimits:
    """How much of the rejected and malformed deliveries is kept (``intake`` settings)."""

    keep: int = 200
    max_bytes: int = 2 * 1024 * 1024
    body_bytes: int = 16 * 1024


def _keep_rejected(
    db: Engine, system: str, status: store.DeliveryStatus, reason: str, body: bytes,
    headers: Mapping[str, str], limits: RejectedLimits,
) -> int:  # fmt: skip
    """Store a refused delivery for diagnosis (its body cut to ``limits.body_bytes``) and drop
    the oldest beyond the caps, in one transaction; returns how many were dropped."""
    cut = body[: limits.body_bytes].decode("utf-8", "ignore")
    if len(body) > limits.body_bytes:
        reason = f"{reason} (body of {len(body)} bytes, first {limits.body_bytes} kept)"
    with store.session_scope(db) as s:
        store.record_delivery(
            s, system=system, delivery_id=f"{status}:{dt.datetime.now(dt.UTC).isoformat()}",
            status=status, reason=reason, body=cut, headers=_safe_headers(headers),
        )  # fmt: skip
        dropped = store.cap_rejected(s, keep=limits.keep, max_bytes=limits.max_bytes)
    if dropped:
        log.warning("dropped %d oldest rejected deliveries (caps: %d, %d bytes)",
                    dropped, limits.keep, limits.max_bytes)  # fmt: skip
    return dropped


def ingest_webhook(
    db: Engine,
    connector: Connector,
    headers: Mapping[str, str],
    body: bytes,
    query: Mapping[str, str] | None = None,
    *,
    coalesce: float = 0.2,
    limits: RejectedLimits | None = None,
) -> Ack:
    system = connector.system
    limits = limits or RejectedLimits()
    if len(body) > MAX_BODY:
        dropped = _keep_rejected(
            db, system, "malformed", f"body of {len(body)} bytes is over {MAX_BODY}", body,
            headers, limits,
        )  # fmt: skip
        return Ack(413, f"body over {MAX_BODY} bytes", rejected=True, dropped=dropped)
    try:
        observations = connector.parse_webhook(headers, body, query)
    except AuthFailed as exc:
        dropped = _keep_rejected(db, system, "rejected", str(exc), body, headers, limits)
        return Ack(401, "signature or secret missing or wrong", rejected=True, dropped=dropped)
    except ConnectorError as exc:
        dropped = _keep_rejected(db, system, "malformed", str(exc), body, headers, limits)
        return Ack(400, f"malformed delivery: {exc}", rejected=True, dropped=dropped)
    if not observations:
        return Ack(202, "nothing to do for this delivery")
    delivery = observations[0].delivery_id
    with store.session_scope(db) as s:
        if not store.record_delivery(s, system=system, delivery_id=delivery, status="accepted"):
            return Ack(200, "duplicate delivery: already stored", delivery)
        for obs in observations:
            events = obs.fields.get(COMMENT_EVENT_KEY)
            if isinstance(events, list) and store.add_comment_events(
                s, system=obs.ref.system, instance=obs.ref.instance,
                object_type=obs.ref.object_type, remote_id=obs.ref.id, events=events,
            ):  # fmt: skip
                # A comment on a record we hold: it rides on the stored observation, no read.
                mark_for(
                    s, obs.ref.system, obs.ref.instance, obs.ref.object_type, obs.ref.id,
                    delay=coalesce, reason=f"webhook {delivery}",
                )  # fmt: skip
                continue
            complete = obs.complete
            if complete and not store.record_observation(
                    s, system=obs.ref.system, instance=obs.ref.instance,
                    object_type=obs.ref.object_type, remote_id=obs.ref.id,
                    version=list(obs.version), fields={**obs.fields, REF_KEY: obs.ref.key},
                    source="webhook", remote_updated_at=_updated(obs),
                ):  # fmt: skip
                continue  # not newer than what we have (a poll got there first): nothing to do
            mark_for(
                s, obs.ref.system, obs.ref.instance, obs.ref.object_type, obs.ref.id,
                delay=coalesce, reason=f"webhook {delivery}", refresh=not complete,
            )  # fmt: skip
    return Ack(202, "stored", delivery)


def _updated(obs: Observation) -> dt.datetime | None:
    for name in ("sys_updated_on", "updated", "updated_at"):
        value = obs.fields.get(name)
        if value:
            try:
                if "T" in str(value):
                    text = str(value).replace("Z", "+00:00")
                    if len(text) > 5 and text[-5] in "+-" and text[-3] != ":":
                        text = text[:-2] + ":" + text[-2:]
                    return dt.datetime.fromisoformat(text)
                return dt.datetime.strptime(str(value), "%Y-%m-%d %H:%M:%S").replace(tzinfo=dt.UTC)
            except ValueError:
                return None
    return None


def store_records(
    db: Engine, records: Iterable[RemoteRecord], *, source: str = "poll", coalesce: float = 0.0
) -> tuple[int, dt.datetime | None]:
    """Store what a poll read and queue it; returns (how many were newer, newest update time).

    A record the database refuses is parked (that incident only) and passed over: the batch's
    other records are stored, and the watermark moves on past it."""
    # In key order: two pollers marking the same rows in different orders would deadlock.
    ordered = sorted(
        records, key=lambda r: (r.ref.system, r.ref.instance, r.ref.object_type, r.ref.id)
    )
    try:
        return _store(db, ordered, source, coalesce)
    except SQLAlchemyError:
        log.warning("storing a batch of %d records failed; storing them one by one", len(ordered))
    newer, newest = 0, None
    for record in ordered:
        try:
            stored, _ = _store(db, [record], source, coalesce)
            newer += stored
        except SQLAlchemyError as exc:
            _poisoned(db, record, exc)
        newest = record.updated_at if newest is None else max(newest, record.updated_at)
    return newer, newest


def _store(
    db: Engine, ordered: list[RemoteRecord], source: str, coalesce: float
) -> tuple[int, dt.datetime | None]:
    newer = 0
    newest: dt.datetime | None = None
    with store.session_scope(db) as s:
        for record in ordered:
            ref = record.ref
            if store.record_observation(
                s, system=ref.system, instance=ref.instance, object_type=ref.object_type,
                remote_id=ref.id, version=list(record.version),
                fields={**record.fields, REF_KEY: ref.key}, source=source,  # type: ignore[arg-type]
                remote_updated_at=record.updated_at,
            ):  # fmt: skip
                newer += 1
                mark_for(
                    s, ref.system, ref.instance, ref.object_type, ref.id,
                    delay=coalesce, reason=source,
                )  # fmt: skip
            newest = record.updated_at if newest is None else max(newest, record.updated_at)
    return newer, newest


def _poisoned(db: Engine, record: RemoteRecord, exc: Exception) -> None:
    """Park a record that cannot be stored: its incident's, or (not linked yet) its own."""
    ref = record.ref
    reason = str(getattr(exc, "orig", None) or exc).splitlines()[0][:500]
    target = f"{ref.system}:{ref.instance}"
    with store.session_scope(db) as s:
        link = store.find_link(
            s, system=ref.system, instance=ref.instance, object_type=ref.object_type,
            remote_id=ref.id,
        )  # fmt: skip
        owner = (
            link.incident_id
            if link
            else remote_key(ref.system, ref.instance, ref.object_type, ref.id)
        )
        message = f"reading from {target}: {ref.key or ref.id} cannot be stored: {reason}"
        store.park(s, incident_id=owner, target=target, error=message)
        store.audit(s, action="park", incident_id=owner, system=ref.system, reason=message)
    log.warning("parked %s: %s", ref, message)
