"""The record of what happened: the audit log, parked failures and mapping versions."""

from __future__ import annotations

import datetime as dt
from typing import Any

from sqlalchemy import text
from sqlmodel import Session, col, select, update

from sync.store.db import (
    _MAPPING_LOCK_ID,
    AuditAction,
    _check,
    _fresh,
    dialect_insert,
    prepared,
    scrub,
    utcnow,
)
from sync.store.tables import AuditEntry, MappingVersion, Parked


def audit(
    session: Session,
    *,
    action: AuditAction,
    incident_id: str | None = None,
    system: str = "",
    instance: str = "",
    remote_id: str = "",
    field: str | None = None,
    before: Any = None,
    after: Any = None,
    actor: str = "itsm-sync",
    reason: str = "",
    at: dt.datetime | None = None,
) -> None:
    """Append one audit row (before/after must be JSON-ready)."""
    _check(action, AuditAction, "action")
    table = AuditEntry.__table__  # type: ignore[attr-defined]
    session.connection().execute(
        prepared(session, "audit.insert", lambda d: table.insert()),
        {
            "at": at or utcnow(),
            "incident_id": incident_id,
            "system": system,
            "instance": instance,
            "remote_id": remote_id,
            "action": action,
            "field": field,
            "before": before,
            "after": after,
            "actor": scrub(actor),
            "reason": scrub(reason),
        },
    )


CREATE_INTENT = "about to create its record"


def create_intent(session: Session, *, incident_id: str, system: str, instance: str) -> bool:
    """Before creating the incident's record on (system, instance): True if a create there was
    recorded before (an attempt whose outcome may be unknown: look for the record first);
    else record the intent (an audit row, committed before the create is sent) and say False.
    """
    c = AuditEntry
    seen = session.exec(
        select(col(c.id))
        .where(
            col(c.incident_id) == incident_id,
            col(c.system) == system,
            col(c.instance) == instance,
            col(c.action) == "create",
        )
        .limit(1)
    ).first()
    if seen is not None:
        return True
    audit(
        session, action="create", incident_id=incident_id, system=system, instance=instance,
        reason=CREATE_INTENT,
    )  # fmt: skip
    return False


def history(session: Session, incident_id: str) -> list[AuditEntry]:
    """The incident's audit trail, oldest first."""
    return list(
        session.exec(
            select(AuditEntry)
            .where(col(AuditEntry.incident_id) == incident_id)
            .order_by(col(AuditEntry.at), col(AuditEntry.id))
            .execution_options(populate_existing=True)
        )
    )


def park(
    session: Session,
    *,
    incident_id: str,
    target: str,
    error: str,
    remote_message: str = "",
    status: int | None = None,
    now: dt.datetime | None = None,
) -> Parked:
    """Park (incident, target) after a fatal error, or update its open item (attempts += 1)."""
    now = now or utcnow()
    values = {
        "error": scrub(error),
        "remote_message": scrub(remote_message),
        "status": status,
        "parked_at": now,
    }
    statement = dialect_insert(session, Parked).values(
        incident_id=incident_id, target=target, attempts=1, resolved_at=None, **values
    )
    parked_id = session.exec(
        statement.on_conflict_do_update(
            index_elements=[col(Parked.incident_id), col(Parked.target)],
            index_where=col(Parked.resolved_at).is_(None),
            set_={**values, "attempts": col(Parked.attempts) + 1},
        ).returning(col(Parked.id))
    ).scalar_one()
    row = _fresh(session, Parked, parked_id)
    assert row is not None
    return row


def get_parked(session: Session, parked_id: int) -> Parked | None:
    return _fresh(session, Parked, parked_id)


def open_parked(session: Session, *, incident_id: str | None = None) -> list[Parked]:
    """Open parked items (all, or one incident's), oldest first."""
    statement = select(Parked).where(col(Parked.resolved_at).is_(None))
    if incident_id is not None:
        statement = statement.where(col(Parked.incident_id) == incident_id)
    return list(
        session.exec(
            statement.order_by(col(Parked.parked_at), col(Parked.id)).execution_options(
                populate_existing=True
            )
        )
    )


def resolve_parked(session: Session, parked_id: int, *, now: dt.datetime | None = None) -> bool:
    """Close an open parked item (after a successful replay); False if it was not open."""
    result = session.exec(
        update(Parked)
        .where(col(Parked.id) == parked_id, col(Parked.resolved_at).is_(None))
        .values(resolved_at=now or utcnow())
        .execution_options(synchronize_session=False)
    )
    return result.rowcount == 1


def add_mapping_version(
    session: Session,
    *,
    system: str,
    instance: str,
    digest: str,
    source: str,
    diff: str = "",
    accepted_by: str = "",
    accepted_at: dt.datetime | None = None,
) -> MappingVersion:
    row = MappingVersion(
        system=system,
        instance=instance,
        digest=digest,
        source=source,
        diff=diff,
        accepted_by=accepted_by,
        accepted_at=accepted_at or utcnow(),
    )
    session.add(row)
    session.flush()
    return row


def record_mapping_version(
    session: Session,
    *,
    system: str,
    instance: str,
    digest: str,
    source: str,
    diff: str = "",
    accepted_by: str = "",
) -> bool:
    """Store a mapping as the current version of its system instance unless it already is;
    True if stored. Processes that load the same mapping at once (run's two, several instances)
    take turns (a lock per system instance on PostgreSQL; SQLite's write lock), so it is
    stored once."""
    if session.get_bind().dialect.name == "postgresql":
        session.connection().execute(
            text("SELECT pg_advisory_xact_lock(:a, hashtext(:b))"),
            {"a": _MAPPING_LOCK_ID, "b": f"{system}:{instance}"},
        )
    versions = mapping_versions(session, system=system, instance=instance)
    if versions and versions[-1].digest == digest:
        return False
    add_mapping_version(
        session, system=system, instance=instance, digest=digest, source=source, diff=diff,
        accepted_by=accepted_by,
    )  # fmt: skip
    return True


def mapping_versions(session: Session, *, system: str, instance: str) -> list[MappingVersion]:
    """Accepted mappings of one system instance, oldest first (the last one is current)."""
    return list(
        session.exec(
            select(MappingVersion)
            .where(col(MappingVersion.system) == system, col(MappingVersion.instance) == instance)
            .order_by(col(MappingVersion.accepted_at), col(MappingVersion.id))
            .execution_options(populate_existing=True)
        )
    )
